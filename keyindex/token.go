package keyindex

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Token layout (spec §1): [ws_prefix "_"] kind "_" env "_" body, where body is
// 30 random base62 characters followed by 6 base62 characters holding the
// CRC-32 (IEEE) of every byte before them. The checksum lets a mistyped or
// made-up token be refused without touching the index, and lets secret
// scanners recognise real tokens.
const (
	randomChars   = 30
	checksumChars = 6
	bodyChars     = randomChars + checksumChars
	maxWSPrefix   = 12
	// MaxTokenLen is the longest well-formed token: "abcdefghijkl_sk_live_" + body.
	MaxTokenLen = maxWSPrefix + 1 + len("sk_live_") + bodyChars
)

const base62Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// KeyType is what a key may be used for.
type KeyType string

const (
	TypeSecret      KeyType = "secret"
	TypePublishable KeyType = "publishable"
	TypeAdmin       KeyType = "admin"
)

// Environment separates live keys from test keys.
type Environment string

const (
	EnvLive Environment = "live"
	EnvTest Environment = "test"
)

// kindCode is the two-letter kind used in tokens.
func (t KeyType) kindCode() string {
	switch t {
	case TypeSecret:
		return "sk"
	case TypePublishable:
		return "pk"
	case TypeAdmin:
		return "rk"
	}
	return ""
}

// Valid reports whether t is one of the three key types.
func (t KeyType) Valid() bool { return t.kindCode() != "" }

// Valid reports whether e is live or test.
func (e Environment) Valid() bool { return e == EnvLive || e == EnvTest }

// Hash is SHA-256 of a token: the only form in which a token is stored.
type Hash [32]byte

// HashToken returns SHA-256(token).
func HashToken(token []byte) Hash { return sha256.Sum256(token) }

// MarshalText encodes the hash as lowercase hex (used by snapshots and commands).
func (h Hash) MarshalText() ([]byte, error) {
	out := make([]byte, hex.EncodedLen(len(h)))
	hex.Encode(out, h[:])
	return out, nil
}

// UnmarshalText decodes 64 hex characters.
func (h *Hash) UnmarshalText(b []byte) error {
	if len(b) != 2*len(h) {
		return errors.New("hash must be 64 hex characters")
	}
	_, err := hex.Decode(h[:], b)
	return err
}

// IsZero reports whether h is unset.
func (h Hash) IsZero() bool { return h == Hash{} }

// TokenInfo is what a well-formed token says about itself.
type TokenInfo struct {
	Type        KeyType
	Environment Environment
	// prefixLen is the length of key_prefix: everything up to and including "env_".
	prefixLen int
}

// ErrMalformedToken is returned for any token with the wrong shape or checksum.
var ErrMalformedToken = errors.New("malformed key")

// tokenLenOK reports whether a well-formed token can be n bytes long.
func tokenLenOK(n int) bool { return n >= len("sk_live_")+bodyChars && n <= MaxTokenLen }

// ParseToken checks shape and checksum without allocating. It never looks
// anything up: a token it accepts may still be unknown.
//
// A refused token gets the zero TokenInfo. ParseToken is on the path of
// every verification, so it reads words rather than bytes where it can and
// computes the CRC with its own tables (crc.go); parseTokenReference in
// token_test.go is the plain version it must agree with on every input.
func ParseToken(tok []byte) (TokenInfo, error) {
	n := len(tok)
	if !tokenLenOK(n) {
		return TokenInfo{}, ErrMalformedToken
	}
	headLen := n - bodyChars // "[ws_]kind_env_"
	// The head ends in "kind_env_"; in front of it is nothing or "ws_".
	ke := parseKindEnv(binary.LittleEndian.Uint64(tok[headLen-8 : headLen]))
	if ke == nil {
		return TokenInfo{}, ErrMalformedToken
	}
	if headLen > len("sk_live_") {
		// "ws_". A 9-byte head leaves "_" alone here, an empty prefix that
		// validWSPrefix refuses; MaxTokenLen keeps the prefix to 12.
		ws := tok[:headLen-len("sk_live_")]
		if ws[len(ws)-1] != '_' || !validWSPrefix(ws[:len(ws)-1]) {
			return TokenInfo{}, ErrMalformedToken
		}
	}
	body := (*[bodyChars]byte)(tok[headLen:])
	if !allBase62(body) {
		return TokenInfo{}, ErrMalformedToken
	}
	if decodeChecksum((*[checksumChars]byte)(body[randomChars:])) != uint64(tokenCRC(tok, headLen, ke)) {
		return TokenInfo{}, ErrMalformedToken
	}
	return TokenInfo{Type: ke.typ, Environment: ke.env, prefixLen: headLen}, nil
}

