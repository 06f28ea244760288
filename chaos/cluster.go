package chaos

import (
	"bytes"
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
	"syscall"
	"time"
)

// Node is one keyraft process slot.
type Node struct {
	Name    string // n1, n2, …
	Slot    int
	IP      string
	Dir     string
	DataDir string
	Flags   []string // extra flags (bootstrap-expect, nonvoter)

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	stopped bool // SIGSTOPped
	Removed bool // removed from the cluster for good
}

func (n *Node) HTTP() string   { return "http://" + n.IP + ":8080" }
func (n *Node) Gossip() string { return n.IP + ":7946" }

// ID is the node id stored in the data dir.
func (n *Node) ID() string {
	b, _ := os.ReadFile(filepath.Join(n.DataDir, "node-id"))
	return strings.TrimSpace(string(b))
}

// Running says whether the process is up (possibly SIGSTOPped).
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// Cluster is the set of node slots of a run.
type Cluster struct {
	Bin       string
	Dir       string
	Net       *Net
	MaxStale  time.Duration
	Election  time.Duration
	mu        sync.Mutex
	Nodes     []*Node
	Root      string
	Log       func(format string, args ...any)
	nextSlot  int
	adminHTTP *http.Client
}

func NewCluster(bin, dir string, nw *Net, maxStale, election time.Duration, logf func(string, ...any)) *Cluster {
	return &Cluster{Bin: bin, Dir: dir, Net: nw, MaxStale: maxStale, Election: election, Log: logf, nextSlot: 1,
		adminHTTP: newHTTPClient(3 * time.Second)}
}

func newHTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: time.Second}).DialContext,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     5 * time.Second,
	}}
}

// NewNode creates a slot (namespace, data dir) for a new node.
func (c *Cluster) NewNode(flags ...string) (*Node, error) {
	c.mu.Lock()
	slot := c.nextSlot
	c.nextSlot++
	c.mu.Unlock()
	if err := c.Net.AddSlot(slot); err != nil {
		return nil, err
	}
	n := &Node{Name: fmt.Sprintf("n%d", slot), Slot: slot, IP: c.Net.IP(slot), Flags: flags}
	n.Dir = filepath.Join(c.Dir, n.Name)
	n.DataDir = filepath.Join(n.Dir, "data")
	if err := os.MkdirAll(n.DataDir, 0o700); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.Nodes = append(c.Nodes, n)
	c.mu.Unlock()
	return n, nil
}

// Members are the nodes not removed for good.
func (c *Cluster) Members() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Node
	for _, n := range c.Nodes {
		if !n.Removed {
			out = append(out, n)
		}
	}
	return out
}

// Start launches the node's process in its namespace, joining every other
// member.
func (c *Cluster) Start(n *Node) error {
	var join []string
	for _, o := range c.Members() {
		if o != n {
			join = append(join, o.Gossip())
		}
	}
	args := []string{"netns", "exec", c.Net.NS(n.Slot), c.Bin, "serve",
		"--data-dir", n.DataDir,
		"--http-addr", n.IP + ":8080", "--raft-addr", n.IP + ":7000", "--gossip-addr", n.Gossip(),
		"--gossip-profile", "local",
		"--election-timeout", c.Election.String(), "--heartbeat-timeout", c.Election.String(),
		"--max-stale", c.MaxStale.String(), "--usage-flush-interval", "1s",
		"--log-level", "info"}
	if len(join) > 0 {
		args = append(args, "--join", strings.Join(join, ","))
	}
	args = append(args, n.Flags...)
	stdout, err := os.OpenFile(filepath.Join(n.Dir, "stdout.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	stderr, err := os.OpenFile(filepath.Join(n.Dir, "stderr.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "=== chaos harness: start %s at %s: ip %s\n", n.Name, time.Now().Format(time.RFC3339Nano), strings.Join(args, " "))
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); stdout.Close(); stderr.Close(); close(done) }()
	n.mu.Lock()
	n.cmd, n.done, n.stopped = cmd, done, false
	n.mu.Unlock()
	return nil
}

// Signal sends sig to the node's process; an error when there is none
// running to receive it.
func (n *Node) Signal(sig syscall.Signal) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.cmd.Process == nil {
		return fmt.Errorf("%s has no process", n.Name)
	}
	if err := n.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	switch sig {
	case syscall.SIGSTOP:
		n.stopped = true
	case syscall.SIGCONT:
		n.stopped = false
	}
	return nil
}

