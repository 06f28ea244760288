package keyindex

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/keyraft/keyraft/internal/fuzzseed"
)

// FuzzParseToken: ParseToken never panics; a token it accepts has the shape
// of spec §1 and round-trips through TokenFromPlaintext and Display; every
// token GenerateToken makes (from any random bytes, with any workspace
// prefix it accepts) is accepted, and changing any one of its bytes makes it
// rejected.
//
// Arguments: tok is parsed as is (with fixSum, its last 6 bytes are first
// replaced by the right checksum, so that the shape checks behind the
// checksum are explored too); ws, kind and rnd drive GenerateToken; pos and
// repl name the byte to change in the generated token.
func FuzzParseToken(f *testing.F) {
	f.Fuzz(func(t *testing.T, tok []byte, fixSum bool, ws string, kind uint8, rnd []byte, pos uint16, repl uint8) {
		if fixSum && len(tok) >= checksumChars {
			tok = []byte(reChecksum(string(tok[:len(tok)-checksumChars])))
		}
		checkParsed(t, tok)

		typ := allTypes[int(kind)%len(allTypes)].typ
		env := []Environment{EnvLive, EnvTest}[int(kind/3)%2]
		// Zeros after rnd: rejection sampling never loops on them.
		gen, err := GenerateToken(io.MultiReader(bytes.NewReader(rnd), constReader(0)), ws, typ, env)
		if ws != "" && !ValidWSPrefix(ws) {
			if err == nil {
				t.Fatalf("GenerateToken accepted workspace prefix %q", ws)
			}
			return
		}
		if err != nil {
			t.Fatalf("GenerateToken(%q, %s, %s): %v", ws, typ, env, err)
		}
		info, ok := checkParsed(t, []byte(gen.Plaintext))
		if !ok {
			t.Fatalf("generated token %q is refused", gen.Plaintext)
		}
		wantPrefix := typ.kindCode() + "_" + string(env) + "_"
		if ws != "" {
			wantPrefix = ws + "_" + wantPrefix
		}
		if info.Type != typ || info.Environment != env || gen.Prefix != wantPrefix {
			t.Fatalf("generated %q: parsed as %s/%s, prefix %q; want %s/%s, %q", gen.Plaintext, info.Type, info.Environment, gen.Prefix, typ, env, wantPrefix)
		}
		if gen.Hash != sha256.Sum256([]byte(gen.Plaintext)) {
			t.Fatalf("generated %q: hash is not SHA-256 of the token", gen.Plaintext)
		}
		// CRC-32 detects every burst of up to 32 bits, so every one-byte
		// change (in the head or the body) is refused.
		i := int(pos) % len(gen.Plaintext)
		if gen.Plaintext[i] != repl {
			mut := []byte(gen.Plaintext)
			mut[i] = repl
			if _, err := ParseToken(mut); err == nil {
				t.Fatalf("token %q with byte %d changed to %q is accepted", gen.Plaintext, i, repl)
			}
		}
	})
}

// checkParsed parses tok and, when it is accepted, checks everything that
// follows from acceptance.
func checkParsed(t *testing.T, tok []byte) (TokenInfo, bool) {
	t.Helper()
	info, err := ParseToken(tok)
	s := string(tok)
	_, info2, err2 := TokenFromPlaintext(s)
	if (err == nil) != (err2 == nil) || info != info2 {
		t.Fatalf("ParseToken and TokenFromPlaintext disagree on %q: %v / %v", tok, err, err2)
	}
	if err != nil {
		if err != ErrMalformedToken {
			t.Fatalf("ParseToken(%q): error %v, want ErrMalformedToken", tok, err)
		}
		return info, false
	}
	if n := len(tok); n < len("sk_live_")+bodyChars || n > MaxTokenLen || !utf8.Valid(tok) {
		t.Fatalf("accepted %q of length %d", tok, n)
	}
	if !info.Type.Valid() || !info.Environment.Valid() {
		t.Fatalf("accepted %q as type %q, environment %q", tok, info.Type, info.Environment)
	}
	prefix, suffix, preview := Display(s, info)
	ws, rest, hasWS := strings.Cut(strings.TrimSuffix(prefix, info.Type.kindCode()+"_"+string(info.Environment)+"_"), "_")
	switch {
	case !strings.HasSuffix(prefix, info.Type.kindCode()+"_"+string(info.Environment)+"_"):
		t.Fatalf("%q: key_prefix %q does not end in kind and environment", tok, prefix)
	case hasWS && (rest != "" || !ValidWSPrefix(ws)), !hasWS && ws != "":
		t.Fatalf("%q: key_prefix %q has a bad workspace prefix", tok, prefix)
	case !strings.HasPrefix(s, prefix) || len(s)-len(prefix) != bodyChars:
		t.Fatalf("%q: key_prefix %q does not leave the 36-character body", tok, prefix)
	case suffix != s[len(s)-4:]:
		t.Fatalf("%q: key_suffix %q", tok, suffix)
	case preview != s[len(prefix):len(prefix)+4]+"…"+suffix:
		t.Fatalf("%q: preview %q", tok, preview)
	}
	for _, c := range tok[len(prefix):] {
		if base62Digits[c] < 0 {
			t.Fatalf("%q: body character %q is not base62", tok, c)
		}
	}
	full, _, err := TokenFromPlaintext(s)
	if err != nil || full.Plaintext != s || full.Hash != sha256.Sum256(tok) || full.Prefix != prefix || full.Suffix != suffix || full.Preview != preview {
		t.Fatalf("TokenFromPlaintext(%q) = %+v, %v", s, full, err)
	}
	// The parts a record stores are enough to show it again.
	if again, _, _ := TokenFromPlaintext(full.Plaintext); again != full {
		t.Fatalf("TokenFromPlaintext is not stable on %q", s)
	}
	return info, true
}

