package keyindex

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	mrand "math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

var allTypes = []struct {
	typ  KeyType
	kind string
}{
	{TypeSecret, "sk"},
	{TypePublishable, "pk"},
	{TypeAdmin, "rk"},
}

var allEnvs = []Environment{EnvLive, EnvTest}

func mustGenerate(t testing.TB, ws string, typ KeyType, env Environment) Token {
	t.Helper()
	tok, err := GenerateToken(rand.Reader, ws, typ, env)
	if err != nil {
		t.Fatalf("GenerateToken(%q, %q, %q): %v", ws, typ, env, err)
	}
	return tok
}

func TestGenerateTokenAllShapes(t *testing.T) {
	for _, tt := range allTypes {
		for _, env := range allEnvs {
			for _, ws := range []string{"", "acme", "a", "abcdefghijkl", "0ws9"} {
				name := string(tt.typ) + "/" + string(env) + "/" + ws
				t.Run(name, func(t *testing.T) {
					tok := mustGenerate(t, ws, tt.typ, env)
					wantPrefix := tt.kind + "_" + string(env) + "_"
					if ws != "" {
						wantPrefix = ws + "_" + wantPrefix
					}
					p := tok.Plaintext
					if !strings.HasPrefix(p, wantPrefix) {
						t.Fatalf("token %q does not start with %q", p, wantPrefix)
					}
					if got, want := len(p), len(wantPrefix)+bodyChars; got != want {
						t.Fatalf("len(%q) = %d, want %d", p, got, want)
					}
					if len(p) > MaxTokenLen {
						t.Fatalf("len %d > MaxTokenLen %d", len(p), MaxTokenLen)
					}
					body := p[len(wantPrefix):]
					for i := 0; i < len(body); i++ {
						if !strings.ContainsRune(base62Alphabet, rune(body[i])) {
							t.Fatalf("body %q has non-base62 byte %q", body, body[i])
						}
					}
					info, err := ParseToken([]byte(p))
					if err != nil {
						t.Fatalf("ParseToken(%q): %v", p, err)
					}
					if info.Type != tt.typ || info.Environment != env {
						t.Fatalf("ParseToken = %v/%v, want %v/%v", info.Type, info.Environment, tt.typ, env)
					}
					prefix, suffix, preview := Display(p, info)
					wantSuffix := p[len(p)-4:]
					wantPreview := body[:4] + "…" + wantSuffix
					if prefix != wantPrefix || suffix != wantSuffix || preview != wantPreview {
						t.Fatalf("Display = %q %q %q, want %q %q %q", prefix, suffix, preview, wantPrefix, wantSuffix, wantPreview)
					}
					if tok.Prefix != wantPrefix || tok.Suffix != wantSuffix || tok.Preview != wantPreview {
						t.Fatalf("Token display fields = %q %q %q, want %q %q %q",
							tok.Prefix, tok.Suffix, tok.Preview, wantPrefix, wantSuffix, wantPreview)
					}
					if tok.Hash != Hash(sha256.Sum256([]byte(p))) {
						t.Fatalf("Token.Hash is not sha256 of the plaintext")
					}
					if HashToken([]byte(p)) != tok.Hash {
						t.Fatalf("HashToken differs from Token.Hash")
					}
					if tok.Hash.IsZero() {
						t.Fatalf("hash is zero")
					}
					// The checksum is the CRC-32 of everything before it, in 6 base62 chars.
					var v uint64
					for i := len(p) - checksumChars; i < len(p); i++ {
						v = v*62 + uint64(strings.IndexByte(base62Alphabet, p[i]))
					}
					if v != uint64(crc32.ChecksumIEEE([]byte(p[:len(p)-checksumChars]))) {
						t.Fatalf("checksum of %q is not the CRC-32 of its head", p)
					}
				})
			}
		}
	}
}

