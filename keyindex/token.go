package keyindex

import (
	"crypto/sha256"
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

// ParseToken checks shape and checksum without allocating. It never looks
// anything up: a token it accepts may still be unknown.
func ParseToken(tok []byte) (TokenInfo, error) {
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
		if ws[len(ws)-1] != '_' || !validWSPrefix(ws[:len(ws)-1]) {
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
	switch string(kind) {
	case "sk":
		info.Type = TypeSecret
	case "pk":
		info.Type = TypePublishable
	case "rk":
		info.Type = TypeAdmin
	default:
		return info, ErrMalformedToken
	}
	switch string(env) {
	case "live":
		info.Environment = EnvLive
	case "test":
		info.Environment = EnvTest
	default:
		return info, ErrMalformedToken
	}
	for _, c := range body[:randomChars] {
		if base62Digits[c] < 0 {
			return info, ErrMalformedToken
		}
	}
	var want uint64
	for _, c := range body[randomChars:] {
		d := base62Digits[c]
		if d < 0 {
			return info, ErrMalformedToken
		}
		want = want*62 + uint64(d)
	}
	if want != uint64(crc32.ChecksumIEEE(tok[:n-checksumChars])) {
		return info, ErrMalformedToken
	}
	info.prefixLen = len(head)
	return info, nil
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
