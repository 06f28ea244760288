package main

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func sampleClusterStatus() map[string]any {
	return map[string]any{
		"leader_id": "node-a", "leader_raft_addr": "127.0.0.1:7000", "term": 3, "commit_index": 1234,
		"nodes": []map[string]any{
			{"id": "node-a", "raft_addr": "127.0.0.1:7000", "http_addr": "127.0.0.1:8080", "suffrage": "voter",
				"raft_state": "leader", "gossip": "alive", "version": "dev", "applied_index": 1234,
				"digest": "0123456789abcdef0123456789abcdef"},
			{"id": "node-b", "raft_addr": "127.0.0.1:7001", "http_addr": "127.0.0.1:8081", "suffrage": "nonvoter",
				"raft_state": "follower", "gossip": "dead", "applied_index": 1230, "digest": "fedcba9876543210"},
			{"id": "node-c", "raft_addr": "127.0.0.1:7002", "http_addr": "", "suffrage": "voter",
				"raft_state": "", "gossip": "dead", "applied_index": nil, "error": "unreachable"},
		},
	}
}

func TestClusterStatusTable(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		writeEnvelope(w, 200, sampleClusterStatus(), nil)
	})
	r := runCLI(t, clusterCmd, adminEnv(fs), "", "status")
	wantCode(t, r, 0)
	req := fs.only(t)
	if req.Method != "GET" || req.Path != "/v1/cluster" || req.Auth != "Bearer rk_test_admin" {
		t.Errorf("request %s %s auth %q, want GET /v1/cluster with the admin key", req.Method, req.Path, req.Auth)
	}
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) != 5 {
		t.Fatalf("want a header, a column line and 3 nodes, got:\n%s", r.stdout)
	}
	if lines[0] != "leader: node-a  term: 3  commit index: 1234" {
		t.Errorf("header line %q", lines[0])
	}
	if got := strings.Fields(lines[1]); !reflect.DeepEqual(got, []string{"ID", "RAFT", "HTTP", "SUFFRAGE", "STATE", "GOSSIP", "APPLIED", "DIGEST"}) {
		t.Errorf("columns %q", lines[1])
	}
	wantRows := [][]string{
		{"node-a", "127.0.0.1:7000", "127.0.0.1:8080", "voter", "leader", "alive", "1234", "0123456789ab"},
		{"node-b", "127.0.0.1:7001", "127.0.0.1:8081", "nonvoter", "follower", "dead", "1230", "fedcba987654"},
		{"node-c", "127.0.0.1:7002", "-", "voter", "-", "dead", "-", "-"},
	}
	for i, want := range wantRows {
		if got := strings.Fields(lines[2+i]); !reflect.DeepEqual(got, want) {
			t.Errorf("row %d\n got %q\nwant %q", i, got, want)
		}
	}
	// Columns line up.
	if strings.Index(lines[1], "APPLIED") != strings.Index(lines[2], "1234") {
		t.Errorf("columns not aligned:\n%s", r.stdout)
	}
	wantContains(t, "stderr", r.stderr, "node-c: unreachable")
}

func TestClusterStatusNoLeader(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		writeEnvelope(w, 200, map[string]any{"leader_id": "", "leader_raft_addr": "", "term": 5, "commit_index": 0, "nodes": []any{}}, nil)
	})
	r := runCLI(t, clusterCmd, adminEnv(fs), "", "status")
	wantCode(t, r, 0)
	if !strings.HasPrefix(r.stdout, "leader: -  term: 5  commit index: 0\n") {
		t.Errorf("stdout %q", r.stdout)
	}
}

func TestClusterStatusJSON(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		writeEnvelope(w, 200, sampleClusterStatus(), nil)
	})
	r := runCLI(t, clusterCmd, adminEnv(fs), "", "status", "--json")
	wantCode(t, r, 0)
	var got, want any
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, r.stdout)
	}
	json.Unmarshal(mustJSON(sampleClusterStatus()), &want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("--json printed\n%s\nwant the data of the answer", r.stdout)
	}
	if !strings.Contains(r.stdout, "\n  \"leader_id\": \"node-a\"") {
		t.Errorf("not indented:\n%s", r.stdout)
	}
}