func TestDisplayExamples(t *testing.T) {
	for _, tc := range []struct {
		ws, wantPrefix string
		typ            KeyType
		env            Environment
	}{
		{"acme", "acme_sk_live_", TypeSecret, EnvLive},
		{"", "sk_live_", TypeSecret, EnvLive},
		{"", "pk_test_", TypePublishable, EnvTest},
		{"acme", "acme_rk_test_", TypeAdmin, EnvTest},
	} {
		tok := mustGenerate(t, tc.ws, tc.typ, tc.env)
		if tok.Prefix != tc.wantPrefix {
			t.Errorf("prefix = %q, want %q", tok.Prefix, tc.wantPrefix)
		}
		if len(tok.Suffix) != 4 || !strings.HasSuffix(tok.Plaintext, tok.Suffix) {
			t.Errorf("suffix %q is not the last 4 characters of %q", tok.Suffix, tok.Plaintext)
		}
		if !strings.HasPrefix(tok.Preview, tok.Plaintext[len(tc.wantPrefix):len(tc.wantPrefix)+4]+"…") {
			t.Errorf("preview %q", tok.Preview)
		}
		if strings.Contains(tok.Preview, tok.Plaintext[len(tc.wantPrefix):]) {
			t.Errorf("preview leaks the body")
		}
	}
}

func TestGenerateTokenUnique(t *testing.T) {
	const n = 100_000
	seen := make(map[string]struct{}, n)
	hashes := make(map[Hash]struct{}, n)
	for i := 0; i < n; i++ {
		tok, err := GenerateToken(rand.Reader, "", TypeSecret, EnvLive)
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := seen[tok.Plaintext]; dup {
			t.Fatalf("duplicate token after %d: %q", i, tok.Plaintext)
		}
		seen[tok.Plaintext] = struct{}{}
		hashes[tok.Hash] = struct{}{}
	}
	if len(hashes) != n {
		t.Fatalf("%d distinct hashes for %d tokens", len(hashes), n)
	}
}

// Every single-byte change of a valid token must be rejected: the CRC-32
// covers the whole head (ws prefix, kind, env, random part) and detects every
// single-byte error, and the checksum characters encode it uniquely.
func TestParseTokenRejectsEverySingleByteChange(t *testing.T) {
	extra := []byte{'-', '_', ' ', '.', '+', '/', '=', 0, 0xC3, 0xA9, 0xE9, 0xFF}
	for _, tc := range []struct {
		ws  string
		typ KeyType
		env Environment
	}{
		{"", TypeSecret, EnvLive},
		{"acme", TypePublishable, EnvTest},
		{"abcdefghijkl", TypeAdmin, EnvLive},
		{"x", TypeSecret, EnvTest},
	} {
		for rep := 0; rep < 3; rep++ {
			tok := []byte(mustGenerate(t, tc.ws, tc.typ, tc.env).Plaintext)
			if _, err := ParseToken(tok); err != nil {
				t.Fatalf("ParseToken(%q): %v", tok, err)
			}
			mut := make([]byte, len(tok))
			for i := range tok {
				try := func(c byte) {
					if c == tok[i] {
						return
					}
					copy(mut, tok)
					mut[i] = c
					if info, err := ParseToken(mut); err == nil {
						t.Fatalf("ParseToken accepted %q (byte %d of %q changed to %q): %+v", mut, i, tok, c, info)
					} else if !errors.Is(err, ErrMalformedToken) {
						t.Fatalf("error %v is not ErrMalformedToken", err)
					}
				}
				for j := 0; j < len(base62Alphabet); j++ {
					try(base62Alphabet[j])
				}
				for _, c := range extra {
					try(c)
				}
			}
			// Multi-byte 'é' in place of one character changes the length too.
			for i := range tok {
				m := append(append(append([]byte{}, tok[:i]...), "é"...), tok[i+1:]...)
				if _, err := ParseToken(m); err == nil {
					t.Fatalf("ParseToken accepted %q", m)
				}
			}
		}
	}
}

// reChecksum replaces the last 6 characters with the correct checksum, to
// build tokens that are wrong only in shape.
func reChecksum(head string) string {
	sum := crc32.ChecksumIEEE([]byte(head))
	var cs [checksumChars]byte
	for i := checksumChars - 1; i >= 0; i-- {
		cs[i] = base62Alphabet[sum%62]
		sum /= 62
	}
	return head + string(cs[:])
}

