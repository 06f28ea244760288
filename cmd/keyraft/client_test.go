package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// seenRequest is what the fake server saw of one request.
type seenRequest struct {
	Method, Path, RawQuery string
	Auth, RequestID, CType string
	Body                   []byte
	Query                  map[string][]string
}

// fakeServer records requests and answers them with reply.
type fakeServer struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []seenRequest
}

func newFakeServer(t *testing.T, reply func(w http.ResponseWriter, r *http.Request, n int)) *fakeServer {
	t.Helper()
	fs := &fakeServer{}
	fs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fs.mu.Lock()
		fs.reqs = append(fs.reqs, seenRequest{
			Method: r.Method, Path: r.URL.EscapedPath(), RawQuery: r.URL.RawQuery,
			Auth: r.Header.Get("Authorization"), RequestID: r.Header.Get("X-Request-Id"),
			CType: r.Header.Get("Content-Type"), Body: body, Query: r.URL.Query(),
		})
		n := len(fs.reqs)
		fs.mu.Unlock()
		reply(w, r, n)
	}))
	t.Cleanup(fs.Close)
	return fs
}

func (fs *fakeServer) requests() []seenRequest {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return append([]seenRequest(nil), fs.reqs...)
}

func (fs *fakeServer) only(t *testing.T) seenRequest {
	t.Helper()
	reqs := fs.requests()
	if len(reqs) != 1 {
		t.Fatalf("server saw %d requests, want 1", len(reqs))
	}
	return reqs[0]
}

func writeEnvelope(w http.ResponseWriter, status int, data any, meta map[string]any) {
	if meta == nil {
		meta = map[string]any{}
	}
	meta["request_id"] = "req_1"
	meta["timestamp"] = "2026-01-01T00:00:00Z"
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"data": data, "meta": meta})
}

func writeRaw(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	io.WriteString(w, body)
}

type cliResult struct {
	code           int
	stdout, stderr string
}

// runCLI runs a client command against a fake environment.
func runCLI(t *testing.T, cmd func([]string, cliEnv) int, env map[string]string, stdin string, args ...string) cliResult {
	t.Helper()
	var out, errb bytes.Buffer
	e := cliEnv{
		Getenv: func(k string) string { return env[k] },
		Stdin:  strings.NewReader(stdin),
		Stdout: &out,
		Stderr: &errb,
	}
	code := cmd(args, e)
	return cliResult{code, out.String(), errb.String()}
}

func adminEnv(fs *fakeServer) map[string]string {
	return map[string]string{"KEYRAFT_ADDR": fs.URL, "KEYRAFT_TOKEN": "rk_test_admin"}
}

func sampleRecord(id string) map[string]any {
	return map[string]any{
		"id": id, "workspace_id": "ws_1", "owner_id": "cus_1", "name": "Prod backend",
		"type": "secret", "environment": "live", "key_prefix": "acme_sk_live_", "key_suffix": "Wx9Z",
		"preview": "acme_sk_live_Ab3d…Wx9Z", "scopes": []string{"calls:start", "calls:end"},
		"allowed_origins": []string{}, "allowed_resources": []string{}, "rate_limit_per_min": 100,
		"metadata": map[string]string{"plan": "pro"}, "active": true, "expires_at": nil,
		"created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
		"created_by": "key_ADMIN", "revoked_at": nil, "last_used_at": nil, "usage_count": 0,
		"rotation": nil, "imported": false,
	}
}

func decodeBody(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("request body %q is not a JSON object: %v", b, err)
	}
	return m
}

func wantContains(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s does not contain %q:\n%s", what, sub, s)
		}
	}
}

func wantCode(t *testing.T, r cliResult, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
}