func TestClusterStatusErrorEnvelope(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		writeRaw(w, 403, `{"error":{"code":"FORBIDDEN","message":"cluster operations need a root key"},"meta":{}}`)
	})
	r := runCLI(t, clusterCmd, adminEnv(fs), "", "status")
	wantCode(t, r, 1)
	if r.stderr != "keyraft: FORBIDDEN: cluster operations need a root key\n" {
		t.Errorf("stderr %q", r.stderr)
	}
	if r.stdout != "" {
		t.Errorf("stdout %q", r.stdout)
	}
}

func TestClusterRemove(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.WriteHeader(204)
	})
	r := runCLI(t, clusterCmd, adminEnv(fs), "", "remove", "node-b", "--request-id", "rq-9")
	wantCode(t, r, 0)
	req := fs.only(t)
	if req.Method != "DELETE" || req.Path != "/v1/cluster/nodes/node-b" {
		t.Errorf("request %s %s, want DELETE /v1/cluster/nodes/node-b", req.Method, req.Path)
	}
	if req.Auth != "Bearer rk_test_admin" || req.RequestID != "rq-9" {
		t.Errorf("auth %q request id %q", req.Auth, req.RequestID)
	}
	if r.stdout != "removed node-b\n" {
		t.Errorf("stdout %q", r.stdout)
	}

	// An id is one path segment.
	r = runCLI(t, clusterCmd, adminEnv(fs), "", "remove", "a/b c")
	wantCode(t, r, 0)
	if reqs := fs.requests(); reqs[1].Path != "/v1/cluster/nodes/a%2Fb%20c" {
		t.Errorf("path %q", reqs[1].Path)
	}
}

func TestClusterRemoveNotFound(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		writeRaw(w, 404, `{"error":{"code":"NOT_FOUND","message":"no node \"node-x\" in the cluster"},"meta":{}}`)
	})
	r := runCLI(t, clusterCmd, adminEnv(fs), "", "remove", "node-x")
	wantCode(t, r, 1)
	wantContains(t, "stderr", r.stderr, `keyraft: NOT_FOUND: no node "node-x" in the cluster`)
}

func TestClusterLeave(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		writeEnvelope(w, 200, map[string]any{"left": "node-c"}, nil)
	})
	r := runCLI(t, clusterCmd, adminEnv(fs), "", "leave")
	wantCode(t, r, 0)
	req := fs.only(t)
	if req.Method != "POST" || req.Path != "/v1/cluster/leave" || req.Auth != "Bearer rk_test_admin" {
		t.Errorf("request %s %s auth %q", req.Method, req.Path, req.Auth)
	}
	if len(req.Body) != 0 {
		t.Errorf("body %q, want none", req.Body)
	}
	if r.stdout != "node-c left the cluster\n" {
		t.Errorf("stdout %q", r.stdout)
	}
}

func TestClusterLeaveConflict(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		writeRaw(w, 409, `{"error":{"code":"CONFLICT","message":"leaving would lose quorum"},"meta":{}}`)
	})
	r := runCLI(t, clusterCmd, adminEnv(fs), "", "leave")
	wantCode(t, r, 1)
	wantContains(t, "stderr", r.stderr, "keyraft: CONFLICT: leaving would lose quorum")
}

