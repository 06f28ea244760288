package api_test

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRotateTwice: only the token being replaced gets a grace period; one
// already in grace from an earlier rotation stops at the next rotation, and
// the record's rotation is cleared once the grace has ended.
func TestRotateTwice(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	k, _ := n.secretKey("ws_rot")
	t0 := k.Key
	r1, _ := envelope[keyOut](t, n.do("POST", "/v1/keys/"+k.ID+"/rotate", n.rootToken, map[string]any{"grace_period_seconds": 60}).want(t, http.StatusOK))
	r2, m := envelope[keyOut](t, n.do("POST", "/v1/keys/"+k.ID+"/rotate", n.rootToken, map[string]any{"grace_period_seconds": 2}).want(t, http.StatusOK))
	mi := minIdx(m.Index)
	n.verifyGET(t0, mi).wantVerify(t, http.StatusUnauthorized, "KEY_NOT_FOUND")
	if v := n.verifyGET(r1.Key, mi).wantVerify(t, http.StatusOK, "VALID"); v.Header.Get("Keyraft-Key-Rotated") != "true" {
		t.Errorf("previous token not marked rotated")
	}
	n.verifyGET(r2.Key, mi).wantVerify(t, http.StatusOK, "VALID")
	if r2.Rotation == nil {
		t.Fatalf("rotation missing: %+v", r2.Record)
	}
	// Without a body, rotate means no grace at all.
	time.Sleep(time.Until(r2.Rotation.PreviousExpiresAt))
	deadline := time.Now().Add(5 * time.Second)
	for n.getKey(k.ID).Rotation != nil {
		if time.Now().After(deadline) {
			t.Fatal("ended rotation never purged from the record")
		}
		time.Sleep(50 * time.Millisecond)
	}
	n.verifyGET(r1.Key, "").wantVerify(t, http.StatusUnauthorized, "KEY_NOT_FOUND")
	r3, m3 := envelope[keyOut](t, n.do("POST", "/v1/keys/"+k.ID+"/rotate", n.rootToken, nil).want(t, http.StatusOK))
	if r3.Rotation != nil {
		t.Errorf("rotation without grace: %+v", r3.Rotation)
	}
	n.verifyGET(r2.Key, minIdx(m3.Index)).wantVerify(t, http.StatusUnauthorized, "KEY_NOT_FOUND")
	n.verifyGET(r3.Key, "").wantVerify(t, http.StatusOK, "VALID")

	// A rotated admin key: the new token administers, as does the old one
	// during its grace period.
	adm, _ := n.createKey(n.rootToken, map[string]any{"name": "a", "type": "admin", "workspace_id": "ws_rot", "scopes": []string{"keys:read", "keys:write"}})
	ra, _ := envelope[keyOut](t, n.do("POST", "/v1/keys/"+adm.ID+"/rotate", adm.Key, map[string]any{"grace_period_seconds": 60}).want(t, http.StatusOK))
	n.do("GET", "/v1/keys", ra.Key, nil).want(t, http.StatusOK)
	n.do("GET", "/v1/keys", adm.Key, nil).want(t, http.StatusOK)
	n.do("POST", "/v1/keys/"+adm.ID+"/rotate", ra.Key, map[string]any{}).want(t, http.StatusOK)
	n.do("GET", "/v1/keys", adm.Key, nil).wantError(t, http.StatusUnauthorized, "UNAUTHORIZED")
	n.do("GET", "/v1/keys", ra.Key, nil).wantError(t, http.StatusUnauthorized, "UNAUTHORIZED")
}

