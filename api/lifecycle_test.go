package api_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// specFields are the record fields of spec §2; every record answer has all
// of them.
var specFields = []string{
	"id", "workspace_id", "owner_id", "name", "type", "environment", "key_prefix", "key_suffix",
	"preview", "scopes", "allowed_origins", "allowed_resources", "rate_limit_per_min", "metadata",
	"active", "expires_at", "created_at", "updated_at", "created_by", "revoked_at", "last_used_at", "rotation",
}

var idRE = regexp.MustCompile(`^key_[0-9A-HJKMNP-TV-Z]{26}$`)

// checkRecordShape checks the JSON of one record: every field of the spec,
// never a hash.
func checkRecordShape(t *testing.T, rec map[string]any, withKey bool) {
	t.Helper()
	for _, f := range specFields {
		if _, ok := rec[f]; !ok {
			t.Errorf("record lacks %q: %v", f, rec)
		}
	}
	for f := range rec {
		if strings.Contains(f, "sha") || strings.Contains(f, "hash") {
			t.Errorf("record has field %q", f)
		}
	}
	for _, f := range []string{"scopes", "allowed_origins", "allowed_resources"} {
		if _, ok := rec[f].([]any); !ok {
			t.Errorf("record field %s is %v, want an array", f, rec[f])
		}
	}
	if _, ok := rec["metadata"].(map[string]any); !ok {
		t.Errorf("record field metadata is %v, want an object", rec["metadata"])
	}
	if _, ok := rec["key"]; ok != withKey {
		t.Errorf("record has key=%v, want %v", ok, withKey)
	}
}