func TestParseTokenRejects(t *testing.T) {
	rnd30 := strings.Repeat("aB3", 10) // 30 base62 characters
	valid := reChecksum("sk_live_" + rnd30)
	if _, err := ParseToken([]byte(valid)); err != nil {
		t.Fatalf("helper-built token %q does not parse: %v", valid, err)
	}
	good := mustGenerate(t, "acme", TypeSecret, EnvLive).Plaintext
	for _, tc := range []struct {
		name, tok string
	}{
		{"empty", ""},
		{"underscore only", "_"},
		{"wrong kind xk", reChecksum("xk_live_" + rnd30)},
		{"wrong kind uppercase", reChecksum("SK_live_" + rnd30)},
		{"wrong env prod", reChecksum("sk_prod_" + rnd30)},
		{"wrong env prd", reChecksum("sk_prd_" + rnd30)},
		{"wrong env liv3", reChecksum("sk_liv3_" + rnd30)},
		{"env uppercase", reChecksum("sk_LIVE_" + rnd30)},
		{"too short body", reChecksum("sk_live_" + rnd30[:29])},
		{"too long body", reChecksum("sk_live_" + rnd30 + "a")},
		{"too long overall", reChecksum("abcdefghijkl_sk_live_" + rnd30 + "a")},
		{"just the prefix", "sk_live_"},
		{"ws prefix 13 chars", reChecksum("abcdefghijklm_sk_live_" + rnd30)},
		{"ws prefix uppercase", reChecksum("Acme_sk_live_" + rnd30)},
		{"ws prefix all uppercase", reChecksum("ACME_sk_live_" + rnd30)},
		{"ws prefix with dash", reChecksum("ac-me_sk_live_" + rnd30)},
		{"ws prefix empty", reChecksum("_sk_live_" + rnd30)},
		{"ws prefix double underscore", reChecksum("acme__sk_live_" + rnd30)},
		{"missing underscore after kind", reChecksum("sklive_" + rnd30 + "x")},
		{"missing underscore after env", reChecksum("sk_live" + rnd30 + "x")},
		{"missing underscores", reChecksum("sklive" + rnd30 + "xy")},
		{"missing underscore after ws", reChecksum("acmesk_live_" + rnd30)},
		{"dash instead of underscore", reChecksum("sk-live-" + rnd30)},
		{"non-base62 in body", reChecksum("sk_live_" + rnd30[:10] + "-" + rnd30[11:])},
		{"underscore in body", reChecksum("sk_live_" + rnd30[:10] + "_" + rnd30[11:])},
		{"space in body", reChecksum("sk_live_" + rnd30[:10] + " " + rnd30[11:])},
		{"non-base62 in checksum", valid[:len(valid)-1] + "-"},
		{"wrong checksum", valid[:len(valid)-6] + "000000"},
		{"checksum of other token", good[:len(good)-6] + valid[len(valid)-6:]},
		{"leading space", " " + valid},
		{"trailing space", valid + " "},
		{"trailing newline", valid + "\n"},
		{"bearer prefix", "Bearer " + valid},
		{"too long garbage", strings.Repeat("a", MaxTokenLen+1)},
		{"valid length garbage", strings.Repeat("a", 44)},
		{"body without head", reChecksum(rnd30 + "abcdefgh")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info, err := ParseToken([]byte(tc.tok))
			if err == nil {
				t.Fatalf("ParseToken(%q) accepted: %+v", tc.tok, info)
			}
			if !errors.Is(err, ErrMalformedToken) {
				t.Fatalf("err = %v, want ErrMalformedToken", err)
			}
		})
	}
	// nil is rejected too.
	if _, err := ParseToken(nil); err == nil {
		t.Fatal("ParseToken(nil) accepted")
	}
}

func TestParseTokenAcceptsHandBuilt(t *testing.T) {
	rnd30 := strings.Repeat("Zz9", 10)
	for _, tc := range []struct {
		head string
		typ  KeyType
		env  Environment
	}{
		{"sk_live_", TypeSecret, EnvLive},
		{"pk_test_", TypePublishable, EnvTest},
		{"rk_live_", TypeAdmin, EnvLive},
		{"a_sk_test_", TypeSecret, EnvTest},
		{"abcdefghijkl_pk_live_", TypePublishable, EnvLive},
		{"123_rk_test_", TypeAdmin, EnvTest},
	} {
		tok := reChecksum(tc.head + rnd30)
		info, err := ParseToken([]byte(tok))
		if err != nil {
			t.Fatalf("ParseToken(%q): %v", tok, err)
		}
		if info.Type != tc.typ || info.Environment != tc.env {
			t.Fatalf("ParseToken(%q) = %v/%v", tok, info.Type, info.Environment)
		}
		if p, _, _ := Display(tok, info); p != tc.head {
			t.Fatalf("prefix = %q, want %q", p, tc.head)
		}
	}
}

