package keyindex

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	mrand "math/rand/v2"
	"reflect"
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
			if d.Code != tc.want || !reflect.DeepEqual(ix.MatchedRecord(&d), tc.rec) {
				t.Fatalf("code %s record %v, want %s %v", d.Code, ix.MatchedRecord(&d), tc.want, tc.rec)
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
	// A load carries the imported count with it.
	if err := load(ix, native, imp); err != nil {
		t.Fatal(err)
	}
	if d := verify(legacyTok); d.Code != CodeValid {
		t.Fatalf("after a load: %s", d.Code)
	}
	if err := load(ix, native); err != nil {
		t.Fatal(err)
	}
	if d := verify(legacyTok); d.Code != CodeMalformedKey {
		t.Fatalf("after a load without imports: %s", d.Code)
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

// encodeValidPrefixJSON is how the valid answer's prefix was written with
// encoding/json: the reference its hand-written encoding must match.
func encodeValidPrefixJSON(t *testing.T, r *Record) []byte {
	t.Helper()
	body := struct {
		Valid       bool              `json:"valid"`
		Code        string            `json:"code"`
		KeyID       string            `json:"key_id"`
		WorkspaceID string            `json:"workspace_id"`
		OwnerID     string            `json:"owner_id"`
		Type        KeyType           `json:"type"`
		Environment Environment       `json:"environment"`
		Scopes      []string          `json:"scopes"`
		Metadata    map[string]string `json:"metadata"`
		ExpiresAt   *time.Time        `json:"expires_at"`
	}{true, CodeValid.String(), r.ID, r.WorkspaceID, r.OwnerID, r.Type, r.Environment, nonNil(r.Scopes), r.Metadata, r.ExpiresAt}
	if body.Metadata == nil {
		body.Metadata = map[string]string{}
	}
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	return append(b[:len(b)-1], `,"ratelimit":`...)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// oddStrings are strings whose JSON encoding takes care: quotes and
// backslashes, control characters, HTML, U+2028/9, invalid UTF-8.
var oddStrings = []string{
	"", "plain", `"quoted" \back\slash\`, "<script>a && b</script>", "\x00\x01\x07\x1f\x7f",
	"\b\f\n\r\t", "héllo wörld ✓ 日本語 😀", "line\u2028para\u2029end", "\ufffd real replacement char",
	"\xff\xfe bad", "cut \xc3", "\xe2\x80", "surrogate \xed\xa0\x80", "past max \xf4\x90\x80\x80", "overlong \xc0\xaf",
	"\u007f\u0080\u00a0\u2027\u202a", "'single' `back`", "=+?%/",
}

// TestValidPrefixMatchesJSON: the hand-written body is byte for byte
// what encoding/json writes, for odd strings in every field, nil and empty
// lists and maps, and expiry times in any zone.
func TestValidPrefixMatchesJSON(t *testing.T) {
	check := func(r *Record) {
		t.Helper()
		if got, want := appendValidPrefix(nil, viewOf(r)), encodeValidPrefixJSON(t, r); !bytes.Equal(got, want) {
			t.Fatalf("appendValidPrefix differs from encoding/json:\n got %q\nwant %q", got, want)
		}
	}
	for _, s := range oddStrings {
		check(&Record{ID: s, WorkspaceID: s, OwnerID: s, Type: KeyType(s), Environment: Environment(s),
			Scopes: []string{s, "x"}, Metadata: map[string]string{s: s, "k": s, "\xff": "v"}})
	}
	times := []*time.Time{nil, tp(baseNow), tp(baseNow.Add(123456789)), tp(time.Time{}),
		tp(baseNow.In(time.FixedZone("", -8*3600))), tp(baseNow.In(time.FixedZone("IST", 5*3600+30*60))),
		tp(time.Date(9999, 12, 31, 23, 59, 59, 1, time.UTC)), tp(time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC))}
	for _, exp := range times {
		check(&Record{ExpiresAt: exp})
	}
	check(&Record{Scopes: []string{}, Metadata: map[string]string{}})
	r, _ := newTestRecord(t, TypeSecret, func(r *Record) {
		r.Scopes, r.Metadata = []string{"calls:*", "files:read"}, map[string]string{"team": "payments", "b": "1", "a": "2"}
	})
	check(r)

	// Random strings over an alphabet of the bytes that matter.
	const alphabet = "a<>&\"\\\x00\x1f\x7f\x80\xbf\xc3\xa9\xe2\x80\xa8\xa9\xed\xf0\x9f\x98\x80\xff"
	rnd := mrand.New(mrand.NewPCG(1, 2))
	str := func() string {
		b := make([]byte, rnd.IntN(12))
		for i := range b {
			b[i] = alphabet[rnd.IntN(len(alphabet))]
		}
		return string(b)
	}
	for range 2000 {
		check(&Record{ID: str(), OwnerID: str(), Scopes: []string{str()}, Metadata: map[string]string{str(): str(), str(): str()}})
	}
}

// TestAppendJSONStringEveryByte: each byte value, alone and between
// others, is written as encoding/json writes it.
func TestAppendJSONStringEveryByte(t *testing.T) {
	for c := range 256 {
		for _, s := range []string{string([]byte{byte(c)}), "a" + string([]byte{byte(c)}) + "b"} {
			want, err := json.Marshal(s)
			if err != nil {
				t.Fatal(err)
			}
			if got := appendJSONString(nil, s); !bytes.Equal(got, want) {
				t.Fatalf("byte %#x: got %s, want %s", c, got, want)
			}
		}
	}
}
