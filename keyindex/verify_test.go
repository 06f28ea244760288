package keyindex

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// baseNow is a fixed clock for tests: 2030-01-02T03:04:05Z plus 30s into a minute.
var baseNow = time.Date(2030, 1, 2, 3, 4, 30, 0, time.UTC)

var idSeq atomic.Int64

// newTestRecord generates a token and builds a valid, active record for it.
// mod may change the record before it is returned.
func newTestRecord(t testing.TB, typ KeyType, mod func(*Record)) (*Record, string) {
	t.Helper()
	tok := mustGenerate(t, "acme", typ, EnvLive)
	n := idSeq.Add(1)
	r := &Record{
		ID:          fmt.Sprintf("key_%026d", n),
		WorkspaceID: "ws_1",
		OwnerID:     "cust_1",
		Name:        "test key",
		Type:        typ,
		Environment: EnvLive,
		KeyPrefix:   tok.Prefix,
		KeySuffix:   tok.Suffix,
		Preview:     tok.Preview,
		Active:      true,
		CreatedAt:   baseNow.Add(-time.Hour),
		UpdatedAt:   baseNow.Add(-time.Hour),
		CreatedBy:   "key_admin",
		Hash:        tok.Hash,
	}
	if typ == TypePublishable {
		r.AllowedOrigins = []string{"https://app.example.com", "https://*.example.org"}
	}
	if mod != nil {
		mod(r)
	}
	return r, tok.Plaintext
}

func mustInsert(t testing.TB, ix *Index, r *Record) {
	t.Helper()
	if err := ix.Insert(r); err != nil {
		t.Fatalf("Insert(%s): %v", r.ID, err)
	}
}

// corruptLast changes the last checksum character to another base62 one.
func corruptLast(tok string) string {
	c := byte('A')
	if tok[len(tok)-1] == c {
		c = 'B'
	}
	return tok[:len(tok)-1] + string(c)
}

func tp(t time.Time) *time.Time { return &t }

func TestCodeTable(t *testing.T) {
	for _, tc := range []struct {
		code   Code
		name   string
		status int
	}{
		{CodeValid, "VALID", 200},
		{CodeBadRequest, "BAD_REQUEST", 400},
		{CodeMalformedKey, "MALFORMED_KEY", 401},
		{CodeKeyNotFound, "KEY_NOT_FOUND", 401},
		{CodeKeyDisabled, "KEY_DISABLED", 401},
		{CodeKeyRevoked, "KEY_REVOKED", 401},
		{CodeKeyExpired, "KEY_EXPIRED", 401},
		{CodeOriginNotAllowed, "ORIGIN_NOT_ALLOWED", 403},
		{CodeInsufficientScope, "INSUFFICIENT_SCOPE", 403},
		{CodeResourceNotAllowed, "RESOURCE_NOT_ALLOWED", 403},
		{CodeRateLimited, "RATE_LIMITED", 429},
		{CodeStale, "STALE", 503},
	} {
		if tc.code.String() != tc.name || tc.code.HTTPStatus() != tc.status || tc.code.Message() == "" {
			t.Errorf("code %d: %q %d %q, want %q %d", tc.code, tc.code.String(), tc.code.HTTPStatus(), tc.code.Message(), tc.name, tc.status)
		}
	}
	if n := len(codeInfo); n != int(CodeStale)+1 {
		t.Errorf("codeInfo has %d entries", n)
	}
}

// TestVerifyCodes runs every case twice: with the keys' lists interned,
// and with the sets full, so that each key's lists are read from its
// record.
func TestVerifyCodes(t *testing.T) {
	var sets int
	for _, maxSets := range []int{maxListSets, 0} {
		t.Run(fmt.Sprintf("maxListSets=%d", maxSets), func(t *testing.T) { sets = max(sets, testVerifyCodes(t, maxSets, 0)) })
	}
	// Each interned set as the common one in turn (scopePrecheck): a key
	// of that set is decided by the precheck, and the precheck of a set
	// that is not the key's must never decide for it.
	if sets < 5 {
		t.Fatalf("%d sets interned", sets)
	}
	for common := 1; common <= sets; common++ {
		t.Run(fmt.Sprintf("common=%d", common), func(t *testing.T) { testVerifyCodes(t, maxListSets, uint32(common)) })
	}
}

