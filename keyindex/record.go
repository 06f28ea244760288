package keyindex

import (
	"io"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"
)

// Record is one key as users see it (spec §2). Records held by an Index are
// immutable: a change replaces the record, so readers may keep a pointer
// after the index lock is released. Use Clone to derive a changed copy.
type Record struct {
	ID               string            `json:"id"`
	WorkspaceID      string            `json:"workspace_id"`
	OwnerID          string            `json:"owner_id"`
	Name             string            `json:"name"`
	Type             KeyType           `json:"type"`
	Environment      Environment       `json:"environment"`
	KeyPrefix        string            `json:"key_prefix"`
	KeySuffix        string            `json:"key_suffix"`
	Preview          string            `json:"preview"`
	Scopes           []string          `json:"scopes"`
	AllowedOrigins   []string          `json:"allowed_origins"`
	AllowedResources []string          `json:"allowed_resources"`
	RateLimitPerMin  int               `json:"rate_limit_per_min"`
	Metadata         map[string]string `json:"metadata"`
	Active           bool              `json:"active"`
	ExpiresAt        *time.Time        `json:"expires_at"`
	CreatedAt        time.Time         `json:"created_at"`
	UpdatedAt        time.Time         `json:"updated_at"`
	CreatedBy        string            `json:"created_by"`
	RevokedAt        *time.Time        `json:"revoked_at"`
	LastUsedAt       *time.Time        `json:"last_used_at"`
	UsageCount       int64             `json:"usage_count"`
	Rotation         *Rotation         `json:"rotation"`
	// Imported keys came in by hash (POST /v1/keys/import); their tokens may
	// have any format, so they are looked up even when the checksum fails.
	Imported bool `json:"imported"`

	// Hash is SHA-256 of the current token. Never part of an API answer.
	Hash Hash `json:"-"`
}

// Rotation describes the previous token of a rotated key during its grace period.
type Rotation struct {
	PreviousExpiresAt time.Time `json:"previous_expires_at"`
	PreviousHash      Hash      `json:"-"`
}

// RootWorkspace is the workspace_id of root admin keys: they manage every workspace.
const RootWorkspace = "*"

// Admin scopes carried by admin keys (spec §2).
const (
	ScopeKeysRead     = "keys:read"
	ScopeKeysWrite    = "keys:write"
	ScopeClusterRead  = "cluster:read"
	ScopeClusterWrite = "cluster:write"
	ScopeAuditRead    = "audit:read"
)

// AdminScopes lists every admin scope, in the order a root key carries them.
var AdminScopes = []string{ScopeKeysRead, ScopeKeysWrite, ScopeClusterRead, ScopeClusterWrite, ScopeAuditRead}

// HoldsAdminScopes reports whether scopes include every admin scope.
func HoldsAdminScopes(scopes []string) bool {
	for _, s := range AdminScopes {
		if !slices.Contains(scopes, s) {
			return false
		}
	}
	return true
}

// Clone returns a deep copy that may be changed freely.
func (r *Record) Clone() *Record {
	c := *r
	c.Scopes = cloneStrings(r.Scopes)
	c.AllowedOrigins = cloneStrings(r.AllowedOrigins)
	c.AllowedResources = cloneStrings(r.AllowedResources)
	if r.Metadata != nil {
		c.Metadata = make(map[string]string, len(r.Metadata))
		for k, v := range r.Metadata {
			c.Metadata[k] = v
		}
	}
	c.ExpiresAt = cloneTime(r.ExpiresAt)
	c.RevokedAt = cloneTime(r.RevokedAt)
	c.LastUsedAt = cloneTime(r.LastUsedAt)
	if r.Rotation != nil {
		rot := *r.Rotation
		c.Rotation = &rot
	}
	return &c
}

// HasScope reports whether the record's scopes grant scope (with wildcards).
func (r *Record) HasScope(scope string) bool {
	return scopesAllow(r.Scopes, []byte(scope))
}

// IsRoot reports whether r is a root admin key.
func (r *Record) IsRoot() bool { return r.Type == TypeAdmin && r.WorkspaceID == RootWorkspace }

// cloneStrings copies s, keeping an empty list empty rather than nil: the
// record's lists are JSON arrays, never null.
func cloneStrings(s []string) []string {
	if s == nil {
		return nil
	}
	return append(make([]string, 0, len(s)), s...)
}

