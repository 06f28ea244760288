package api_test

import (
	"encoding/base64"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
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
	for _, long := range []string{
		"https://" + strings.Repeat("a", 300) + ".example.org",
		"https://" + strings.Repeat("Ⱥ", 146), // 300 bytes, 446 once lowercased
	} {
		r = n.do("POST", "/v1/keys", n.rootToken, map[string]any{"name": "web", "workspace_id": "ws_pub", "type": "publishable",
			"allowed_origins": []string{"https://app.example.org", long}})
		r.wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
		if !r.hasDetail("allowed_origins[1]") || !strings.Contains(string(r.Body), "at most 300 bytes") {
			t.Errorf("an origin of %d bytes not named as too long: %s", len(long), r.Body)
		}
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
	// No usage flush or purge: the probes below check that the replicated
	// state (the FSM's digest) does not move at all.
	n := startNode(t, nodeOptions{usageFlush: time.Hour, purgeInterval: time.Hour})
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
	mark := n.mark(k2.ID)

	// Every call on a ws2 key answers 404 to the ws1 admin, whatever the
	// body (valid, invalid or empty), exactly as for a key that does not
	// exist, and changes nothing.
	missingID := "key_01JAAAAAAAAAAAAAAAAAAAAAAA"
	probes := []struct {
		method, action string
		body           any
	}{
		{"GET", "", nil},
		{"PATCH", "", map[string]any{"name": "hijacked"}},
		{"PATCH", "", map[string]any{"active": false}},
		{"PATCH", "", map[string]any{"scopes": []string{"*"}, "expires_at": nil}},
		{"PATCH", "", `{"name": 5, "bogus": true}`},
		{"PATCH", "", `not json`},
		{"POST", "/rotate", map[string]any{"grace_period_seconds": 0}},
		{"POST", "/rotate", map[string]any{"grace_period_seconds": 86400}},
		{"POST", "/rotate", `{"grace_period_seconds": "x"}`},
		{"POST", "/revoke", nil},
		{"POST", "/revoke", `{}`},
		{"DELETE", "", nil},
	}
	for _, p := range probes {
		theirs := n.do(p.method, "/v1/keys/"+k2.ID+p.action, adm, p.body).wantError(t, http.StatusNotFound, "NOT_FOUND")
		none := n.do(p.method, "/v1/keys/"+missingID+p.action, adm, p.body).wantError(t, http.StatusNotFound, "NOT_FOUND")
		// Indistinguishable from a key that does not exist.
		if a, b := strings.ReplaceAll(theirs.JSON["error"].(map[string]any)["message"].(string), k2.ID, "ID"),
			strings.ReplaceAll(none.JSON["error"].(map[string]any)["message"].(string), missingID, "ID"); a != b {
			t.Errorf("%s %s: another workspace's key answers %q, a missing one %q", p.method, p.action, a, b)
		}
	}
	n.unchanged(t, "cross-tenant probes", mark)
	n.verifyGET(k2.Key, "").wantVerify(t, http.StatusOK, "VALID")
	if after := n.getKey(k2.ID).stable(); !reflect.DeepEqual(before, after) {
		t.Errorf("ws2 key changed:\n%+v\n%+v", before, after)
	}
	// Writes that name ws2 in their body: 403, nothing written.
	n.do("POST", "/v1/keys/import", adm, map[string]any{"keys": []map[string]any{{"sha256": sha("ws2-import"), "name": "x", "workspace_id": "ws2"}}}).
		wantError(t, http.StatusForbidden, "FORBIDDEN")
	n.do("POST", "/v1/keys/import", adm, map[string]any{"keys": []map[string]any{{"sha256": sha("ws1-import"), "name": "x"}, {"sha256": sha("ws2-import"), "name": "y", "workspace_id": "ws2"}}}).
		wantError(t, http.StatusForbidden, "FORBIDDEN")
	n.unchanged(t, "cross-tenant imports", mark)
	// The root key is invisible to a workspace admin too.
	rootRec := n.listAll(n.rootToken, "workspace_id=*")
	if len(rootRec) != 1 {
		t.Fatalf("root keys: %+v", rootRec)
	}
	mark = n.mark(rootRec[0].ID)
	for _, p := range probes {
		n.do(p.method, "/v1/keys/"+rootRec[0].ID+p.action, adm, p.body).wantError(t, http.StatusNotFound, "NOT_FOUND")
	}
	n.unchanged(t, "probes on the root key", mark)

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
	// Its query is checked as any other: a bad one is a 422, not an empty page.
	n.do("GET", "/v1/keys?workspace_id=ws2&limit=0", adm, nil).wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
	// The cursor too: garbage, or one of another listing, is a 422; one a
	// listing of ws2 could have handed out gets the empty page.
	for _, cur := range []string{"!!!", base64.RawURLEncoding.EncodeToString([]byte("ws1\x00" + k1.ID))} {
		if r := n.do("GET", "/v1/keys?workspace_id=ws2&cursor="+cur, adm, nil).wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED"); !r.hasDetail("cursor") {
			t.Errorf("cursor %q: details do not name it: %s", cur, r.Body)
		}
	}
	if r := n.do("GET", "/v1/keys?workspace_id=ws2&cursor="+base64.RawURLEncoding.EncodeToString([]byte("ws2\x00"+k2.ID)), adm, nil); r.Status != http.StatusOK || len(r.JSON["data"].([]any)) != 0 {
		t.Errorf("a ws2 cursor: %d %s", r.Status, r.Body)
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

// TestAdminRoutesRefuseNonAdminKeys: a secret or publishable key on any
// admin route is refused with 403 (401 when it is not sent as a credential
// or is mistyped), whatever the route, and nothing changes.
func TestAdminRoutesRefuseNonAdminKeys(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{usageFlush: time.Hour, purgeInterval: time.Hour})
	sk, _ := n.secretKey("ws_na", "scopes", []string{"keys:write", "keys:read"}) // look-alike scope names, still no admin key
	pk, _ := n.createKey(n.rootToken, map[string]any{"name": "pk", "workspace_id": "ws_na", "type": "publishable",
		"allowed_origins": []string{"https://app.example.com"}})
	victim, _ := n.secretKey("ws_na")
	mark := n.mark(victim.ID)
	routes := []struct {
		method, path string
		body         any
	}{
		{"GET", "/v1/keys", nil},
		{"POST", "/v1/keys", map[string]any{"name": "x", "workspace_id": "ws_na"}},
		{"GET", "/v1/keys/" + victim.ID, nil},
		{"PATCH", "/v1/keys/" + victim.ID, map[string]any{"active": false}},
		{"POST", "/v1/keys/" + victim.ID + "/rotate", map[string]any{"grace_period_seconds": 0}},
		{"POST", "/v1/keys/" + victim.ID + "/revoke", nil},
		{"DELETE", "/v1/keys/" + victim.ID, nil},
		{"POST", "/v1/keys/import", map[string]any{"keys": []map[string]any{{"sha256": sha("na"), "name": "x", "workspace_id": "ws_na"}}}},
		{"GET", "/v1/audit", nil},
		{"GET", "/v1/cluster", nil},
		{"GET", "/v1/cluster/snapshot", nil},
		{"DELETE", "/v1/cluster/nodes/node-x", nil},
	}
	for _, r := range routes {
		for name, tok := range map[string]string{"secret": sk.Key, "publishable": pk.Key} {
			// As a Bearer token: the key is real, but not an admin key.
			res := n.do(r.method, r.path, tok, r.body, "Origin", "https://app.example.com")
			res.wantError(t, http.StatusForbidden, "FORBIDDEN")
			// The same in X-API-Key (admin calls read it too).
			n.do(r.method, r.path, "", r.body, "X-API-Key", tok).wantError(t, http.StatusForbidden, "FORBIDDEN")
			// Not a credential at all: a Basic header, or the key mistyped.
			n.do(r.method, r.path, "", r.body, "Authorization", "Basic "+tok).wantError(t, http.StatusUnauthorized, "UNAUTHORIZED")
			n.do(r.method, r.path, tok[:len(tok)-1]+string("01"[(tok[len(tok)-1]+1)%2]), r.body).wantError(t, http.StatusUnauthorized, "UNAUTHORIZED")
			if strings.Contains(string(res.Body), tok) {
				t.Errorf("%s %s with a %s key echoes it", r.method, r.path, name)
			}
		}
	}
	n.unchanged(t, "non-admin keys on admin routes", mark)
	n.verifyGET(victim.Key, "").wantVerify(t, http.StatusOK, "VALID")
}

// TestAdminKeysChangeOnlyKeysTheyCover: an admin key may rotate, change,
// revoke or delete an admin key only if it holds all of that key's scopes:
// rotating a stronger key would hand its caller the stronger key's token.
func TestAdminKeysChangeOnlyKeysTheyCover(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{usageFlush: time.Hour, purgeInterval: time.Hour})
	weak, _ := n.createKey(n.rootToken, map[string]any{"name": "weak", "workspace_id": "ws_esc", "type": "admin",
		"scopes": []string{"keys:read", "keys:write"}})
	strong, _ := n.createKey(n.rootToken, map[string]any{"name": "strong", "workspace_id": "ws_esc", "type": "admin",
		"scopes": []string{"keys:read", "keys:write", "audit:read"}})
	mark := n.mark(strong.ID)
	for _, r := range []struct {
		method, path string
		body         any
	}{
		{"POST", "/v1/keys/" + strong.ID + "/rotate", map[string]any{"grace_period_seconds": 0}},
		{"PATCH", "/v1/keys/" + strong.ID, map[string]any{"name": "mine now"}},
		{"PATCH", "/v1/keys/" + strong.ID, map[string]any{"active": false}},
		{"POST", "/v1/keys/" + strong.ID + "/revoke", nil},
		{"DELETE", "/v1/keys/" + strong.ID, nil},
	} {
		n.do(r.method, r.path, weak.Key, r.body).wantError(t, http.StatusForbidden, "FORBIDDEN")
	}
	n.unchanged(t, "a weaker admin key's writes", mark)
	n.do("GET", "/v1/audit", strong.Key, nil).want(t, http.StatusOK)

	// The stronger key covers the weaker one, and each key covers itself;
	// keys that are not admin keys are the weaker key's to manage.
	n.do("POST", "/v1/keys/"+weak.ID+"/rotate", strong.Key, map[string]any{"grace_period_seconds": 60}).want(t, http.StatusOK)
	n.do("PATCH", "/v1/keys/"+weak.ID, weak.Key, map[string]any{"name": "still weak"}).want(t, http.StatusOK)
	sk, _ := n.secretKey("ws_esc")
	n.do("POST", "/v1/keys/"+sk.ID+"/rotate", weak.Key, map[string]any{"grace_period_seconds": 0}).want(t, http.StatusOK)
}