// constReader returns the same byte forever.
type constReader byte

func (c constReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(c)
	}
	return len(p), nil
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("entropy pool on fire") }

// countingReader yields 0,1,2,... (mod 256): a deterministic stream that
// includes bytes >= 248, which must be skipped.
type countingReader struct{ n byte }

func (c *countingReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = c.n
		c.n++
	}
	return len(p), nil
}

func TestGenerateTokenDeterministicReader(t *testing.T) {
	tok, err := GenerateToken(constReader(0), "acme", TypeSecret, EnvLive)
	if err != nil {
		t.Fatal(err)
	}
	if want := "acme_sk_live_" + strings.Repeat("0", 30); !strings.HasPrefix(tok.Plaintext, want) {
		t.Fatalf("token = %q, want prefix %q", tok.Plaintext, want)
	}
	if _, err := ParseToken([]byte(tok.Plaintext)); err != nil {
		t.Fatalf("deterministic token does not parse: %v", err)
	}
	again, _ := GenerateToken(constReader(0), "acme", TypeSecret, EnvLive)
	if again != tok {
		t.Fatalf("same reader, different tokens: %q vs %q", tok.Plaintext, again.Plaintext)
	}
	// byte 61 -> 'z', byte 62 -> '0' (62 % 62), byte 247 -> 247%62 = 61 -> 'z'.
	for b, want := range map[byte]byte{61: 'z', 62: '0', 247: 'z', 100: base62Alphabet[100%62]} {
		tok, err := GenerateToken(constReader(b), "", TypePublishable, EnvTest)
		if err != nil {
			t.Fatal(err)
		}
		if body := tok.Plaintext[len("pk_test_"):][:randomChars]; body != strings.Repeat(string(want), randomChars) {
			t.Fatalf("reader byte %d: random part %q", b, body)
		}
	}
	// Bytes >= 248 are rejected (uniformity), not folded in.
	cr := &countingReader{n: 240}
	tok, err = GenerateToken(cr, "", TypeAdmin, EnvLive)
	if err != nil {
		t.Fatal(err)
	}
	// 240..247 -> 8 chars, 248..255 skipped, then 0..21.
	var want []byte
	for b := 240; b < 248; b++ {
		want = append(want, base62Alphabet[b%62])
	}
	for b := 0; len(want) < randomChars; b++ {
		want = append(want, base62Alphabet[b])
	}
	if got := tok.Plaintext[len("rk_live_"):][:randomChars]; got != string(want) {
		t.Fatalf("random part %q, want %q", got, want)
	}
	if _, err := ParseToken([]byte(tok.Plaintext)); err != nil {
		t.Fatal(err)
	}
}

func TestGenerateTokenErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		rnd  io.Reader
		ws   string
		typ  KeyType
		env  Environment
	}{
		{"ws too long", rand.Reader, "abcdefghijklm", TypeSecret, EnvLive},
		{"ws uppercase", rand.Reader, "Acme", TypeSecret, EnvLive},
		{"ws underscore", rand.Reader, "ac_me", TypeSecret, EnvLive},
		{"ws dash", rand.Reader, "ac-me", TypeSecret, EnvLive},
		{"ws space", rand.Reader, "ac me", TypeSecret, EnvLive},
		{"ws non-ascii", rand.Reader, "acmé", TypeSecret, EnvLive},
		{"bad type", rand.Reader, "", KeyType("root"), EnvLive},
		{"empty type", rand.Reader, "", "", EnvLive},
		{"kind code as type", rand.Reader, "", KeyType("sk"), EnvLive},
		{"bad env", rand.Reader, "", TypeSecret, Environment("prod")},
		{"empty env", rand.Reader, "", TypeSecret, ""},
		{"reader error", errReader{}, "", TypeSecret, EnvLive},
		{"reader short", bytes.NewReader(make([]byte, 10)), "", TypeSecret, EnvLive},
		{"reader empty", bytes.NewReader(nil), "acme", TypeAdmin, EnvTest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := GenerateToken(tc.rnd, tc.ws, tc.typ, tc.env)
			if err == nil {
				t.Fatalf("GenerateToken succeeded: %q", tok.Plaintext)
			}
			if tok != (Token{}) {
				t.Fatalf("non-zero token on error: %+v", tok)
			}
		})
	}
}