func TestKeysCreate(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		rec := sampleRecord("key_01HCREATE")
		rec["key"] = "acme_sk_live_SECRETSECRET"
		writeEnvelope(w, 201, rec, map[string]any{"index": 7})
	})
	r := runCLI(t, keysCmd, adminEnv(fs), "", "create",
		"--name", "Prod backend", "--workspace", "ws_1", "--owner", "cus_1", "--type", "secret",
		"--env", "live", "--prefix", "acme", "--scopes", "calls:start, calls:end",
		"--origins", "https://a.example,https://b.example", "--resources", "r1,r2",
		"--rate-limit", "100", "--metadata", "plan=pro", "--metadata", "note=a=b,c",
		"--expires-at", "2030-01-01T00:00:00Z", "--inactive")
	wantCode(t, r, 0)
	req := fs.only(t)
	if req.Method != "POST" || req.Path != "/v1/keys" {
		t.Errorf("request %s %s, want POST /v1/keys", req.Method, req.Path)
	}
	if req.Auth != "Bearer rk_test_admin" {
		t.Errorf("Authorization %q", req.Auth)
	}
	if req.CType != "application/json" {
		t.Errorf("Content-Type %q", req.CType)
	}
	if req.RequestID != "" {
		t.Errorf("X-Request-Id %q sent without --request-id", req.RequestID)
	}
	want := map[string]any{
		"name": "Prod backend", "workspace_id": "ws_1", "owner_id": "cus_1", "type": "secret",
		"environment": "live", "workspace_prefix": "acme",
		"scopes":             []any{"calls:start", "calls:end"},
		"allowed_origins":    []any{"https://a.example", "https://b.example"},
		"allowed_resources":  []any{"r1", "r2"},
		"rate_limit_per_min": float64(100),
		"metadata":           map[string]any{"plan": "pro", "note": "a=b,c"},
		"expires_at":         "2030-01-01T00:00:00Z",
		"active":             false,
	}
	if got := decodeBody(t, req.Body); !reflect.DeepEqual(got, want) {
		t.Errorf("body\n got %v\nwant %v", got, want)
	}
	wantContains(t, "stdout", r.stdout, "key_01HCREATE", "Prod backend", "calls:start, calls:end", "plan=pro")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if last := lines[len(lines)-1]; last != "key: acme_sk_live_SECRETSECRET" {
		t.Errorf("last stdout line %q, want the key", last)
	}
	if strings.Count(r.stdout, "acme_sk_live_SECRETSECRET") != 1 {
		t.Errorf("key printed other than once:\n%s", r.stdout)
	}
	wantContains(t, "stderr", r.stderr, "Store this key now: it is shown only once.")
	if strings.Contains(r.stdout, "shown only once") {
		t.Errorf("warning on stdout")
	}
}

func TestKeysCreateSendsOnlyGivenFields(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		rec := sampleRecord("key_1")
		rec["key"] = "sk_live_x"
		writeEnvelope(w, 201, rec, nil)
	})
	r := runCLI(t, keysCmd, adminEnv(fs), "", "create", "--name", "n")
	wantCode(t, r, 0)
	if got := string(fs.only(t).Body); got != `{"name":"n"}` {
		t.Errorf("body %s, want only the name", got)
	}

	// --name is required; nothing is sent.
	r = runCLI(t, keysCmd, adminEnv(fs), "", "create", "--type", "secret")
	wantCode(t, r, 2)
	wantContains(t, "stderr", r.stderr, "--name is required")
	if n := len(fs.requests()); n != 1 {
		t.Errorf("server saw %d requests", n)
	}
}

func TestKeysCreateJSON(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		writeRaw(w, 201, `{"data":{"id":"key_1","key":"sk_live_abc"},"meta":{"request_id":"r"}}`)
	})
	r := runCLI(t, keysCmd, adminEnv(fs), "", "create", "--name", "n", "--json")
	wantCode(t, r, 0)
	if want := "{\n  \"id\": \"key_1\",\n  \"key\": \"sk_live_abc\"\n}\n"; r.stdout != want {
		t.Errorf("stdout %q, want %q", r.stdout, want)
	}
	wantContains(t, "stderr", r.stderr, "shown only once")
}