// kindEnv is one of the six "kind_env_" strings a head ends in.
type kindEnv struct {
	word uint64 // the 8 bytes, loaded little-endian
	typ  KeyType
	env  Environment
	// The CRC-32 register after "kind_env_" (see crc.go), from the initial
	// register (reg: the whole head, when there is no workspace prefix) and
	// from zero (raw: to add to what the workspace prefix leaves).
	reg, raw uint32
}

// kindEnvs holds the six kindEnvs at kindEnvSlot(word). The two spare
// slots hold word 0, which kindEnvSlot sends elsewhere (checked below), so
// no word is ever found in them.
var kindEnvs = func() (t [8]kindEnv) {
	for _, typ := range []KeyType{TypeSecret, TypePublishable, TypeAdmin} {
		for _, env := range []Environment{EnvLive, EnvTest} {
			head := []byte(typ.kindCode() + "_" + string(env) + "_")
			w := binary.LittleEndian.Uint64(head)
			if t[kindEnvSlot(w)].typ != "" {
				panic("keyindex: kindEnvSlot is not one-to-one")
			}
			t[kindEnvSlot(w)] = kindEnv{w, typ, env, crcReg(^uint32(0), head), crcReg(0, head)}
		}
	}
	for i := range t {
		if t[i].typ == "" && kindEnvSlot(0) == uint(i) {
			panic("keyindex: an empty kindEnvs slot would match a zero word")
		}
	}
	return t
}()

// kindEnvSlot is a perfect hash of the six "kind_env_" words into 0..7:
// the low two bits of the kind letter (s=3, p=0, r=2) and bit 3 of the
// environment's first letter (l=1, t=0).
func kindEnvSlot(w uint64) uint {
	return uint(w&3)<<1 | uint(w>>27)&1
}

// parseKindEnv looks "kind_env_" (8 bytes, loaded little-endian) up by
// kindEnvSlot and one word compare, instead of two string switches; nil
// if it is none of the six.
func parseKindEnv(w uint64) *kindEnv {
	ke := &kindEnvs[kindEnvSlot(w)]
	if ke.word != w {
		return nil
	}
	return ke
}

// SWAR ("SIMD within a register") constants: a byte's worth repeated in all
// eight bytes of a word.
const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// inRange returns a word whose byte i has its high bit set iff lo <= x's
// byte i <= hi, for words whose bytes are all < 0x80 (other bits are
// noise). Adding 0x80-lo sets a byte's high bit iff the byte is >= lo,
// adding 0x7f-hi iff it is > hi, and neither addition can carry into the
// next byte; in range is the one case where the two differ.
func inRange(x uint64, lo, hi byte) uint64 {
	return (x + (0x80-uint64(lo))*ones) ^ (x + (0x7f-uint64(hi))*ones)
}

// allBase62 reports whether the 36 body characters are all in [0-9A-Za-z],
// eight at a time (the last load overlaps the one before it) with no
// branches or lookups: random characters would defeat a branch predictor,
// and this is cheaper than 36 table lookups.
func allBase62(b *[bodyChars]byte) bool {
	le := binary.LittleEndian
	w0, w1, w2, w3, w4 := le.Uint64(b[0:]), le.Uint64(b[8:]), le.Uint64(b[16:]), le.Uint64(b[24:]), le.Uint64(b[bodyChars-8:])
	// Bytes >= 0x80 are never base62, and they are the only ones that make
	// inRange's additions carry, so they are caught here whatever
	// inRange says about them or their neighbours.
	if (w0|w1|w2|w3|w4)&highs != 0 {
		return false
	}
	return base62Bytes(w0)&base62Bytes(w1)&base62Bytes(w2)&base62Bytes(w3)&base62Bytes(w4)&highs == highs
}

// base62Bytes sets the high bit of each byte of x (all < 0x80) that is in
// [0-9A-Za-z]. OR-ing 0x20 folds A-Z onto a-z and leaves a-z alone; no other
// byte lands in a-z.
func base62Bytes(x uint64) uint64 {
	return inRange(x, '0', '9') | inRange(x|0x20*ones, 'a', 'z')
}

