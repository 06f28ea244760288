package api_test

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyraft/keyraft/keyindex"
)

func TestReadYourWrites(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	k, idx := n.secretKey("ws_ryw")
	got, _ := envelope[keyOut](t, n.do("GET", "/v1/keys/"+k.ID+"?"+minIdx(idx), n.rootToken, nil).want(t, http.StatusOK))
	if got.ID != k.ID {
		t.Fatalf("GET after create: %+v", got)
	}
	n.do("GET", "/v1/keys/"+k.ID, n.rootToken, nil, "Keyraft-Min-Index", itoa(idx)).want(t, http.StatusOK)
	n.do("GET", "/v1/keys?"+minIdx(idx), n.rootToken, nil).want(t, http.StatusOK)
	n.do("GET", "/v1/audit?"+minIdx(idx), n.rootToken, nil).want(t, http.StatusOK)
	n.verifyGET(k.Key, "", "Keyraft-Min-Index", itoa(idx)).wantVerify(t, http.StatusOK, "VALID")
	n.verifyPOST(map[string]any{"key": k.Key}, "Keyraft-Min-Index", itoa(idx)).wantVerify(t, http.StatusOK, "VALID")
	n.verifyPOST(map[string]any{"key": k.Key}).wantVerify(t, http.StatusOK, "VALID")
	// Writes answer their index in a header too.
	r := n.do("POST", "/v1/keys/"+k.ID+"/revoke", n.rootToken, nil).want(t, http.StatusOK)
	_, m := envelope[keyOut](t, r)
	if h := r.Header.Get("Keyraft-Index"); h != strconv.FormatUint(m.Index, 10) || m.Index <= idx {
		t.Errorf("Keyraft-Index %q, meta.index %d (create at %d)", h, m.Index, idx)
	}
	n.verifyGET(k.Key, minIdx(m.Index)).wantVerify(t, http.StatusUnauthorized, "KEY_REVOKED")

	// An index the node will not reach in time: STALE after about a second.
	far := "1000000000"
	k2, _ := n.secretKey("ws_ryw")
	type staleCase struct {
		name string
		do   func() result
	}
	cases := []staleCase{
		{"GET query", func() result { return n.verifyGET(k2.Key, "min_index="+far) }},
		{"GET header", func() result { return n.verifyGET(k2.Key, "", "Keyraft-Min-Index", far) }},
		{"POST header", func() result { return n.verifyPOST(map[string]any{"key": k2.Key}, "Keyraft-Min-Index", far) }},
	}
	var wg sync.WaitGroup
	for _, c := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			r := c.do()
			el := time.Since(start)
			if r.Status != http.StatusServiceUnavailable || r.JSON["code"] != "STALE" || r.JSON["valid"] != false {
				t.Errorf("%s: %d %s", c.name, r.Status, r.Body)
			}
			if el < 900*time.Millisecond || el > 5*time.Second {
				t.Errorf("%s: STALE after %v, want about 1s", c.name, el)
			}
		}()
	}
	wg.Wait()
	start := time.Now()
	r = n.do("GET", "/v1/keys/"+k2.ID+"?min_index="+far, n.rootToken, nil).wantError(t, http.StatusServiceUnavailable, "STALE")
	if el := time.Since(start); el < 900*time.Millisecond || el > 5*time.Second {
		t.Errorf("admin STALE after %v", el)
	}
	if r.Header.Get("Retry-After") == "" {
		t.Errorf("admin STALE without Retry-After")
	}
	// A stale request changes nothing and the key still verifies.
	n.verifyGET(k2.Key, "").wantVerify(t, http.StatusOK, "VALID")
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	k, idx := n.secretKey("ws_rl", "rate_limit_per_min", 3)
	if k.RateLimitPerMin != 3 {
		t.Fatalf("rate limit %d", k.RateLimitPerMin)
	}
	for i, want := range []float64{2, 1, 0} {
		var r result
		if i == 1 {
			r = n.verifyPOST(map[string]any{"key": k.Key}, "Keyraft-Min-Index", itoa(idx))
		} else {
			r = n.verifyGET(k.Key, minIdx(idx))
		}
		r.wantVerify(t, http.StatusOK, "VALID")
		rl, _ := r.JSON["ratelimit"].(map[string]any)
		if rl["limit"] != 3.0 || rl["remaining"] != want {
			t.Fatalf("call %d: ratelimit %v, want remaining %v", i+1, rl, want)
		}
		if reset, _ := rl["reset_ms"].(float64); reset <= 0 || reset > 60000 {
			t.Errorf("reset_ms %v", rl["reset_ms"])
		}
	}
	for _, r := range []result{n.verifyGET(k.Key, ""), n.verifyPOST(map[string]any{"key": k.Key})} {
		r.wantVerify(t, http.StatusTooManyRequests, "RATE_LIMITED")
		ra, err := strconv.Atoi(r.Header.Get("Retry-After"))
		if err != nil || ra < 1 || ra > 120 {
			t.Errorf("Retry-After %q", r.Header.Get("Retry-After"))
		}
		rl, ok := r.JSON["ratelimit"].(map[string]any)
		if !ok || rl["limit"] != 3.0 || rl["remaining"] != 0.0 {
			t.Errorf("429 ratelimit %s", r.Body)
		}
		if msg, _ := r.JSON["message"].(string); msg == "" {
			t.Errorf("429 without a message: %s", r.Body)
		}
	}
	// An unlimited key reports limit 0 and is never limited.
	u, _ := n.secretKey("ws_rl")
	for range 10 {
		r := n.verifyGET(u.Key, "").wantVerify(t, http.StatusOK, "VALID")
		if rl, _ := r.JSON["ratelimit"].(map[string]any); rl["limit"] != 0.0 {
			t.Fatalf("unlimited key ratelimit %v", rl)
		}
	}
	// Raising the limit lets the key through again.
	_, m := envelope[keyOut](t, n.do("PATCH", "/v1/keys/"+k.ID, n.rootToken, map[string]any{"rate_limit_per_min": 10}).want(t, http.StatusOK))
	n.verifyGET(k.Key, minIdx(m.Index)).wantVerify(t, http.StatusOK, "VALID")
}