func TestKeyLifecycle(t *testing.T) {
	t.Parallel()
	n := startNode(t)

	// Create.
	before := time.Now().UTC().Add(-time.Second)
	r := n.do("POST", "/v1/keys", n.rootToken, map[string]any{
		"name": "billing service", "workspace_id": "ws_life", "owner_id": "cust_42",
		"scopes": []string{"calls:*", "files.read"}, "metadata": map[string]string{"plan": "pro"},
		"environment": "test", "workspace_prefix": "acme",
	}, "X-Request-Id", "req-create-1").want(t, http.StatusCreated)
	if got := r.Header.Get("X-Request-Id"); got != "req-create-1" {
		t.Errorf("X-Request-Id header %q", got)
	}
	data := r.JSON["data"].(map[string]any)
	checkRecordShape(t, data, true)
	k, m := envelope[keyOut](t, r)
	if m.RequestID != "req-create-1" || m.Index == 0 || m.Timestamp == "" {
		t.Errorf("meta %+v", m)
	}
	tok := k.Key
	if !strings.HasPrefix(tok, "acme_sk_test_") || len(tok) != len("acme_sk_test_")+36 {
		t.Fatalf("token %q", tok)
	}
	switch {
	case !idRE.MatchString(k.ID):
		t.Errorf("id %q", k.ID)
	case k.WorkspaceID != "ws_life" || k.OwnerID != "cust_42" || k.Name != "billing service":
		t.Errorf("workspace/owner/name %+v", k.Record)
	case k.Type != "secret" || k.Environment != "test" || !k.Active:
		t.Errorf("type/env/active %+v", k.Record)
	case k.KeyPrefix != "acme_sk_test_" || k.KeySuffix != tok[len(tok)-4:]:
		t.Errorf("prefix/suffix %q %q", k.KeyPrefix, k.KeySuffix)
	case k.Preview != tok[len("acme_sk_test_"):len("acme_sk_test_")+4]+"…"+tok[len(tok)-4:]:
		t.Errorf("preview %q", k.Preview)
	case k.ExpiresAt != nil || k.RevokedAt != nil || k.LastUsedAt != nil || k.Rotation != nil:
		t.Errorf("optional times set: %+v", k.Record)
	case k.CreatedAt.Before(before) || k.CreatedAt.After(time.Now().Add(time.Second)) || !k.UpdatedAt.Equal(k.CreatedAt):
		t.Errorf("created_at %v updated_at %v", k.CreatedAt, k.UpdatedAt)
	case k.CreatedBy == "" || !strings.HasPrefix(k.CreatedBy, "key_"):
		t.Errorf("created_by %q", k.CreatedBy)
	case len(k.Scopes) != 2 || k.Metadata["plan"] != "pro" || k.AllowedOrigins == nil || k.AllowedResources == nil:
		t.Errorf("scopes/metadata/lists %+v", k.Record)
	}
	idx := m.Index

	// Without a sent request id, one is made up and still echoed.
	r2 := n.do("GET", "/v1/keys/"+k.ID, n.rootToken, nil).want(t, http.StatusOK)
	_, m2 := envelope[keyOut](t, r2)
	if m2.RequestID == "" || r2.Header.Get("X-Request-Id") != m2.RequestID {
		t.Errorf("generated request id %q / header %q", m2.RequestID, r2.Header.Get("X-Request-Id"))
	}
	checkRecordShape(t, r2.JSON["data"].(map[string]any), false)

	// Verify: both forms, both headers, X-API-Key wins.
	checkValid := func(r result) {
		t.Helper()
		r.wantVerify(t, http.StatusOK, "VALID")
		if r.Header.Get("Keyraft-Key-Id") != k.ID || r.Header.Get("Keyraft-Workspace-Id") != "ws_life" || r.Header.Get("Keyraft-Owner-Id") != "cust_42" {
			t.Errorf("verify headers %v", r.Header)
		}
		if r.Header.Get("Keyraft-Key-Rotated") != "" {
			t.Errorf("current token marked rotated")
		}
		j := r.JSON
		if j["key_id"] != k.ID || j["workspace_id"] != "ws_life" || j["owner_id"] != "cust_42" || j["type"] != "secret" || j["environment"] != "test" {
			t.Errorf("verify body %s", r.Body)
		}
		if md, _ := j["metadata"].(map[string]any); md["plan"] != "pro" {
			t.Errorf("verify metadata %s", r.Body)
		}
		if _, ok := j["expires_at"]; !ok {
			t.Errorf("verify body lacks expires_at: %s", r.Body)
		}
		if sc, _ := j["scopes"].([]any); len(sc) != 2 {
			t.Errorf("verify scopes %s", r.Body)
		}
		if _, ok := j["ratelimit"].(map[string]any); !ok {
			t.Errorf("verify body lacks ratelimit: %s", r.Body)
		}
	}
	checkValid(n.verifyPOST(map[string]any{"key": tok, "scope": "calls:start"}, "Keyraft-Min-Index", itoa(idx)))
	checkValid(n.verifyGET(tok, "scope=calls:start&"+minIdx(idx)))
	checkValid(n.do("GET", "/v1/verify?"+minIdx(idx), "", nil, "Authorization", "Bearer "+tok))
	checkValid(n.do("GET", "/v1/verify?"+minIdx(idx), "", nil, "authorization", "bearer "+tok))
	checkValid(n.do("GET", "/v1/verify?"+minIdx(idx), "", nil, "x-api-key", tok))
	checkValid(n.do("GET", "/v1/verify?"+minIdx(idx), "bogus_sk_live_nonsense", nil, "X-API-Key", tok))
	// …and a good Bearer does not rescue a bad X-API-Key.
	n.do("GET", "/v1/verify", tok, nil, "X-API-Key", "sk_live_garbage").wantVerify(t, http.StatusUnauthorized, "MALFORMED_KEY")
	n.verifyGET(tok, "scope=admin:all").wantVerify(t, http.StatusForbidden, "INSUFFICIENT_SCOPE")
	n.verifyPOST(map[string]any{"key": tok, "scope": "files.write"}).wantVerify(t, http.StatusForbidden, "INSUFFICIENT_SCOPE")
	n.verifyPOST(map[string]any{}).wantVerify(t, http.StatusBadRequest, "BAD_REQUEST")
	n.do("GET", "/v1/verify", "", nil).wantVerify(t, http.StatusBadRequest, "BAD_REQUEST")
	n.do("GET", "/v1/verify?key="+tok, "", nil).wantVerify(t, http.StatusBadRequest, "BAD_REQUEST")

	// Rotate with a grace period: both tokens verify, the old one marked.
	rr := n.do("POST", "/v1/keys/"+k.ID+"/rotate", n.rootToken, map[string]any{"grace_period_seconds": 2}).want(t, http.StatusOK)
	checkRecordShape(t, rr.JSON["data"].(map[string]any), true)
	rot, rm := envelope[keyOut](t, rr)
	newTok := rot.Key
	if newTok == tok || !strings.HasPrefix(newTok, "acme_sk_test_") || rot.ID != k.ID || rm.Index <= idx {
		t.Fatalf("rotate answer: %s", rr.Body)
	}
	if rot.Rotation == nil || rot.Rotation.PreviousExpiresAt.Sub(time.Now()) > 2*time.Second+500*time.Millisecond ||
		rot.Rotation.PreviousExpiresAt.Before(time.Now()) {
		t.Fatalf("rotation %+v", rot.Rotation)
	}
	if rot.KeySuffix != newTok[len(newTok)-4:] {
		t.Errorf("suffix after rotation %q", rot.KeySuffix)
	}
	graceEnd := rot.Rotation.PreviousExpiresAt
	idx = rm.Index
	checkValid(n.verifyGET(newTok, minIdx(idx)))
	old := n.verifyGET(tok, minIdx(idx)).wantVerify(t, http.StatusOK, "VALID")
	if old.Header.Get("Keyraft-Key-Rotated") != "true" || old.Header.Get("Keyraft-Key-Id") != k.ID {
		t.Errorf("old token headers %v", old.Header)
	}
	// After the grace period only the new token works.
	time.Sleep(time.Until(graceEnd) + 100*time.Millisecond)
	n.verifyGET(tok, minIdx(idx)).wantVerify(t, http.StatusUnauthorized, "KEY_NOT_FOUND")
	n.verifyPOST(map[string]any{"key": tok}).wantVerify(t, http.StatusUnauthorized, "KEY_NOT_FOUND")
	checkValid(n.verifyGET(newTok, minIdx(idx)))

	// Revoke: final, the record is kept.
	rv := n.do("POST", "/v1/keys/"+k.ID+"/revoke", n.rootToken, nil).want(t, http.StatusOK)
	revoked, vm := envelope[keyOut](t, rv)
	if revoked.RevokedAt == nil || revoked.Active {
		t.Fatalf("revoke answer %s", rv.Body)
	}
	if _, ok := rv.JSON["data"].(map[string]any)["key"]; ok {
		t.Errorf("revoke answer carries a key")
	}
	n.verifyGET(newTok, minIdx(vm.Index)).wantVerify(t, http.StatusUnauthorized, "KEY_REVOKED")
	n.verifyPOST(map[string]any{"key": newTok}, "Keyraft-Min-Index", itoa(vm.Index)).wantVerify(t, http.StatusUnauthorized, "KEY_REVOKED")
	got := n.do("GET", "/v1/keys/"+k.ID+"?"+minIdx(vm.Index), n.rootToken, nil).want(t, http.StatusOK)
	gk, _ := envelope[keyOut](t, got)
	if gk.RevokedAt == nil || !gk.RevokedAt.Equal(*revoked.RevokedAt) {
		t.Errorf("GET after revoke: %s", got.Body)
	}
	n.do("POST", "/v1/keys/"+k.ID+"/revoke", n.rootToken, nil).wantError(t, http.StatusConflict, "CONFLICT")
	n.do("POST", "/v1/keys/"+k.ID+"/rotate", n.rootToken, map[string]any{}).wantError(t, http.StatusConflict, "CONFLICT")
	n.do("PATCH", "/v1/keys/"+k.ID, n.rootToken, map[string]any{"active": true}).wantError(t, http.StatusConflict, "CONFLICT")
	n.verifyGET(newTok, "").wantVerify(t, http.StatusUnauthorized, "KEY_REVOKED")

	// Delete: gone.
	del := n.do("DELETE", "/v1/keys/"+k.ID, n.rootToken, nil, "X-Request-Id", "req-del").want(t, http.StatusNoContent)
	if len(del.Body) != 0 || del.Header.Get("X-Request-Id") != "req-del" {
		t.Errorf("delete answer %q %v", del.Body, del.Header)
	}
	delIdx := parseUint(t, del.Header.Get("Keyraft-Index"))
	n.do("GET", "/v1/keys/"+k.ID+"?"+minIdx(delIdx), n.rootToken, nil).wantError(t, http.StatusNotFound, "NOT_FOUND")
	n.verifyGET(newTok, minIdx(delIdx)).wantVerify(t, http.StatusUnauthorized, "KEY_NOT_FOUND")
	n.verifyGET(tok, minIdx(delIdx)).wantVerify(t, http.StatusUnauthorized, "KEY_NOT_FOUND")
	n.do("DELETE", "/v1/keys/"+k.ID, n.rootToken, nil).wantError(t, http.StatusNotFound, "NOT_FOUND")
	for _, rec := range n.listAll(n.rootToken, "workspace_id=ws_life") {
		t.Errorf("deleted key still listed: %+v", rec)
	}
}