// decodeChecksum reads six base62 digits (already checked: an invalid one
// would add garbage), most significant first. A sum of independent products
// rather than Horner's rule, so that the multiplications need not wait for
// each other.
func decodeChecksum(c *[checksumChars]byte) uint64 {
	d := &base62Digits
	return uint64(d[c[0]])*(62*62*62*62*62) + uint64(d[c[1]])*(62*62*62*62) + uint64(d[c[2]])*(62*62*62) +
		uint64(d[c[3]])*(62*62) + uint64(d[c[4]])*62 + uint64(d[c[5]])
}

func validWSPrefix(b []byte) bool {
	if len(b) == 0 || len(b) > maxWSPrefix {
		return false
	}
	for _, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// ValidWSPrefix reports whether p may be used as a token's workspace prefix.
func ValidWSPrefix(p string) bool { return validWSPrefix([]byte(p)) }

// base62Digits maps a byte to its base62 value, or -1: a table lookup
// instead of range tests, because random token characters defeat the
// branch predictor (it was a third of the verify decision's time).
var base62Digits = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := 0; i < len(base62Alphabet); i++ {
		t[base62Alphabet[i]] = int8(i)
	}
	return t
}()

// Token is a freshly generated plaintext token with the parts of it that may be stored.
type Token struct {
	Plaintext string
	Hash      Hash
	Prefix    string // key_prefix, e.g. "sk_live_"
	Suffix    string // last 4 characters
	Preview   string // first 4 body characters, "…", suffix
}

// GenerateToken makes a new token from rnd (crypto/rand.Reader in production;
// keyindex does no I/O of its own, so the source is passed in).
func GenerateToken(rnd io.Reader, wsPrefix string, t KeyType, env Environment) (Token, error) {
	if wsPrefix != "" && !ValidWSPrefix(wsPrefix) {
		return Token{}, fmt.Errorf("invalid workspace prefix %q", wsPrefix)
	}
	if !t.Valid() || !env.Valid() {
		return Token{}, fmt.Errorf("invalid key type %q or environment %q", t, env)
	}
	buf := make([]byte, 0, MaxTokenLen)
	if wsPrefix != "" {
		buf = append(buf, wsPrefix...)
		buf = append(buf, '_')
	}
	buf = append(buf, t.kindCode()...)
	buf = append(buf, '_')
	buf = append(buf, env...)
	buf = append(buf, '_')
	headLen := len(buf)
	// Rejection sampling keeps every character uniform: 248 = 4*62.
	var rb [64]byte
	for len(buf) < headLen+randomChars {
		if _, err := io.ReadFull(rnd, rb[:]); err != nil {
			return Token{}, fmt.Errorf("reading random bytes: %w", err)
		}
		for _, b := range rb {
			if b < 248 && len(buf) < headLen+randomChars {
				buf = append(buf, base62Alphabet[b%62])
			}
		}
	}
	sum := crc32.ChecksumIEEE(buf)
	var cs [checksumChars]byte
	for i := checksumChars - 1; i >= 0; i-- {
		cs[i] = base62Alphabet[sum%62]
		sum /= 62
	}
	buf = append(buf, cs[:]...)
	tok, _, err := TokenFromPlaintext(string(buf))
	if err != nil {
		return Token{}, fmt.Errorf("generated token does not parse: %w", err)
	}
	return tok, nil
}

// Display returns key_prefix, key_suffix and preview of a parsed token (spec §1).
func Display(tok string, info TokenInfo) (prefix, suffix, preview string) {
	prefix = tok[:info.prefixLen]
	suffix = tok[len(tok)-4:]
	preview = tok[info.prefixLen:info.prefixLen+4] + "…" + suffix
	return prefix, suffix, preview
}

// TokenFromPlaintext checks an existing plaintext token (such as an operator's
// --root-key-file) and returns its storable parts.
func TokenFromPlaintext(s string) (Token, TokenInfo, error) {
	info, err := ParseToken([]byte(s))
	if err != nil {
		return Token{}, info, err
	}
	prefix, suffix, preview := Display(s, info)
	return Token{Plaintext: s, Hash: HashToken([]byte(s)), Prefix: prefix, Suffix: suffix, Preview: preview}, info, nil
}
