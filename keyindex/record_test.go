package keyindex

import (
	"crypto/rand"
	"strings"
	"testing"
	"time"
)

func TestNewID(t *testing.T) {
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	var prev string
	seen := map[string]bool{}
	for i := 0; i < 200; i++ {
		id, err := NewID(t0.Add(time.Duration(i)*time.Millisecond), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(id, "key_") || len(id) != len("key_")+26 {
			t.Fatalf("bad id %q", id)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
		if id <= prev {
			t.Fatalf("ids do not sort by creation time: %q after %q", id, prev)
		}
		prev = id
	}
	if _, err := NewID(t0, errReader{}); err == nil {
		t.Fatal("NewID with a failing reader succeeded")
	}
}

func TestTokenFromPlaintextAndSetToken(t *testing.T) {
	gen := mustGenerate(t, "acme", TypePublishable, EnvTest)
	tok, info, err := TokenFromPlaintext(gen.Plaintext)
	if err != nil {
		t.Fatal(err)
	}
	if tok != gen || info.Type != TypePublishable || info.Environment != EnvTest {
		t.Fatalf("TokenFromPlaintext = %+v %+v, want %+v", tok, info, gen)
	}
	if _, _, err := TokenFromPlaintext(corruptLast(gen.Plaintext)); err == nil {
		t.Fatal("TokenFromPlaintext accepted a bad checksum")
	}
	if _, _, err := TokenFromPlaintext(""); err == nil {
		t.Fatal("TokenFromPlaintext accepted an empty token")
	}
	var r Record
	r.SetToken(gen)
	if r.Hash != gen.Hash || r.KeyPrefix != "acme_pk_test_" || r.KeySuffix != gen.Suffix || r.Preview != gen.Preview {
		t.Fatalf("SetToken: %+v", r)
	}
}

func TestRecordClone(t *testing.T) {
	exp := baseNow.Add(time.Hour)
	r, _ := newTestRecord(t, TypeSecret, func(r *Record) {
		r.Scopes = []string{"a"}
		r.AllowedOrigins = []string{"https://a.example"}
		r.AllowedResources = []string{"res"}
		r.Metadata = map[string]string{"k": "v"}
		r.ExpiresAt = &exp
		r.RevokedAt = tp(baseNow)
		r.LastUsedAt = tp(baseNow)
		r.Rotation = &Rotation{PreviousExpiresAt: baseNow}
	})
	c := r.Clone()
	c.Scopes[0] = "b"
	c.AllowedOrigins[0] = "x"
	c.AllowedResources[0] = "y"
	c.Metadata["k"] = "changed"
	*c.ExpiresAt = baseNow
	*c.RevokedAt = exp
	*c.LastUsedAt = exp
	c.Rotation.PreviousExpiresAt = exp
	if r.Scopes[0] != "a" || r.AllowedOrigins[0] != "https://a.example" || r.AllowedResources[0] != "res" ||
		r.Metadata["k"] != "v" || !r.ExpiresAt.Equal(exp) || !r.RevokedAt.Equal(baseNow) ||
		!r.LastUsedAt.Equal(baseNow) || !r.Rotation.PreviousExpiresAt.Equal(baseNow) {
		t.Fatal("Clone shares state with the original")
	}
	var empty Record
	if c := empty.Clone(); c.Scopes != nil || c.Metadata != nil || c.ExpiresAt != nil || c.Rotation != nil {
		t.Fatal("Clone of an empty record invents fields")
	}
}

func TestIsRoot(t *testing.T) {
	for _, tc := range []struct {
		typ KeyType
		ws  string
		ok  bool
	}{
		{TypeAdmin, RootWorkspace, true},
		{TypeAdmin, "ws_1", false},
		{TypeSecret, RootWorkspace, false},
		{TypePublishable, RootWorkspace, false},
	} {
		if got := (&Record{Type: tc.typ, WorkspaceID: tc.ws}).IsRoot(); got != tc.ok {
			t.Errorf("IsRoot(%s, %q) = %v", tc.typ, tc.ws, got)
		}
	}
}

// Imported keys are stored by the hash of a token in any format; such tokens
// are looked up even though they fail the checksum.
func TestVerifyImported(t *testing.T) {
	ix := New()
	native, nativeTok := newTestRecord(t, TypeSecret, nil)
	mustInsert(t, ix, native)
	legacyTok := "legacy-key-0123456789"
	imp, _ := newTestRecord(t, TypeSecret, func(r *Record) {
		r.Hash = HashToken([]byte(legacyTok))
		r.Imported = true
		r.KeyPrefix, r.KeySuffix, r.Preview = "", "6789", "lega…6789"
	})
	verify := func(tok string) Decision {
		return ix.Verify(&VerifyRequest{Token: []byte(tok), NowNs: baseNow.UnixNano()})
	}
	if d := verify(legacyTok); d.Code != CodeMalformedKey {
		t.Fatalf("before import: %s", d.Code)
	}
	mustInsert(t, ix, imp)
	long := strings.Repeat("x", MaxImportedTokenLen+1)
	longImp, _ := newTestRecord(t, TypeSecret, func(r *Record) { r.Hash = HashToken([]byte(long)); r.Imported = true })
	mustInsert(t, ix, longImp)
	for _, tc := range []struct {
		name string
		tok  string
		want Code
		rec  *Record
	}{
		{"imported token", legacyTok, CodeValid, imp},
		{"unknown non-token", "legacy-key-nope", CodeMalformedKey, nil},
		{"native token still checked", corruptLast(nativeTok), CodeMalformedKey, nil},
		{"native token", nativeTok, CodeValid, native},
		{"well-formed unknown", mustGenerate(t, "", TypeSecret, EnvLive).Plaintext, CodeKeyNotFound, nil},
		{"over the length bound", long, CodeMalformedKey, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := verify(tc.tok)
			if d.Code != tc.want || d.Record != tc.rec {
				t.Fatalf("code %s record %v, want %s %v", d.Code, d.Record, tc.want, tc.rec)
			}
		})
	}
	// Disabling an imported key gives KEY_DISABLED, not MALFORMED_KEY.
	dis := imp.Clone()
	dis.Active = false
	if err := ix.Replace(dis); err != nil {
		t.Fatal(err)
	}
	if d := verify(legacyTok); d.Code != CodeKeyDisabled {
		t.Fatalf("disabled imported: %s", d.Code)
	}
	// Once no imported key is left, malformed tokens skip the index again.
	for _, id := range []string{imp.ID, longImp.ID} {
		if err := ix.Delete(id); err != nil {
			t.Fatal(err)
		}
	}
	if d := verify(legacyTok); d.Code != CodeMalformedKey {
		t.Fatalf("after delete: %s", d.Code)
	}
	// ReplaceAll carries the imported count with it.
	if err := ix.ReplaceAll([]*Record{native, imp}); err != nil {
		t.Fatal(err)
	}
	if d := verify(legacyTok); d.Code != CodeValid {
		t.Fatalf("after ReplaceAll: %s", d.Code)
	}
	if err := ix.ReplaceAll([]*Record{native}); err != nil {
		t.Fatal(err)
	}
	if d := verify(legacyTok); d.Code != CodeMalformedKey {
		t.Fatalf("after ReplaceAll without imports: %s", d.Code)
	}
}

func TestWorkspacePrefix(t *testing.T) {
	for _, tc := range []struct {
		prefix   string
		typ      KeyType
		env      Environment
		imported bool
		want     string
	}{
		{"acme_sk_live_", TypeSecret, EnvLive, false, "acme"},
		{"sk_live_", TypeSecret, EnvLive, false, ""},
		{"a1_pk_test_", TypePublishable, EnvTest, false, "a1"},
		{"ops_rk_live_", TypeAdmin, EnvLive, false, "ops"},
		{"acme_sk_live_", TypeSecret, EnvLive, true, ""},  // imported: another product's prefix
		{"Acme_sk_live_", TypeSecret, EnvLive, false, ""}, // not a valid workspace prefix
	} {
		r := &Record{KeyPrefix: tc.prefix, Type: tc.typ, Environment: tc.env, Imported: tc.imported}
		if got := r.WorkspacePrefix(); got != tc.want {
			t.Errorf("%+v: WorkspacePrefix() = %q, want %q", tc, got, tc.want)
		}
	}
}