// testVerifyCodes decides every case of the table, with the index's common
// set forced to common when that is not 0, and returns how many sets the
// index interned.
func testVerifyCodes(t *testing.T, maxSets int, common uint32) int {
	ix := New()
	ix.st.sets.max = maxSets
	now := baseNow.UnixNano()
	expiresAt := baseNow.Add(time.Minute)

	type key struct {
		rec *Record
		tok string
	}
	mk := func(typ KeyType, mod func(*Record)) key {
		r, tok := newTestRecord(t, typ, mod)
		mustInsert(t, ix, r)
		return key{r, tok}
	}
	// The secret's lists, shared by keys that fail other checks, so that
	// each of them is also asked for a scope its set grants.
	secretLists := func(r *Record) {
		r.Scopes = []string{"calls:*", "files:read", "admin:st*"}
		r.AllowedResources = []string{"asst_1", "asst_2"}
	}
	secret := mk(TypeSecret, func(r *Record) {
		secretLists(r)
		r.Metadata = map[string]string{"plan": "pro"}
	})
	noScopes := mk(TypeSecret, nil)
	withOrigins := mk(TypeSecret, func(r *Record) { r.AllowedOrigins = []string{"https://app.example.com"} })
	pub := mk(TypePublishable, nil)
	pubScoped := mk(TypePublishable, func(r *Record) { r.Scopes = []string{"calls:*"} })
	admin := mk(TypeAdmin, func(r *Record) { r.Scopes = AdminScopes; r.WorkspaceID = RootWorkspace })
	disabled := mk(TypeSecret, func(r *Record) { secretLists(r); r.Active = false })
	revoked := mk(TypeSecret, func(r *Record) { secretLists(r); r.RevokedAt = tp(baseNow.Add(-time.Minute)) })
	revokedDisabled := mk(TypeSecret, func(r *Record) { r.RevokedAt = tp(baseNow.Add(-time.Minute)); r.Active = false })
	revokedExpired := mk(TypeSecret, func(r *Record) {
		r.RevokedAt = tp(baseNow.Add(-time.Minute))
		r.ExpiresAt = tp(baseNow.Add(-time.Hour))
	})
	disabledExpired := mk(TypeSecret, func(r *Record) { r.Active = false; r.ExpiresAt = tp(baseNow.Add(-time.Hour)) })
	expiring := mk(TypeSecret, func(r *Record) { r.ExpiresAt = tp(expiresAt); r.Scopes = []string{"calls:start"} })
	expiredPub := mk(TypePublishable, func(r *Record) { r.ExpiresAt = tp(baseNow.Add(-time.Second)) })
	limited := mk(TypeSecret, func(r *Record) { secretLists(r); r.RateLimitPerMin = 1 })
	// Lists far into the record.
	farLists := mk(TypeSecret, func(r *Record) {
		r.Name = strings.Repeat("n", 70_000)
		r.Scopes = []string{"calls:*"}
		r.AllowedResources = []string{"asst_1"}
	})
	if interned := len(ix.st.sets.ids); (maxSets > 0) != (interned > 0) {
		t.Fatalf("%d lists blocks interned with room for %d", interned, maxSets)
	}
	if common != 0 {
		ix.st.sets.common = common
	}
	unknown := mustGenerate(t, "acme", TypeSecret, EnvLive).Plaintext
	malformed := corruptLast(secret.tok)

	for _, tc := range []struct {
		name     string
		tok      string
		scope    string
		resource string
		origin   string
		now      int64
		want     Code
		rec      *Record // expected MatchedRecord
	}{
		{name: "empty token", tok: "", want: CodeBadRequest},
		{name: "malformed checksum", tok: malformed, want: CodeMalformedKey},
		{name: "malformed shape", tok: "hello", want: CodeMalformedKey},
		{name: "malformed with spaces", tok: " " + secret.tok, want: CodeMalformedKey},
		{name: "not found", tok: unknown, want: CodeKeyNotFound},
		{name: "valid plain", tok: secret.tok, want: CodeValid, rec: secret.rec},
		{name: "valid scope wildcard", tok: secret.tok, scope: "calls:start", want: CodeValid, rec: secret.rec},
		{name: "valid scope exact", tok: secret.tok, scope: "files:read", want: CodeValid, rec: secret.rec},
		{name: "valid glob in segment", tok: secret.tok, scope: "admin:stats", want: CodeValid, rec: secret.rec},
		{name: "scope too deep", tok: secret.tok, scope: "calls:start:now", want: CodeInsufficientScope, rec: secret.rec},
		{name: "scope other top", tok: secret.tok, scope: "call:start", want: CodeInsufficientScope, rec: secret.rec},
		{name: "scope not granted", tok: secret.tok, scope: "files:write", want: CodeInsufficientScope, rec: secret.rec},
		{name: "glob no match", tok: secret.tok, scope: "admin:delete", want: CodeInsufficientScope, rec: secret.rec},
		{name: "no scopes, scope asked", tok: noScopes.tok, scope: "calls:start", want: CodeInsufficientScope, rec: noScopes.rec},
		{name: "no scopes, none asked", tok: noScopes.tok, want: CodeValid, rec: noScopes.rec},
		{name: "resource allowed", tok: secret.tok, resource: "asst_2", want: CodeValid, rec: secret.rec},
		{name: "resource not allowed", tok: secret.tok, resource: "asst_3", want: CodeResourceNotAllowed, rec: secret.rec},
		{name: "resource prefix only", tok: secret.tok, resource: "asst_", want: CodeResourceNotAllowed, rec: secret.rec},
		{name: "any resource when list empty", tok: noScopes.tok, resource: "anything", want: CodeValid, rec: noScopes.rec},
		{name: "scope checked before resource", tok: secret.tok, scope: "nope", resource: "asst_3", want: CodeInsufficientScope, rec: secret.rec},
		{name: "scope and resource ok", tok: secret.tok, scope: "calls:stop", resource: "asst_1", want: CodeValid, rec: secret.rec},
		{name: "far lists, scope granted", tok: farLists.tok, scope: "calls:start", resource: "asst_1", want: CodeValid, rec: farLists.rec},
		{name: "far lists, scope not granted", tok: farLists.tok, scope: "files:read", want: CodeInsufficientScope, rec: farLists.rec},
		{name: "far lists, resource not allowed", tok: farLists.tok, resource: "asst_2", want: CodeResourceNotAllowed, rec: farLists.rec},
		{name: "disabled", tok: disabled.tok, want: CodeKeyDisabled, rec: disabled.rec},
		{name: "disabled, scope granted", tok: disabled.tok, scope: "calls:start", want: CodeKeyDisabled, rec: disabled.rec},
		{name: "revoked", tok: revoked.tok, want: CodeKeyRevoked, rec: revoked.rec},
		{name: "revoked, scope granted", tok: revoked.tok, scope: "calls:start", want: CodeKeyRevoked, rec: revoked.rec},
		{name: "expired, scope granted", tok: expiring.tok, scope: "calls:start", now: expiresAt.UnixNano(), want: CodeKeyExpired, rec: expiring.rec},
		{name: "publishable, scope granted, no origin", tok: pubScoped.tok, scope: "calls:start", want: CodeOriginNotAllowed, rec: pubScoped.rec},
		{name: "publishable, scope granted, right origin", tok: pubScoped.tok, scope: "calls:start", origin: "https://app.example.com", want: CodeValid, rec: pubScoped.rec},
		{name: "revoked wins over disabled", tok: revokedDisabled.tok, want: CodeKeyRevoked, rec: revokedDisabled.rec},
		{name: "revoked wins over expired", tok: revokedExpired.tok, want: CodeKeyRevoked, rec: revokedExpired.rec},
		{name: "disabled wins over expired", tok: disabledExpired.tok, want: CodeKeyDisabled, rec: disabledExpired.rec},
		{name: "expiry 1ns before", tok: expiring.tok, now: expiresAt.UnixNano() - 1, want: CodeValid, rec: expiring.rec},
		{name: "expiry exactly at", tok: expiring.tok, now: expiresAt.UnixNano(), want: CodeKeyExpired, rec: expiring.rec},
		{name: "expiry after", tok: expiring.tok, now: expiresAt.UnixNano() + int64(time.Hour), want: CodeKeyExpired, rec: expiring.rec},
		{name: "expired wins over scope", tok: expiring.tok, scope: "nope", now: expiresAt.UnixNano(), want: CodeKeyExpired, rec: expiring.rec},
		{name: "expired wins over origin", tok: expiredPub.tok, want: CodeKeyExpired, rec: expiredPub.rec},
		{name: "publishable no origin", tok: pub.tok, want: CodeOriginNotAllowed, rec: pub.rec},
		{name: "publishable wrong origin", tok: pub.tok, origin: "https://evil.com", want: CodeOriginNotAllowed, rec: pub.rec},
		{name: "publishable lookalike origin", tok: pub.tok, origin: "https://app.example.com.evil.com", want: CodeOriginNotAllowed, rec: pub.rec},
		{name: "publishable wrong scheme", tok: pub.tok, origin: "http://app.example.com", want: CodeOriginNotAllowed, rec: pub.rec},
		{name: "publishable right origin", tok: pub.tok, origin: "https://app.example.com", want: CodeValid, rec: pub.rec},
		{name: "publishable right origin case", tok: pub.tok, origin: "https://APP.example.com", want: CodeValid, rec: pub.rec},
		{name: "publishable wildcard origin", tok: pub.tok, origin: "https://x.y.example.org", want: CodeValid, rec: pub.rec},
		{name: "publishable wildcard apex", tok: pub.tok, origin: "https://example.org", want: CodeOriginNotAllowed, rec: pub.rec},
		{name: "origin checked before scope", tok: pub.tok, scope: "nope", want: CodeOriginNotAllowed, rec: pub.rec},
		{name: "secret with origins, no origin", tok: withOrigins.tok, want: CodeValid, rec: withOrigins.rec},
		{name: "secret with origins, wrong origin", tok: withOrigins.tok, origin: "https://evil.com", want: CodeOriginNotAllowed, rec: withOrigins.rec},
		{name: "secret with origins, right origin", tok: withOrigins.tok, origin: "https://app.example.com", want: CodeValid, rec: withOrigins.rec},
		{name: "secret without origins, any origin", tok: noScopes.tok, origin: "https://evil.com", want: CodeValid, rec: noScopes.rec},
		{name: "admin key valid", tok: admin.tok, scope: ScopeKeysWrite, want: CodeValid, rec: admin.rec},
		{name: "admin key scope", tok: admin.tok, scope: "calls:start", want: CodeInsufficientScope, rec: admin.rec},
		{name: "rate limit first", tok: limited.tok, scope: "calls:start", want: CodeValid, rec: limited.rec},
		{name: "rate limit second", tok: limited.tok, scope: "calls:start", want: CodeRateLimited, rec: limited.rec},
		{name: "rate limited not counted when scope fails", tok: limited.tok, scope: "nope", want: CodeInsufficientScope, rec: limited.rec},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := tc.now
			if n == 0 {
				n = now
			}
			req := &VerifyRequest{Token: []byte(tc.tok), Scope: []byte(tc.scope), Resource: []byte(tc.resource), Origin: []byte(tc.origin), NowNs: n}
			d := ix.Verify(req)
			if d.Code != tc.want {
				t.Fatalf("code = %s, want %s", d.Code, tc.want)
			}
			if !reflect.DeepEqual(ix.MatchedRecord(&d), tc.rec) {
				t.Fatalf("record = %v, want %v", ix.MatchedRecord(&d), tc.rec)
			}
			if d.Rotated {
				t.Fatal("Rotated set for a current token")
			}
			if d.Code == CodeRateLimited && d.RateLimit.RetryAfterMs <= 0 {
				t.Fatalf("RATE_LIMITED without RetryAfterMs: %+v", d.RateLimit)
			}
			if d.Code == CodeValid && tc.rec.RateLimitPerMin == 0 && d.RateLimit != (RateLimit{}) {
				t.Fatalf("unlimited key has RateLimit %+v", d.RateLimit)
			}
			if d.Code == CodeValid && tc.rec.RateLimitPerMin > 0 && d.RateLimit.Limit != tc.rec.RateLimitPerMin {
				t.Fatalf("RateLimit = %+v", d.RateLimit)
			}
		})
	}
	return len(ix.st.sets.blocks)
}