func TestKeysListAllFollowsCursors(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		switch r.URL.Query().Get("cursor") {
		case "":
			writeEnvelope(w, 200, []any{sampleRecord("key_A"), sampleRecord("key_B")}, map[string]any{"next_cursor": "cur2"})
		case "cur2":
			rec := sampleRecord("key_C")
			rec["active"] = false
			rec["revoked_at"] = "2026-02-01T00:00:00Z"
			rec["last_used_at"] = "2026-01-15T00:00:00Z"
			writeEnvelope(w, 200, []any{rec}, nil)
		default:
			writeRaw(w, 400, `{"error":{"code":"BAD_REQUEST","message":"bad cursor","details":[]}}`)
		}
	})
	r := runCLI(t, keysCmd, adminEnv(fs), "", "list", "--workspace", "ws_1", "--owner", "cus_1",
		"--type", "secret", "--active", "true", "--limit", "2", "--all")
	wantCode(t, r, 0)
	reqs := fs.requests()
	if len(reqs) != 2 {
		t.Fatalf("server saw %d requests, want 2", len(reqs))
	}
	for i, req := range reqs {
		if req.Method != "GET" || req.Path != "/v1/keys" || req.Auth != "Bearer rk_test_admin" {
			t.Errorf("request %d: %s %s auth %q", i, req.Method, req.Path, req.Auth)
		}
		for k, v := range map[string]string{"workspace_id": "ws_1", "owner_id": "cus_1", "type": "secret", "active": "true", "limit": "2"} {
			if got := req.Query[k]; len(got) != 1 || got[0] != v {
				t.Errorf("request %d: query %s = %v, want %s", i, k, got, v)
			}
		}
	}
	if _, ok := reqs[0].Query["cursor"]; ok {
		t.Errorf("first page sent a cursor: %s", reqs[0].RawQuery)
	}
	if got := reqs[1].Query["cursor"]; len(got) != 1 || got[0] != "cur2" {
		t.Errorf("second page cursor %v, want cur2", got)
	}
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("want a header and 3 rows:\n%s", r.stdout)
	}
	for _, col := range []string{"ID", "NAME", "WORKSPACE", "TYPE", "ENV", "PREVIEW", "ACTIVE", "REVOKED", "LAST USED"} {
		wantContains(t, "header", lines[0], col)
	}
	wantContains(t, "row 3", lines[3], "key_C", "Prod backend", "ws_1", "secret", "live", "acme_sk_live_Ab3d…Wx9Z", "false", "2026-02-01T00:00:00Z", "2026-01-15T00:00:00Z")
	wantContains(t, "row 1", lines[1], "key_A", "true")
	if strings.Contains(r.stderr, "more:") {
		t.Errorf("--all printed a cursor hint: %s", r.stderr)
	}

	// --json merges every page into one array.
	r = runCLI(t, keysCmd, adminEnv(fs), "", "list", "--all", "--json")
	wantCode(t, r, 0)
	var arr []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &arr); err != nil || len(arr) != 3 {
		t.Fatalf("--json --all: %v, %d records\n%s", err, len(arr), r.stdout)
	}
}

func TestKeysListOnePageHintsCursor(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		writeEnvelope(w, 200, []any{sampleRecord("key_A")}, map[string]any{"next_cursor": "cur2"})
	})
	r := runCLI(t, keysCmd, adminEnv(fs), "", "list", "--cursor", "cur1")
	wantCode(t, r, 0)
	req := fs.only(t)
	if req.RawQuery != "cursor=cur1" {
		t.Errorf("query %q, want cursor=cur1 only", req.RawQuery)
	}
	wantContains(t, "stderr", r.stderr, "more: --cursor cur2")
	if strings.Contains(r.stdout, "cur2") {
		t.Errorf("cursor hint on stdout")
	}
}

func TestKeysListBadActive(t *testing.T) {
	r := runCLI(t, keysCmd, map[string]string{"KEYRAFT_TOKEN": "t", "KEYRAFT_ADDR": "127.0.0.1:1"}, "", "list", "--active", "maybe")
	wantCode(t, r, 2)
	wantContains(t, "stderr", r.stderr, "--active wants true or false")
}