func TestValidWSPrefix(t *testing.T) {
	for p, want := range map[string]bool{
		"a": true, "acme": true, "abcdefghijkl": true, "0": true, "a1b2": true,
		"": false, "abcdefghijklm": false, "Acme": false, "a_b": false, "a-b": false, "a b": false, "é": false,
	} {
		if got := ValidWSPrefix(p); got != want {
			t.Errorf("ValidWSPrefix(%q) = %v, want %v", p, got, want)
		}
	}
}

func TestKeyTypeAndEnvValid(t *testing.T) {
	for _, tt := range allTypes {
		if !tt.typ.Valid() {
			t.Errorf("%q not valid", tt.typ)
		}
	}
	for _, bad := range []KeyType{"", "sk", "Secret", "root"} {
		if bad.Valid() {
			t.Errorf("%q valid", bad)
		}
	}
	for _, e := range allEnvs {
		if !e.Valid() {
			t.Errorf("%q not valid", e)
		}
	}
	for _, bad := range []Environment{"", "prod", "Live", "TEST"} {
		if bad.Valid() {
			t.Errorf("%q valid", bad)
		}
	}
}

func TestHashText(t *testing.T) {
	h := HashToken([]byte("sk_live_whatever"))
	b, err := h.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 64 || strings.ToLower(string(b)) != string(b) {
		t.Fatalf("MarshalText = %q, want 64 lowercase hex chars", b)
	}
	sum := sha256.Sum256([]byte("sk_live_whatever"))
	if want := []byte(strings.ToLower(hexString(sum[:]))); !bytes.Equal(b, want) {
		t.Fatalf("MarshalText = %s, want %s", b, want)
	}
	var back Hash
	if err := back.UnmarshalText(b); err != nil {
		t.Fatal(err)
	}
	if back != h {
		t.Fatal("round trip changed the hash")
	}
	// Uppercase hex is still hex.
	var up Hash
	if err := up.UnmarshalText(bytes.ToUpper(b)); err != nil || up != h {
		t.Fatalf("uppercase hex: %v", err)
	}
	var zero Hash
	if !zero.IsZero() || h.IsZero() {
		t.Fatal("IsZero wrong")
	}
	for _, bad := range []string{
		"",
		string(b[:63]),
		string(b) + "0",
		string(b[:62]) + "zz",
		string(b[:63]) + "g",
		strings.Repeat(" ", 64),
		"0x" + string(b[:62]),
	} {
		var x Hash
		if err := x.UnmarshalText([]byte(bad)); err == nil {
			t.Errorf("UnmarshalText(%q) accepted", bad)
		}
	}
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// parseTokenReference is ParseToken as it was before it was tuned
// (straightforward loops, string switches, hash/crc32): the oracle the
// differential tests hold the fast version to. It shares no table or helper
// with the code under test: it searches base62Alphabet rather than using
// base62Digits, and checks a workspace prefix with a regular expression. On refusal it may
// leave fields of its TokenInfo set; only ParseToken's is checked to be
// zero then. Keep it simple, not fast.
func parseTokenReference(tok []byte) (TokenInfo, error) {
	var info TokenInfo
	n := len(tok)
	if n < len("sk_live_")+bodyChars || n > MaxTokenLen {
		return info, ErrMalformedToken
	}
	body := tok[n-bodyChars:]
	head := tok[:n-bodyChars] // "[ws_]kind_env_"
	if head[len(head)-1] != '_' {
		return info, ErrMalformedToken
	}
	start := 0
	// head is either "kind_env_" or "ws_kind_env_".
	switch {
	case len(head) == len("sk_live_"):
	case len(head) >= len("a_sk_live_"):
		ws := head[:len(head)-len("sk_live_")]
		if ws[len(ws)-1] != '_' || !referenceWSPrefix.Match(ws[:len(ws)-1]) {
			return info, ErrMalformedToken
		}
		start = len(ws)
	default:
		return info, ErrMalformedToken
	}
	kind, env := head[start:start+2], head[start+3:start+7]
	if head[start+2] != '_' {
		return info, ErrMalformedToken
	}
	var kindOK, envOK bool
	info.Type, kindOK = referenceKinds[string(kind)]
	info.Environment, envOK = referenceEnvs[string(env)]
	if !kindOK || !envOK {
		return info, ErrMalformedToken
	}
	for _, c := range body {
		if strings.IndexByte(base62Alphabet, c) < 0 {
			return info, ErrMalformedToken
		}
	}
	var want uint64
	for _, c := range body[randomChars:] {
		want = want*62 + uint64(strings.IndexByte(base62Alphabet, c))
	}
	if want != uint64(crc32.ChecksumIEEE(tok[:n-checksumChars])) {
		return info, ErrMalformedToken
	}
	info.prefixLen = len(head)
	return info, nil
}

var (
	referenceWSPrefix = regexp.MustCompile(`^[a-z0-9]{1,12}$`)
	referenceKinds    = map[string]KeyType{"sk": TypeSecret, "pk": TypePublishable, "rk": TypeAdmin}
	referenceEnvs     = map[string]Environment{"live": EnvLive, "test": EnvTest}
)

// checkAgainstReference fails unless ParseToken and parseTokenReference
// give the same answer for tok, and reports whether tok was accepted.
func checkAgainstReference(t testing.TB, tok []byte) bool {
	t.Helper()
	want, wantErr := parseTokenReference(tok)
	got, err := ParseToken(tok)
	if (err == nil) != (wantErr == nil) {
		t.Fatalf("ParseToken(%q) error %v, reference %v", tok, err, wantErr)
	}
	if err != nil {
		if err != ErrMalformedToken {
			t.Fatalf("ParseToken(%q): error %v, want ErrMalformedToken", tok, err)
		}
		if got != (TokenInfo{}) {
			t.Fatalf("ParseToken(%q) rejected it but returned %+v", tok, got)
		}
		return false
	}
	if got != want {
		t.Fatalf("ParseToken(%q) = %+v, reference %+v", tok, got, want)
	}
	return true
}

// checkAgainstReferenceFixed also checks tok with its last 6 bytes replaced
// by the right checksum, so that the checks behind the checksum are reached.
func checkAgainstReferenceFixed(t testing.TB, tok []byte) (accepted int) {
	t.Helper()
	if checkAgainstReference(t, tok) {
		accepted++
	}
	if len(tok) >= checksumChars {
		if checkAgainstReference(t, []byte(reChecksum(string(tok[:len(tok)-checksumChars])))) {
			accepted++
		}
	}
	return accepted
}

const wsAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

func randString(r *mrand.Rand, alphabet string, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[r.IntN(len(alphabet))]
	}
	return string(b)
}

