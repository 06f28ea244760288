package main

// System tests: real keyraft processes on loopback, with real Raft on a real
// data dir, driven over HTTP and through the CLI, stopped with SIGTERM.

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keyraft/keyraft/keyindex"
)

var binary string

// testHTTP bounds every request a system test makes: a stopped or wedged
// node fails the test instead of hanging it.
var testHTTP = &http.Client{Timeout: 30 * time.Second}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "keyraft-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "keyraft")
	if out, err := exec.Command("go", "build", "-race", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building keyraft: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePort returns a loopback address with a free port that no earlier
// call returned: a port released here may be handed out by the kernel again
// before the process meant to bind it has started.
func freePort(t *testing.T) string {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		if !portsGiven[addr] {
			portsGiven[addr] = true
			return addr
		}
	}
}

var (
	portsMu    sync.Mutex
	portsGiven = map[string]bool{}
)

// node is one keyraft serve process.
type node struct {
	t        *testing.T
	cmd      *exec.Cmd
	dataDir  string
	httpAddr string
	raftAddr string
	// gossipAddr is picked per start; memberlist binds it for UDP and TCP.
	gossipAddr string
	stdout     *lockedBuffer
	stderr     *lockedBuffer
	done       chan error
	exited     atomic.Bool // set once the process has been waited for
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startNode runs `keyraft serve` on dataDir and waits until it is ready;
// env entries are KEY=VALUE. The raft address must stay the same across
// restarts of one data dir.
func startNode(t *testing.T, dataDir, raftAddr string, env []string, flags ...string) *node {
	t.Helper()
	n := launch(t, dataDir, raftAddr, env, flags...)
	n.waitReady()
	return n
}

// launch starts `keyraft serve` without waiting for readiness (a cluster
// member is ready only once the cluster has formed).
func launch(t *testing.T, dataDir, raftAddr string, env []string, flags ...string) *node {
	t.Helper()
	n := &node{t: t, dataDir: dataDir, httpAddr: freePort(t), raftAddr: raftAddr, stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan error, 1)}
	n.gossipAddr = freePort(t)
	args := append([]string{"serve", "--data-dir", dataDir, "--http-addr", n.httpAddr, "--raft-addr", raftAddr,
		"--gossip-addr", n.gossipAddr, "--gossip-profile", "local",
		"--election-timeout", "300ms", "--heartbeat-timeout", "300ms", "--usage-flush-interval", "200ms"}, flags...)
	// Later flags win: callers may pin the addresses (restarts keep them).
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "--http-addr":
			n.httpAddr = args[i+1]
		case "--gossip-addr":
			n.gossipAddr = args[i+1]
		}
	}
	n.cmd = exec.Command(binary, args...)
	n.cmd.Env = append(os.Environ(), env...)
	n.cmd.Stdout, n.cmd.Stderr = n.stdout, n.stderr
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := n.cmd.Wait()
		n.exited.Store(true)
		n.done <- err
	}()
	t.Cleanup(func() {
		if t.Failed() {
			logs := n.stderr.String()
			t.Logf("stderr of the node on %s (last 4 KiB):\n%s", n.httpAddr, logs[max(0, len(logs)-4096*int(envInt("KEYRAFT_TEST_LOG_KB", 1))):])
		}
		if !n.exited.Load() {
			n.cmd.Process.Kill()
			<-n.done
		}
	})
	return n
}

func (n *node) url(path string) string { return "http://" + n.httpAddr + path }