func TestKeysGet(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		writeEnvelope(w, 200, sampleRecord("key_01HGET"), nil)
	})
	r := runCLI(t, keysCmd, adminEnv(fs), "", "get", "key_01HGET")
	wantCode(t, r, 0)
	req := fs.only(t)
	if req.Method != "GET" || req.Path != "/v1/keys/key_01HGET" || req.Auth != "Bearer rk_test_admin" {
		t.Errorf("request %s %s auth %q", req.Method, req.Path, req.Auth)
	}
	fields := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			t.Fatalf("line %q is not field: value", line)
		}
		fields[k] = strings.TrimSpace(v)
	}
	for k, v := range map[string]string{
		"id": "key_01HGET", "name": "Prod backend", "workspace_id": "ws_1", "type": "secret",
		"environment": "live", "preview": "acme_sk_live_Ab3d…Wx9Z", "scopes": "calls:start, calls:end",
		"allowed_origins": "-", "allowed_resources": "-", "expires_at": "-", "revoked_at": "-",
		"rotation": "-", "metadata": "plan=pro", "active": "true", "rate_limit_per_min": "100",
		"usage_count": "0", "imported": "false",
	} {
		if fields[k] != v {
			t.Errorf("field %s = %q, want %q", k, fields[k], v)
		}
	}
	if _, ok := fields["key"]; ok {
		t.Errorf("get printed a key line")
	}
}

func TestKeysGetFlagsAfterPositional(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		writeRaw(w, 200, `{"data":{"id":"key_01H","scopes":[]},"meta":{"request_id":"r"}}`)
	})
	r := runCLI(t, keysCmd, map[string]string{"KEYRAFT_TOKEN": "env_token"}, "",
		"get", "key_01H", "--json", "--addr", fs.URL, "--token", "flag_token", "--request-id", "req-42")
	wantCode(t, r, 0)
	req := fs.only(t)
	if req.Path != "/v1/keys/key_01H" {
		t.Errorf("path %q", req.Path)
	}
	if req.Auth != "Bearer flag_token" {
		t.Errorf("--token did not override KEYRAFT_TOKEN: %q", req.Auth)
	}
	if req.RequestID != "req-42" {
		t.Errorf("X-Request-Id %q, want req-42", req.RequestID)
	}
	if want := "{\n  \"id\": \"key_01H\",\n  \"scopes\": []\n}\n"; r.stdout != want {
		t.Errorf("stdout %q, want %q", r.stdout, want)
	}
}

func TestKeysUpdate(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		writeEnvelope(w, 200, sampleRecord("key_U"), map[string]any{"index": 9})
	})
	r := runCLI(t, keysCmd, adminEnv(fs), "", "update", "key_U", "--expires-at", "never",
		"--scopes", "", "--active", "false", "--name", "renamed", "--rate-limit", "0", "--metadata", "")
	wantCode(t, r, 0)
	req := fs.only(t)
	if req.Method != "PATCH" || req.Path != "/v1/keys/key_U" || req.Auth != "Bearer rk_test_admin" {
		t.Errorf("request %s %s auth %q", req.Method, req.Path, req.Auth)
	}
	want := map[string]any{"expires_at": nil, "scopes": []any{}, "active": false, "name": "renamed",
		"rate_limit_per_min": float64(0), "metadata": map[string]any{}}
	if got := decodeBody(t, req.Body); !reflect.DeepEqual(got, want) {
		t.Errorf("body\n got %v\nwant %v", got, want)
	}
	wantContains(t, "body", string(req.Body), `"expires_at":null`, `"scopes":[]`)
	wantContains(t, "stdout", r.stdout, "key_U")

	// Only the given fields are sent.
	r = runCLI(t, keysCmd, adminEnv(fs), "", "update", "--origins", "https://x.example", "key_U")
	wantCode(t, r, 0)
	if got := string(fs.requests()[1].Body); got != `{"allowed_origins":["https://x.example"]}` {
		t.Errorf("body %s", got)
	}

	// Nothing to update is a usage error.
	r = runCLI(t, keysCmd, adminEnv(fs), "", "update", "key_U")
	wantCode(t, r, 2)
	wantContains(t, "stderr", r.stderr, "nothing to update")
}