// differentialTokens are well-formed tokens of every shape: workspace
// prefixes of 0..12 characters (and 13, one too many), every kind and
// environment.
func differentialTokens(r *mrand.Rand) []string {
	var toks []string
	for wsLen := 0; wsLen <= maxWSPrefix+1; wsLen++ {
		for _, tt := range allTypes {
			for _, env := range allEnvs {
				head := tt.kind + "_" + string(env) + "_"
				if wsLen > 0 {
					head = randString(r, wsAlphabet, wsLen) + "_" + head
				}
				toks = append(toks, reChecksum(head+randString(r, base62Alphabet, randomChars)))
			}
		}
	}
	return toks
}

// Every well-formed shape, and every change of one byte to any of the 256
// values (with the checksum as is, and recomputed), every truncation and
// extension, every deleted and inserted byte: ParseToken answers as the
// reference does.
func TestParseTokenMatchesReferenceOnMutations(t *testing.T) {
	r := mrand.New(mrand.NewPCG(3, 4))
	accepted := 0
	for _, s := range differentialTokens(r) {
		tok := []byte(s)
		wsLen := len(tok) - len("sk_live_") - bodyChars - 1
		if ok := checkAgainstReference(t, tok); ok != (wsLen <= maxWSPrefix) {
			t.Fatalf("%q accepted: %v", tok, ok)
		}
		mut := make([]byte, len(tok))
		for i := range tok {
			for c := range 256 {
				copy(mut, tok)
				mut[i] = byte(c)
				accepted += checkAgainstReferenceFixed(t, mut)
			}
		}
		for n := 0; n <= len(tok)+3; n++ {
			short := append([]byte{}, tok[:min(n, len(tok))]...)
			for len(short) < n {
				short = append(short, base62Alphabet[r.IntN(62)])
			}
			accepted += checkAgainstReferenceFixed(t, short)
		}
		for i := 0; i <= len(tok); i++ {
			if i < len(tok) {
				accepted += checkAgainstReferenceFixed(t, append(append([]byte{}, tok[:i]...), tok[i+1:]...))
			}
			for _, c := range []byte{'a', 'Z', '0', '_', '-', 0x80, 0xff} {
				accepted += checkAgainstReferenceFixed(t, append(append(append([]byte{}, tok[:i]...), c), tok[i:]...))
			}
		}
	}
	if accepted < 1000 {
		t.Fatalf("only %d mutated tokens were accepted: the shape checks behind the checksum are hardly reached", accepted)
	}
}