func TestClusterUsage(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		t.Errorf("unexpected request %s %s", r.Method, r.URL)
	})
	env := adminEnv(fs)
	r := runCLI(t, clusterCmd, env, "")
	wantCode(t, r, 2)
	wantContains(t, "stderr", r.stderr, "usage: keyraft cluster", "status", "remove NODE_ID", "leave")

	r = runCLI(t, clusterCmd, env, "", "-h")
	wantCode(t, r, 0)
	wantContains(t, "stdout", r.stdout, "usage: keyraft cluster")

	r = runCLI(t, clusterCmd, env, "", "explode")
	wantCode(t, r, 2)
	wantContains(t, "stderr", r.stderr, `unknown cluster command "explode"`, "usage: keyraft cluster")

	r = runCLI(t, clusterCmd, env, "", "remove")
	wantCode(t, r, 2)
	wantContains(t, "stderr", r.stderr, "missing argument", "usage: keyraft cluster remove NODE_ID")

	r = runCLI(t, clusterCmd, env, "", "remove", "")
	wantCode(t, r, 2)

	r = runCLI(t, clusterCmd, env, "", "status", "extra")
	wantCode(t, r, 2)
	wantContains(t, "stderr", r.stderr, `unexpected argument "extra"`)

	r = runCLI(t, clusterCmd, env, "", "leave", "node-a")
	wantCode(t, r, 2)

	r = runCLI(t, clusterCmd, env, "", "status", "-h")
	wantCode(t, r, 0)
	wantContains(t, "stdout", r.stdout, "usage: keyraft cluster status")

	r = runCLI(t, clusterCmd, map[string]string{"KEYRAFT_ADDR": fs.URL}, "", "status")
	wantCode(t, r, 2)
	wantContains(t, "stderr", r.stderr, "KEYRAFT_TOKEN")
}

// snapshotBody is a deterministic multi-MB stream of arbitrary bytes.
func snapshotBody(size int) []byte {
	b := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// serveSnapshot answers with body in chunks, flushed, without a Content-Length.
func serveSnapshot(w http.ResponseWriter, index string, body []byte) {
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Keyraft-Index", index)
	w.WriteHeader(200)
	for len(body) > 0 {
		n := min(len(body), 256<<10)
		w.Write(body[:n])
		w.(http.Flusher).Flush()
		body = body[n:]
	}
}

func TestSnapshotSaveStreamsToFile(t *testing.T) {
	body := snapshotBody(6<<20 + 123)
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		serveSnapshot(w, "4242", body)
	})
	dir := t.TempDir()
	file := filepath.Join(dir, "backup.snap")
	os.WriteFile(file, []byte("an older backup"), 0o600) // replaced
	r := runCLI(t, snapshotCmd, adminEnv(fs), "", "save", file)
	wantCode(t, r, 0)
	req := fs.only(t)
	if req.Method != "GET" || req.Path != "/v1/cluster/snapshot" || req.Auth != "Bearer rk_test_admin" {
		t.Errorf("request %s %s auth %q", req.Method, req.Path, req.Auth)
	}
	got, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("saved %d bytes, not identical to the %d bytes served", len(got), len(body))
	}
	if st, _ := os.Stat(file); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600 (a backup holds key hashes)", st.Mode().Perm())
	}
	if _, err := os.Stat(file + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("%s.tmp left behind: %v", file, err)
	}
	want := "saved snapshot at index 4242 (" + strconv.Itoa(len(body)) + " bytes) to " + file + "\n"
	if r.stdout != want {
		t.Errorf("stdout %q, want %q", r.stdout, want)
	}
}

func TestSnapshotSaveToStdout(t *testing.T) {
	body := snapshotBody(3 << 20)
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		serveSnapshot(w, "17", body)
	})
	r := runCLI(t, snapshotCmd, adminEnv(fs), "", "save", "-")
	wantCode(t, r, 0)
	if !bytes.Equal([]byte(r.stdout), body) {
		t.Fatalf("stdout holds %d bytes, not identical to the %d bytes served", len(r.stdout), len(body))
	}
	wantContains(t, "stderr", r.stderr, "saved snapshot at index 17 ("+strconv.Itoa(len(body))+" bytes) to stdout")
}