func TestKeysRotate(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		rec := sampleRecord("key_R")
		rec["key"] = "acme_sk_live_NEWNEW"
		rec["rotation"] = map[string]any{"previous_expires_at": "2026-01-02T00:00:00Z"}
		writeEnvelope(w, 200, rec, nil)
	})
	r := runCLI(t, keysCmd, adminEnv(fs), "", "rotate", "key_R", "--grace", "1h")
	wantCode(t, r, 0)
	req := fs.only(t)
	if req.Method != "POST" || req.Path != "/v1/keys/key_R/rotate" {
		t.Errorf("request %s %s", req.Method, req.Path)
	}
	if got := string(req.Body); got != `{"grace_period_seconds":3600}` {
		t.Errorf("body %s", got)
	}
	wantContains(t, "stdout", r.stdout, "key: acme_sk_live_NEWNEW", "previous_expires_at=2026-01-02T00:00:00Z")
	wantContains(t, "stderr", r.stderr, "shown only once")

	r = runCLI(t, keysCmd, adminEnv(fs), "", "rotate", "key_R", "--grace", "soon")
	wantCode(t, r, 2)
}

func TestClientParseGrace(t *testing.T) {
	for in, want := range map[string]int64{"1h": 3600, "3600": 3600, "0": 0, "90m": 5400, "7d": 604800, "24h": 86400, "1h30s": 3630} {
		got, err := parseGrace(in)
		if err != nil || got != want {
			t.Errorf("parseGrace(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "soon", "1.5s", "xd", "1ms"} {
		if _, err := parseGrace(in); err == nil {
			t.Errorf("parseGrace(%q) accepted", in)
		}
	}
}

func TestKeysRevoke(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		rec := sampleRecord("key_V")
		rec["revoked_at"] = "2026-03-01T00:00:00Z"
		rec["active"] = false
		writeEnvelope(w, 200, rec, nil)
	})
	r := runCLI(t, keysCmd, adminEnv(fs), "", "revoke", "key_V")
	wantCode(t, r, 0)
	req := fs.only(t)
	if req.Method != "POST" || req.Path != "/v1/keys/key_V/revoke" || len(req.Body) != 0 {
		t.Errorf("request %s %s body %q", req.Method, req.Path, req.Body)
	}
	wantContains(t, "stdout", r.stdout, "2026-03-01T00:00:00Z")
}

func TestKeysDelete(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.WriteHeader(http.StatusNoContent)
	})
	r := runCLI(t, keysCmd, adminEnv(fs), "", "delete", "key_D")
	wantCode(t, r, 0)
	req := fs.only(t)
	if req.Method != "DELETE" || req.Path != "/v1/keys/key_D" || req.Auth != "Bearer rk_test_admin" {
		t.Errorf("request %s %s auth %q", req.Method, req.Path, req.Auth)
	}
	if r.stdout != "deleted key_D\n" {
		t.Errorf("stdout %q", r.stdout)
	}
}

func TestKeysPathEscapesID(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.WriteHeader(http.StatusNoContent)
	})
	r := runCLI(t, keysCmd, adminEnv(fs), "", "delete", "a/b?c")
	wantCode(t, r, 0)
	if req := fs.only(t); req.Path != "/v1/keys/a%2Fb%3Fc" || req.RawQuery != "" {
		t.Errorf("path %q query %q", req.Path, req.RawQuery)
	}
}

func TestKeysImport(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		writeEnvelope(w, 201, map[string]any{"imported": 2, "ids": []string{"key_1", "key_2"}}, nil)
	})
	arr := `[{"sha256":"aa","name":"one"},{"sha256":"bb","name":"two"}]`
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := os.WriteFile(path, []byte(arr+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, keysCmd, adminEnv(fs), "", "import", path)
	wantCode(t, r, 0)
	req := fs.only(t)
	if req.Method != "POST" || req.Path != "/v1/keys/import" || req.Auth != "Bearer rk_test_admin" {
		t.Errorf("request %s %s auth %q", req.Method, req.Path, req.Auth)
	}
	var got, want any
	json.Unmarshal(req.Body, &got)
	json.Unmarshal([]byte(`{"keys":`+arr+`}`), &want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("body %s, want the array wrapped in {\"keys\": …}", req.Body)
	}
	if r.stdout != "imported 2 keys\n" {
		t.Errorf("stdout %q", r.stdout)
	}

	// An object from stdin is sent as it is.
	obj := `{"keys":[{"sha256":"cc","name":"three"}]}`
	r = runCLI(t, keysCmd, adminEnv(fs), obj, "import", "-")
	wantCode(t, r, 0)
	if got := string(fs.requests()[1].Body); got != obj {
		t.Errorf("body %s, want %s", got, obj)
	}

	// Not JSON, or the wrong shape: nothing is sent.
	for _, bad := range []string{"nope", `"str"`, `{"other":[]}`} {
		r = runCLI(t, keysCmd, adminEnv(fs), bad, "import", "-")
		wantCode(t, r, 1)
	}
	if n := len(fs.requests()); n != 2 {
		t.Errorf("server saw %d requests, want 2", n)
	}
}