func TestVerifyRotationGrace(t *testing.T) {
	ix := New()
	old, oldTok := newTestRecord(t, TypeSecret, func(r *Record) { r.Scopes = []string{"calls:*"} })
	mustInsert(t, ix, old)
	graceEnd := baseNow.Add(24 * time.Hour)
	newTok := mustGenerate(t, "acme", TypeSecret, EnvLive)
	rotated := old.Clone()
	rotated.Hash = newTok.Hash
	rotated.KeySuffix, rotated.Preview = newTok.Suffix, newTok.Preview
	rotated.Rotation = &Rotation{PreviousHash: old.Hash, PreviousExpiresAt: graceEnd}
	if err := ix.Replace(rotated); err != nil {
		t.Fatal(err)
	}
	verify := func(tok string, now int64, scope string) Decision {
		return ix.Verify(&VerifyRequest{Token: []byte(tok), Scope: []byte(scope), NowNs: now})
	}
	for _, tc := range []struct {
		name    string
		tok     string
		now     int64
		scope   string
		want    Code
		rotated bool
	}{
		{"old token at rotation", oldTok, baseNow.UnixNano(), "", CodeValid, true},
		{"old token with scope", oldTok, baseNow.UnixNano(), "calls:start", CodeValid, true},
		{"old token wrong scope", oldTok, baseNow.UnixNano(), "files:read", CodeInsufficientScope, true},
		{"old token 1ns before end", oldTok, graceEnd.UnixNano() - 1, "", CodeValid, true},
		{"old token at end", oldTok, graceEnd.UnixNano(), "", CodeKeyNotFound, false},
		{"old token after end", oldTok, graceEnd.UnixNano() + int64(time.Hour), "", CodeKeyNotFound, false},
		{"new token", newTok.Plaintext, baseNow.UnixNano(), "", CodeValid, false},
		{"new token after old grace", newTok.Plaintext, graceEnd.UnixNano() + 1, "", CodeValid, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := verify(tc.tok, tc.now, tc.scope)
			if d.Code != tc.want || d.Rotated != tc.rotated {
				t.Fatalf("code %s rotated %v, want %s rotated %v", d.Code, d.Rotated, tc.want, tc.rotated)
			}
			if d.Code == CodeKeyNotFound && d.Matched() {
				t.Fatal("KEY_NOT_FOUND with a record")
			}
			if d.Code == CodeValid && !reflect.DeepEqual(ix.MatchedRecord(&d), rotated) {
				t.Fatal("valid decision does not carry the current record")
			}
		})
	}
	// Admin authentication by hash sees only the current token.
	if ix.GetByHash(old.Hash) != nil {
		t.Fatal("GetByHash finds the previous token")
	}
	if !same(ix.GetByHash(newTok.Hash), rotated) {
		t.Fatal("GetByHash does not find the new token")
	}
	if !ix.HashInUse(old.Hash) || !ix.HashInUse(newTok.Hash) {
		t.Fatal("HashInUse misses a hash of a rotating key")
	}
	// Revoking during grace rejects both tokens as revoked.
	rev := rotated.Clone()
	rev.RevokedAt = tp(baseNow)
	if err := ix.Replace(rev); err != nil {
		t.Fatal(err)
	}
	if d := verify(oldTok, baseNow.UnixNano(), ""); d.Code != CodeKeyRevoked || !d.Rotated {
		t.Fatalf("old token after revoke: %s rotated=%v", d.Code, d.Rotated)
	}
	if d := verify(newTok.Plaintext, baseNow.UnixNano(), ""); d.Code != CodeKeyRevoked {
		t.Fatalf("new token after revoke: %s", d.Code)
	}
	// A second rotation drops the first token at once.
	third := mustGenerate(t, "acme", TypeSecret, EnvLive)
	again := rotated.Clone()
	again.Hash = third.Hash
	again.Rotation = &Rotation{PreviousHash: newTok.Hash, PreviousExpiresAt: graceEnd}
	if err := ix.Replace(again); err != nil {
		t.Fatal(err)
	}
	if d := verify(oldTok, baseNow.UnixNano(), ""); d.Code != CodeKeyNotFound {
		t.Fatalf("first token after second rotation: %s", d.Code)
	}
	if ix.HashInUse(old.Hash) {
		t.Fatal("first token's hash still in use")
	}
	if d := verify(newTok.Plaintext, baseNow.UnixNano(), ""); d.Code != CodeValid || !d.Rotated {
		t.Fatalf("second token in grace: %s rotated=%v", d.Code, d.Rotated)
	}
	if d := verify(third.Plaintext, baseNow.UnixNano(), ""); d.Code != CodeValid || d.Rotated {
		t.Fatalf("third token: %s rotated=%v", d.Code, d.Rotated)
	}
	// Purging the rotation (Replace without Rotation) ends the grace at once.
	purged := again.Clone()
	purged.Rotation = nil
	if err := ix.Replace(purged); err != nil {
		t.Fatal(err)
	}
	if d := verify(newTok.Plaintext, baseNow.UnixNano(), ""); d.Code != CodeKeyNotFound {
		t.Fatalf("second token after purge: %s", d.Code)
	}
}