// Kill SIGKILLs the process and waits for it to exit; an error when it was
// not running.
func (n *Node) Kill() error {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil || !n.Running() {
		return fmt.Errorf("%s is not running", n.Name)
	}
	cmd.Process.Signal(syscall.SIGCONT)
	if err := cmd.Process.Kill(); err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	<-done
	return nil
}

// usable: running and not stopped.
func (n *Node) usable() bool {
	n.mu.Lock()
	stopped := n.stopped
	n.mu.Unlock()
	return !stopped && n.Running()
}

// KillAll kills every process of the run.
func (c *Cluster) KillAll() {
	c.mu.Lock()
	nodes := append([]*Node(nil), c.Nodes...)
	c.mu.Unlock()
	for _, n := range nodes {
		n.Kill()
	}
}

var rootKeyLine = regexp.MustCompile(`root key: (rk_live_[0-9A-Za-z]+)`)

// FindRoot reads the root key from the nodes' stdout.
func (c *Cluster) FindRoot() string {
	for _, n := range c.Members() {
		b, _ := os.ReadFile(filepath.Join(n.Dir, "stdout.log"))
		if m := rootKeyLine.FindSubmatch(b); m != nil {
			return string(m[1])
		}
	}
	return ""
}

// Call makes one admin call with the root key; it returns the status and
// body, or an error for a transport failure.
func (c *Cluster) Call(hc *http.Client, n *Node, method, path string, body any) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, n.HTTP()+path, r)
	if err != nil {
		return 0, nil, err
	}
	if c.Root != "" {
		req.Header.Set("Authorization", "Bearer "+c.Root)
	}
	if hc == nil {
		hc = c.adminHTTP
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, b, nil
}

// Status is the part of GET /v1/cluster the harness uses.
type Status struct {
	LeaderID string `json:"leader_id"`
	Nodes    []struct {
		ID       string `json:"id"`
		Suffrage string `json:"suffrage"`
		HTTPAddr string `json:"http_addr"`
		Gossip   string `json:"gossip"`
	} `json:"nodes"`
}

func (c *Cluster) Status(n *Node) (*Status, error) {
	code, b, err := c.Call(nil, n, "GET", "/v1/cluster", nil)
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return nil, fmt.Errorf("status %d: %s", code, b)
	}
	var env struct {
		Data Status `json:"data"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		return nil, err
	}
	return &env.Data, nil
}

// Leader asks running, unstopped members who leads; nil when none names a
// member that is itself running and unstopped (followers go on naming a
// leader just killed or stopped until their election timeout).
func (c *Cluster) Leader() *Node {
	for _, n := range c.Members() {
		if !n.usable() {
			continue
		}
		st, err := c.Status(n)
		if err != nil || st.LeaderID == "" {
			continue
		}
		for _, m := range c.Members() {
			if m.ID() == st.LeaderID && m.usable() {
				return m
			}
		}
	}
	return nil
}

// WaitLeader waits until some member names a leader.
func (c *Cluster) WaitLeader(limit time.Duration) *Node {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if l := c.Leader(); l != nil {
			return l
		}
		time.Sleep(200 * time.Millisecond)
	}
	return nil
}

// WaitReady waits until GET /readyz answers 200.
func (c *Cluster) WaitReady(n *Node, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		resp, err := c.adminHTTP.Get(n.HTTP() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if !n.Running() {
			return fmt.Errorf("%s exited", n.Name)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after %v", n.Name, limit)
}

// LocalState is GET /v1/internal/state.
type LocalState struct {
	NodeID       string `json:"node_id"`
	AppliedIndex uint64 `json:"applied_index"`
	Digest       string `json:"digest"`
}

func (c *Cluster) State(n *Node) (*LocalState, error) {
	code, b, err := c.Call(nil, n, "GET", "/v1/internal/state", nil)
	if err != nil {
		return nil, err
	}
	var st LocalState
	if code != 200 || json.Unmarshal(b, &st) != nil {
		return nil, fmt.Errorf("state: %d %s", code, b)
	}
	return &st, nil
}