func TestVerifyValid(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.Header().Set("Keyraft-Key-Id", "key_1")
		writeRaw(w, 200, `{"valid":true,"code":"VALID","key_id":"key_1","workspace_id":"ws_1","owner_id":"cus_1",`+
			`"type":"secret","environment":"live","scopes":["calls:*"],"metadata":{"plan":"pro"},"expires_at":null,`+
			`"ratelimit":{"limit":100,"remaining":99,"reset_ms":60000}}`)
	})
	r := runCLI(t, verifyCmd, map[string]string{"KEYRAFT_ADDR": fs.URL, "KEYRAFT_TOKEN": "rk_admin"}, "",
		"sk_live_TOKEN", "--scope", "calls:start", "--resource", "asst_1", "--origin", "https://a.example", "--min-index", "42")
	wantCode(t, r, 0)
	req := fs.only(t)
	if req.Method != "POST" || req.Path != "/v1/verify" || req.RawQuery != "min_index=42" {
		t.Errorf("request %s %s?%s", req.Method, req.Path, req.RawQuery)
	}
	if req.Auth != "" {
		t.Errorf("verify sent Authorization %q", req.Auth)
	}
	want := map[string]any{"key": "sk_live_TOKEN", "scope": "calls:start", "resource": "asst_1", "origin": "https://a.example"}
	if got := decodeBody(t, req.Body); !reflect.DeepEqual(got, want) {
		t.Errorf("body %v, want %v", got, want)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if !strings.HasPrefix(lines[0], "valid:") || !strings.HasSuffix(lines[0], "true") {
		t.Errorf("first line %q", lines[0])
	}
	wantContains(t, "stdout", r.stdout, "VALID", "key_1", "ws_1", "cus_1", "calls:*", "plan=pro", "limit=100, remaining=99, reset_ms=60000")
	if strings.Contains(r.stdout, "sk_live_TOKEN") || strings.Contains(r.stderr, "sk_live_TOKEN") {
		t.Errorf("the key was echoed")
	}

	// Only the key is sent when nothing else is given; no query.
	r = runCLI(t, verifyCmd, map[string]string{"KEYRAFT_ADDR": fs.URL}, "", "sk_live_TOKEN")
	wantCode(t, r, 0)
	if req := fs.requests()[1]; string(req.Body) != `{"key":"sk_live_TOKEN"}` || req.RawQuery != "" {
		t.Errorf("body %s query %q", req.Body, req.RawQuery)
	}
}

func TestVerifyInvalid(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		writeRaw(w, 401, `{"valid":false,"code":"KEY_REVOKED","message":"the key was revoked"}`)
	})
	r := runCLI(t, verifyCmd, map[string]string{"KEYRAFT_ADDR": fs.URL}, "", "sk_live_TOKEN")
	wantCode(t, r, 1)
	wantContains(t, "stdout", r.stdout, "valid:", "false", "KEY_REVOKED")
	wantContains(t, "stderr", r.stderr, "keyraft: KEY_REVOKED: the key was revoked")

	r = runCLI(t, verifyCmd, map[string]string{"KEYRAFT_ADDR": fs.URL}, "", "--json", "sk_live_TOKEN")
	wantCode(t, r, 1)
	var m map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil || m["code"] != "KEY_REVOKED" {
		t.Errorf("--json stdout %q: %v", r.stdout, err)
	}
}

func TestVerifyRateLimitedShowsRetryAfter(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.Header().Set("Retry-After", "7")
		writeRaw(w, 429, `{"valid":false,"code":"RATE_LIMITED","message":"slow down"}`)
	})
	r := runCLI(t, verifyCmd, map[string]string{"KEYRAFT_ADDR": fs.URL}, "", "sk_live_TOKEN")
	wantCode(t, r, 1)
	wantContains(t, "stderr", r.stderr, "keyraft: RATE_LIMITED: slow down (retry after 7s)")
}

