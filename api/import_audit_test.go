package api_test

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyraft/keyraft/keyindex"
)

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func newToken(t *testing.T) string {
	t.Helper()
	tok, err := keyindex.GenerateToken(rand.Reader, "", keyindex.TypeSecret, keyindex.EnvLive)
	if err != nil {
		t.Fatal(err)
	}
	return tok.Plaintext
}

type importOut struct {
	Imported int      `json:"imported"`
	IDs      []string `json:"ids"`
}

func TestImport(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	count := func() int { return len(n.listAll(n.rootToken, "")) }

	t1, t2 := newToken(t), newToken(t)
	legacy := "legacy-token-abc123"
	created := time.Date(2023, 5, 1, 12, 0, 0, 0, time.UTC)
	r := n.do("POST", "/v1/keys/import", n.rootToken, map[string]any{"keys": []map[string]any{
		{"sha256": sha(t1), "name": "one", "workspace_id": "ws_imp", "owner_id": "cust_1", "scopes": []string{"calls:*"},
			"key_prefix": "sk_live_", "key_suffix": t1[len(t1)-4:], "created_at": created.Format(time.RFC3339)},
		{"sha256": sha(t2), "name": "two", "workspace_id": "ws_imp", "metadata": map[string]string{"from": "old"}},
		{"sha256": sha(legacy), "name": "legacy", "workspace_id": "ws_imp", "rate_limit_per_min": 100},
	}}, "X-Request-Id", "req-import").want(t, http.StatusCreated)
	out, m := envelope[importOut](t, r)
	if out.Imported != 3 || len(out.IDs) != 3 || m.Index == 0 || m.RequestID != "req-import" {
		t.Fatalf("import answer %s", r.Body)
	}
	if strings.Contains(string(r.Body), sha(t1)) {
		t.Errorf("import answer echoes a hash: %s", r.Body)
	}
	mi := minIdx(m.Index)
	for i, tok := range []string{t1, t2, legacy} {
		v := n.verifyGET(tok, mi).wantVerify(t, http.StatusOK, "VALID")
		if v.Header.Get("Keyraft-Key-Id") != out.IDs[i] || v.JSON["workspace_id"] != "ws_imp" {
			t.Errorf("token %d verified as %s", i, v.Body)
		}
		n.verifyPOST(map[string]any{"key": tok}).wantVerify(t, http.StatusOK, "VALID")
	}
	n.verifyGET(t1, "scope=calls:start").wantVerify(t, http.StatusOK, "VALID")
	n.verifyGET(t1, "scope=files:read").wantVerify(t, http.StatusForbidden, "INSUFFICIENT_SCOPE")
	// Near misses of the foreign token are unknown, not valid.
	n.verifyGET("legacy-token-abc124", "").wantVerify(t, http.StatusUnauthorized, "MALFORMED_KEY")

	one := n.getKey(out.IDs[0])
	if one.Name != "one" || one.OwnerID != "cust_1" || !one.CreatedAt.Equal(created) || one.KeySuffix != t1[len(t1)-4:] ||
		one.KeyPrefix != "sk_live_" || one.Type != "secret" || !one.Active {
		t.Errorf("imported record %+v", one.Record)
	}
	if !strings.HasPrefix(one.ID, "key_") || one.CreatedBy == "" {
		t.Errorf("imported id/created_by %q %q", one.ID, one.CreatedBy)
	}
	// Imported keys can be rotated onto keyraft tokens.
	rot, rm := envelope[keyOut](t, n.do("POST", "/v1/keys/"+out.IDs[2]+"/rotate", n.rootToken, map[string]any{}).want(t, http.StatusOK))
	if !strings.HasPrefix(rot.Key, "sk_live_") {
		t.Errorf("rotated legacy key %q", rot.Key)
	}
	n.verifyGET(rot.Key, minIdx(rm.Index)).wantVerify(t, http.StatusOK, "VALID")
	n.verifyGET(legacy, "").wantVerify(t, http.StatusUnauthorized, "MALFORMED_KEY")
	keys := count()

	// Importing a known hash again: 409, and nothing of the batch lands.
	t3 := newToken(t)
	r = n.do("POST", "/v1/keys/import", n.rootToken, map[string]any{"keys": []map[string]any{
		{"sha256": sha(t3), "name": "new", "workspace_id": "ws_imp"},
		{"sha256": sha(t2), "name": "again", "workspace_id": "ws_imp"},
	}}).wantError(t, http.StatusConflict, "CONFLICT")
	if !r.hasDetail("keys[1].sha256") || r.hasDetail("keys[0].sha256") {
		t.Errorf("conflict details %s", r.Body)
	}
	n.do("POST", "/v1/keys/import", n.rootToken, map[string]any{"keys": []map[string]any{
		{"sha256": sha(t1), "name": "again", "workspace_id": "ws_imp"},
	}}).wantError(t, http.StatusConflict, "CONFLICT")
	// A hash that belongs to a created key's token conflicts too.
	made, _ := n.secretKey("ws_imp")
	keys++
	n.do("POST", "/v1/keys/import", n.rootToken, map[string]any{"keys": []map[string]any{
		{"sha256": sha(made.Key), "name": "clash", "workspace_id": "ws_imp"},
	}}).wantError(t, http.StatusConflict, "CONFLICT")
	n.verifyGET(t3, "").wantVerify(t, http.StatusUnauthorized, "KEY_NOT_FOUND")
	if got := count(); got != keys {
		t.Fatalf("%d keys after refused imports, want %d", got, keys)
	}

	// Duplicates within a batch, and other bad batches: 422, nothing imported.
	r = n.do("POST", "/v1/keys/import", n.rootToken, map[string]any{"keys": []map[string]any{
		{"sha256": sha(t3), "name": "a", "workspace_id": "ws_imp"},
		{"sha256": sha(t3), "name": "b", "workspace_id": "ws_imp"},
	}}).wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
	if !r.hasDetail("keys[1].sha256") {
		t.Errorf("duplicate details %s", r.Body)
	}
	r = n.do("POST", "/v1/keys/import", n.rootToken, map[string]any{"keys": []any{
		map[string]any{"sha256": sha(t3), "name": "ok", "workspace_id": "ws_imp"},
		map[string]any{"sha256": "ABC", "name": "", "workspace_id": "ws_imp", "bogus": true},
		map[string]any{"name": "no hash", "workspace_id": "ws_imp", "type": "publishable"},
		"not an object",
	}}).wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
	for _, f := range []string{"keys[1].sha256", "keys[1].name", "keys[1].bogus", "keys[2].sha256", "keys[2].allowed_origins", "keys[3]"} {
		if !r.hasDetail(f) {
			t.Errorf("import details do not name %s: %s", f, r.Body)
		}
	}
	if r.hasDetail("keys[0]") {
		t.Errorf("import details name a good item: %s", r.Body)
	}
	many := make([]map[string]any, 10_001)
	for i := range many {
		many[i] = map[string]any{}
	}
	n.do("POST", "/v1/keys/import", n.rootToken, map[string]any{"keys": many}).wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
	// Tens of thousands of bad fields are answered with the first
	// thousand and a count of the rest, not all of them.
	junk := make([]map[string]any, 2000)
	for i := range junk {
		junk[i] = map[string]any{}
		for j := range 20 {
			junk[i][fmt.Sprintf("junk%d", j)] = 1
		}
	}
	r = n.do("POST", "/v1/keys/import", n.rootToken, map[string]any{"keys": junk}).wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
	var answer struct {
		Error struct {
			Details []struct{ Field, Issue string }
		} `json:"error"`
	}
	if err := json.Unmarshal(r.Body, &answer); err != nil {
		t.Fatal(err)
	}
	if d := answer.Error.Details; len(d) != 1001 || d[0].Field != "keys[0].junk0" || d[1000].Field != "body" || !strings.HasSuffix(d[1000].Issue, " more bad fields are not listed") {
		t.Errorf("%d details, first %+v, last %+v", len(d), d[0], d[len(d)-1])
	}
	n.do("POST", "/v1/keys/import", n.rootToken, map[string]any{"keys": []any{}}).wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
	n.do("POST", "/v1/keys/import", n.rootToken, map[string]any{}).wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
	n.do("POST", "/v1/keys/import", n.rootToken, `{"keys": {}}`).wantError(t, http.StatusUnprocessableEntity, "VALIDATION_FAILED")
	n.do("POST", "/v1/keys/import", n.rootToken, `{"keys": [`).wantError(t, http.StatusBadRequest, "BAD_REQUEST")
	n.verifyGET(t3, "").wantVerify(t, http.StatusUnauthorized, "KEY_NOT_FOUND")
	if got := count(); got != keys {
		t.Fatalf("%d keys after refused imports, want %d", got, keys)
	}

	// A workspace admin imports only into its own workspace.
	adm, _ := n.createKey(n.rootToken, map[string]any{"name": "adm", "type": "admin", "workspace_id": "ws_other", "scopes": []string{"keys:write", "keys:read"}})
	keys++
	n.do("POST", "/v1/keys/import", adm.Key, map[string]any{"keys": []map[string]any{
		{"sha256": sha(t3), "name": "x", "workspace_id": "ws_imp"},
	}}).wantError(t, http.StatusForbidden, "FORBIDDEN")
	r = n.do("POST", "/v1/keys/import", adm.Key, map[string]any{"keys": []map[string]any{{"sha256": sha(t3), "name": "x"}}}).want(t, http.StatusCreated)
	o2, m2 := envelope[importOut](t, r)
	v := n.verifyGET(t3, minIdx(m2.Index)).wantVerify(t, http.StatusOK, "VALID")
	if v.JSON["workspace_id"] != "ws_other" || len(o2.IDs) != 1 {
		t.Errorf("workspace admin import: %s", v.Body)
	}
	if got := count(); got != keys+1 {
		t.Fatalf("%d keys, want %d", got, keys+1)
	}
}

