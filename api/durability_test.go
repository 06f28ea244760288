package api_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/keyraft/keyraft/keyindex"
)

// outcome is what verifying a token answered.
type outcome struct {
	Status  int
	Code    string
	KeyID   string
	Rotated string
}

func verifyOutcome(n *testNode, tok, query string) outcome {
	r := n.verifyGET(tok, query)
	code, _ := r.JSON["code"].(string)
	return outcome{r.Status, code, r.Header.Get("Keyraft-Key-Id"), r.Header.Get("Keyraft-Key-Rotated")}
}

func TestRestart(t *testing.T) {
	for _, snap := range []bool{false, true} {
		name := "log only"
		if snap {
			name = "with snapshot"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			n := startNode(t)
			type tokenCase struct {
				tok, id string
				want    outcome
			}
			var toks []tokenCase
			var last uint64
			var revokedID string
			for i := range 50 {
				k, idx := n.secretKey("ws_r"+string(rune('a'+i%3)), "owner_id", "o", "metadata", map[string]string{"i": string(rune('A' + i%26))})
				last = idx
				switch {
				case i%10 == 3: // rotated with a grace period that outlives the restart
					r := n.do("POST", "/v1/keys/"+k.ID+"/rotate", n.rootToken, map[string]any{"grace_period_seconds": 3600}).want(t, http.StatusOK)
					rot, m := envelope[keyOut](t, r)
					last = m.Index
					toks = append(toks, tokenCase{k.Key, k.ID, outcome{200, "VALID", k.ID, "true"}})
					toks = append(toks, tokenCase{rot.Key, k.ID, outcome{200, "VALID", k.ID, ""}})
				case i%10 == 7: // rotated without grace: the old token is dead
					r := n.do("POST", "/v1/keys/"+k.ID+"/rotate", n.rootToken, map[string]any{"grace_period_seconds": 0}).want(t, http.StatusOK)
					rot, m := envelope[keyOut](t, r)
					last = m.Index
					toks = append(toks, tokenCase{k.Key, k.ID, outcome{401, "KEY_NOT_FOUND", "", ""}})
					toks = append(toks, tokenCase{rot.Key, k.ID, outcome{200, "VALID", k.ID, ""}})
				case i == 20:
					_, m := envelope[keyOut](t, n.do("POST", "/v1/keys/"+k.ID+"/revoke", n.rootToken, nil).want(t, http.StatusOK))
					last, revokedID = m.Index, k.ID
					toks = append(toks, tokenCase{k.Key, k.ID, outcome{401, "KEY_REVOKED", "", ""}})
				case i == 30:
					_, m := envelope[keyOut](t, n.do("PATCH", "/v1/keys/"+k.ID, n.rootToken, map[string]any{"active": false}).want(t, http.StatusOK))
					last = m.Index
					toks = append(toks, tokenCase{k.Key, k.ID, outcome{401, "KEY_DISABLED", "", ""}})
				default:
					toks = append(toks, tokenCase{k.Key, k.ID, outcome{200, "VALID", k.ID, ""}})
				}
			}
			check := func(when string) {
				t.Helper()
				for _, c := range toks {
					if got := verifyOutcome(n, c.tok, minIdx(last)); got != c.want {
						t.Errorf("%s: key %s: %+v, want %+v", when, c.id, got, c.want)
					}
				}
			}
			check("before the restart")
			before := n.listAll(n.rootToken, "")
			if len(before) != 51 {
				t.Fatalf("%d keys before the restart, want 51", len(before))
			}
			auditBefore, _ := envelope[[]map[string]any](t, n.do("GET", "/v1/audit?limit=1000", n.rootToken, nil).want(t, http.StatusOK))

			if snap {
				if err := n.node.Snapshot(); err != nil {
					t.Fatalf("snapshot: %v", err)
				}
				if snapshotFiles(t, n.dir) == 0 {
					t.Fatalf("no snapshot written")
				}
			}
			n.restart()

			// The root key works (list waits for the replay to reach the last write).
			after := n.do("GET", "/v1/keys?limit=1000&"+minIdx(last), n.rootToken, nil).want(t, http.StatusOK)
			for _, rec := range after.JSON["data"].([]any) {
				checkRecordShape(t, rec.(map[string]any), false)
			}
			check("after the restart")
			afterKeys := n.listAll(n.rootToken, "")
			if len(afterKeys) != len(before) {
				t.Fatalf("%d keys after the restart, want %d", len(afterKeys), len(before))
			}
			for i := range before {
				if b, a := before[i].stable(), afterKeys[i].stable(); !reflect.DeepEqual(b, a) {
					t.Errorf("record changed across the restart:\n%+v\n%+v", b, a)
				}
			}
			if rec := n.getKey(revokedID); rec.RevokedAt == nil {
				t.Errorf("revoked key lost revoked_at")
			}
			auditAfter, _ := envelope[[]map[string]any](t, n.do("GET", "/v1/audit?limit=1000", n.rootToken, nil).want(t, http.StatusOK))
			if !reflect.DeepEqual(auditBefore, auditAfter) {
				t.Errorf("audit log changed across the restart: %d entries before, %d after", len(auditBefore), len(auditAfter))
			}
			// Only the one root key: the restart must not create another.
			if roots := n.listAll(n.rootToken, "workspace_id=*"); len(roots) != 1 {
				t.Errorf("%d root keys after the restart", len(roots))
			}
			// The node takes writes again, and they survive a second restart.
			k, kIdx := n.secretKey("ws_ra")
			n.restart()
			n.verifyGET(k.Key, minIdx(kIdx)).wantVerify(t, http.StatusOK, "VALID")
			check("after the second restart")
		})
	}
}