func TestVerifyKeyFromStdin(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		writeRaw(w, 200, `{"valid":true,"code":"VALID","key_id":"key_1"}`)
	})
	r := runCLI(t, verifyCmd, map[string]string{"KEYRAFT_ADDR": fs.URL}, "  sk_live_FROMSTDIN \n", "-", "--scope", "a")
	wantCode(t, r, 0)
	if got := string(fs.only(t).Body); got != `{"key":"sk_live_FROMSTDIN","scope":"a"}` {
		t.Errorf("body %s", got)
	}

	r = runCLI(t, verifyCmd, map[string]string{"KEYRAFT_ADDR": fs.URL}, "\n", "-")
	wantCode(t, r, 2)
	r = runCLI(t, verifyCmd, map[string]string{"KEYRAFT_ADDR": fs.URL}, "")
	wantCode(t, r, 2)
	wantContains(t, "stderr", r.stderr, "usage: keyraft verify")
}

func TestKeysErrorEnvelope(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		writeRaw(w, 422, `{"error":{"code":"VALIDATION_FAILED","message":"the request has invalid fields",`+
			`"details":[{"field":"name","issue":"required"},{"field":"scopes[0]","issue":"bad scope \"A B\""}]},"meta":{"request_id":"r"}}`)
	})
	r := runCLI(t, keysCmd, adminEnv(fs), "", "create", "--name", "", "--scopes", "A B")
	wantCode(t, r, 1)
	want := "keyraft: VALIDATION_FAILED: the request has invalid fields\n  name: required\n  scopes[0]: bad scope \"A B\"\n"
	if r.stderr != want {
		t.Errorf("stderr %q, want %q", r.stderr, want)
	}
	if r.stdout != "" {
		t.Errorf("stdout %q", r.stdout)
	}
}

func TestKeysErrorRetryAfterAndNonJSON(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			w.Header().Set("Retry-After", "2")
			writeRaw(w, 503, `{"error":{"code":"NO_LEADER","message":"no leader","details":[]},"meta":{}}`)
			return
		}
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(502)
		io.WriteString(w, "<html>\n<body>bad\tgateway</body></html>")
	})
	r := runCLI(t, keysCmd, adminEnv(fs), "", "get", "key_1")
	wantCode(t, r, 1)
	if r.stderr != "keyraft: NO_LEADER: no leader (retry after 2s)\n" {
		t.Errorf("stderr %q", r.stderr)
	}
	r = runCLI(t, keysCmd, adminEnv(fs), "", "get", "key_1")
	wantCode(t, r, 1)
	wantContains(t, "stderr", r.stderr, "keyraft: HTTP_502: Bad Gateway: <html> <body>bad gateway</body></html>")
}

func TestKeysMissingToken(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		t.Errorf("request sent without a token")
	})
	r := runCLI(t, keysCmd, map[string]string{"KEYRAFT_ADDR": fs.URL}, "", "list")
	wantCode(t, r, 2)
	wantContains(t, "stderr", r.stderr, "KEYRAFT_TOKEN", "--token")
}

func TestClientUnreachable(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {})
	addr := fs.URL
	fs.Close()
	r := runCLI(t, keysCmd, map[string]string{"KEYRAFT_ADDR": addr, "KEYRAFT_TOKEN": "t"}, "", "get", "key_1")
	wantCode(t, r, 1)
	wantContains(t, "stderr", r.stderr, "keyraft: cannot reach "+addr)
}