func TestValidBodyJSON(t *testing.T) {
	ix := New()
	exp := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	for _, tc := range []struct {
		name string
		mod  func(*Record)
	}{
		{"full", func(r *Record) {
			r.Scopes = []string{"calls:*", "files:read"}
			r.Metadata = map[string]string{"plan": "pro", "quote": `he said "hi" <b>&`}
			r.ExpiresAt = &exp
			r.OwnerID = "cust_\"42\""
		}},
		{"empty", func(r *Record) { r.OwnerID = ""; r.Scopes = nil; r.Metadata = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, tok := newTestRecord(t, TypeSecret, tc.mod)
			mustInsert(t, ix, r)
			d := ix.Verify(&VerifyRequest{Token: []byte(tok), NowNs: baseNow.UnixNano()})
			if d.Code != CodeValid {
				t.Fatalf("code %s", d.Code)
			}
			full := string(d.AppendValidBody(nil)) + `{"limit":0,"remaining":0,"reset_ms":0}}`
			var got struct {
				Valid       bool              `json:"valid"`
				Code        string            `json:"code"`
				KeyID       string            `json:"key_id"`
				WorkspaceID string            `json:"workspace_id"`
				OwnerID     *string           `json:"owner_id"`
				Type        string            `json:"type"`
				Environment string            `json:"environment"`
				Scopes      []string          `json:"scopes"`
				Metadata    map[string]string `json:"metadata"`
				ExpiresAt   *time.Time        `json:"expires_at"`
				RateLimit   *struct {
					Limit     *int   `json:"limit"`
					Remaining *int   `json:"remaining"`
					ResetMs   *int64 `json:"reset_ms"`
				} `json:"ratelimit"`
			}
			if !json.Valid([]byte(full)) {
				t.Fatalf("not JSON: %s", full)
			}
			if err := json.Unmarshal([]byte(full), &got); err != nil {
				t.Fatalf("unmarshal %s: %v", full, err)
			}
			var raw map[string]json.RawMessage
			if err := json.Unmarshal([]byte(full), &raw); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"valid", "code", "key_id", "workspace_id", "owner_id", "type", "environment", "scopes", "metadata", "expires_at", "ratelimit"} {
				if _, ok := raw[k]; !ok {
					t.Errorf("field %q missing from %s", k, full)
				}
			}
			if len(raw) != 11 {
				t.Errorf("unexpected fields in %s", full)
			}
			if string(raw["scopes"]) == "null" || string(raw["metadata"]) == "null" {
				t.Errorf("scopes/metadata must be [] / {}, not null: %s", full)
			}
			if !got.Valid || got.Code != "VALID" || got.KeyID != r.ID || got.WorkspaceID != r.WorkspaceID ||
				got.OwnerID == nil || *got.OwnerID != r.OwnerID || got.Type != string(r.Type) || got.Environment != string(r.Environment) {
				t.Errorf("body %s does not match record %+v", full, r)
			}
			if fmt.Sprint(got.Scopes) != fmt.Sprint(nonNil(r.Scopes)) || len(got.Scopes) != len(r.Scopes) {
				t.Errorf("scopes %q, want %q", got.Scopes, r.Scopes)
			}
			if len(got.Metadata) != len(r.Metadata) {
				t.Errorf("metadata %v, want %v", got.Metadata, r.Metadata)
			}
			for k, v := range r.Metadata {
				if got.Metadata[k] != v {
					t.Errorf("metadata[%q] = %q, want %q", k, got.Metadata[k], v)
				}
			}
			if (r.ExpiresAt == nil) != (got.ExpiresAt == nil) || (r.ExpiresAt != nil && !got.ExpiresAt.Equal(*r.ExpiresAt)) {
				t.Errorf("expires_at %v, want %v", got.ExpiresAt, r.ExpiresAt)
			}
			if r.ExpiresAt == nil && string(raw["expires_at"]) != "null" {
				t.Errorf("expires_at = %s, want null", raw["expires_at"])
			}
			if got.RateLimit == nil || got.RateLimit.Limit == nil || got.RateLimit.Remaining == nil || got.RateLimit.ResetMs == nil {
				t.Errorf("ratelimit object not attached: %s", full)
			}
		})
	}
}