func cloneTime(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	c := *t
	return &c
}

// appendValidPrefix appends the part of a VALID verify answer that depends
// only on the record; the answer is completed with the ratelimit object
// and a closing brace. It reads the stored record in place and writes by
// hand exactly what encoding/json writes for the struct {valid, code,
// key_id, workspace_id, owner_id, type, environment, scopes, metadata,
// expires_at}, with nil scopes and metadata as [] and {}, so the hot path
// allocates nothing and the index keeps no pre-encoded answer per key.
// verify_test.go checks it against json.Marshal.
func appendValidPrefix(b []byte, v *view) []byte {
	b = append(b, `{"valid":true,"code":`...)
	b = appendJSONString(b, CodeValid.String())
	b = v.id.appendJSON(append(b, `,"key_id":`...))
	for _, f := range [...]struct{ key, value string }{
		{`,"workspace_id":`, v.workspace}, {`,"owner_id":`, v.owner},
		{`,"type":`, v.typ}, {`,"environment":`, v.environment},
	} {
		b = appendJSONString(append(b, f.key...), f.value)
	}
	b = append(b, `,"scopes":[`...)
	i := 0
	for s := range v.scopes.All() {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, s)
		i++
	}
	b = append(b, `],"metadata":{`...)
	// Stored metadata is in ascending key order, as encoding/json writes it.
	i = 0
	for s := range v.metadata.All() {
		switch {
		case i%2 == 1:
			b = append(b, ':')
		case i > 0:
			b = append(b, ',')
		}
		b = appendJSONString(b, s)
		i++
	}
	b = append(b, `},"expires_at":`...)
	if v.flags&flagExpiresAt == 0 {
		b = append(b, "null"...)
	} else {
		b = v.expires.appendJSON(b)
	}
	return append(b, `,"ratelimit":`...)
}

// jsonPlainASCII marks the ASCII bytes a JSON string carries as they are:
// all but control characters, '"', '\\' and (as encoding/json does) '<',
// '>' and '&'. One lookup a byte instead of six comparisons: every VALID
// answer writes a record's strings through here.
var jsonPlainASCII = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// appendJSONString appends s as a JSON string exactly as encoding/json
// writes it: <, > and & escaped (\u003c…) for HTML, U+2028 and U+2029
// escaped for JavaScript, and each byte of invalid UTF-8 as \ufffd (which
// is RuneError: the three are written as \u and their code point).
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0 // s[start:i] is still to be copied as it is
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf && jsonPlainASCII[c] {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			invalid := r == utf8.RuneError && size == 1
			if !invalid && r != '\u2028' && r != '\u2029' {
				i += size
				continue
			}
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', hex[r>>12], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
			i += size
			start = i
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\b':
			b = append(b, '\\', 'b')
		case '\f':
			b = append(b, '\\', 'f')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		i++
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// sortedKeys appends m's keys to dst in ascending order, the order
// encoding/json writes them in. Callers pass a small array to fill, so
// that the usual few keys are sorted without allocating.
func sortedKeys(dst []string, m map[string]string) []string {
	for k := range m {
		dst = append(dst, k)
	}
	slices.Sort(dst)
	return dst
}

// NewID returns a new key id: "key_" and a ULID, so ids sort by creation time.
// The caller passes the time and randomness (the leader's; never the FSM's).
func NewID(now time.Time, rnd io.Reader) (string, error) {
	id, err := ulid.New(ulid.Timestamp(now), rnd)
	if err != nil {
		return "", err
	}
	return "key_" + id.String(), nil
}

// WorkspacePrefix is the workspace prefix of the key's tokens ("acme" for
// acme_sk_live_…), recovered from key_prefix; "" when there is none, and
// for imported keys, whose prefix is another product's.
func (r *Record) WorkspacePrefix() string {
	if r.Imported {
		return ""
	}
	ws, ok := strings.CutSuffix(r.KeyPrefix, "_"+r.Type.kindCode()+"_"+string(r.Environment)+"_")
	if !ok || !ValidWSPrefix(ws) {
		return ""
	}
	return ws
}

// SetToken stores a token's hash and display parts on r.
func (r *Record) SetToken(t Token) {
	r.Hash, r.KeyPrefix, r.KeySuffix, r.Preview = t.Hash, t.Prefix, t.Suffix, t.Preview
}