// TestListFilters: owner, type and active filters and paging over them.
func TestListFilters(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	var ids []string
	for i := range 7 {
		k, _ := n.secretKey("ws_l", "owner_id", fmt.Sprintf("o%d", i%2))
		ids = append(ids, k.ID)
	}
	_, m := envelope[keyOut](t, n.do("PATCH", "/v1/keys/"+ids[0], n.rootToken, map[string]any{"active": false}).want(t, http.StatusOK))
	n.do("GET", "/v1/keys?"+minIdx(m.Index), n.rootToken, nil).want(t, http.StatusOK)
	check := func(q string, want int) {
		t.Helper()
		got := n.listAll(n.rootToken, q)
		if len(got) != want {
			t.Errorf("%s: %d keys, want %d", q, len(got), want)
		}
		for i := 1; i < len(got); i++ {
			if got[i].WorkspaceID == got[i-1].WorkspaceID && got[i].ID <= got[i-1].ID {
				t.Errorf("%s: not in id order", q)
			}
		}
	}
	check("workspace_id=ws_l", 7)
	check("workspace_id=ws_l&owner_id=o0", 4)
	check("workspace_id=ws_l&active=false", 1)
	check("workspace_id=ws_l&active=true&owner_id=o0", 3)
	check("type=admin", 1)
	check("type=secret", 7)
	check("workspace_id=nope", 0)
	// Small pages cover everything exactly once.
	seen := map[string]int{}
	cursor := ""
	for range 10 {
		q := "/v1/keys?workspace_id=ws_l&limit=3"
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		page, pm := envelope[[]keyOut](t, n.do("GET", q, n.rootToken, nil).want(t, http.StatusOK))
		for _, k := range page {
			seen[k.ID]++
		}
		if pm.NextCursor == "" {
			break
		}
		cursor = pm.NextCursor
	}
	if len(seen) != 7 {
		t.Errorf("paging saw %d keys", len(seen))
	}
	for id, c := range seen {
		if c != 1 {
			t.Errorf("%s listed %d times", id, c)
		}
	}
	// A cursor of one workspace's listing is refused in another's.
	_, pm := envelope[[]keyOut](t, n.do("GET", "/v1/keys?workspace_id=ws_l&limit=2", n.rootToken, nil).want(t, http.StatusOK))
	n.do("GET", "/v1/keys?workspace_id=other&cursor="+pm.NextCursor, n.rootToken, nil).wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
}

// TestConcurrentUse runs admin writes, reads and verifications at once
// (with -race, this is where data races in the API, index or FSM show).
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{usageFlush: 20 * time.Millisecond})
	var wg sync.WaitGroup
	errs := make(chan string, 100)
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 8 {
				r := n.do("POST", "/v1/keys", n.rootToken, map[string]any{"name": "c", "workspace_id": "ws_c" + strconv.Itoa(w%2), "scopes": []string{"a:b"}})
				if r.Status != http.StatusCreated {
					errs <- fmt.Sprintf("create: %d %s", r.Status, r.Body)
					return
				}
				data := r.JSON["data"].(map[string]any)
				id, tok := data["id"].(string), data["key"].(string)
				idx := uint64(r.JSON["meta"].(map[string]any)["index"].(float64))
				for range 5 {
					if v := n.verifyGET(tok, "scope=a:b&"+minIdx(idx)); v.Status != http.StatusOK {
						errs <- fmt.Sprintf("verify: %d %s", v.Status, v.Body)
					}
				}
				switch i % 4 {
				case 1:
					r = n.do("PATCH", "/v1/keys/"+id, n.rootToken, map[string]any{"metadata": map[string]string{"i": strconv.Itoa(i)}})
				case 2:
					r = n.do("POST", "/v1/keys/"+id+"/rotate", n.rootToken, map[string]any{"grace_period_seconds": 1})
				case 3:
					r = n.do("POST", "/v1/keys/"+id+"/revoke", n.rootToken, nil)
				default:
					r = n.do("GET", "/v1/keys?workspace_id=ws_c0&limit=5", n.rootToken, nil)
				}
				if r.Status != http.StatusOK {
					errs <- fmt.Sprintf("write %d: %d %s", i%4, r.Status, r.Body)
				}
				n.do("GET", "/v1/audit?limit=3", n.rootToken, nil)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if got := len(n.listAll(n.rootToken, "workspace_id=ws_c0")) + len(n.listAll(n.rootToken, "workspace_id=ws_c1")); got != 48 {
		t.Errorf("%d keys, want 48", got)
	}
	n.do("GET", "/metrics", "", nil).want(t, http.StatusOK)
}