// A Replace changes what Verify answers at once (the pre-encoded body too).
func TestVerifySeesReplace(t *testing.T) {
	ix := New()
	r, tok := newTestRecord(t, TypeSecret, func(r *Record) { r.Metadata = map[string]string{"v": "1"} })
	mustInsert(t, ix, r)
	req := &VerifyRequest{Token: []byte(tok), NowNs: baseNow.UnixNano()}
	if d := ix.Verify(req); d.Code != CodeValid {
		t.Fatal(d.Code)
	}
	r2 := r.Clone()
	r2.Metadata["v"] = "2"
	r2.Active = false
	if err := ix.Replace(r2); err != nil {
		t.Fatal(err)
	}
	if r.Metadata["v"] != "1" {
		t.Fatal("Clone shares the metadata map")
	}
	if d := ix.Verify(req); d.Code != CodeKeyDisabled {
		t.Fatalf("after disable: %s", d.Code)
	}
	r3 := r2.Clone()
	r3.Active = true
	if err := ix.Replace(r3); err != nil {
		t.Fatal(err)
	}
	d := ix.Verify(req)
	if d.Code != CodeValid {
		t.Fatal(d.Code)
	}
	var body struct{ Metadata map[string]string }
	if err := json.Unmarshal(append(d.AppendValidBody(nil), `{}}`...), &body); err != nil || body.Metadata["v"] != "2" {
		t.Fatalf("body not refreshed: %s %v", d.AppendValidBody(nil), err)
	}
	if err := ix.Delete(r.ID); err != nil {
		t.Fatal(err)
	}
	if d := ix.Verify(req); d.Code != CodeKeyNotFound || d.Matched() {
		t.Fatalf("after delete: %s", d.Code)
	}
}

