package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/keyraft/keyraft/keyindex"
)

// proc is a server process this run started; stopAll ends them.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

var (
	procsMu sync.Mutex
	procs   []*proc
)

// start runs a server in the background with stderr (and stdout, unless
// onLine is given) in the work directory's NAME.log.
func start(name string, onLine func(string), bin string, args ...string) *proc {
	return startEnv(name, onLine, nil, bin, args...)
}

// startEnv is start with extra environment variables.
func startEnv(name string, onLine func(string), env []string, bin string, args ...string) *proc {
	command(append(append([]string(nil), env...), append([]string{bin}, args...)...)...)
	logFile, err := os.Create(filepath.Join(cfg.work, name+".log"))
	must(err)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stdout io.ReadCloser
	if onLine != nil {
		stdout, err = cmd.StdoutPipe()
		must(err)
	} else {
		cmd.Stdout = logFile
	}
	must(cmd.Start())
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	if stdout != nil {
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				onLine(sc.Text())
			}
		}()
	}
	go func() { cmd.Wait(); logFile.Close(); close(p.done) }()
	procsMu.Lock()
	procs = append(procs, p)
	procsMu.Unlock()
	return p
}

func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stopAll ends every process this run started (by pid), in parallel.
func stopAll() {
	procsMu.Lock()
	ps := procs
	procs = nil
	procsMu.Unlock()
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func(p *proc) { defer wg.Done(); p.stop() }(p)
	}
	wg.Wait()
}

// rssBytes is the resident set size of a process (VmRSS).
func rssBytes(pid int) float64 { return procStatus(pid, "VmRSS") }

// procStatus reads one memory figure (kB) of /proc/PID/status in bytes:
// VmRSS is RssAnon (the Go heap and runtime) plus RssFile (mapped files,
// such as the raft log's bolt database) plus RssShmem.
func procStatus(pid int, field string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	must(err)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, field+":") {
			kb, _ := strconv.Atoi(strings.Fields(l)[1])
			return float64(kb) * 1024
		}
	}
	panic("no " + field + " in /proc/PID/status")
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// node is one keyraft process.
type node struct {
	id, http, raft, gossip, dir string
	env                         []string // extra environment, such as GODEBUG=gctrace=1
	p                           *proc
}

// cluster is a set of keyraft nodes and the root key the first leader printed.
type cluster struct {
	nodes []*node
	root  string
}

// startKeyraft starts n nodes: one alone is a cluster of one; more form a
// cluster with --bootstrap-expect n.
func startKeyraft(tag string, n int, extra ...string) *cluster {
	return startKeyraftEnv(tag, n, nil, extra...)
}

func startKeyraftEnv(tag string, n int, env []string, extra ...string) *cluster {
	c := &cluster{}
	rootCh := make(chan string, n)
	onLine := func(l string) {
		if k, ok := strings.CutPrefix(l, "root key: "); ok {
			rootCh <- strings.TrimSpace(k)
		}
	}
	for i := 1; i <= n; i++ {
		c.nodes = append(c.nodes, &node{id: fmt.Sprintf("%s%d", tag, i), http: addr(freePort()), raft: addr(freePort()), gossip: addr(freePort()), env: env})
	}
	for _, nd := range c.nodes {
		var join []string
		for _, o := range c.nodes {
			if o != nd {
				join = append(join, o.gossip)
			}
		}
		args := []string{}
		if n > 1 {
			args = append(args, "--bootstrap-expect", strconv.Itoa(n), "--join", strings.Join(join, ","))
		}
		c.startNode(nd, onLine, append(args, extra...)...)
	}
	select {
	case c.root = <-rootCh:
	case <-time.After(30 * time.Second):
		panic("no root key printed by " + tag)
	}
	for _, nd := range c.nodes {
		waitReady(nd)
	}
	return c
}

func (c *cluster) startNode(nd *node, onLine func(string), args ...string) {
	nd.dir = filepath.Join(cfg.work, nd.id)
	must(os.MkdirAll(nd.dir, 0o755))
	base := []string{"serve", "--data-dir", nd.dir, "--node-id", nd.id, "--http-addr", nd.http, "--raft-addr", nd.raft,
		"--gossip-addr", nd.gossip, "--gossip-profile", "local", "--log-level", "warn"}
	nd.p = startEnv(nd.id, onLine, nd.env, cfg.keyraft, append(base, args...)...)
}