// tokenPieces are, for each part of a token, the well-formed values and
// near misses, for TestParseTokenMatchesReferenceOnRandomTokens to put
// together.
var tokenPieces = struct {
	ws, sep, kind, env [2][]string // [0]: well-formed, [1]: near misses
}{
	ws: [2][]string{
		{"", "", "a", "acme", "abcdefghijkl", "0", "9z"},
		{"abcdefghijklm", "A", "ac-me", "ac_me", "é", "\x00", "\xff", "_", "ACME", "a b", "\xe1cme"},
	},
	sep: [2][]string{{"_"}, {"", "-", "__", " ", "\x00", "\xdf", "_\x00"}},
	kind: [2][]string{
		{"sk", "pk", "rk"},
		{"xk", "SK", "Sk", "sK", "s", "skk", "ok", "qk", "tk", "k", "", "_k", "s\x00", "\xf3k", "sk_live"},
	},
	env: [2][]string{
		{"live", "test"},
		{"Live", "TEST", "prod", "liv", "lives", "tes", "tests", "live_", "liv3", "lIve", "\xecive", "tesu", "lve_", ""},
	},
}

// Random tokens put together from well-formed parts and near misses, random
// bytes and random base62 bodies of random lengths, each with its checksum
// as is and recomputed: ParseToken answers as the reference does.
func TestParseTokenMatchesReferenceOnRandomTokens(t *testing.T) {
	r := mrand.New(mrand.NewPCG(5, 6))
	// pick is well-formed four times out of five.
	pick := func(s [2][]string) string {
		if r.IntN(5) == 0 {
			return s[1][r.IntN(len(s[1]))]
		}
		return s[0][r.IntN(len(s[0]))]
	}
	n := 200_000
	if testing.Short() {
		n = 20_000
	}
	accepted := 0
	for range n {
		var tok string
		switch r.IntN(5) {
		case 0: // random bytes of any length, mostly from the token alphabets
			alphabet := []string{base62Alphabet + "_", wsAlphabet + "_skpliveest", "\x00\x7f\x80\xff_0aA"}[r.IntN(3)]
			tok = randString(r, alphabet, r.IntN(MaxTokenLen+8))
		default:
			ws := pick(tokenPieces.ws)
			if r.IntN(4) == 0 {
				ws = randString(r, wsAlphabet, r.IntN(maxWSPrefix+3))
			}
			if ws != "" {
				ws += pick(tokenPieces.sep)
			}
			bodyLen := bodyChars
			if r.IntN(5) == 0 {
				bodyLen += r.IntN(5) - 2
			}
			body := []byte(randString(r, base62Alphabet, bodyLen))
			if r.IntN(5) == 0 && len(body) > 0 {
				body[r.IntN(len(body))] = byte(r.Uint32())
			}
			tok = ws + pick(tokenPieces.kind) + pick(tokenPieces.sep) + pick(tokenPieces.env) + pick(tokenPieces.sep) + string(body)
		}
		accepted += checkAgainstReferenceFixed(t, []byte(tok))
	}
	if accepted < n/20 {
		t.Fatalf("only %d of %d random tokens were accepted", accepted, 2*n)
	}
}

