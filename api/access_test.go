package api_test

import (
	"net/http"
	"reflect"
	"testing"
)

func TestPublishableKeys(t *testing.T) {
	t.Parallel()
	n := startNode(t)

	r := n.do("POST", "/v1/keys", n.rootToken, map[string]any{"name": "web", "workspace_id": "ws_pub", "type": "publishable"})
	r.wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
	if !r.hasDetail("allowed_origins") {
		t.Errorf("details do not name allowed_origins: %s", r.Body)
	}
	n.do("POST", "/v1/keys", n.rootToken, map[string]any{"name": "web", "workspace_id": "ws_pub", "type": "publishable", "allowed_origins": []string{}}).
		wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
	r = n.do("POST", "/v1/keys", n.rootToken, map[string]any{"name": "web", "workspace_id": "ws_pub", "type": "publishable",
		"allowed_origins": []string{"https://app.example.org"}, "scopes": []string{"keys:write"}})
	r.wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
	if !r.hasDetail("scopes") {
		t.Errorf("admin scope on a publishable key not named: %s", r.Body)
	}
	if got := n.listAll(n.rootToken, "workspace_id=ws_pub"); len(got) != 0 {
		t.Fatalf("rejected creates left keys: %+v", got)
	}

	pk, idx := n.createKey(n.rootToken, map[string]any{"name": "web", "workspace_id": "ws_pub", "type": "publishable",
		"allowed_origins": []string{"HTTPS://App.Example.org:443", "http://localhost:3000"}, "scopes": []string{"widgets:read"}})
	if pk.KeyPrefix != "pk_live_" || pk.Type != "publishable" {
		t.Fatalf("publishable key %+v", pk.Record)
	}
	if !reflect.DeepEqual(pk.AllowedOrigins, []string{"https://app.example.org", "http://localhost:3000"}) {
		t.Errorf("origins not normalized: %v", pk.AllowedOrigins)
	}
	mi := minIdx(idx)
	n.verifyGET(pk.Key, mi).wantVerify(t, http.StatusForbidden, "ORIGIN_NOT_ALLOWED")
	n.verifyPOST(map[string]any{"key": pk.Key}).wantVerify(t, http.StatusForbidden, "ORIGIN_NOT_ALLOWED")
	n.verifyGET(pk.Key, mi, "Origin", "https://evil.example.org").wantVerify(t, http.StatusForbidden, "ORIGIN_NOT_ALLOWED")
	n.verifyGET(pk.Key, mi, "Origin", "http://app.example.org").wantVerify(t, http.StatusForbidden, "ORIGIN_NOT_ALLOWED")
	n.verifyGET(pk.Key, mi, "Origin", "https://app.example.org.evil.com").wantVerify(t, http.StatusForbidden, "ORIGIN_NOT_ALLOWED")
	n.verifyGET(pk.Key, mi, "Origin", "http://localhost:3001").wantVerify(t, http.StatusForbidden, "ORIGIN_NOT_ALLOWED")
	n.verifyGET(pk.Key, mi, "Origin", "https://app.example.org").wantVerify(t, http.StatusOK, "VALID")
	n.verifyGET(pk.Key, mi+"&scope=widgets:read", "Origin", "http://localhost:3000").wantVerify(t, http.StatusOK, "VALID")
	n.verifyPOST(map[string]any{"key": pk.Key, "origin": "https://app.example.org"}).wantVerify(t, http.StatusOK, "VALID")
	n.verifyPOST(map[string]any{"key": pk.Key, "origin": "https://other.example.org"}).wantVerify(t, http.StatusForbidden, "ORIGIN_NOT_ALLOWED")
	// The POST form takes the Origin header when the body names none.
	n.verifyPOST(map[string]any{"key": pk.Key}, "Origin", "https://app.example.org").wantVerify(t, http.StatusOK, "VALID")

	wild, idx := n.createKey(n.rootToken, map[string]any{"name": "wild", "workspace_id": "ws_pub", "type": "publishable",
		"allowed_origins": []string{"https://*.example.com"}})
	mi = minIdx(idx)
	for origin, ok := range map[string]bool{
		"https://a.example.com":      true,
		"https://a.b.example.com":    true,
		"https://example.com":        false,
		"http://a.example.com":       false,
		"https://a.example.com:8443": false,
		"https://aexample.com":       false,
		"https://a.example.com.evil": false,
	} {
		code, status := "ORIGIN_NOT_ALLOWED", http.StatusForbidden
		if ok {
			code, status = "VALID", http.StatusOK
		}
		n.verifyGET(wild.Key, mi, "Origin", origin).wantVerify(t, status, code)
		n.verifyPOST(map[string]any{"key": wild.Key, "origin": origin}).wantVerify(t, status, code)
	}

	// Bad origins are refused at creation.
	for _, o := range []string{"ftp://x.example.com", "https://x.example.com/path", "https://*", "https://a.*.example.com", "example.com"} {
		r := n.do("POST", "/v1/keys", n.rootToken, map[string]any{"name": "bad", "workspace_id": "ws_pub", "type": "publishable", "allowed_origins": []string{o}})
		r.wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
		if !r.hasDetail("allowed_origins") {
			t.Errorf("origin %q: details %v", o, r.detailFields())
		}
	}
}