// TestRestartKeepsOneRootKey: a node that generated its root key must not
// generate another one when it restarts. Right after a restart the node
// leads before it has replayed its log; housekeeping must wait for the log
// (a Barrier) before it trusts "not initialized". The window is narrow, so
// the test restarts several times.
func TestRestartKeepsOneRootKey(t *testing.T) {
	t.Parallel()
	n := startNode(t, nodeOptions{generatedRoot: true})
	for i := range 8 {
		// Some log to replay, so the window before the replay is not empty.
		var last uint64
		for range 10 {
			_, last = n.secretKey("ws_root")
		}
		n.restart()
		n.do("GET", "/v1/keys?"+minIdx(last), n.rootToken, nil).want(t, http.StatusOK)
		time.Sleep(300 * time.Millisecond) // a few housekeeping rounds
		if a := n.announcedKeys(); len(a) != 1 {
			t.Fatalf("restart %d: %d root keys announced", i+1, len(a))
		}
		if roots := n.listAll(n.rootToken, "workspace_id=*"); len(roots) != 1 {
			t.Fatalf("restart %d: %d root keys", i+1, len(roots))
		}
	}
}

// TestNoPlaintextAtRest checks spec §1: a token's plaintext is in the answer
// that creates it and nowhere else: not in the data dir (Raft log, snapshots)
// nor in the logs.
func TestNoPlaintextAtRest(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	secrets := []string{n.rootToken}
	var hashes []string
	var ids []string

	for i := range 6 {
		typ := []string{"secret", "publishable", "admin"}[i%3]
		f := map[string]any{"name": "k", "workspace_id": "ws_pt", "type": typ, "owner_id": "o"}
		switch typ {
		case "publishable":
			f["allowed_origins"] = []string{"https://app.example.com"}
		case "admin":
			f["scopes"] = []string{"keys:read"}
		}
		if i == 4 {
			f["workspace_prefix"] = "acme"
		}
		k, _ := n.createKey(n.rootToken, f)
		secrets = append(secrets, k.Key)
		ids = append(ids, k.ID)
		if i%2 == 0 {
			rot, _ := envelope[keyOut](t, n.do("POST", "/v1/keys/"+k.ID+"/rotate", n.rootToken, map[string]any{"grace_period_seconds": 60}).want(t, http.StatusOK))
			secrets = append(secrets, rot.Key)
			rot2, _ := envelope[keyOut](t, n.do("POST", "/v1/keys/"+k.ID+"/rotate", n.rootToken, map[string]any{"grace_period_seconds": 0}).want(t, http.StatusOK))
			secrets = append(secrets, rot2.Key)
		}
	}
	// Imported keys: the plaintext never reaches the server at all, but it
	// is verified, which must not leave it anywhere either.
	var items []map[string]any
	for i := range 3 {
		tok, err := keyindex.GenerateToken(rand.Reader, "", keyindex.TypeSecret, keyindex.EnvLive)
		if err != nil {
			t.Fatal(err)
		}
		plain := tok.Plaintext
		if i == 2 {
			plain = "legacy-token-at-rest-" + tok.Plaintext[8:20]
		}
		sum := sha256.Sum256([]byte(plain))
		secrets = append(secrets, plain)
		// Snapshots hold records in their binary encoding: the raw hash.
		hashes = append(hashes, string(sum[:]))
		items = append(items, map[string]any{"sha256": hex.EncodeToString(sum[:]), "name": "imp", "workspace_id": "ws_pt"})
	}
	imp := n.do("POST", "/v1/keys/import", n.rootToken, map[string]any{"keys": items}).want(t, http.StatusCreated)
	impData, _ := envelope[struct {
		IDs []string `json:"ids"`
	}](t, imp)
	ids = append(ids, impData.IDs...)

	if err := n.node.Snapshot(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	// Verify every live token (GET with both headers and POST), so usage is
	// counted and flushed through Raft.
	for _, s := range secrets {
		n.verifyGET(s, "", "Origin", "https://app.example.com")
		n.do("GET", "/v1/verify", s, nil, "Origin", "https://app.example.com")
		n.verifyPOST(map[string]any{"key": s, "origin": "https://app.example.com"})
	}
	// Wrong tokens near the real ones, too.
	n.verifyPOST(map[string]any{"key": n.rootToken + "x"})
	n.do("GET", "/v1/keys", n.rootToken[:len(n.rootToken)-1]+"z", nil)

	deadline := time.Now().Add(5 * time.Second)
	for _, id := range ids {
		for {
			rec := n.getKey(id)
			if rec.LastUsedAt != nil && rec.UsageCount > 0 {
				if rec.LastUsedAt.Before(time.Now().Add(-time.Minute)) || rec.LastUsedAt.After(time.Now().Add(time.Second)) {
					t.Errorf("key %s last_used_at %v", id, rec.LastUsedAt)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("usage of %s never flushed: %+v", id, rec.Record)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if err := n.node.Snapshot(); err != nil {
		t.Fatalf("second snapshot: %v", err)
	}
	n.stop()
	if snapshotFiles(t, n.dir) == 0 {
		t.Fatal("no snapshot on disk")
	}

	var files, sawHash int
	err := filepath.WalkDir(n.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("plaintext token %.12s… found in %s", s, path)
			}
		}
		for _, h := range hashes {
			if bytes.Contains(b, []byte(h)) {
				sawHash++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The walk must have seen the stored state, or it proves nothing.
	if files < 3 || sawHash == 0 {
		t.Fatalf("walked %d files and found a stored hash %d times", files, sawHash)
	}
	logs := n.logs.Bytes()
	if len(logs) == 0 {
		t.Fatal("no logs captured")
	}
	for _, s := range secrets {
		if bytes.Contains(logs, []byte(s)) {
			t.Errorf("plaintext token %.12s… found in the logs", s)
		}
	}
}

// snapshotFiles counts the completed snapshots (state.bin files) under dir.
func snapshotFiles(t *testing.T, dir string) int {
	t.Helper()
	count := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == "state.bin" && !strings.HasSuffix(filepath.Dir(path), ".tmp") {
			count++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return count
}