func TestClientAddrWithoutScheme(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		writeEnvelope(w, 200, sampleRecord("key_1"), nil)
	})
	hostport := strings.TrimPrefix(fs.URL, "http://")
	r := runCLI(t, keysCmd, map[string]string{"KEYRAFT_ADDR": hostport + "/", "KEYRAFT_TOKEN": "t"}, "", "get", "key_1")
	wantCode(t, r, 0)
	if req := fs.only(t); req.Path != "/v1/keys/key_1" {
		t.Errorf("path %q", req.Path)
	}
	for in, want := range map[string]string{
		"127.0.0.1:8080":               "http://127.0.0.1:8080",
		"https://kr.example.com/":      "https://kr.example.com",
		"http://10.0.0.1:80/keyraft//": "http://10.0.0.1:80/keyraft",
	} {
		if got, err := normalizeAddr(in); err != nil || got != want {
			t.Errorf("normalizeAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"ftp://x", "http://", "http://h?x=1"} {
		if _, err := normalizeAddr(bad); err == nil {
			t.Errorf("normalizeAddr(%q) accepted", bad)
		}
	}
}

func TestKeysUsage(t *testing.T) {
	env := map[string]string{}
	r := runCLI(t, keysCmd, env, "")
	wantCode(t, r, 2)
	wantContains(t, "stderr", r.stderr, "usage: keyraft keys", "create", "import")

	r = runCLI(t, keysCmd, env, "", "-h")
	wantCode(t, r, 0)
	wantContains(t, "stdout", r.stdout, "usage: keyraft keys")

	r = runCLI(t, keysCmd, env, "", "frobnicate")
	wantCode(t, r, 2)
	wantContains(t, "stderr", r.stderr, `unknown keys command "frobnicate"`, "usage: keyraft keys")

	r = runCLI(t, keysCmd, env, "", "create", "-h")
	wantCode(t, r, 0)
	wantContains(t, "stdout", r.stdout, "usage: keyraft keys create", "-rate-limit", "-metadata")

	r = runCLI(t, keysCmd, env, "", "get")
	wantCode(t, r, 2)
	wantContains(t, "stderr", r.stderr, "missing argument", "usage: keyraft keys get")

	r = runCLI(t, keysCmd, env, "", "get", "a", "b")
	wantCode(t, r, 2)
	wantContains(t, "stderr", r.stderr, `unexpected argument "b"`)

	r = runCLI(t, keysCmd, env, "", "list", "--bogus")
	wantCode(t, r, 2)
	wantContains(t, "stderr", r.stderr, "flag provided but not defined: -bogus")

	r = runCLI(t, verifyCmd, env, "", "--help")
	wantCode(t, r, 0)
	wantContains(t, "stdout", r.stdout, "usage: keyraft verify")
}

func TestClientParseInterspersed(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		pos       []string
		name      string
		jsonSet   bool
		wantError bool
	}{
		{args: []string{"a", "--name", "x", "b", "--json"}, pos: []string{"a", "b"}, name: "x", jsonSet: true},
		{args: []string{"--json", "--", "--name", "x"}, pos: []string{"--name", "x"}, jsonSet: true},
		{args: []string{"a", "--", "-b"}, pos: []string{"a", "-b"}},
		{args: []string{"--name", "--", "a"}, pos: []string{"a"}, name: "--"},
		{args: []string{"-", "--name=y"}, pos: []string{"-"}, name: "y"},
		{args: []string{"a", "--nope"}, wantError: true},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		name := fs.String("name", "", "")
		js := fs.Bool("json", false, "")
		pos, err := parseInterspersed(fs, tc.args)
		if tc.wantError {
			if err == nil {
				t.Errorf("%q: no error", tc.args)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(pos, tc.pos) || *name != tc.name || *js != tc.jsonSet {
			t.Errorf("%q: pos %q name %q json %v err %v; want %q %q %v", tc.args, pos, *name, *js, err, tc.pos, tc.name, tc.jsonSet)
		}
	}
}

func TestClientFormatValueCleansControlChars(t *testing.T) {
	for want, in := range map[string]any{
		"-":               nil,
		"a?[31mb?c":       "a\x1b[31mb\nc",
		"x, y":            []any{"x", "y"},
		"a=1, b=-":        map[string]any{"b": nil, "a": json.Number("1")},
		"false":           false,
		"k=v?w, z=[?]":    map[string]any{"z": "[\t]", "k": "v\rw"},
		"1.5":             1.5,
		"calls:start":     "calls:start",
		"2026-01-01T00Z":  "2026-01-01T00Z",
		"previous=t, x=-": map[string]any{"previous": "t", "x": []any{}},
	} {
		if got := formatValue(in); got != want {
			t.Errorf("formatValue(%#v) = %q, want %q", in, got, want)
		}
	}
}