// TestExpiryIsExact: the slot's 4-byte expiry decides a verification
// exactly as the record's full time does, at and around the expiry's own
// second and for times the slot clamps (before 1970, after 2106, past what
// int64 nanoseconds hold).
func TestExpiryIsExact(t *testing.T) {
	for _, s := range []string{
		"2026-01-02T03:04:05Z", "2026-01-02T03:04:05.000000001Z", "2026-01-02T03:04:05.999999999Z",
		"2026-01-02T03:04:05.5+02:00", "1970-01-01T00:00:00Z", "1970-01-01T00:00:01Z", "1969-12-31T23:59:59.5Z",
		"1600-01-01T00:00:00Z", "2106-02-07T06:28:14Z", "2106-02-07T06:28:16Z", "2300-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
	} {
		exp, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		r := &Record{ID: "key_x", WorkspaceID: "w", Type: TypeSecret, Environment: EnvLive, Active: true, ExpiresAt: &exp}
		rec := AppendRecord(nil, r)
		var sl slot
		sl.setHot(hotFieldsOf(r, rec))
		if sl.expires == 0 {
			t.Fatalf("%s: no expiry in the slot", s)
		}
		expNs := readView(rec).expires.unixNano()
		for _, now := range []int64{expNs - 2e9, expNs - 1e9, expNs - 1, expNs, expNs + 1, expNs + 1e9, expNs + 2e9,
			time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC).UnixNano(), math.MinInt64 + 2e9, math.MaxInt64 - 2e9} {
			if now > expNs+2e9 && expNs > math.MaxInt64-2e9 || now < expNs-2e9 && expNs < math.MinInt64+2e9 {
				continue // the offsets above wrapped
			}
			if got, want := sl.expired(now, rec), now >= expNs; got != want {
				t.Errorf("expiry %s at %d ns: expired %v, want %v", s, now, got, want)
			}
		}
	}
	for s, want := range map[string]int64{ // the record's time, clamped
		"2300-01-01T00:00:00Z": math.MaxInt64,
		"1600-01-01T00:00:00Z": math.MinInt64,
		"1970-01-01T00:00:00Z": 1,
	} {
		exp, _ := time.Parse(time.RFC3339, s)
		rec := AppendRecord(nil, &Record{ID: "key_x", Type: TypeSecret, ExpiresAt: &exp})
		if got := readView(rec).expires.unixNano(); got != want {
			t.Errorf("%s: %d ns, want %d", s, got, want)
		}
	}
}

// TestWriteFuzzSeeds rewrites testdata/fuzz/FuzzParseToken with
// KEYRAFT_WRITE_SEEDS=1 (docs/testing.md).
func TestWriteFuzzSeeds(t *testing.T) {
	if !fuzzseed.Enabled() {
		t.Skip("set KEYRAFT_WRITE_SEEDS=1 to rewrite the seed corpus")
	}
	const target = "FuzzParseToken"
	if err := fuzzseed.Reset(target); err != nil {
		t.Fatal(err)
	}
	write := func(name string, tok string, fixSum bool, ws string, kind uint8, rnd []byte, pos uint16, repl uint8) {
		if err := fuzzseed.Write(target, name, []byte(tok), fixSum, ws, kind, rnd, pos, repl); err != nil {
			t.Fatal(err)
		}
	}
	rnd := make([]byte, 64)
	rand.Read(rnd)
	for i, c := range []struct {
		ws   string
		typ  KeyType
		env  Environment
		kind uint8
	}{{"", TypeSecret, EnvLive, 0}, {"acme", TypePublishable, EnvTest, 4}, {"abcdefghijkl", TypeAdmin, EnvLive, 2}, {"a1", TypeSecret, EnvTest, 3}} {
		tok := mustGenerate(t, c.ws, c.typ, c.env).Plaintext
		write("valid", tok, false, c.ws, c.kind, rnd[i:], uint16(i*7), 'x')
		write("valid-change-kind", tok, false, c.ws, c.kind, rnd, uint16(len(c.ws)), 'p')
		write("valid-last-byte", tok, false, "", c.kind, nil, uint16(len(tok)-1), '0')
	}
	body := strings.Repeat("aB3", 10)
	for name, tok := range map[string]string{
		"empty":          "",
		"short":          "sk_live_",
		"long":           "abcdefghijklm_sk_live_" + body + "000000",
		"bad-kind":       "xk_live_" + body + "000000",
		"bad-env":        "sk_prod_" + body + "000000",
		"upper-ws":       "Acme_sk_live_" + body + "000000",
		"no-underscore":  "acmesk_live_" + body + "000000",
		"double-ws":      "a_b_sk_live_" + body + "000000",
		"empty-ws":       "_sk_live_" + body + "000000",
		"non-base62":     "sk_live_" + body[:29] + "-" + "000000",
		"high-bytes":     "sk_live_" + strings.Repeat("\xff", 36),
		"utf8":           "sk_live_" + strings.Repeat("é", 18),
		"max-checksum":   "sk_live_" + body + "zzzzzz",
		"legacy-foreign": "ghp_" + body + "abcdef",
	} {
		write(name, tok, false, "", 0, nil, 0, 0)
		write(name+"-fixsum", tok, true, "", 0, nil, 0, 0)
	}
	write("bad-ws-for-generate", "", false, "Bad_WS", 1, nil, 0, 0)
	write("long-ws-for-generate", "", false, "abcdefghijklm", 1, nil, 0, 0)
	write("rejection-sampling", "", false, "ws", 5, bytes.Repeat([]byte{0xff, 0xf8, 0xf7}, 40), 3, '_')
}