func TestVerifyZeroAllocs(t *testing.T) {
	ix := New()
	r, tok := newTestRecord(t, TypePublishable, func(r *Record) {
		r.Scopes = []string{"calls:*", "files:read"}
		r.AllowedResources = []string{"asst_1", "asst_2"}
		r.RateLimitPerMin = MaxRateLimitPerMin
		r.Metadata = map[string]string{"plan": "pro"}
		r.ExpiresAt = tp(baseNow.Add(time.Hour))
	})
	mustInsert(t, ix, r)
	for i := 0; i < 50; i++ {
		other, _ := newTestRecord(t, TypeSecret, nil)
		mustInsert(t, ix, other)
	}
	valid := &VerifyRequest{
		Token:    []byte(tok),
		Scope:    []byte("calls:start"),
		Resource: []byte("asst_2"),
		Origin:   []byte("https://a.b.example.org"),
		NowNs:    baseNow.UnixNano(),
	}
	bad := []byte(corruptLast(tok))
	notFound := mustGenerate(t, "acme", TypePublishable, EnvLive).Plaintext
	for _, tc := range []struct {
		name string
		req  *VerifyRequest
		want Code
	}{
		{"valid", valid, CodeValid},
		{"malformed", &VerifyRequest{Token: bad, NowNs: valid.NowNs}, CodeMalformedKey},
		{"not found", &VerifyRequest{Token: []byte(notFound), NowNs: valid.NowNs}, CodeKeyNotFound},
		{"insufficient scope", &VerifyRequest{Token: []byte(tok), Scope: []byte("x:y"), Origin: valid.Origin, NowNs: valid.NowNs}, CodeInsufficientScope},
		{"origin", &VerifyRequest{Token: []byte(tok), Origin: []byte("https://evil.com"), NowNs: valid.NowNs}, CodeOriginNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d := ix.Verify(tc.req); d.Code != tc.want {
				t.Fatalf("code %s, want %s", d.Code, tc.want)
			}
			allocs := testing.AllocsPerRun(1000, func() {
				if d := ix.Verify(tc.req); d.Code != tc.want {
					panic(d.Code.String())
				}
			})
			if allocs != 0 {
				t.Fatalf("Verify allocates %v times per call", allocs)
			}
		})
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := ParseToken(valid.Token); err != nil {
			panic(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("ParseToken allocates %v times per call", allocs)
	}
}

// TestMatchedRecordIsTheDecidedOne: the record MatchedRecord returns is the
// version the decision was made on; once the key has changed (a PATCH, a
// usage flush rewriting it) or gone, it returns nil, and admin
// authentication decides again rather than scope a request by a version of
// the key that was never verified.
func TestMatchedRecordIsTheDecidedOne(t *testing.T) {
	ix := New()
	r, tok := newTestRecord(t, TypeAdmin, func(r *Record) { r.Scopes = []string{ScopeKeysRead} })
	mustInsert(t, ix, r)
	decide := func() Decision {
		t.Helper()
		d := ix.Verify(&VerifyRequest{Token: []byte(tok), NowNs: time.Now().UnixNano()})
		if d.Code != CodeValid {
			t.Fatalf("code %s", d.Code)
		}
		return d
	}
	d := decide()
	if got := ix.MatchedRecord(&d); !reflect.DeepEqual(got, r) {
		t.Fatalf("matched %v, want %v", got, r)
	}

	wider := r.Clone()
	wider.Scopes = []string{ScopeKeysRead, ScopeKeysWrite}
	if err := ix.Replace(wider); err != nil {
		t.Fatal(err)
	}
	if got := ix.MatchedRecord(&d); got != nil {
		t.Fatalf("a decision made before a change matched %v", got)
	}
	d = decide()
	if got := ix.MatchedRecord(&d); !reflect.DeepEqual(got, wider) {
		t.Fatalf("matched %v, want %v", got, wider)
	}

	if !ix.AddUsage(r.ID, 1, time.Now(), func(before, after []byte) {}) {
		t.Fatal("usage not added")
	}
	if got := ix.MatchedRecord(&d); got != nil {
		t.Fatalf("a decision made before a usage flush matched %v", got)
	}

	d = decide()
	if err := ix.Delete(r.ID); err != nil {
		t.Fatal(err)
	}
	if got := ix.MatchedRecord(&d); got != nil {
		t.Fatalf("a deleted key matched %v", got)
	}
	if none := (Decision{Code: CodeKeyNotFound}); ix.MatchedRecord(&none) != nil {
		t.Fatal("a decision that matched no key has a record")
	}
}