// Each of the 256 byte values at each body position, and each pair of
// values in neighbouring positions (the word-at-a-time check must not let a
// byte >= 0x80 carry into its neighbour's verdict): allBase62 agrees with
// the alphabet.
func TestAllBase62(t *testing.T) {
	isBase62 := func(c byte) bool { return strings.IndexByte(base62Alphabet, c) >= 0 }
	var body [bodyChars]byte
	fill := func() {
		for i := range body {
			body[i] = base62Alphabet[(i*7)%62]
		}
	}
	fill()
	if !allBase62(&body) {
		t.Fatalf("%q refused", body)
	}
	for i := range body {
		for c := range 256 {
			fill()
			body[i] = byte(c)
			if got := allBase62(&body); got != isBase62(byte(c)) {
				t.Fatalf("allBase62(%q) = %v", body, got)
			}
		}
	}
	for _, i := range []int{0, 3, 6, 7, 8, 15, 23, 27, 28, 31, bodyChars - 2} {
		for c := range 256 {
			for d := range 256 {
				fill()
				body[i], body[i+1] = byte(c), byte(d)
				if got := allBase62(&body); got != (isBase62(byte(c)) && isBase62(byte(d))) {
					t.Fatalf("allBase62(%q) = %v", body, got)
				}
			}
		}
	}
}

// parseKindEnv finds the six "kind_env_" words, and nothing else among
// their one-byte changes or random words.
func TestParseKindEnv(t *testing.T) {
	found := 0
	for _, tt := range allTypes {
		for _, env := range allEnvs {
			s := tt.kind + "_" + string(env) + "_"
			w := binary.LittleEndian.Uint64([]byte(s))
			ke := parseKindEnv(w)
			if ke == nil || ke.typ != tt.typ || ke.env != env {
				t.Fatalf("parseKindEnv(%q) = %+v", s, ke)
			}
			found++
			for i := 0; i < 64; i++ {
				// s, r and p are one bit apart: some flips make another head.
				flipped := make([]byte, 8)
				binary.LittleEndian.PutUint64(flipped, w^1<<i)
				want := strings.Contains("sk_live_ pk_live_ rk_live_ sk_test_ pk_test_ rk_test_", string(flipped))
				if ke := parseKindEnv(w ^ 1<<i); (ke != nil) != want || ke != nil && ke.word != w^1<<i {
					t.Fatalf("parseKindEnv(%q) = %+v", flipped, ke)
				}
			}
		}
	}
	if found != 6 {
		t.Fatal(found)
	}
	r := mrand.New(mrand.NewPCG(7, 8))
	for range 100_000 {
		if ke := parseKindEnv(r.Uint64()); ke != nil {
			t.Fatalf("random word parsed as %+v", ke)
		}
	}
	if parseKindEnv(0) != nil {
		t.Fatal("zero word parsed")
	}
}

// FuzzTokenDifferential: ParseToken agrees with parseTokenReference on any
// input (with fixSum, its last 6 bytes are first replaced by the right
// checksum, so that the checks behind the checksum are explored too). Its
// name does not contain "FuzzParseToken" on purpose: "go test -fuzz
// FuzzParseToken" must keep matching one target.
func FuzzTokenDifferential(f *testing.F) {
	r := mrand.New(mrand.NewPCG(9, 10))
	for _, s := range differentialTokens(r) {
		f.Add([]byte(s), false)
	}
	f.Add([]byte("sk_live_"+strings.Repeat("\xff", bodyChars)), true)
	f.Add([]byte("acme__sk_live_"+strings.Repeat("a", bodyChars)), true)
	f.Add([]byte(""), false)
	f.Fuzz(func(t *testing.T, tok []byte, fixSum bool) {
		if fixSum && len(tok) >= checksumChars {
			tok = []byte(reChecksum(string(tok[:len(tok)-checksumChars])))
		}
		checkAgainstReference(t, tok)
	})
}
