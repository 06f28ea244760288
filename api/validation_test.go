package api_test

import (
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestValidation(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	k, _ := n.secretKey("ws_v", "scopes", []string{"a:b"})
	before := n.getKey(k.ID).stable()
	count := func() int { return len(n.listAll(n.rootToken, "")) }
	keys := count()
	unchanged := func(what string) {
		t.Helper()
		if got := count(); got != keys {
			t.Errorf("%s: %d keys, want %d", what, got, keys)
		}
		if after := n.getKey(k.ID).stable(); !reflect.DeepEqual(before, after) {
			t.Errorf("%s changed the key:\n%#v\n%#v", what, before, after)
		}
		n.verifyGET(k.Key, "").wantVerify(t, http.StatusOK, "VALID")
	}

	// One request, many bad fields: every one is named.
	meta := map[string]string{}
	for i := range 17 {
		meta[fmt.Sprintf("k%d", i)] = "v"
	}
	r := n.do("POST", "/v1/keys", n.rootToken, map[string]any{
		"name": "", "workspace_id": "ws_v", "type": "bogus", "environment": "prod", "scopes": []string{"Bad Scope"},
		"allowed_origins": []string{"ftp://x"}, "rate_limit_per_min": -1, "metadata": meta,
		"expires_at": time.Now().Add(-time.Hour).Format(time.RFC3339), "foo": 1,
	}).wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
	for _, f := range []string{"name", "type", "environment", "scopes", "allowed_origins", "rate_limit_per_min", "metadata", "expires_at", "foo"} {
		if !r.hasDetail(f) {
			t.Errorf("details do not name %s: %s", f, r.Body)
		}
	}
	if r.hasDetail("workspace_id") {
		t.Errorf("details name a good field: %s", r.Body)
	}
	var fields []string
	for _, d := range r.JSON["error"].(map[string]any)["details"].([]any) {
		if issue, _ := d.(map[string]any)["issue"].(string); issue == "" {
			t.Errorf("detail without an issue: %v", d)
		}
		fields = append(fields, d.(map[string]any)["field"].(string))
	}
	if !slices.IsSorted(fields) { // no indexed fields here: byte order (TestDetailsOrderIndexesByValue)
		t.Errorf("details not sorted by field: %v", fields)
	}
	unchanged("many bad fields")

	// Wrong types, also named each.
	r = n.do("POST", "/v1/keys", n.rootToken, `{"name": 5, "workspace_id": "ws_v", "scopes": "a:b", "active": "yes", "metadata": {"a": 1}, "expires_at": "tomorrow"}`).
		wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
	for _, f := range []string{"name", "scopes", "active", "metadata", "expires_at"} {
		if !r.hasDetail(f) {
			t.Errorf("details do not name %s: %s", f, r.Body)
		}
	}
	seen := map[string]bool{}
	for _, f := range r.detailFields() {
		if seen[f] {
			t.Errorf("field %s reported twice: %s", f, r.Body)
		}
		seen[f] = true
	}
	unchanged("wrong types")

	// Other shapes of bad input on create.
	for _, body := range []any{
		map[string]any{"workspace_id": "ws_v"},                 // name missing
		map[string]any{"name": "x"},                            // root must name a workspace
		map[string]any{"name": "x", "workspace_id": "bad ws!"}, // workspace id charset
		map[string]any{"name": strings.Repeat("n", 121), "workspace_id": "ws_v"},
		map[string]any{"name": "x", "workspace_id": "ws_v", "owner_id": strings.Repeat("o", 129)},
		map[string]any{"name": "x", "workspace_id": "ws_v", "workspace_prefix": "Acme"},
		map[string]any{"name": "x", "workspace_id": "*"}, // only admin keys are root
		map[string]any{"name": "x", "workspace_id": "ws_v", "type": "admin", "scopes": []string{"calls:start"}},
		map[string]any{"name": "x", "workspace_id": "ws_v", "metadata": map[string]string{"big": strings.Repeat("v", 4097)}},
		map[string]any{"name": "x", "workspace_id": "ws_v", "allowed_resources": []string{""}},
		map[string]any{"name": "x", "workspace_id": "ws_v", "rate_limit_per_min": 1_000_001},
		map[string]any{"name": nil, "workspace_id": "ws_v"},
	} {
		n.do("POST", "/v1/keys", n.rootToken, body).wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
	}
	unchanged("bad creates")

	// Unreadable bodies: 400.
	for _, body := range []string{`{"name": "x", `, `not json`, `[]`, `null`, `"str"`, `{"name":"x"}{"name":"y"}`} {
		n.do("POST", "/v1/keys", n.rootToken, body).wantError(t, http.StatusBadRequest, "BAD_REQUEST")
		n.do("PATCH", "/v1/keys/"+k.ID, n.rootToken, body).wantError(t, http.StatusBadRequest, "BAD_REQUEST")
	}
	unchanged("invalid JSON")

	// Too large: 413 on every route but import.
	big := `{"name": "x", "workspace_id": "ws_v", "metadata": {"a": "` + strings.Repeat("a", 1<<20) + `"}}`
	n.do("POST", "/v1/keys", n.rootToken, big).wantError(t, http.StatusRequestEntityTooLarge, "BODY_TOO_LARGE")
	n.do("PATCH", "/v1/keys/"+k.ID, n.rootToken, big).wantError(t, http.StatusRequestEntityTooLarge, "BODY_TOO_LARGE")
	n.do("POST", "/v1/verify", "", big).want(t, http.StatusRequestEntityTooLarge)
	n.do("POST", "/v1/keys", n.rootToken, chunked(big)).wantError(t, http.StatusRequestEntityTooLarge, "BODY_TOO_LARGE")
	n.do("POST", "/v1/verify", "", chunked(big)).want(t, http.StatusRequestEntityTooLarge)
	unchanged("too large")

	// Chunked bodies within the limit are read like any other.
	n.do("POST", "/v1/verify", "", chunked(`{"key":"`+k.Key+`","scope":"a:b"}`)).wantVerify(t, http.StatusOK, "VALID")
	justUnder := `{"name": "x", "workspace_id": "ws_v", "owner_id": "o", "metadata": {"a": "b"}}` + strings.Repeat(" ", 1<<20-80)
	n.do("PATCH", "/v1/keys/"+k.ID, n.rootToken, chunked(`{"name": 5}`)).wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
	ck, _ := envelope[keyOut](t, n.do("POST", "/v1/keys", n.rootToken, chunked(justUnder)).want(t, http.StatusCreated))
	n.verifyGET(ck.Key, "").wantVerify(t, http.StatusOK, "VALID")
	n.do("DELETE", "/v1/keys/"+ck.ID, n.rootToken, nil).want(t, http.StatusNoContent)
	unchanged("chunked")

	// PATCH.
	n.do("PATCH", "/v1/keys/"+k.ID, n.rootToken, map[string]any{}).wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
	n.do("PATCH", "/v1/keys/"+k.ID, n.rootToken, nil).wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
	r = n.do("PATCH", "/v1/keys/"+k.ID, n.rootToken, map[string]any{"name": "", "type": "admin", "workspace_id": "other", "scopes": []string{"A"}}).
		wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
	for _, f := range []string{"name", "type", "workspace_id", "scopes"} {
		if !r.hasDetail(f) {
			t.Errorf("PATCH details do not name %s: %s", f, r.Body)
		}
	}
	n.do("PATCH", "/v1/keys/"+k.ID, n.rootToken, map[string]any{"expires_at": time.Now().Add(-time.Minute).Format(time.RFC3339)}).
		wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
	n.do("PATCH", "/v1/keys/"+k.ID, n.rootToken, map[string]any{"name": "ok", "rate_limit_per_min": -5}).
		wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
	unchanged("bad PATCH")

	// Rotate.
	r = n.do("POST", "/v1/keys/"+k.ID+"/rotate", n.rootToken, map[string]any{"grace_period_seconds": 2592001}).
		wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
	if !r.hasDetail("grace_period_seconds") {
		t.Errorf("rotate details %s", r.Body)
	}
	n.do("POST", "/v1/keys/"+k.ID+"/rotate", n.rootToken, map[string]any{"grace_period_seconds": -1}).wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
	n.do("POST", "/v1/keys/"+k.ID+"/rotate", n.rootToken, map[string]any{"grace_period_seconds": "60"}).wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
	n.do("POST", "/v1/keys/"+k.ID+"/rotate", n.rootToken, map[string]any{"grace": 60}).wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
	n.do("POST", "/v1/keys/"+k.ID+"/revoke", n.rootToken, map[string]any{"reason": "x"}).wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
	unchanged("bad rotate/revoke")

	// List.
	for _, q := range []string{"limit=0", "limit=1001", "limit=x", "cursor=!!!", "cursor=" + "YWJj", "type=bogus", "active=maybe"} {
		r := n.do("GET", "/v1/keys?"+q, n.rootToken, nil).wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
		name, _, _ := strings.Cut(q, "=")
		if !r.hasDetail(name) {
			t.Errorf("list %s: details %s", q, r.Body)
		}
	}
	n.do("GET", "/v1/audit?limit=0", n.rootToken, nil).wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
	n.do("GET", "/v1/audit?cursor=abc", n.rootToken, nil).wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
	n.do("GET", "/v1/keys/"+k.ID+"?min_index=abc", n.rootToken, nil).wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")

	// Routing.
	n.do("PUT", "/v1/keys/"+k.ID, n.rootToken, map[string]any{"name": "x"}).wantError(t, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED")
	n.do("GET", "/v1/keys/"+k.ID+"/rotate", n.rootToken, nil).wantError(t, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED")
	n.do("POST", "/v1/keys/"+k.ID+"/frobnicate", n.rootToken, nil).wantError(t, http.StatusNotFound, "NOT_FOUND")
	n.do("GET", "/v1/nothing", n.rootToken, nil).wantError(t, http.StatusNotFound, "NOT_FOUND")
	n.do("GET", "/v1/keys/not-an-id", n.rootToken, nil).wantError(t, http.StatusNotFound, "NOT_FOUND")

	// Bad verify input is a 400 or 401, never a crash.
	for _, body := range []string{`{`, `[]`, `{"key": 5}`, `{"key": "x", "extra": 1}`, `{"key": null}`, `""`} {
		n.do("POST", "/v1/verify", "", body).wantVerify(t, http.StatusBadRequest, "BAD_REQUEST")
	}
	mistyped := k.Key[:len(k.Key)-1] + "0"
	if mistyped == k.Key {
		mistyped = k.Key[:len(k.Key)-1] + "1"
	}
	for _, tok := range []string{"x", strings.Repeat("a", 600), "sk_live_" + strings.Repeat("A", 36), mistyped} {
		n.verifyPOST(map[string]any{"key": tok}).wantVerify(t, http.StatusUnauthorized, "MALFORMED_KEY")
	}
	n.verifyGET(k.Key, "min_index=abc").wantVerify(t, http.StatusBadRequest, "BAD_REQUEST")
	unchanged("bad reads")
	n.do("GET", "/healthz", "", nil).want(t, http.StatusOK)
}