type auditOut struct {
	Seq         uint64    `json:"seq"`
	Time        time.Time `json:"time"`
	ActorKeyID  string    `json:"actor_key_id"`
	WorkspaceID string    `json:"workspace_id"`
	Action      string    `json:"action"`
	Target      string    `json:"target"`
	RequestID   string    `json:"request_id"`
}

func TestAudit(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	rootID := n.listAll(n.rootToken, "workspace_id=*")[0].ID
	adm, _ := n.createKey(n.rootToken, map[string]any{"name": "adm", "type": "admin", "workspace_id": "ws1",
		"scopes": []string{"keys:read", "keys:write", "audit:read"}})

	hdr := func(id string) []string { return []string{"X-Request-Id", id} }
	a, _ := envelope[keyOut](t, n.do("POST", "/v1/keys", n.rootToken, map[string]any{"name": "a", "workspace_id": "ws1"}, hdr("req-a-create")...).want(t, http.StatusCreated))
	b, _ := envelope[keyOut](t, n.do("POST", "/v1/keys", n.rootToken, map[string]any{"name": "b", "workspace_id": "ws2"}, hdr("req-b-create")...).want(t, http.StatusCreated))
	n.do("PATCH", "/v1/keys/"+a.ID, adm.Key, map[string]any{"name": "a2"}, hdr("req-a-update")...).want(t, http.StatusOK)
	n.do("POST", "/v1/keys/"+a.ID+"/rotate", adm.Key, map[string]any{"grace_period_seconds": 10}, hdr("req-a-rotate")...).want(t, http.StatusOK)
	n.do("POST", "/v1/keys/"+b.ID+"/revoke", n.rootToken, nil, hdr("req-b-revoke")...).want(t, http.StatusOK)
	n.do("POST", "/v1/keys/import", n.rootToken, map[string]any{"keys": []map[string]any{{"sha256": sha(newToken(t)), "name": "i", "workspace_id": "ws1"}}}, hdr("req-import")...).want(t, http.StatusCreated)
	del := n.do("DELETE", "/v1/keys/"+b.ID, n.rootToken, nil, hdr("req-b-delete")...).want(t, http.StatusNoContent)
	last := parseUint(t, del.Header.Get("Keyraft-Index"))
	// Refused writes and reads are not audited.
	n.do("POST", "/v1/keys", n.rootToken, map[string]any{"name": ""}, hdr("req-refused")...).want(t, http.StatusUnprocessableEntity)
	n.do("GET", "/v1/keys/"+a.ID, n.rootToken, nil, hdr("req-read")...).want(t, http.StatusOK)
	n.verifyGET(a.Key, "")

	want := []auditOut{
		{ActorKeyID: rootID, WorkspaceID: "ws2", Action: "key.delete", Target: b.ID, RequestID: "req-b-delete"},
		{ActorKeyID: rootID, WorkspaceID: "ws1", Action: "key.import", Target: "1 keys", RequestID: "req-import"},
		{ActorKeyID: rootID, WorkspaceID: "ws2", Action: "key.revoke", Target: b.ID, RequestID: "req-b-revoke"},
		{ActorKeyID: adm.ID, WorkspaceID: "ws1", Action: "key.rotate", Target: a.ID, RequestID: "req-a-rotate"},
		{ActorKeyID: adm.ID, WorkspaceID: "ws1", Action: "key.update", Target: a.ID, RequestID: "req-a-update"},
		{ActorKeyID: rootID, WorkspaceID: "ws2", Action: "key.create", Target: b.ID, RequestID: "req-b-create"},
		{ActorKeyID: rootID, WorkspaceID: "ws1", Action: "key.create", Target: a.ID, RequestID: "req-a-create"},
		{ActorKeyID: rootID, WorkspaceID: "ws1", Action: "key.create", Target: adm.ID},
		{ActorKeyID: "bootstrap", WorkspaceID: "*", Action: "key.create", Target: rootID},
	}
	strip := func(es []auditOut) []auditOut {
		out := make([]auditOut, len(es))
		for i, e := range es {
			out[i] = auditOut{ActorKeyID: e.ActorKeyID, WorkspaceID: e.WorkspaceID, Action: e.Action, Target: e.Target, RequestID: e.RequestID}
		}
		return out
	}
	all, m := envelope[[]auditOut](t, n.do("GET", "/v1/audit?"+minIdx(last), n.rootToken, nil).want(t, http.StatusOK))
	if m.NextCursor != "" {
		t.Errorf("one page has a next cursor %q", m.NextCursor)
	}
	got := strip(all)
	if len(got) != len(want) {
		t.Fatalf("audit has %d entries, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		// The bootstrap and the ws admin's creation carry generated request ids.
		if want[i].RequestID == "" {
			got[i].RequestID = ""
		}
		if got[i] != want[i] {
			t.Errorf("entry %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	for i, e := range all {
		if e.Seq == 0 || e.Time.IsZero() || time.Since(e.Time) > time.Minute {
			t.Errorf("entry %d seq/time %+v", i, e)
		}
		if i > 0 && e.Seq >= all[i-1].Seq {
			t.Errorf("not newest first at %d: %d after %d", i, e.Seq, all[i-1].Seq)
		}
	}
	if all[0].Seq != last {
		t.Errorf("newest entry seq %d, want the delete's index %d", all[0].Seq, last)
	}

	// Paging: limit and cursor walk the same entries.
	var paged []auditOut
	cursor := ""
	for range 20 {
		q := "/v1/audit?limit=2"
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		page, pm := envelope[[]auditOut](t, n.do("GET", q, n.rootToken, nil).want(t, http.StatusOK))
		if len(page) > 2 || len(page) == 0 {
			t.Fatalf("page of %d entries", len(page))
		}
		paged = append(paged, page...)
		if pm.NextCursor == "" {
			break
		}
		cursor = pm.NextCursor
	}
	if len(paged) != len(all) {
		t.Fatalf("paging gave %d entries, want %d", len(paged), len(all))
	}
	for i := range all {
		if paged[i] != all[i] {
			t.Errorf("paged entry %d: %+v, want %+v", i, paged[i], all[i])
		}
	}

	// The workspace admin sees only ws1's entries.
	ws1, _ := envelope[[]auditOut](t, n.do("GET", "/v1/audit", adm.Key, nil).want(t, http.StatusOK))
	var wantWS1 []auditOut
	for _, e := range all {
		if e.WorkspaceID == "ws1" {
			wantWS1 = append(wantWS1, e)
		}
	}
	if len(ws1) != len(wantWS1) || len(ws1) != 5 {
		t.Fatalf("ws1 admin sees %d entries, want %d: %+v", len(ws1), len(wantWS1), ws1)
	}
	for i := range ws1 {
		if ws1[i] != wantWS1[i] {
			t.Errorf("ws1 entry %d: %+v, want %+v", i, ws1[i], wantWS1[i])
		}
	}
	p1, pm := envelope[[]auditOut](t, n.do("GET", "/v1/audit?limit=3", adm.Key, nil).want(t, http.StatusOK))
	p2, pm2 := envelope[[]auditOut](t, n.do("GET", "/v1/audit?limit=3&cursor="+pm.NextCursor, adm.Key, nil).want(t, http.StatusOK))
	if len(p1) != 3 || len(p2) != 2 || pm2.NextCursor != "" || p2[0] != wantWS1[3] {
		t.Errorf("ws1 paging: %+v / %+v (%q)", p1, p2, pm2.NextCursor)
	}
	// Keys without audit:read, and non-admin keys, cannot read it.
	n.do("GET", "/v1/audit", a.Key, nil).wantError(t, http.StatusForbidden, "FORBIDDEN")
	n.do("GET", "/v1/audit", "", nil).wantError(t, http.StatusUnauthorized, "UNAUTHORIZED")
}