func TestSnapshotSaveJSON(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		serveSnapshot(w, "9", []byte("KRSNAP…"))
	})
	file := filepath.Join(t.TempDir(), "s")
	r := runCLI(t, snapshotCmd, adminEnv(fs), "", "save", "--json", file)
	wantCode(t, r, 0)
	var got map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("stdout %q: %v", r.stdout, err)
	}
	if want := map[string]any{"file": file, "index": float64(9), "bytes": float64(len("KRSNAP…"))}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestSnapshotSaveErrorEnvelope(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.Header().Set("Retry-After", "1")
		writeRaw(w, 503, `{"error":{"code":"NO_LEADER","message":"leadership could not be confirmed; retry"},"meta":{}}`)
	})
	file := filepath.Join(t.TempDir(), "backup.snap")
	r := runCLI(t, snapshotCmd, adminEnv(fs), "", "save", file)
	wantCode(t, r, 1)
	if r.stderr != "keyraft: NO_LEADER: leadership could not be confirmed; retry (retry after 1s)\n" {
		t.Errorf("stderr %q", r.stderr)
	}
	for _, f := range []string{file, file + ".tmp"} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s exists after a failed save", f)
		}
	}
}

func TestSnapshotSaveTruncatedStream(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.Header().Set("Content-Length", "1000000")
		w.Header().Set("Keyraft-Index", "5")
		w.WriteHeader(200)
		w.Write(make([]byte, 1000)) // then the handler returns: the connection is cut
	})
	dir := t.TempDir()
	file := filepath.Join(dir, "backup.snap")
	r := runCLI(t, snapshotCmd, adminEnv(fs), "", "save", file)
	wantCode(t, r, 1)
	wantContains(t, "stderr", r.stderr, "reading the snapshot from the server", "EOF")
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("files left after a failed save: %v", ents)
	}
}

func TestSnapshotSaveEmptyStream(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		serveSnapshot(w, "5", nil)
	})
	dir := t.TempDir()
	r := runCLI(t, snapshotCmd, adminEnv(fs), "", "save", filepath.Join(dir, "s"))
	wantCode(t, r, 1)
	wantContains(t, "stderr", r.stderr, "empty snapshot")
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("files left after a failed save: %v", ents)
	}
}

func TestSnapshotSaveStalled(t *testing.T) {
	defer func(d time.Duration) { streamIdleTimeout = d }(streamIdleTimeout)
	streamIdleTimeout = 300 * time.Millisecond
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.WriteHeader(200)
		w.Write(make([]byte, 1000))
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	dir := t.TempDir()
	start := time.Now()
	r := runCLI(t, snapshotCmd, adminEnv(fs), "", "save", filepath.Join(dir, "s"))
	wantCode(t, r, 1)
	wantContains(t, "stderr", r.stderr, "no progress for 300ms")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v to give up", d)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("files left after a failed save: %v", ents)
	}
}

func TestSnapshotSaveUnwritableFile(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		serveSnapshot(w, "5", []byte("data"))
	})
	r := runCLI(t, snapshotCmd, adminEnv(fs), "", "save", filepath.Join(t.TempDir(), "no", "such", "dir", "s"))
	wantCode(t, r, 1)
	wantContains(t, "stderr", r.stderr, "s.tmp", "no such file or directory")
}

func TestSnapshotRestore(t *testing.T) {
	data := snapshotBody(4<<20 + 7)
	file := filepath.Join(t.TempDir(), "backup.snap")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	var contentLength int64
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		contentLength = r.ContentLength
		writeEnvelope(w, 200, map[string]any{"restored": true, "keys": 12}, map[string]any{"index": 99})
	})
	r := runCLI(t, snapshotCmd, adminEnv(fs), "", "restore", file)
	wantCode(t, r, 0)
	req := fs.only(t)
	if req.Method != "POST" || req.Path != "/v1/cluster/restore" || req.Auth != "Bearer rk_test_admin" {
		t.Errorf("request %s %s auth %q", req.Method, req.Path, req.Auth)
	}
	if req.CType != "application/octet-stream" {
		t.Errorf("Content-Type %q", req.CType)
	}
	if contentLength != int64(len(data)) {
		t.Errorf("Content-Length %d, want %d", contentLength, len(data))
	}
	if !bytes.Equal(req.Body, data) {
		t.Errorf("server got %d bytes, not identical to the %d-byte file", len(req.Body), len(data))
	}
	if r.stdout != "restored 12 keys\n" {
		t.Errorf("stdout %q", r.stdout)
	}
}