func waitReady(nd *node) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if r, err := http.Get("http://" + nd.http + "/readyz"); err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	panic(nd.id + " not ready; see " + filepath.Join(cfg.work, nd.id+".log"))
}

var client = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}}

// call does an admin request with the root key and decodes the answer's data.
func (c *cluster) call(nd *node, method, path string, body any, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+nd.http+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+c.root)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode >= 300 {
		return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, truncate(raw, 300))
	}
	if out != nil {
		var env struct {
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(raw, &env); err != nil {
			return resp.StatusCode, err
		}
		return resp.StatusCode, json.Unmarshal(env.Data, out)
	}
	return resp.StatusCode, nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

type clusterStatus struct {
	LeaderID string `json:"leader_id"`
	Nodes    []struct {
		ID           string  `json:"id"`
		HTTPAddr     string  `json:"http_addr"`
		AppliedIndex *uint64 `json:"applied_index"`
		Digest       string  `json:"digest"`
	} `json:"nodes"`
}

func (c *cluster) status(nd *node) (clusterStatus, error) {
	var st clusterStatus
	_, err := c.call(nd, "GET", "/v1/cluster", nil, &st)
	return st, err
}

// leader waits for a leader every node agrees on, and returns it.
func (c *cluster) leader() *node {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		st, err := c.status(c.nodes[0])
		if err == nil && st.LeaderID != "" {
			for _, nd := range c.nodes {
				if nd.id == st.LeaderID {
					return nd
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	panic("no leader")
}

// keySet is real tokens: valid ones (to be imported) and invalid ones
// (well-formed, never imported).
type keySet struct {
	valid, invalid []string
}

// genTokens makes n real secret tokens.
func genTokens(n int) []keyindex.Token {
	out := make([]keyindex.Token, n)
	var wg sync.WaitGroup
	const workers = 4
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += workers {
				t, err := keyindex.GenerateToken(rand.Reader, "", keyindex.TypeSecret, keyindex.EnvLive)
				must(err)
				out[i] = t
			}
		}(w)
	}
	wg.Wait()
	return out
}

// importTokens imports tokens into the cluster through nd, 10,000 per call.
func (c *cluster) importTokens(nd *node, toks []keyindex.Token) {
	type item struct {
		SHA256      string `json:"sha256"`
		Name        string `json:"name"`
		WorkspaceID string `json:"workspace_id"`
	}
	for off := 0; off < len(toks); off += 10_000 {
		end := min(off+10_000, len(toks))
		items := make([]item, 0, end-off)
		for _, t := range toks[off:end] {
			items = append(items, item{SHA256: hex.EncodeToString(t.Hash[:]), Name: "bench", WorkspaceID: "bench"})
		}
		if _, err := c.call(nd, "POST", "/v1/keys/import", map[string]any{"keys": items}, nil); err != nil {
			panic(err)
		}
	}
}

// verifySet builds a key set of total keys, 90% imported into the cluster
// through nd and 10% never imported, and returns it with the file of all
// tokens in random order (one a line) for wrk and vegeta.
func (c *cluster) verifySet(nd *node, total int) (keySet, string) {
	nValid := total * 9 / 10
	toks := genTokens(total)
	c.importTokens(nd, toks[:nValid])
	var ks keySet
	for i, t := range toks {
		if i < nValid {
			ks.valid = append(ks.valid, t.Plaintext)
		} else {
			ks.invalid = append(ks.invalid, t.Plaintext)
		}
	}
	all := append(append([]string(nil), ks.valid...), ks.invalid...)
	shuffle(all)
	f := filepath.Join(cfg.work, nd.id+"-keys.txt")
	must(os.WriteFile(f, []byte(strings.Join(all, "\n")+"\n"), 0o644))
	return ks, f
}

func shuffle(s []string) {
	x := uint64(88172645463325252)
	for i := len(s) - 1; i > 0; i-- {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		j := int(x % uint64(i+1))
		s[i], s[j] = s[j], s[i]
	}
}