// TestNoLeader: with Raft down, writes answer 503 NO_LEADER with
// Retry-After, while verification goes on from the last applied state.
func TestNoLeader(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	k, _ := n.secretKey("ws_nl")
	revoked, _ := n.secretKey("ws_nl")
	_, m := envelope[keyOut](t, n.do("POST", "/v1/keys/"+revoked.ID+"/revoke", n.rootToken, nil).want(t, http.StatusOK))
	n.verifyGET(revoked.Key, minIdx(m.Index)).wantVerify(t, http.StatusUnauthorized, "KEY_REVOKED")
	if err := n.node.Shutdown(); err != nil {
		t.Fatal(err)
	}
	r := n.do("POST", "/v1/keys", n.rootToken, map[string]any{"name": "x", "workspace_id": "ws_nl"}).wantError(t, http.StatusServiceUnavailable, "NO_LEADER")
	if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra < 1 {
		t.Errorf("NO_LEADER Retry-After %q", r.Header.Get("Retry-After"))
	}
	n.do("POST", "/v1/keys/"+k.ID+"/revoke", n.rootToken, nil).wantError(t, http.StatusServiceUnavailable, "NO_LEADER")
	n.verifyGET(k.Key, "").wantVerify(t, http.StatusOK, "VALID")
	n.verifyPOST(map[string]any{"key": revoked.Key}).wantVerify(t, http.StatusUnauthorized, "KEY_REVOKED")
	n.do("GET", "/v1/keys/"+k.ID, n.rootToken, nil).want(t, http.StatusOK)
	n.do("GET", "/readyz", "", nil).want(t, http.StatusServiceUnavailable)
	n.do("GET", "/healthz", "", nil).want(t, http.StatusOK)
}

// TestImportLimit: the largest import (10,000 keys, a body over the 1 MiB
// limit of other routes) goes through in one piece.
func TestImportLimit(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	items := make([]map[string]any, 10_000)
	toks := make([]string, len(items))
	for i := range items {
		toks[i] = fmt.Sprintf("legacy-%06d-%s", i, "0123456789abcdef0123456789")
		items[i] = map[string]any{"sha256": sha(toks[i]), "name": "bulk", "workspace_id": "ws_bulk"}
	}
	r := n.do("POST", "/v1/keys/import", n.rootToken, map[string]any{"keys": items})
	if len(r.Body) > 0 && r.Status != http.StatusCreated {
		t.Fatalf("import of 10,000: %d %.300s", r.Status, r.Body)
	}
	out, m := envelope[importOut](t, r)
	if out.Imported != 10_000 {
		t.Fatalf("imported %d", out.Imported)
	}
	for _, i := range []int{0, 4999, 9999} {
		n.verifyGET(toks[i], minIdx(m.Index)).wantVerify(t, http.StatusOK, "VALID")
	}
	// Counted through /metrics: listing 10,000 records is slow under -race.
	metrics := string(n.do("GET", "/metrics", "", nil).want(t, http.StatusOK).Body)
	if !strings.Contains(metrics, "\nkeyraft_keys 10001\n") {
		t.Errorf("keyraft_keys gauge is not 10001 (10,000 imported and the root key):\n%s", metrics)
	}
	// At least the 10,001 slots (64 bytes each and 8 beside them) and their records.
	var mapped int64
	if _, err := fmt.Sscanf(metrics[strings.Index(metrics, "\nkeyraft_index_mapped_bytes ")+1:], "keyraft_index_mapped_bytes %d", &mapped); err != nil || mapped < 10_001*(72+70) {
		t.Errorf("keyraft_index_mapped_bytes is %d (%v), want the index's slots and records", mapped, err)
	}
	page, _ := envelope[[]keyOut](t, n.do("GET", "/v1/keys?workspace_id=ws_bulk&limit=5", n.rootToken, nil).want(t, http.StatusOK))
	if len(page) != 5 || !page[0].Imported || page[0].Name != "bulk" {
		t.Errorf("listing imported keys: %+v", page)
	}
}

// TestMaxStale: with MaxStale set, a node that has lost its leader for
// longer answers verify with 503 STALE instead of from its old state.
func TestMaxStale(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{maxStale: 300 * time.Millisecond})
	k, idx := n.secretKey("ws_ms")
	n.verifyGET(k.Key, minIdx(idx)).wantVerify(t, http.StatusOK, "VALID")
	time.Sleep(400 * time.Millisecond) // a healthy leader is never stale
	n.verifyGET(k.Key, "").wantVerify(t, http.StatusOK, "VALID")
	if err := n.node.Shutdown(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		r := n.verifyGET(k.Key, "")
		if r.Status == http.StatusServiceUnavailable {
			r.wantVerify(t, http.StatusServiceUnavailable, "STALE")
			break
		}
		r.wantVerify(t, http.StatusOK, "VALID")
		if time.Now().After(deadline) {
			t.Fatal("verify never went STALE without a leader")
		}
		time.Sleep(50 * time.Millisecond)
	}
	n.verifyPOST(map[string]any{"key": k.Key}).wantVerify(t, http.StatusServiceUnavailable, "STALE")
}