func TestSnapshotRestoreFromStdin(t *testing.T) {
	data := string(snapshotBody(1 << 20))
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		writeEnvelope(w, 200, map[string]any{"restored": true, "keys": 1}, nil)
	})
	r := runCLI(t, snapshotCmd, adminEnv(fs), data, "restore", "-")
	wantCode(t, r, 0)
	if req := fs.only(t); string(req.Body) != data {
		t.Errorf("server got %d bytes, want the %d bytes of stdin", len(req.Body), len(data))
	}
	if r.stdout != "restored 1 key\n" {
		t.Errorf("stdout %q", r.stdout)
	}
}

func TestSnapshotRestoreErrorEnvelope(t *testing.T) {
	file := filepath.Join(t.TempDir(), "backup.snap")
	os.WriteFile(file, []byte("half a backup"), 0o600)
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		writeRaw(w, 400, `{"error":{"code":"BAD_REQUEST","message":"bad backup: checksum mismatch"},"meta":{}}`)
	})
	r := runCLI(t, snapshotCmd, adminEnv(fs), "", "restore", file)
	wantCode(t, r, 1)
	if r.stderr != "keyraft: BAD_REQUEST: bad backup: checksum mismatch\n" {
		t.Errorf("stderr %q", r.stderr)
	}
	if r.stdout != "" {
		t.Errorf("stdout %q", r.stdout)
	}
}

func TestSnapshotRestoreBadFile(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		t.Errorf("unexpected request %s %s", r.Method, r.URL)
	})
	dir := t.TempDir()
	r := runCLI(t, snapshotCmd, adminEnv(fs), "", "restore", filepath.Join(dir, "missing"))
	wantCode(t, r, 1)
	wantContains(t, "stderr", r.stderr, "missing", "no such file or directory")

	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	r = runCLI(t, snapshotCmd, adminEnv(fs), "", "restore", empty)
	wantCode(t, r, 1)
	wantContains(t, "stderr", r.stderr, "is empty")

	r = runCLI(t, snapshotCmd, adminEnv(fs), "", "restore", dir)
	wantCode(t, r, 1)
	wantContains(t, "stderr", r.stderr, "is a directory")
}

func TestSnapshotUsage(t *testing.T) {
	fs := newFakeServer(t, func(w http.ResponseWriter, r *http.Request, n int) {
		t.Errorf("unexpected request %s %s", r.Method, r.URL)
	})
	env := adminEnv(fs)
	r := runCLI(t, snapshotCmd, env, "")
	wantCode(t, r, 2)
	wantContains(t, "stderr", r.stderr, "usage: keyraft snapshot", "save FILE", "restore FILE")

	r = runCLI(t, snapshotCmd, env, "", "--help")
	wantCode(t, r, 0)
	wantContains(t, "stdout", r.stdout, "usage: keyraft snapshot")

	r = runCLI(t, snapshotCmd, env, "", "take")
	wantCode(t, r, 2)
	wantContains(t, "stderr", r.stderr, `unknown snapshot command "take"`)

	for _, sub := range []string{"save", "restore"} {
		r = runCLI(t, snapshotCmd, env, "", sub)
		wantCode(t, r, 2)
		wantContains(t, "stderr", r.stderr, "missing argument", "usage: keyraft snapshot "+sub)

		r = runCLI(t, snapshotCmd, env, "", sub, "a", "b")
		wantCode(t, r, 2)

		r = runCLI(t, snapshotCmd, env, "", sub, "-h")
		wantCode(t, r, 0)
	}
	r = runCLI(t, snapshotCmd, map[string]string{"KEYRAFT_ADDR": fs.URL}, "", "save", "x")
	wantCode(t, r, 2)
	wantContains(t, "stderr", r.stderr, "KEYRAFT_TOKEN")
}