// TestForwardAuthAnyMethod: a forward-auth proxy asks with the method of
// the request it guards and without its body (nginx auth_request, Envoy
// ext_authz), and Envoy's path_prefix appends that request's path: each
// is the header form. A POST with a body is still the JSON form.
func TestForwardAuthAnyMethod(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{usageFlush: time.Hour, purgeInterval: time.Hour})
	k, _ := n.secretKey("ws_fa", "scopes", []string{"calls:*"})
	for _, method := range []string{"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} {
		n.do(method, "/v1/verify?scope=calls:start", "", nil, "X-API-Key", k.Key).wantVerify(t, http.StatusOK, "VALID")
		n.do(method, "/v1/verify?scope=admin", "", nil, "X-API-Key", k.Key).wantVerify(t, http.StatusForbidden, "INSUFFICIENT_SCOPE")
		n.do(method, "/v1/verify/api/orders/7?page=2", "", nil, "Authorization", "Bearer "+k.Key).wantVerify(t, http.StatusOK, "VALID")
		n.do(method, "/v1/verify", "", nil).wantVerify(t, http.StatusBadRequest, "BAD_REQUEST")
	}
	// Under /v1/verify/… the query is the guarded request's: a token in it
	// (a reset link) is not refused, and its scope is not ours to check.
	n.do("GET", "/v1/verify/reset?token="+k.Key+"&scope=admin", "", nil, "X-API-Key", k.Key).wantVerify(t, http.StatusOK, "VALID")
	n.do("GET", "/v1/verify?token="+k.Key, "", nil, "X-API-Key", k.Key).wantVerify(t, http.StatusBadRequest, "BAD_REQUEST")
	head := n.do("HEAD", "/v1/verify", "", nil, "X-API-Key", k.Key).want(t, http.StatusOK)
	if head.Header.Get("Keyraft-Key-Id") != k.ID || len(head.Body) != 0 {
		t.Errorf("HEAD: key id %q, body %q", head.Header.Get("Keyraft-Key-Id"), head.Body)
	}
	n.do("HEAD", "/v1/verify", "", nil, "X-API-Key", k.Key+"x").want(t, http.StatusUnauthorized)
	n.verifyPOST(map[string]any{"key": k.Key, "scope": "calls:start"}).wantVerify(t, http.StatusOK, "VALID")
	n.do("POST", "/v1/verify", "", "[]", "X-API-Key", k.Key).wantVerify(t, http.StatusBadRequest, "BAD_REQUEST")
}