func TestWorkspaceIsolation(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	wsAdmin, _ := n.createKey(n.rootToken, map[string]any{"name": "ws1 admin", "type": "admin", "workspace_id": "ws1",
		"scopes": []string{"keys:read", "keys:write", "audit:read"}})
	if wsAdmin.KeyPrefix != "rk_live_" {
		t.Fatalf("admin key prefix %q", wsAdmin.KeyPrefix)
	}
	adm := wsAdmin.Key
	k1, _ := n.secretKey("ws1")
	k2, _ := n.secretKey("ws2", "owner_id", "o2", "scopes", []string{"s:t"})
	k2b, _ := n.secretKey("ws2")
	before := n.getKey(k2.ID).stable()

	// Every call on a ws2 key answers 404 to the ws1 admin.
	n.do("GET", "/v1/keys/"+k2.ID, adm, nil).wantError(t, http.StatusNotFound, "NOT_FOUND")
	n.do("PATCH", "/v1/keys/"+k2.ID, adm, map[string]any{"name": "hijacked"}).wantError(t, http.StatusNotFound, "NOT_FOUND")
	n.do("PATCH", "/v1/keys/"+k2.ID, adm, map[string]any{"active": false}).wantError(t, http.StatusNotFound, "NOT_FOUND")
	n.do("POST", "/v1/keys/"+k2.ID+"/rotate", adm, map[string]any{"grace_period_seconds": 0}).wantError(t, http.StatusNotFound, "NOT_FOUND")
	n.do("POST", "/v1/keys/"+k2.ID+"/revoke", adm, nil).wantError(t, http.StatusNotFound, "NOT_FOUND")
	n.do("DELETE", "/v1/keys/"+k2.ID, adm, nil).wantError(t, http.StatusNotFound, "NOT_FOUND")
	// Indistinguishable from a key that does not exist.
	missing := n.do("GET", "/v1/keys/key_01JAAAAAAAAAAAAAAAAAAAAAAA", adm, nil).wantError(t, http.StatusNotFound, "NOT_FOUND")
	_ = missing
	n.verifyGET(k2.Key, "").wantVerify(t, http.StatusOK, "VALID")
	if after := n.getKey(k2.ID).stable(); !reflect.DeepEqual(before, after) {
		t.Errorf("ws2 key changed:\n%+v\n%+v", before, after)
	}
	// The root key is invisible to a workspace admin too.
	rootRec := n.listAll(n.rootToken, "workspace_id=*")
	if len(rootRec) != 1 {
		t.Fatalf("root keys: %+v", rootRec)
	}
	n.do("GET", "/v1/keys/"+rootRec[0].ID, adm, nil).wantError(t, http.StatusNotFound, "NOT_FOUND")
	n.do("POST", "/v1/keys/"+rootRec[0].ID+"/revoke", adm, nil).wantError(t, http.StatusNotFound, "NOT_FOUND")

	// Lists show only ws1.
	ids := func(ks []keyOut) map[string]bool {
		m := map[string]bool{}
		for _, k := range ks {
			m[k.ID] = true
		}
		return m
	}
	if got := ids(n.listAll(adm, "")); !reflect.DeepEqual(got, map[string]bool{wsAdmin.ID: true, k1.ID: true}) {
		t.Errorf("ws1 admin lists %v", got)
	}
	if got := n.listAll(adm, "workspace_id=ws2"); len(got) != 0 {
		t.Errorf("ws1 admin lists ws2: %+v", got)
	}
	if got := n.listAll(adm, "workspace_id=ws1&type=secret"); len(got) != 1 || got[0].ID != k1.ID {
		t.Errorf("ws1 admin lists secret keys of ws1: %+v", got)
	}
	if got := ids(n.listAll(n.rootToken, "workspace_id=ws2")); !reflect.DeepEqual(got, map[string]bool{k2.ID: true, k2b.ID: true}) {
		t.Errorf("root lists ws2: %v", got)
	}
	if got := n.listAll(n.rootToken, "owner_id=o2"); len(got) != 1 || got[0].ID != k2.ID {
		t.Errorf("owner filter: %+v", got)
	}
	if got := len(n.listAll(n.rootToken, "")); got != 5 {
		t.Errorf("root lists %d keys, want 5", got)
	}

	// Writes into another workspace or beyond the caller's rights: 403.
	n.do("POST", "/v1/keys", adm, map[string]any{"name": "x", "workspace_id": "ws2"}).wantError(t, http.StatusForbidden, "FORBIDDEN")
	n.do("POST", "/v1/keys", adm, map[string]any{"name": "x", "workspace_id": "*", "type": "admin", "scopes": []string{"keys:read"}}).
		wantError(t, http.StatusForbidden, "FORBIDDEN")
	n.do("POST", "/v1/keys", adm, map[string]any{"name": "x", "type": "admin", "scopes": []string{"keys:read", "cluster:write"}}).
		wantError(t, http.StatusForbidden, "FORBIDDEN")
	sub, _ := n.createKey(adm, map[string]any{"name": "sub", "type": "admin", "scopes": []string{"keys:read"}})
	if sub.WorkspaceID != "ws1" || sub.CreatedBy != wsAdmin.ID {
		t.Errorf("key created by the ws1 admin: %+v", sub.Record)
	}
	n.do("PATCH", "/v1/keys/"+sub.ID, adm, map[string]any{"scopes": []string{"keys:read", "cluster:read"}}).
		wantError(t, http.StatusForbidden, "FORBIDDEN")
	// A key without keys:write cannot write.
	n.do("POST", "/v1/keys", sub.Key, map[string]any{"name": "x"}).wantError(t, http.StatusForbidden, "FORBIDDEN")
	n.do("GET", "/v1/audit", sub.Key, nil).wantError(t, http.StatusForbidden, "FORBIDDEN")
	n.do("GET", "/v1/keys/"+k1.ID, sub.Key, nil).want(t, http.StatusOK)
	own, _ := n.createKey(adm, map[string]any{"name": "own"})
	if own.WorkspaceID != "ws1" {
		t.Errorf("workspace defaults to the caller's: %q", own.WorkspaceID)
	}
	if got := len(n.listAll(n.rootToken, "workspace_id=ws2")); got != 2 {
		t.Errorf("ws2 has %d keys after refused creates", got)
	}

	// Authentication.
	n.do("GET", "/v1/keys", k1.Key, nil).wantError(t, http.StatusForbidden, "FORBIDDEN")
	n.do("POST", "/v1/keys", k1.Key, map[string]any{"name": "x"}).wantError(t, http.StatusForbidden, "FORBIDDEN")
	n.do("GET", "/v1/keys", "", nil).wantError(t, http.StatusUnauthorized, "UNAUTHORIZED")
	n.do("GET", "/v1/keys", "garbage", nil).wantError(t, http.StatusUnauthorized, "UNAUTHORIZED")
	mistyped := adm[:len(adm)-1] + "x"
	if mistyped == adm {
		mistyped = adm[:len(adm)-1] + "y"
	}
	n.do("GET", "/v1/keys", mistyped, nil).wantError(t, http.StatusUnauthorized, "UNAUTHORIZED")
	n.do("GET", "/v1/keys", "", nil, "Authorization", "Basic "+adm).wantError(t, http.StatusUnauthorized, "UNAUTHORIZED")
	_, m := envelope[keyOut](t, n.do("POST", "/v1/keys/"+wsAdmin.ID+"/revoke", n.rootToken, nil).want(t, http.StatusOK))
	n.do("GET", "/v1/keys?"+minIdx(m.Index), n.rootToken, nil).want(t, http.StatusOK)
	n.do("GET", "/v1/keys", adm, nil).wantError(t, http.StatusUnauthorized, "UNAUTHORIZED")
	n.do("POST", "/v1/keys", adm, map[string]any{"name": "x"}).wantError(t, http.StatusUnauthorized, "UNAUTHORIZED")
}