func TestLastRootKey(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	roots := n.listAll(n.rootToken, "workspace_id=*")
	if len(roots) != 1 || roots[0].Name != "root" || roots[0].CreatedBy != "bootstrap" {
		t.Fatalf("root keys %+v", roots)
	}
	root := roots[0]
	before := root.stable()
	n.do("POST", "/v1/keys/"+root.ID+"/revoke", n.rootToken, nil).wantError(t, http.StatusConflict, "CONFLICT")
	n.do("DELETE", "/v1/keys/"+root.ID, n.rootToken, nil).wantError(t, http.StatusConflict, "CONFLICT")
	n.do("PATCH", "/v1/keys/"+root.ID, n.rootToken, map[string]any{"active": false}).wantError(t, http.StatusConflict, "CONFLICT")
	if after := n.getKey(root.ID).stable(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("root key changed:\n%+v\n%+v", before, after)
	}
	n.do("GET", "/v1/keys", n.rootToken, nil).want(t, http.StatusOK)
	// A workspace admin key does not count as a root key.
	n.createKey(n.rootToken, map[string]any{"name": "ws admin", "type": "admin", "workspace_id": "w", "scopes": []string{"keys:read"}})
	n.do("POST", "/v1/keys/"+root.ID+"/revoke", n.rootToken, nil).wantError(t, http.StatusConflict, "CONFLICT")

	// With a second root key, the first may go; then the second is the last.
	second, _ := n.createKey(n.rootToken, map[string]any{"name": "root 2", "type": "admin", "workspace_id": "*",
		"scopes": []string{"keys:read", "keys:write", "cluster:read", "cluster:write", "audit:read"}})
	if !strings.HasPrefix(second.Key, "rk_live_") {
		t.Fatalf("second root %q", second.KeyPrefix)
	}
	n.do("POST", "/v1/keys/"+root.ID+"/revoke", second.Key, nil).want(t, http.StatusOK)
	n.do("GET", "/v1/keys", n.rootToken, nil).wantError(t, http.StatusUnauthorized, "UNAUTHORIZED")
	n.do("POST", "/v1/keys/"+second.ID+"/revoke", second.Key, nil).wantError(t, http.StatusConflict, "CONFLICT")
	n.do("DELETE", "/v1/keys/"+second.ID, second.Key, nil).wantError(t, http.StatusConflict, "CONFLICT")
	n.do("PATCH", "/v1/keys/"+second.ID, second.Key, map[string]any{"active": false}).wantError(t, http.StatusConflict, "CONFLICT")
	// Nor may the last root key holding every admin scope lose one, or get
	// an expiry: either would lock every key out of managing the cluster.
	n.do("PATCH", "/v1/keys/"+second.ID, second.Key, map[string]any{"scopes": []string{"keys:read", "keys:write"}}).wantError(t, http.StatusConflict, "CONFLICT")
	n.do("PATCH", "/v1/keys/"+second.ID, second.Key, map[string]any{"expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}).wantError(t, http.StatusConflict, "CONFLICT")
	n.do("PATCH", "/v1/keys/"+second.ID, second.Key, map[string]any{"name": "root two"}).want(t, http.StatusOK)
	// A narrower root key does not count: with one, the full one still may not narrow.
	narrow, _ := n.createKey(second.Key, map[string]any{"name": "narrow root", "type": "admin", "workspace_id": "*", "scopes": []string{"keys:read"}})
	n.do("PATCH", "/v1/keys/"+second.ID, second.Key, map[string]any{"scopes": []string{"keys:read"}}).wantError(t, http.StatusConflict, "CONFLICT")
	// Nor revoked, disabled or deleted while only narrower root keys remain.
	n.do("POST", "/v1/keys/"+second.ID+"/revoke", second.Key, nil).wantError(t, http.StatusConflict, "CONFLICT")
	n.do("PATCH", "/v1/keys/"+second.ID, second.Key, map[string]any{"active": false}).wantError(t, http.StatusConflict, "CONFLICT")
	n.do("DELETE", "/v1/keys/"+second.ID, second.Key, nil).wantError(t, http.StatusConflict, "CONFLICT")
	third, _ := n.createKey(second.Key, map[string]any{"name": "root 3", "type": "admin", "workspace_id": "*", "scopes": keyindex.AdminScopes})
	n.do("PATCH", "/v1/keys/"+second.ID, third.Key, map[string]any{"scopes": []string{"keys:read", "keys:write"}}).want(t, http.StatusOK)
	n.do("PATCH", "/v1/keys/"+narrow.ID, third.Key, map[string]any{"expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}).want(t, http.StatusOK)
	// The revoked first root key no longer counts, and deleting it is fine.
	n.do("DELETE", "/v1/keys/"+root.ID, third.Key, nil).want(t, http.StatusNoContent)
	n.do("GET", "/v1/keys", second.Key, nil).want(t, http.StatusOK)
}