// TestPatch covers the fields PATCH may change and disabling.
func TestPatch(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	k, _ := n.secretKey("ws_p", "scopes", []string{"a:b"}, "owner_id", "o1")
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	r := n.do("PATCH", "/v1/keys/"+k.ID, n.rootToken, map[string]any{
		"name": "renamed", "scopes": []string{"x:y"}, "metadata": map[string]string{"a": "b"},
		"allowed_resources": []string{"r1"}, "expires_at": exp.Format(time.RFC3339), "rate_limit_per_min": 100,
	}).want(t, http.StatusOK)
	u, m := envelope[keyOut](t, r)
	if u.Name != "renamed" || len(u.Scopes) != 1 || u.Scopes[0] != "x:y" || u.Metadata["a"] != "b" ||
		u.ExpiresAt == nil || !u.ExpiresAt.Equal(exp) || u.RateLimitPerMin != 100 || len(u.AllowedResources) != 1 ||
		!u.UpdatedAt.After(k.UpdatedAt) || !u.CreatedAt.Equal(k.CreatedAt) || u.OwnerID != "o1" || u.Key != "" {
		t.Fatalf("patched %s", r.Body)
	}
	n.verifyGET(k.Key, "scope=x:y&resource=r1&"+minIdx(m.Index)).wantVerify(t, http.StatusOK, "VALID")
	n.verifyGET(k.Key, "scope=a:b").wantVerify(t, http.StatusForbidden, "INSUFFICIENT_SCOPE")
	n.verifyGET(k.Key, "resource=r2").wantVerify(t, http.StatusForbidden, "RESOURCE_NOT_ALLOWED")

	checkRecordShape(t, r.JSON["data"].(map[string]any), false)
	r = n.do("PATCH", "/v1/keys/"+k.ID, n.rootToken, map[string]any{"active": false, "expires_at": nil}).want(t, http.StatusOK)
	checkRecordShape(t, r.JSON["data"].(map[string]any), false)
	u, m = envelope[keyOut](t, r)
	if u.Active || u.ExpiresAt != nil {
		t.Fatalf("disabled %s", r.Body)
	}
	n.verifyGET(k.Key, minIdx(m.Index)).wantVerify(t, http.StatusUnauthorized, "KEY_DISABLED")
	_, m = envelope[keyOut](t, n.do("PATCH", "/v1/keys/"+k.ID, n.rootToken, map[string]any{"active": true}).want(t, http.StatusOK))
	n.verifyGET(k.Key, minIdx(m.Index)).wantVerify(t, http.StatusOK, "VALID")

	// A key that expires.
	soon, _ := n.secretKey("ws_p", "expires_at", time.Now().Add(1500*time.Millisecond).Format(time.RFC3339Nano))
	n.verifyGET(soon.Key, "").wantVerify(t, http.StatusOK, "VALID")
	time.Sleep(time.Until(*soon.ExpiresAt) + 50*time.Millisecond)
	n.verifyGET(soon.Key, "").wantVerify(t, http.StatusUnauthorized, "KEY_EXPIRED")
}