func TestRecoverArguments(t *testing.T) {
	env := map[string]string{}
	r := runCLI(t, recoverCmd, env, "")
	wantCode(t, r, 2)
	wantContains(t, "stderr", r.stderr, "usage: keyraft recover", "--peers", "--data-dir")

	r = runCLI(t, recoverCmd, env, "", "-h")
	wantCode(t, r, 0)
	wantContains(t, "stdout", r.stdout, "usage: keyraft recover", `"non_voter"`)

	r = runCLI(t, recoverCmd, env, "", "--peers", "peers.json")
	wantCode(t, r, 2)
	wantContains(t, "stderr", r.stderr, "--data-dir", "KEYRAFT_DATA_DIR", "usage: keyraft recover")

	r = runCLI(t, recoverCmd, env, "", "--data-dir", t.TempDir())
	wantCode(t, r, 2)
	wantContains(t, "stderr", r.stderr, "--peers is required")

	r = runCLI(t, recoverCmd, env, "", "--peers", "p.json", "--data-dir", "d", "extra")
	wantCode(t, r, 2)
	wantContains(t, "stderr", r.stderr, `unexpected argument "extra"`)

	r = runCLI(t, recoverCmd, env, "", "--bogus")
	wantCode(t, r, 2)
	wantContains(t, "stderr", r.stderr, "flag provided but not defined: -bogus")
}

func TestRecoverMissingPeersFile(t *testing.T) {
	dataDir := t.TempDir()
	missing := filepath.Join(t.TempDir(), "peers.json")
	r := runCLI(t, recoverCmd, map[string]string{}, "", "--peers", missing, "--data-dir", dataDir)
	wantCode(t, r, 1)
	wantContains(t, "stderr", r.stderr, "keyraft recover: reading the peers file", missing, "no such file or directory")

	// KEYRAFT_DATA_DIR stands in for --data-dir.
	r = runCLI(t, recoverCmd, map[string]string{"KEYRAFT_DATA_DIR": dataDir}, "", "--peers", missing)
	wantCode(t, r, 1)
	wantContains(t, "stderr", r.stderr, "reading the peers file")
	if ents, _ := os.ReadDir(dataDir); len(ents) != 0 {
		t.Errorf("recover wrote into the data dir: %v", ents)
	}
}

func TestRecoverBadInput(t *testing.T) {
	dir := t.TempDir()
	peers := filepath.Join(dir, "peers.json")
	os.WriteFile(peers, []byte(`{"id":"node-a"}`), 0o600)
	dataDir := filepath.Join(dir, "data")
	os.Mkdir(dataDir, 0o700)

	r := runCLI(t, recoverCmd, map[string]string{}, "", "--peers", peers, "--data-dir", dataDir)
	wantCode(t, r, 1)
	wantContains(t, "stderr", r.stderr, peers, "JSON array")

	os.WriteFile(peers, []byte(`[{"id":"node-a","address":"127.0.0.1:7000"}]`), 0o600)
	r = runCLI(t, recoverCmd, map[string]string{}, "", "--peers", peers, "--data-dir", filepath.Join(dir, "nope"))
	wantCode(t, r, 1)
	wantContains(t, "stderr", r.stderr, "data dir", "no such file or directory")

	// A directory that is not a node's data dir is refused, and left as it was.
	r = runCLI(t, recoverCmd, map[string]string{}, "", "--peers", peers, "--data-dir", dataDir)
	wantCode(t, r, 1)
	wantContains(t, "stderr", r.stderr, "holds no raft log")
	if ents, _ := os.ReadDir(dataDir); len(ents) != 0 {
		t.Errorf("recover wrote into the data dir: %v", ents)
	}
}

func TestClusterCommandsInTopLevelUsage(t *testing.T) {
	for _, cmd := range []string{"cluster", "snapshot", "recover"} {
		if !strings.Contains(usage, "\n  "+cmd+" ") {
			t.Errorf("top-level usage does not list %q", cmd)
		}
	}
}