func (n *node) waitReady() {
	n.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(n.url("/readyz"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case err := <-n.done:
			n.t.Fatalf("keyraft exited early: %v\nstderr:\n%s", err, n.stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	n.t.Fatalf("node not ready in time\nstderr:\n%s", n.stderr.String())
}

// stop sends SIGTERM and requires a clean exit.
func (n *node) stop() {
	n.t.Helper()
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-n.done:
		if err != nil {
			n.t.Fatalf("keyraft exited with %v after SIGTERM\nstderr:\n%s", err, n.stderr.String())
		}
	case <-time.After(20 * time.Second):
		n.t.Fatal("keyraft did not stop within 20s of SIGTERM")
	}
}

var rootKeyLine = regexp.MustCompile(`(?m)^root key: (rk_live_[0-9A-Za-z]{36})$`)

func (n *node) rootKey() string {
	n.t.Helper()
	m := rootKeyLine.FindAllStringSubmatch(n.stdout.String(), -1)
	if len(m) != 1 {
		n.t.Fatalf("want one root key line on stdout, got %d:\n%s", len(m), n.stdout.String())
	}
	return m[0][1]
}

// cli runs a client subcommand against the node.
func (n *node) cli(token string, args ...string) (stdout, stderr string, code int) {
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "KEYRAFT_ADDR=http://"+n.httpAddr, "KEYRAFT_TOKEN="+token)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code = 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		n.t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func (n *node) createKey(token, body string) (id, plaintext string, index uint64) {
	n.t.Helper()
	req, _ := http.NewRequest("POST", n.url("/v1/keys"), strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := testHTTP.Do(req)
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	var env struct {
		Data struct {
			ID  string `json:"id"`
			Key string `json:"key"`
		} `json:"data"`
		Meta struct {
			Index uint64 `json:"index"`
		} `json:"meta"`
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 201 || json.Unmarshal(b, &env) != nil {
		n.t.Fatalf("create: %d %s", resp.StatusCode, b)
	}
	return env.Data.ID, env.Data.Key, env.Meta.Index
}

func (n *node) verifyStatus(key string) (int, string) {
	n.t.Helper()
	req, _ := http.NewRequest("GET", n.url("/v1/verify"), nil)
	req.Header.Set("X-API-Key", key)
	resp, err := testHTTP.Do(req)
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Code string `json:"code"`
	}
	json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body.Code
}

func TestServeNewClusterRestartAndCLI(t *testing.T) {
	dir, raftAddr := t.TempDir(), freePort(t)
	n := startNode(t, dir, raftAddr, nil)
	root := n.rootKey()

	out, errOut, code := n.cli(root, "keys", "create", "--name", "billing", "--workspace", "acme", "--scopes", "calls:*", "--prefix", "acme")
	if code != 0 {
		t.Fatalf("keys create: exit %d\n%s%s", code, out, errOut)
	}
	m := regexp.MustCompile(`(?m)^key: (acme_sk_live_\S+)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("keys create printed no key:\n%s", out)
	}
	key := m[1]
	if out, errOut, code := n.cli("", "verify", key, "--scope", "calls:start"); code != 0 || !strings.Contains(out, "VALID") {
		t.Fatalf("verify: exit %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code := n.cli("", "verify", key, "--scope", "admin:all"); code != 1 || !strings.Contains(errOut, "INSUFFICIENT_SCOPE") {
		t.Fatalf("verify with a missing scope: exit %d, stderr %q", code, errOut)
	}
	if _, errOut, code := n.cli("rk_live_wrong", "keys", "list"); code == 0 || !strings.Contains(errOut, "UNAUTHORIZED") {
		t.Fatalf("list with a bad token: exit %d, stderr %q", code, errOut)
	}
	n.stop()
	for _, logs := range []string{n.stderr.String()} {
		if strings.Contains(logs, root) || strings.Contains(logs, key) {
			t.Fatal("a plaintext key reached the log output")
		}
	}

	// Restart on the same data dir: no new root key, everything still there.
	n2 := startNode(t, dir, raftAddr, nil)
	if strings.Contains(n2.stdout.String(), "root key:") {
		t.Fatalf("a restarted node printed a root key:\n%s", n2.stdout.String())
	}
	if status, code := n2.verifyStatus(key); status != 200 {
		t.Fatalf("after restart the key verifies %d %s", status, code)
	}
	out, errOut, code = n2.cli(root, "keys", "list", "--json")
	if code != 0 || !strings.Contains(out, `"billing"`) {
		t.Fatalf("list after restart: exit %d\n%s%s", code, out, errOut)
	}
	n2.stop()
}

func TestServeWithRootKeyFileAndEnvironment(t *testing.T) {
	tok, err := keyindex.GenerateToken(rand.Reader, "", keyindex.TypeAdmin, keyindex.EnvLive)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "root.key")
	if err := os.WriteFile(file, []byte(tok.Plaintext+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Configuration through KEYRAFT_* variables only (startNode's flags set
	// other things; the root key file and log level come from the environment).
	n := startNode(t, filepath.Join(dir, "data"), freePort(t), []string{"KEYRAFT_ROOT_KEY_FILE=" + file, "KEYRAFT_LOG_LEVEL=debug"})
	if strings.Contains(n.stdout.String(), "root key:") {
		t.Fatal("a root key was printed although one was given")
	}
	if !strings.Contains(n.stderr.String(), "[DEBUG]") {
		t.Fatal("KEYRAFT_LOG_LEVEL=debug was not applied")
	}
	id, _, _ := n.createKey(tok.Plaintext, `{"name":"k","workspace_id":"w"}`)
	if out, errOut, code := n.cli(tok.Plaintext, "keys", "get", id); code != 0 || !strings.Contains(out, id) {
		t.Fatalf("get with the root key from the file: exit %d\n%s%s", code, out, errOut)
	}
	if strings.Contains(n.stderr.String(), tok.Plaintext) {
		t.Fatal("the root key reached the log output")
	}
	n.stop()
}

func TestServeRejectsBadConfiguration(t *testing.T) {
	cases := map[string][]string{
		"unknown flag":           {"serve", "--no-such-flag"},
		"bad duration in env":    {"serve"},
		"bad root key file":      {"serve", "--root-key-file", "/nonexistent/root.key"},
		"unspecified raft ip":    {"serve", "--raft-addr", "0.0.0.0:0"},
		"gossip key not base64":  {"serve", "--gossip-key", "not base64!"},
		"gossip key of 15 bytes": {"serve", "--gossip-key", base64.StdEncoding.EncodeToString(make([]byte, 15))},
		"negative shutdown wait": {"serve", "--shutdown-timeout", "-1s"},
		"negative usage bound":   {"serve", "--usage-max-keys-per-sec", "-5"},
		"unknown log level":      {"serve", "--log-level", "debgu"},
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			args := append(args, "--data-dir", t.TempDir(), "--http-addr", freePort(t))
			cmd := exec.Command(binary, args...)
			cmd.Env = os.Environ()
			if name == "bad duration in env" {
				cmd.Env = append(cmd.Env, "KEYRAFT_USAGE_FLUSH_INTERVAL=soon")
			}
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("keyraft accepted it:\n%s", out)
			}
			if len(out) == 0 {
				t.Fatal("no error message")
			}
			if strings.HasPrefix(name, "gossip key") && !strings.Contains(string(out), "gossip") {
				t.Fatalf("the error does not name the gossip key:\n%s", out)
			}
			if flag := map[string]string{"negative shutdown wait": "--shutdown-timeout", "negative usage bound": "--usage-max-keys-per-sec", "unknown log level": "--log-level"}[name]; !strings.Contains(string(out), flag) {
				t.Fatalf("the error does not name %s:\n%s", flag, out)
			}
		})
	}
}

// SIGTERM during a stream of writes: every write that was acknowledged is
// there after a restart.
func TestSIGTERMKeepsAcknowledgedWrites(t *testing.T) {
	dir, raftAddr := t.TempDir(), freePort(t)
	n := startNode(t, dir, raftAddr, nil)
	root := n.rootKey()
	var (
		mu    sync.Mutex
		acked []string
		wg    sync.WaitGroup
		stop  = make(chan struct{})
	)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("POST", n.url("/v1/keys"), strings.NewReader(fmt.Sprintf(`{"name":"w%d-%d","workspace_id":"load"}`, w, i)))
				req.Header.Set("Authorization", "Bearer "+root)
				resp, err := testHTTP.Do(req)
				if err != nil {
					return // the server is gone: the outcome of this one is unknown
				}
				var env struct {
					Data struct {
						Key string `json:"key"`
					} `json:"data"`
				}
				ok := resp.StatusCode == 201 && json.NewDecoder(resp.Body).Decode(&env) == nil
				resp.Body.Close()
				if ok {
					mu.Lock()
					acked = append(acked, env.Data.Key)
					mu.Unlock()
				}
			}
		}(w)
	}
	time.Sleep(700 * time.Millisecond)
	n.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-n.done; err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	close(stop)
	wg.Wait()
	if len(acked) == 0 {
		t.Fatal("no write was acknowledged before SIGTERM")
	}
	n2 := startNode(t, dir, raftAddr, nil)
	for _, k := range acked {
		if status, code := n2.verifyStatus(k); status != 200 {
			t.Fatalf("acknowledged key lost after SIGTERM: %d %s (%d acknowledged)", status, code, len(acked))
		}
	}
	t.Logf("%d acknowledged writes all present after restart", len(acked))
	n2.stop()
}

// SIGTERM waits for a request still being read, for at most
// --shutdown-timeout, then cuts it off and exits cleanly; a second signal
// stops the wait at once.
func TestSIGTERMWaitsForRequestsInFlight(t *testing.T) {
	for name, c := range map[string]struct {
		timeout      string
		secondSignal bool
		wantLog      string
	}{
		"the wait is bounded":            {"2s", false, "requests still in flight are cut off"},
		"a second signal stops the wait": {"10m", true, "second signal: not waiting"},
	} {
		t.Run(name, func(t *testing.T) {
			n := startNode(t, t.TempDir(), freePort(t), nil, "--shutdown-timeout", c.timeout, "--read-timeout", "10m")
			conn := n.requestInFlight()
			defer conn.Close()
			n.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case err := <-n.done:
				t.Fatalf("keyraft exited (%v) without waiting for the request in flight\nstderr:\n%s", err, n.stderr.String())
			case <-time.After(time.Second):
			}
			if c.secondSignal {
				n.cmd.Process.Signal(syscall.SIGINT)
			}
			select {
			case err := <-n.done:
				if err != nil {
					t.Fatalf("keyraft exited with %v\nstderr:\n%s", err, n.stderr.String())
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("keyraft still waits 20 s after the signal (--shutdown-timeout %s)", c.timeout)
			}
			if !strings.Contains(n.stderr.String(), c.wantLog) {
				t.Fatalf("stderr does not say %q:\n%s", c.wantLog, n.stderr.String())
			}
		})
	}
}

// requestInFlight opens a connection to the node, has one request answered
// on it (so the server has taken the connection), and starts a second one
// that it never finishes: the server keeps reading it until --read-timeout.
func (n *node) requestInFlight() net.Conn {
	n.t.Helper()
	conn, err := net.Dial("tcp", n.httpAddr)
	if err != nil {
		n.t.Fatal(err)
	}
	if _, err := io.WriteString(conn, "GET /readyz HTTP/1.1\r\nHost: keyraft\r\n\r\n"); err != nil {
		n.t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		n.t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if _, err := io.WriteString(conn, "POST /v1/keys HTTP/1.1\r\nHost: keyraft\r\nContent-Length: 100\r\n\r\n{"); err != nil {
		n.t.Fatal(err)
	}
	// The server marks the connection busy once it reads the first byte.
	time.Sleep(300 * time.Millisecond)
	return conn
}

// The node's stdout carries nothing but the root key line.
func TestStdoutOnlyRootKey(t *testing.T) {
	n := startNode(t, t.TempDir(), freePort(t), nil)
	n.rootKey()
	n.stop()
	sc := bufio.NewScanner(strings.NewReader(n.stdout.String()))
	for sc.Scan() {
		if !rootKeyLine.MatchString(sc.Text()) {
			t.Fatalf("unexpected stdout line %q", sc.Text())
		}
	}
}

// envInt reads an integer test knob from the environment.
func envInt(name string, def int) int {
	var v int
	if _, err := fmt.Sscan(os.Getenv(name), &v); err != nil {
		return def
	}
	return v
}

// TestDebugAddrServesProfilesApartFromTheAPI: --debug-addr answers Go's
// profiling endpoints on its own address; the API address never does.
func TestDebugAddrServesProfilesApartFromTheAPI(t *testing.T) {
	debugAddr := freePort(t)
	n := startNode(t, t.TempDir(), freePort(t), nil, "--debug-addr", debugAddr)
	resp, err := http.Get("http://" + debugAddr + "/debug/pprof/heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "heap profile") {
		t.Fatalf("debug address: %d %.200q", resp.StatusCode, body)
	}
	resp, err = http.Get(n.url("/debug/pprof/heap"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("the API address answers /debug/pprof/heap with %d, want 404", resp.StatusCode)
	}
	n.stop()
}
