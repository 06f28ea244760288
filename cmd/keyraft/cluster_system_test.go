package main

// Cluster system tests: several real keyraft processes on loopback forming
// a cluster over gossip and Raft, killed, restarted, removed and recovered.

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keyraft/keyraft/keyindex"
)

// member is one node of a test cluster and what it needs to restart.
type member struct {
	*node
	dir, raftAddr string
	flags         []string
}

type testCluster struct {
	t       *testing.T
	members []*member
	root    string
}

// clusterFlags are the timings every cluster test uses: fast elections and
// fast failure detection on one machine.
var clusterFlags = []string{"--gossip-profile", "local"}

// startCluster launches n nodes with --bootstrap-expect n, each joining all
// the others, in the given start order with a pause between starts.
func startCluster(t *testing.T, n int, order []int, pause time.Duration, extra ...string) *testCluster {
	t.Helper()
	c := &testCluster{t: t}
	gossip := make([]string, n)
	for i := range gossip {
		gossip[i] = freePort(t)
	}
	c.members = make([]*member, n)
	for i := range c.members {
		var others []string
		for j, g := range gossip {
			if j != i {
				others = append(others, g)
			}
		}
		flags := append([]string{"--bootstrap-expect", fmt.Sprint(n), "--join", strings.Join(others, ",")}, extra...)
		c.members[i] = &member{dir: t.TempDir(), raftAddr: freePort(t), flags: append(flags, "--gossip-addr", gossip[i], "--http-addr", freePort(t))}
	}
	if order == nil {
		for i := range c.members {
			order = append(order, i)
		}
	}
	for _, i := range order {
		c.start(i)
		time.Sleep(pause)
	}
	c.waitFormed(n)
	return c
}

func (c *testCluster) start(i int) {
	m := c.members[i]
	m.node = launch(c.t, m.dir, m.raftAddr, nil, append(append([]string{}, clusterFlags...), m.flags...)...)
}

// restart starts a stopped member again on its data dir, joining the
// others, and waits until it is ready.
func (c *testCluster) restart(i int) {
	c.t.Helper()
	c.relaunch(i)
	c.members[i].waitReady()
}

// relaunch starts a stopped member again without waiting for it.
func (c *testCluster) relaunch(i int) {
	m := c.members[i]
	var others []string
	for j, o := range c.members {
		if j != i && o.node != nil && !o.exited.Load() {
			others = append(others, o.gossipAddr)
		}
	}
	// Same flags as before (later ones win), joining whoever is up, at the same addresses.
	m.flags = append(m.flags, "--join", strings.Join(others, ","), "--gossip-addr", m.gossipAddr, "--http-addr", m.httpAddr)
	c.start(i)
}

// add launches a new node that joins the cluster with extra flags.
func (c *testCluster) add(extra ...string) *member {
	c.t.Helper()
	var others []string
	for _, o := range c.alive() {
		others = append(others, o.gossipAddr)
	}
	m := &member{dir: c.t.TempDir(), raftAddr: freePort(c.t), flags: append([]string{"--join", strings.Join(others, ",")}, extra...)}
	c.members = append(c.members, m)
	c.start(len(c.members) - 1)
	m.waitReady()
	return m
}

func (c *testCluster) alive() []*member {
	var out []*member
	for _, m := range c.members {
		if m.node != nil && !m.exited.Load() {
			out = append(out, m)
		}
	}
	return out
}

// waitFormed waits until every node is ready, exactly one printed the root
// key, and all agree on one leader with `voters` voters.
func (c *testCluster) waitFormed(voters int) {
	c.t.Helper()
	for _, m := range c.members {
		m.waitReady()
	}
	var keys []string
	for _, m := range c.members {
		if found := rootKeyLine.FindAllStringSubmatch(m.stdout.String(), -1); len(found) > 0 {
			for _, f := range found {
				keys = append(keys, f[1])
			}
		}
	}
	if len(keys) != 1 {
		c.t.Fatalf("want exactly one root key printed by the cluster, got %d", len(keys))
	}
	c.root = keys[0]
	c.waitUntil(10*time.Second, "one leader and all voters", func() bool {
		return c.agreeOnLeader(voters) != nil
	})
}

// agreeOnLeader returns the leader when every alive member names the same
// leader and the configuration has `voters` voters; else nil.
func (c *testCluster) agreeOnLeader(voters int) *member {
	leader := ""
	for _, m := range c.alive() {
		st, err := c.status(m)
		if err != nil || st.LeaderID == "" || (leader != "" && st.LeaderID != leader) {
			return nil
		}
		leader = st.LeaderID
		if countSuffrage(st, "voter") != voters {
			return nil
		}
	}
	for _, m := range c.alive() {
		if m.id() == leader {
			return m
		}
	}
	return nil
}

func (c *testCluster) leader() *member {
	c.t.Helper()
	var l *member
	c.waitUntil(10*time.Second, "a leader", func() bool {
		for _, m := range c.alive() {
			if st, err := c.status(m); err == nil && st.LeaderID != "" {
				for _, o := range c.alive() {
					if o.id() == st.LeaderID {
						l = o
						return true
					}
				}
			}
		}
		return false
	})
	return l
}

func (c *testCluster) followers() []*member {
	l := c.leader()
	var out []*member
	for _, m := range c.alive() {
		if m != l {
			out = append(out, m)
		}
	}
	return out
}

func (c *testCluster) waitUntil(limit time.Duration, what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type clusterStatus struct {
	LeaderID string       `json:"leader_id"`
	Nodes    []nodeStatus `json:"nodes"`
}

type nodeStatus struct {
	ID           string  `json:"id"`
	Suffrage     string  `json:"suffrage"`
	Gossip       string  `json:"gossip"`
	HTTPAddr     string  `json:"http_addr"`
	AppliedIndex *uint64 `json:"applied_index"`
	Digest       string  `json:"digest"`
}

// node is the status of node id (all empty when it is not listed).
func (st *clusterStatus) node(id string) nodeStatus {
	for _, n := range st.Nodes {
		if n.ID == id {
			return n
		}
	}
	return nodeStatus{}
}

// inConfig reports whether node id is in the Raft configuration.
func (st *clusterStatus) inConfig(id string) bool {
	s := st.node(id).Suffrage
	return s != "" && s != "none"
}

func countSuffrage(st *clusterStatus, s string) int {
	n := 0
	for _, x := range st.Nodes {
		if x.Suffrage == s {
			n++
		}
	}
	return n
}

func (c *testCluster) status(m *member) (*clusterStatus, error) {
	var st clusterStatus
	code, body := call(m.node, "GET", "/v1/cluster", c.root, "")
	if code != 200 {
		return nil, fmt.Errorf("status %d: %s", code, body)
	}
	var env struct {
		Data clusterStatus `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, err
	}
	st = env.Data
	return &st, nil
}

// id is the node id the process stored in its data dir.
func (m *member) id() string {
	b, err := os.ReadFile(filepath.Join(m.dir, "node-id"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// converged waits until every alive member reports the same applied index
// and state digest.
func (c *testCluster) converged() {
	c.t.Helper()
	var last *clusterStatus
	defer func() {
		if c.t.Failed() && last != nil {
			b, _ := json.MarshalIndent(last, "", "  ")
			c.t.Logf("last status: %s", b)
		}
	}()
	c.waitUntil(time.Duration(envInt("KEYRAFT_TEST_CONVERGE_S", 20))*time.Second, "equal applied index and digest on every node", func() bool {
		st, err := c.status(c.leader())
		if err != nil {
			return false
		}
		last = st
		alive := map[string]bool{}
		for _, m := range c.alive() {
			alive[m.id()] = true
		}
		var applied uint64
		digest := ""
		seen := 0
		for _, n := range st.Nodes {
			if !alive[n.ID] {
				continue
			}
			if n.AppliedIndex == nil || n.Digest == "" || (digest != "" && (n.Digest != digest || *n.AppliedIndex != applied)) {
				return false
			}
			applied, digest = *n.AppliedIndex, n.Digest
			seen++
		}
		return seen == len(alive)
	})
}

// waitGossipDead waits until the leader's gossip declares node id dead
// (a quorum check before that still counts the killed node alive).
func (c *testCluster) waitGossipDead(id string) {
	c.t.Helper()
	c.waitUntil(30*time.Second, "gossip to declare "+id+" dead", func() bool {
		st, err := c.status(c.leader())
		return err == nil && st.node(id).Gossip == "dead"
	})
}

func (m *member) kill() {
	m.cmd.Process.Signal(syscall.SIGKILL)
	<-m.done
}

// call sends one HTTP request and returns status and body.
func call(n *node, method, path, token, body string) (int, []byte) {
	req, err := http.NewRequest(method, n.url(path), strings.NewReader(body))
	if err != nil {
		n.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := testHTTP.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

type written struct {
	ID    string `json:"id"`
	Key   string `json:"key"`
	Index uint64
}

// write sends an admin write and decodes the record, requiring want.
func (c *testCluster) write(n *node, method, path, body string, want int) written {
	c.t.Helper()
	code, b := call(n, method, path, c.root, body)
	if code != want {
		c.t.Fatalf("%s %s via %s: %d %s", method, path, n.httpAddr, code, b)
	}
	var env struct {
		Data written `json:"data"`
		Meta struct {
			Index uint64 `json:"index"`
		} `json:"meta"`
	}
	json.Unmarshal(b, &env)
	env.Data.Index = env.Meta.Index
	return env.Data
}

// verifyOn returns the verify status of key on a node, after min_index.
func verifyOn(n *node, key string, minIndex uint64) (int, string) {
	req, _ := http.NewRequest("GET", n.url(fmt.Sprintf("/v1/verify?min_index=%d", minIndex)), nil)
	req.Header.Set("X-API-Key", key)
	resp, err := testHTTP.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var body struct {
		Code string `json:"code"`
	}
	json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body.Code
}

func TestClusterWritesThroughFollowersAndSurvivesLeaderKill(t *testing.T) {
	c := startCluster(t, 3, nil, 0)
	followers := c.followers()

	// A key created through a follower verifies on every node.
	k := c.write(followers[0].node, "POST", "/v1/keys", `{"name":"svc","workspace_id":"acme"}`, 201)
	for _, m := range c.alive() {
		if code, what := verifyOn(m.node, k.Key, k.Index); code != 200 {
			t.Fatalf("node %s: verify %d %s", m.id(), code, what)
		}
	}
	// A body larger than fasthttp's first read (the server streams
	// request bodies) is forwarded whole: an import of 200 keys, 22 KB.
	imported, last := importKeys(t, c, followers[0].node, 200)
	for _, tok := range []string{imported[0], imported[len(imported)-1]} {
		if code, what := verifyOn(followers[1].node, tok, last); code != 200 {
			t.Fatalf("a key imported through a follower: verify %d %s", code, what)
		}
	}
	// Revoke through the other follower with ?wait=all: every node rejects at once.
	rev := c.write(followers[1].node, "POST", "/v1/keys/"+k.ID+"/revoke?wait=all", "", 200)
	if rev.ID != k.ID {
		t.Fatalf("revoke answered %+v", rev)
	}
	for _, m := range c.alive() {
		if code, what := verifyOn(m.node, k.Key, 0); code != 401 || what != "KEY_REVOKED" {
			t.Fatalf("node %s right after revoke?wait=all: %d %s", m.id(), code, what)
		}
	}

	// A node that cannot apply (stopped) is reported pending by ?wait=all
	// after the timeout, and the write still succeeds.
	frozen, leader := followers[0], c.leader()
	frozen.cmd.Process.Signal(syscall.SIGSTOP)
	code, b := call(leader.node, "POST", "/v1/keys?wait=all", c.root, `{"name":"while frozen","workspace_id":"acme"}`)
	frozen.cmd.Process.Signal(syscall.SIGCONT)
	var waited struct {
		Meta struct {
			Wait struct {
				Applied []string `json:"applied"`
				Pending []string `json:"pending"`
			} `json:"wait"`
		} `json:"meta"`
	}
	if code != 201 || json.Unmarshal(b, &waited) != nil || len(waited.Meta.Wait.Pending) != 1 || waited.Meta.Wait.Pending[0] != frozen.id() || len(waited.Meta.Wait.Applied) != 2 {
		t.Fatalf("wait=all with a frozen node: %d %s", code, b)
	}

	// SIGKILL the leader: a new one is elected and writes through any survivor work.
	old := c.leader()
	old.kill()
	start := time.Now()
	newLeader := c.leader()
	if newLeader == old {
		t.Fatal("the killed node is still the leader")
	}
	t.Logf("new leader after %v", time.Since(start))
	var keys []written
	for _, m := range c.alive() {
		keys = append(keys, c.write(m.node, "POST", "/v1/keys", `{"name":"after","workspace_id":"acme"}`, 201))
	}
	// The killed node restarts, catches up, and its state digest matches.
	for i, m := range c.members {
		if m == old {
			c.restart(i)
		}
	}
	c.converged()
	for _, k := range keys {
		if code, what := verifyOn(old.node, k.Key, k.Index); code != 200 {
			t.Fatalf("restarted node: verify %d %s", code, what)
		}
	}
}

func TestClusterBootstrapExpectInAnyOrder(t *testing.T) {
	orders := [][]int{{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}}
	for i, order := range orders {
		t.Run(fmt.Sprint(order), func(t *testing.T) {
			// Alternate a staggered start (each node alone for a while) and
			// a near-simultaneous one.
			pause := 50 * time.Millisecond
			if i%2 == 0 {
				pause = 600 * time.Millisecond
			}
			c := startCluster(t, 3, order, pause)
			// One cluster: every node names the same leader and three voters
			// (waitFormed checked it); a write lands everywhere.
			k := c.write(c.members[order[0]].node, "POST", "/v1/keys", `{"name":"x","workspace_id":"w"}`, 201)
			for _, m := range c.members {
				if code, _ := verifyOn(m.node, k.Key, k.Index); code != 200 {
					t.Fatalf("node %s does not have the write", m.id())
				}
			}
		})
	}
}

// SIGTERM on the leader hands leadership over before it stops, so the
// cluster has a new leader at once instead of after an election timeout;
// with --leave-on-terminate the node also leaves the configuration.
func TestClusterTerminateHandsOverAndLeaves(t *testing.T) {
	c := startCluster(t, 3, nil, 0, "--leave-on-terminate")
	leader := c.leader()
	leaderID := leader.id()
	leader.stop()
	if !strings.Contains(leader.stderr.String(), "leadership transferred") {
		t.Fatalf("the leader did not hand over leadership:\n%s", leader.stderr.String())
	}
	c.waitUntil(10*time.Second, "the departed leader out of the configuration", func() bool {
		l := c.leader()
		st, err := c.status(l)
		if err != nil || st.LeaderID == leaderID {
			return false
		}
		if st.inConfig(leaderID) {
			return false
		}
		return countSuffrage(st, "voter") == 2
	})
	// Two voters left, both alive: writes work, and a consistent read
	// through a follower (forwarded to the leader) sees them.
	k := c.write(c.alive()[0].node, "POST", "/v1/keys", `{"name":"after leave","workspace_id":"w"}`, 201)
	for _, m := range c.alive() {
		code, b := call(m.node, "GET", "/v1/keys/"+k.ID+"?consistent=true", c.root, "")
		if code != 200 || !strings.Contains(string(b), k.ID) {
			t.Fatalf("consistent read via %s: %d %s", m.id(), code, b)
		}
	}

	// `keyraft cluster leave` sent to a follower: it leaves and its process exits.
	follower := c.followers()[0]
	if out, errOut, code := follower.cli(c.root, "cluster", "leave"); code != 0 {
		t.Fatalf("cluster leave: exit %d\n%s%s", code, out, errOut)
	}
	select {
	case err := <-follower.done:
		if err != nil {
			t.Fatalf("the node that left exited with %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the node that left is still running")
	}
	st, err := c.status(c.alive()[0])
	if err != nil || countSuffrage(st, "voter") != 1 {
		t.Fatalf("after leave: %+v %v", st, err)
	}
}

// Plain SIGTERM (no --leave-on-terminate) on the leader: it hands
// leadership over before it stops, so the others have a leader at once
// rather than after an election timeout, and it stays a voter: a restart,
// not a departure.
func TestClusterTerminateHandsOverAndStays(t *testing.T) {
	c := startCluster(t, 3, nil, 0)
	leader := c.leader()
	leaderID := leader.id()
	leader.stop()
	logs := leader.stderr.String()
	if !strings.Contains(logs, "leadership transferred") || strings.Contains(logs, "leadership transfer failed") {
		t.Fatalf("the leader did not hand over leadership:\n%s", logs)
	}
	// The successor was elected before the old leader stopped: it answers
	// as leader as soon as it is asked.
	st, err := c.status(c.alive()[0])
	if err != nil || st.LeaderID == "" || st.LeaderID == leaderID {
		t.Fatalf("right after the handover: leader %q (the old one was %q), %v", st.LeaderID, leaderID, err)
	}
	suffrage := st.node(leaderID).Suffrage
	if suffrage != "voter" || countSuffrage(st, "voter") != 3 {
		t.Fatalf("the stopped leader is %q in the configuration (%d voters), want still a voter of 3", suffrage, countSuffrage(st, "voter"))
	}
	c.write(c.alive()[0].node, "POST", "/v1/keys", `{"name":"after handover","workspace_id":"w"}`, 201)
}

func TestClusterScript(t *testing.T) {
	// The cluster dir is given relative to the directory the script is
	// run from, which is not the repository's.
	work := t.TempDir()
	dir := filepath.Join(work, "cluster")
	script, err := filepath.Abs("../../scripts/cluster.sh")
	if err != nil {
		t.Fatal(err)
	}
	// Below the ephemeral port range (32768+), where other tests' sockets live.
	base := 10000 + int(time.Now().UnixNano()%2000)*10
	env := append(os.Environ(), "KEYRAFT_CLUSTER_DIR=cluster", "KEYRAFT_BIN="+binary, fmt.Sprintf("KEYRAFT_PORT_BASE=%d", base))
	run := func(args ...string) string {
		cmd := exec.Command("bash", append([]string{script}, args...)...)
		cmd.Dir, cmd.Env = work, env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("cluster.sh %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	t.Cleanup(func() { run("down") })
	out := run("up", "3")
	m := rootKeyLine.FindStringSubmatch(out)
	if m == nil || strings.Count(out, "http=127.0.0.1:") != 3 {
		t.Fatalf("up printed no root key or not every node:\n%s", out)
	}
	status := run("status")
	if strings.Count(status, "running") != 3 || strings.Count(status, " pid=") != 3 || strings.Count(status, "voter") < 3 || !strings.Contains(status, "leader") {
		t.Fatalf("status:\n%s", status)
	}
	// The root key is in the nodes' output and in root.key: neither is
	// readable by other users.
	for _, f := range []string{"node1.out", "root.key"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Fatalf("%s has mode %v", f, fi.Mode())
		}
	}
	if !strings.Contains(run("down"), "stopped") {
		t.Fatal("down did not stop the cluster")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatal("down left the cluster dir")
	}
}

func TestClusterMembershipJoinNonvoterReapRemove(t *testing.T) {
	c := startCluster(t, 3, nil, 0, "--reap-after", "2s")

	// A 4th node joins as a voter, a 5th as a nonvoter.
	fourth := c.add("--reap-after", "2s")
	replica := c.add("--nonvoter", "--reap-after", "2s")
	c.waitUntil(15*time.Second, "4 voters and 1 nonvoter", func() bool {
		st, err := c.status(c.leader())
		return err == nil && countSuffrage(st, "voter") == 4 && countSuffrage(st, "nonvoter") == 1
	})

	// The nonvoter verifies locally and forwards writes, and never leads.
	k := c.write(replica.node, "POST", "/v1/keys", `{"name":"via replica","workspace_id":"w"}`, 201)
	if code, what := verifyOn(replica.node, k.Key, k.Index); code != 200 {
		t.Fatalf("nonvoter verify: %d %s", code, what)
	}

	// A voter killed for good is reaped after --reap-after (4 voters, 3 alive: quorum holds).
	fourthID := fourth.id()
	fourth.kill()
	c.waitUntil(30*time.Second, "the dead voter reaped", func() bool {
		st, err := c.status(c.leader())
		if err != nil {
			return false
		}
		if st.inConfig(fourthID) {
			return false
		}
		return countSuffrage(st, "voter") == 3
	})

	// An operator removes a follower: it leaves Raft and serves no admin writes.
	var victim *member
	for _, m := range c.followers() {
		if m != replica {
			victim = m
			break
		}
	}
	if code, b := call(c.leader().node, "DELETE", "/v1/cluster/nodes/"+victim.id(), c.root, ""); code != 204 {
		t.Fatalf("remove node: %d %s", code, b)
	}
	c.waitUntil(10*time.Second, "the removed node out of the configuration", func() bool {
		st, err := c.status(c.leader())
		return err == nil && countSuffrage(st, "voter") == 2
	})
	c.waitUntil(10*time.Second, "the removed node refusing writes", func() bool {
		code, _ := call(victim.node, "POST", "/v1/keys", c.root, `{"name":"x","workspace_id":"w"}`)
		return code == 503
	})
	for _, path := range []string{"/v1/keys", "/v1/audit", "/v1/cluster"} {
		if code, b := call(victim.node, "GET", path, c.root, ""); code != 503 {
			t.Fatalf("the removed node answers GET %s from its old state: %d %s", path, code, b)
		}
	}

	// Remove the leader itself: leadership moves first, the removal completes.
	oldLeader := c.leader()
	oldID := oldLeader.id()
	if code, b := call(oldLeader.node, "DELETE", "/v1/cluster/nodes/"+oldID, c.root, ""); code != 204 {
		t.Fatalf("remove the leader: %d %s", code, b)
	}
	var survivor *member
	for _, m := range c.alive() {
		if m != oldLeader && m != victim && m != replica {
			survivor = m
		}
	}
	c.waitUntil(15*time.Second, "the old leader removed and a new leader", func() bool {
		st, err := c.status(survivor)
		if err != nil || st.LeaderID == "" || st.LeaderID == oldID {
			return false
		}
		if st.inConfig(oldID) {
			return false
		}
		return true
	})
	// The replica still forwards writes to the new leader.
	k2 := c.write(replica.node, "POST", "/v1/keys", `{"name":"after removals","workspace_id":"w"}`, 201)
	if code, what := verifyOn(survivor.node, k2.Key, k2.Index); code != 200 {
		t.Fatalf("after removals: %d %s", code, what)
	}
}

func TestClusterGossipKeyKeepsStrangersOut(t *testing.T) {
	key := "c2VjcmV0LWdvc3NpcC1rZXktMzJieXRlcy0tLS0tLS0="   // 32 bytes
	other := "b3RoZXItZ29zc2lwLWtleS0zMmJ5dGVzLS0tLS0tLS0=" // 32 bytes, different
	c := startCluster(t, 2, nil, 0, "--gossip-key", key)
	strangers := []*member{
		{dir: t.TempDir(), raftAddr: freePort(t), flags: []string{"--join", c.members[0].gossipAddr, "--gossip-key", other}},
		{dir: t.TempDir(), raftAddr: freePort(t), flags: []string{"--join", c.members[0].gossipAddr}},
	}
	for _, s := range strangers {
		c.members = append(c.members, s)
		c.start(len(c.members) - 1)
	}
	time.Sleep(4 * time.Second) // several join attempts and gossip rounds
	st, err := c.status(c.members[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Nodes) != 2 {
		t.Fatalf("nodes with a wrong or missing gossip key got in: %+v", st.Nodes)
	}
	for _, s := range strangers {
		if code, _ := call(s.node, "GET", "/readyz", "", ""); code == 200 {
			t.Fatal("a stranger became ready")
		}
	}
}

// digestOf returns a node's applied index and state digest.
func digestOf(t *testing.T, n *node) (uint64, string) {
	t.Helper()
	code, b := call(n, "GET", "/v1/internal/state", "", "")
	var st struct {
		AppliedIndex uint64 `json:"applied_index"`
		Digest       string `json:"digest"`
	}
	if code != 200 || json.Unmarshal(b, &st) != nil {
		t.Fatalf("state: %d %s", code, b)
	}
	return st.AppliedIndex, st.Digest
}

// listOf returns the data array of a GET.
func listOf(t *testing.T, n *node, token, path string) []map[string]any {
	t.Helper()
	code, b := call(n, "GET", path, token, "")
	var page struct {
		Data []map[string]any `json:"data"`
	}
	if code != 200 || json.Unmarshal(b, &page) != nil {
		t.Fatalf("GET %s: %d %s", path, code, b)
	}
	return page.Data
}

// keyIDOf returns the id of the key a token belongs to.
func keyIDOf(t *testing.T, n *node, token string) string {
	t.Helper()
	code, b := call(n, "GET", "/v1/verify", token, "")
	var v struct {
		KeyID string `json:"key_id"`
	}
	if code != 200 || json.Unmarshal(b, &v) != nil || v.KeyID == "" {
		t.Fatalf("verify: %d %s", code, b)
	}
	return v.KeyID
}

func TestClusterSnapshotSaveWipeRestore(t *testing.T) {
	// Usage flushes are slowed down so the state holds still while compared.
	quiet := []string{"--usage-flush-interval", "1h"}
	dir, raftAddr := t.TempDir(), freePort(t)
	n := startNode(t, dir, raftAddr, nil, quiet...)
	c := &testCluster{t: t, root: n.rootKey()}
	var keys []written
	for i := 0; i < 20; i++ {
		keys = append(keys, c.write(n, "POST", "/v1/keys", fmt.Sprintf(`{"name":"k%d","workspace_id":"w%d"}`, i, i%3), 201))
	}
	c.write(n, "POST", "/v1/keys/"+keys[0].ID+"/revoke", "", 200)
	_, before := digestOf(t, n)
	keysBefore, auditBefore := listOf(t, n, c.root, "/v1/keys?limit=100"), listOf(t, n, c.root, "/v1/audit?limit=100")

	code, backup := call(n, "GET", "/v1/cluster/snapshot", c.root, "")
	if code != 200 || len(backup) == 0 {
		t.Fatalf("snapshot: %d", code)
	}
	n.stop()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}

	// A new, empty cluster on the wiped dir gets its own root key; the
	// restore brings back the old state, root key included.
	n2 := startNode(t, dir, raftAddr, nil, quiet...)
	newRoot := n2.rootKey()
	restorer := keyIDOf(t, n2, newRoot)
	code, b := call(n2, "POST", "/v1/cluster/restore", newRoot, string(backup))
	var restored struct {
		Meta struct {
			Index uint64 `json:"index"`
		} `json:"meta"`
	}
	if code != 200 || json.Unmarshal(b, &restored) != nil || restored.Meta.Index == 0 {
		t.Fatalf("restore: %d %s", code, b)
	}
	// The keys are the backup's; the audit log is the backup's with the
	// restore on top, by the key that made it.
	if after := listOf(t, n2, c.root, "/v1/keys?limit=100"); !reflect.DeepEqual(after, keysBefore) {
		t.Fatalf("keys after restore:\n%v\nbefore:\n%v", after, keysBefore)
	}
	auditAfter := listOf(t, n2, c.root, "/v1/audit?limit=100")
	if len(auditAfter) != len(auditBefore)+1 || !reflect.DeepEqual(auditAfter[1:], auditBefore) ||
		auditAfter[0]["action"] != "cluster.restore" || auditAfter[0]["actor_key_id"] != restorer {
		t.Fatalf("audit after restore:\n%v\nbefore:\n%v", auditAfter, auditBefore)
	}
	_, before = digestOf(t, n2)
	// The restore's index works as min_index like a write's.
	if code, what := verifyOn(n2, keys[1].Key, restored.Meta.Index); code != 200 {
		t.Fatalf("restored key: %d %s", code, what)
	}
	if code, what := verifyOn(n2, keys[0].Key, 0); what != "KEY_REVOKED" {
		t.Fatalf("restored revoked key: %d %s", code, what)
	}
	if code, _ := call(n2, "GET", "/v1/keys", c.root, ""); code != 200 {
		t.Fatal("the old root key does not work after the restore")
	}
	// A damaged backup is refused and changes nothing.
	if code, _ := call(n2, "POST", "/v1/cluster/restore", c.root, string(backup[:len(backup)/2])); code != 400 {
		t.Fatalf("truncated backup: %d, want 400", code)
	}
	if _, after := digestOf(t, n2); after != before {
		t.Fatal("a refused restore changed the state")
	}
	n2.stop()
}

// TestClusterRestoreReachesEveryNode: a backup restored into a three-node
// cluster replaces the state on every node; the restore's index, given as
// min_index, is reached only by a node holding the restored state.
func TestClusterRestoreReachesEveryNode(t *testing.T) {
	src := startNode(t, t.TempDir(), freePort(t), nil)
	srcRoot := src.rootKey()
	old := (&testCluster{t: t, root: srcRoot}).write(src, "POST", "/v1/keys", `{"name":"from backup","workspace_id":"w"}`, 201)
	code, backup := call(src, "GET", "/v1/cluster/snapshot", srcRoot, "")
	if code != 200 {
		t.Fatalf("snapshot: %d", code)
	}
	src.stop()

	c := startCluster(t, 3, nil, 0)
	mine := c.write(c.leader().node, "POST", "/v1/keys?wait=all", `{"name":"replaced","workspace_id":"w"}`, 201)
	// A backup downloaded through a follower is relayed whole (streamed
	// from the leader), and a restore uploaded through one reaches the
	// leader whole: here, with 200 imported keys, each about 20 KB.
	importKeys(t, c, c.leader().node, 200)
	code, relayed := call(c.followers()[0].node, "GET", "/v1/cluster/snapshot", c.root, "")
	if code != 200 || len(relayed) < 20_000 {
		t.Fatalf("snapshot through a follower: %d, %d bytes", code, len(relayed))
	}
	if code, b := call(c.followers()[1].node, "POST", "/v1/cluster/restore", c.root, string(relayed)); code != 200 {
		t.Fatalf("restoring the relayed backup through a follower: %d %s", code, b)
	}
	code, b := call(c.leader().node, "POST", "/v1/cluster/restore", c.root, string(backup))
	var restored struct {
		Meta struct {
			Index uint64 `json:"index"`
		} `json:"meta"`
	}
	if code != 200 || json.Unmarshal(b, &restored) != nil || restored.Meta.Index <= mine.Index {
		t.Fatalf("restore: %d %s (the replaced key was written at %d)", code, b, mine.Index)
	}
	c.root = srcRoot // the backup's root key came back with it
	for _, m := range c.alive() {
		c.waitUntil(10*time.Second, "the restored key on "+m.id(), func() bool {
			code, _ := verifyOn(m.node, old.Key, restored.Meta.Index)
			return code == 200
		})
		if code, what := verifyOn(m.node, mine.Key, restored.Meta.Index); what != "KEY_NOT_FOUND" {
			t.Fatalf("%s: a key the restore replaced: %d %s", m.id(), code, what)
		}
	}
	c.converged()
}

func TestClusterLostQuorumRecovery(t *testing.T) {
	c := startCluster(t, 3, nil, 0)
	k := c.write(c.members[0].node, "POST", "/v1/keys", `{"name":"precious","workspace_id":"w"}`, 201)
	c.converged()
	// Two of three nodes are gone for good; the survivor cannot elect a leader.
	survivor := c.members[2]
	c.members[0].kill()
	c.members[1].kill()
	survivor.stop()

	peers := filepath.Join(t.TempDir(), "peers.json")
	os.WriteFile(peers, []byte(fmt.Sprintf(`[{"id":%q,"address":%q}]`, survivor.id(), survivor.raftAddr)), 0o600)
	out, err := exec.Command(binary, "recover", "--peers", peers, "--data-dir", survivor.dir).CombinedOutput()
	if err != nil {
		t.Fatalf("keyraft recover: %v\n%s", err, out)
	}
	survivor.flags = []string{"--gossip-addr", survivor.gossipAddr, "--http-addr", survivor.httpAddr}
	c.start(2)
	survivor.waitReady()
	if code, what := verifyOn(survivor.node, k.Key, 0); code != 200 {
		t.Fatalf("after recovery: %d %s", code, what)
	}
	c.members = []*member{survivor}
	c.write(survivor.node, "POST", "/v1/keys", `{"name":"after recovery","workspace_id":"w"}`, 201)
}

// importKeys loads n real tokens by hash in batches of 10,000; it returns
// the plaintexts and the Raft index of the last batch.
func importKeys(t *testing.T, c *testCluster, n *node, count int) ([]string, uint64) {
	t.Helper()
	var tokens []string
	var last uint64
	for len(tokens) < count {
		var batch bytes.Buffer
		batch.WriteString(`{"keys":[`)
		for i := 0; i < 10_000 && len(tokens) < count; i++ {
			tok, err := keyindex.GenerateToken(rand.Reader, "", keyindex.TypeSecret, keyindex.EnvLive)
			if err != nil {
				t.Fatal(err)
			}
			if i > 0 {
				batch.WriteByte(',')
			}
			fmt.Fprintf(&batch, `{"sha256":%q,"name":"bulk","workspace_id":"bulk"}`, hex.EncodeToString(tok.Hash[:]))
			tokens = append(tokens, tok.Plaintext)
		}
		batch.WriteString(`]}`)
		last = c.write(n, "POST", "/v1/keys/import", batch.String(), 201).Index
	}
	return tokens, last
}

var compacted = regexp.MustCompile(`compacting logs: from=\d+ to=(\d+)`)

// compactedTo is the highest log index a node's log says it compacted away.
func compactedTo(logs string) uint64 {
	var top uint64
	for _, m := range compacted.FindAllStringSubmatch(logs, -1) {
		var i uint64
		fmt.Sscan(m[1], &i)
		top = max(top, i)
	}
	return top
}

// verifyAll checks every token on n with a few concurrent clients.
func verifyAll(t *testing.T, n *node, tokens []string) {
	t.Helper()
	var wg sync.WaitGroup
	bad := make(chan string, 1)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < len(tokens); i += 8 {
				if code, what := verifyOn(n, tokens[i], 0); code != 200 {
					select {
					case bad <- fmt.Sprintf("token %d: %d %s", i, code, what):
					default:
					}
					return
				}
			}
		}(w)
	}
	wg.Wait()
	select {
	case b := <-bad:
		t.Fatal(b)
	default:
	}
}

func TestClusterCatchUpThroughSnapshot(t *testing.T) {
	count := 100_000
	if testing.Short() {
		count = 10_000
	}
	// Aggressive compaction on every node, so a newcomer and a returning
	// node can only catch up through a snapshot install.
	compact := []string{"--snapshot-interval", "500ms", "--snapshot-threshold", "16", "--trailing-logs", "4", "--usage-flush-interval", "1h"}
	c := startCluster(t, 1, nil, 0, compact...)
	first := c.members[0]
	tokens, importIdx := importKeys(t, c, first.node, count)
	// More writes until the leader has compacted the import out of its log:
	// the newcomer cannot get those entries any other way.
	var last written
	c.waitUntil(60*time.Second, "the leader to compact the import out of its log", func() bool {
		last = c.write(first.node, "POST", "/v1/keys", `{"name":"filler","workspace_id":"w"}`, 201)
		return compactedTo(first.stderr.String()) >= importIdx
	})

	// The newcomer is a read replica, so stopping it later leaves the
	// one-voter cluster its quorum.
	newcomer := c.add(append([]string{"--nonvoter"}, compact...)...)
	c.waitUntil(60*time.Second, "the newcomer to install the snapshot", func() bool {
		return strings.Contains(newcomer.stderr.String(), "Installed remote snapshot")
	})
	c.converged()
	verifyAll(t, newcomer.node, tokens)

	// A node that was away while the log was compacted catches up the same way.
	newcomer.stop()
	var more []written
	c.waitUntil(60*time.Second, "the leader to compact past what the node had", func() bool {
		more = append(more, c.write(first.node, "POST", "/v1/keys", `{"name":"while away","workspace_id":"w"}`, 201))
		return compactedTo(first.stderr.String()) > last.Index
	})
	c.restart(1) // a new process: its log starts empty
	c.waitUntil(60*time.Second, "the returning node to install a snapshot", func() bool {
		return strings.Contains(newcomer.stderr.String(), "Installed remote snapshot")
	})
	c.converged()
	for _, k := range more {
		if code, what := verifyOn(newcomer.node, k.Key, k.Index); code != 200 {
			t.Fatalf("returning node: %d %s", code, what)
		}
	}
}

// TestClusterRemoveKeepsQuorum: with one of three voters dead, removing
// a live one would leave the dead one's vote needed for every commit (Raft
// uses the new configuration at once): refused with 409, and the cluster
// keeps its leader. Removing the dead one is fine.
func TestClusterRemoveKeepsQuorum(t *testing.T) {
	c := startCluster(t, 3, nil, 0)
	followers := c.followers()
	dead, live := followers[0], followers[1]
	deadID := dead.id()
	dead.kill()
	c.waitGossipDead(deadID)
	if code, b := call(c.leader().node, "DELETE", "/v1/cluster/nodes/"+live.id(), c.root, ""); code != 409 {
		t.Fatalf("removing a live voter with another dead: %d %s, want 409", code, b)
	}
	c.write(c.leader().node, "POST", "/v1/keys", `{"name":"after","workspace_id":"w"}`, 201)
	if code, b := call(c.leader().node, "DELETE", "/v1/cluster/nodes/"+deadID, c.root, ""); code != 204 {
		t.Fatalf("removing the dead voter: %d %s", code, b)
	}
}

// TestClusterRemovedWhileDownStaysOutOfElections: a voter removed while
// it was down never receives its removal, so once restarted its raft
// campaigns; after gossip tells it that it was removed it asks for no
// vote, and the members stop logging refusals of it.
func TestClusterRemovedWhileDownStaysOutOfElections(t *testing.T) {
	c := startCluster(t, 3, nil, 0)
	victim := c.followers()[0]
	victimID := victim.id()
	victim.kill()
	c.waitGossipDead(victimID)
	if code, b := call(c.leader().node, "DELETE", "/v1/cluster/nodes/"+victimID, c.root, ""); code != 204 {
		t.Fatalf("removing the dead voter: %d %s", code, b)
	}
	c.relaunch(slices.Index(c.members, victim))
	c.waitUntil(20*time.Second, "the restarted node to learn it was removed", func() bool {
		return strings.Contains(victim.stderr.String(), "this node was removed from the cluster")
	})
	refusals := regexp.MustCompile(`rejecting (pre-)?vote request`)
	var healthy []*member
	for _, m := range c.alive() {
		if m != victim {
			healthy = append(healthy, m)
		}
	}
	time.Sleep(time.Second) // a campaign already under way when it learned
	before := make([]int, len(healthy))
	for i, m := range healthy {
		before[i] = len(refusals.FindAllString(m.stderr.String(), -1))
	}
	time.Sleep(3 * time.Second) // ten election timeouts of the victim's
	for i, m := range healthy {
		if n := len(refusals.FindAllString(m.stderr.String(), -1)); n > before[i] {
			t.Fatalf("%s refused %d vote requests after the removed node knew it was removed", m.id(), n-before[i])
		}
	}
}

// TestClusterWriteOutcomeUnknown: a write whose leader loses its quorum
// while the write waits to commit is answered 503 OUTCOME_UNKNOWN without
// Retry-After (a later leader may still commit it), not NO_LEADER "retry".
func TestClusterWriteOutcomeUnknown(t *testing.T) {
	c := startCluster(t, 3, nil, 0)
	c.write(c.leader().node, "POST", "/v1/keys?wait=all", `{"name":"first","workspace_id":"w"}`, 201)
	leader, followers := c.leader(), c.followers()
	for _, f := range followers {
		f.cmd.Process.Signal(syscall.SIGSTOP)
	}
	defer func() {
		for _, f := range followers {
			f.cmd.Process.Signal(syscall.SIGCONT)
		}
	}()
	req, _ := http.NewRequest("POST", leader.node.url("/v1/keys"), strings.NewReader(`{"name":"in flight","workspace_id":"w"}`))
	req.Header.Set("Authorization", "Bearer "+c.root)
	resp, err := testHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != 503 || body.Error.Code != "OUTCOME_UNKNOWN" || resp.Header.Get("Retry-After") != "" {
		t.Fatalf("a write cut off from its quorum: %d %s (Retry-After %q), want 503 OUTCOME_UNKNOWN without Retry-After",
			resp.StatusCode, body.Error.Code, resp.Header.Get("Retry-After"))
	}
}

// TestMaxStaleAfterRestart: a restarted single node with --max-stale
// becomes fresh on its own. Its last log entry is the no-op it appends on
// winning the election, which the FSM never applies: a read index naming
// it kept the node STALE until some write came along.
func TestMaxStaleAfterRestart(t *testing.T) {
	dir, raftAddr := t.TempDir(), freePort(t)
	n := startNode(t, dir, raftAddr, nil, "--max-stale", "500ms")
	c := &testCluster{t: t, root: n.rootKey()}
	k := c.write(n, "POST", "/v1/keys", `{"name":"svc","workspace_id":"acme"}`, 201)
	n.stop()
	n = startNode(t, dir, raftAddr, nil, "--max-stale", "500ms")
	defer n.stop()
	c.waitUntil(10*time.Second, "the restarted node to verify", func() bool {
		code, _ := verifyOn(n, k.Key, 0)
		return code == 200
	})
}

// TestClusterMaxStale: with --max-stale, a node answers a verify from its
// own state only while it is known to hold every acknowledged write. A
// leader cut off from its quorum turns STALE and comes back once healed;
// a stopped leader that wakes up after its successor acknowledged a revoke
// never answers VALID for the revoked key.
func TestClusterMaxStale(t *testing.T) {
	c := startCluster(t, 3, nil, 0, "--max-stale", "500ms")
	k := c.write(c.leader().node, "POST", "/v1/keys?wait=all", `{"name":"svc","workspace_id":"acme"}`, 201)
	everyNode := func(what string, want int) {
		c.t.Helper()
		for _, m := range c.alive() {
			c.waitUntil(10*time.Second, what+" on "+m.id(), func() bool {
				code, _ := verifyOn(m.node, k.Key, 0)
				return code == want
			})
		}
	}
	everyNode("the key to verify", 200)

	// The leader alone, its followers stopped: STALE once max-stale has
	// passed without a quorum confirming it, fresh again when they resume.
	old, followers := c.leader(), c.followers()
	for _, f := range followers {
		f.cmd.Process.Signal(syscall.SIGSTOP)
	}
	c.waitUntil(10*time.Second, "the isolated leader to answer STALE", func() bool {
		code, what := verifyOn(old.node, k.Key, 0)
		return code == 503 && what == "STALE"
	})
	for _, f := range followers {
		f.cmd.Process.Signal(syscall.SIGCONT)
	}
	everyNode("the healed cluster to verify again", 200)

	// The leader stopped: the others elect a successor, which revokes the key.
	old = c.leader()
	old.cmd.Process.Signal(syscall.SIGSTOP)
	var successor *member
	c.waitUntil(10*time.Second, "a new leader among the others", func() bool {
		for _, m := range c.alive() {
			if m == old {
				continue
			}
			if st, err := c.status(m); err == nil && st.LeaderID != "" && st.LeaderID != old.id() {
				for _, o := range c.alive() {
					if o.id() == st.LeaderID {
						successor = o
						return true
					}
				}
			}
		}
		return false
	})
	c.write(successor.node, "POST", "/v1/keys/"+k.ID+"/revoke", "", 200)
	old.cmd.Process.Signal(syscall.SIGCONT)
	// Every verify on the old leader from now on was invoked after the
	// revoke's acknowledgement: STALE while it catches up, then revoked.
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, what := verifyOn(old.node, k.Key, 0)
		if code == 200 {
			t.Fatalf("the woken old leader verified a key revoked while it slept: %d %s", code, what)
		}
		if code == 401 && what == "KEY_REVOKED" {
			break
		}
		if code != 503 || what != "STALE" {
			t.Fatalf("the woken old leader answered %d %s", code, what)
		}
		if time.Now().After(deadline) {
			t.Fatal("the woken old leader never caught up with the revoke")
		}
	}
	everyNode("the revoke to be seen", 401)
}

// TestClusterWipedVoterWaitsToVote: a voter that lost its data dir must not
// help elect a leader that lacks a write it acknowledged. Here the leader
// and one follower acknowledge a key while the other follower is stopped;
// then the first follower loses its data dir and the leader dies. The
// wiped node comes back empty at its old address (under a new id, the one
// a new data dir gets), the stopped one resumes: with the wiped node's
// vote it would lead without the key. It must not, and once the old
// leader is back, the key is on every node and the wiped node is a voter
// again under its new id, in place of its old one.
func TestClusterWipedVoterWaitsToVote(t *testing.T) {
	c := startCluster(t, 3, nil, 0)
	leader := c.leader()
	followers := c.followers()
	lagging, wiped := followers[0], followers[1]
	lagging.cmd.Process.Signal(syscall.SIGSTOP)
	k := c.write(leader.node, "POST", "/v1/keys", `{"name":"acknowledged by two","workspace_id":"w"}`, 201)
	oldID, leaderID := wiped.id(), leader.id()
	wiped.kill()
	leader.kill()
	if err := os.RemoveAll(wiped.dir); err != nil {
		t.Fatal(err)
	}
	c.relaunch(slices.Index(c.members, wiped))
	lagging.cmd.Process.Signal(syscall.SIGCONT)

	// (The resumed node names the dead leader until its heartbeat timeout.)
	for end := time.Now().Add(8 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if st, err := c.status(lagging); err == nil && st.LeaderID != "" && st.LeaderID != leaderID {
			t.Fatalf("%s was elected leader without the acknowledged key, with the wiped node's vote", st.LeaderID)
		}
	}
	if !strings.Contains(wiped.stderr.String(), "takes no part in elections") {
		t.Fatalf("the wiped node did not say it withholds its vote\nstderr:\n%s", wiped.stderr.String())
	}

	c.restart(slices.Index(c.members, leader))
	for _, m := range c.alive() {
		c.waitUntil(20*time.Second, "the acknowledged key on "+m.id(), func() bool {
			code, _ := verifyOn(m.node, k.Key, k.Index)
			return code == 200
		})
	}
	c.waitUntil(30*time.Second, "the wiped node a voter under its new id, in place of "+oldID, func() bool {
		st, err := c.status(c.leader())
		return err == nil && st.node(wiped.id()).Suffrage == "voter" && !st.inConfig(oldID) && countSuffrage(st, "voter") == 3
	})
	// (Before, with no state, it could not authenticate the request.)
	code, b := call(wiped.node, "GET", "/v1/cluster", c.root, "")
	var answer struct {
		Data map[string]any `json:"data"`
	}
	if json.Unmarshal(b, &answer); code != 200 || answer.Data["votes_withheld"] != false {
		t.Fatalf("the caught-up node's GET /v1/cluster: %d %s; want votes_withheld false", code, b)
	}
}

// TestClusterRemovalSticks: an operator's removal is part of the cluster's
// state. The removed node answers verify STALE (it no longer hears of
// revocations) and is not ready, stays removed when it restarts on its data dir, and no
// leader adds it back, also after the leader that removed it is gone. The
// removal is in the audit log.
func TestClusterRemovalSticks(t *testing.T) {
	c := startCluster(t, 4, nil, 0)
	k := c.write(c.leader().node, "POST", "/v1/keys?wait=all", `{"name":"svc","workspace_id":"w"}`, 201)
	victim := c.followers()[0]
	victimID := victim.id()
	if code, b := call(c.leader().node, "DELETE", "/v1/cluster/nodes/"+victimID, c.root, ""); code != 204 {
		t.Fatalf("remove node: %d %s", code, b)
	}
	answersStale := func(what string) {
		t.Helper()
		c.waitUntil(10*time.Second, what, func() bool {
			code, body := verifyOn(victim.node, k.Key, 0)
			ready, _ := call(victim.node, "GET", "/readyz", "", "")
			return code == 503 && body == "STALE" && ready == 503
		})
	}
	answersStale("the removed node answering STALE")

	victim.stop()
	c.relaunch(slices.Index(c.members, victim))
	answersStale("the restarted removed node answering STALE")

	leader := c.leader()
	leader.kill()
	var survivor *member
	for _, m := range c.alive() {
		if m != victim {
			survivor = m
		}
	}
	c.waitUntil(15*time.Second, "a new leader", func() bool {
		st, err := c.status(survivor)
		return err == nil && st.LeaderID != "" && st.LeaderID != leader.id()
	})
	// Reconciliation runs on the new leader at once and on every event;
	// give it a few passes' worth of gossip about the restarted node.
	time.Sleep(3 * time.Second)
	st, err := c.status(survivor)
	if err != nil {
		t.Fatal(err)
	}
	if st.inConfig(victimID) {
		t.Fatalf("the new leader added the removed node %s back: %+v", victimID, st.Nodes)
	}
	answersStale("the removed node still answering STALE")

	code, b := call(survivor.node, "GET", "/v1/audit", c.root, "")
	var audit struct {
		Data []struct{ Action, Target string } `json:"data"`
	}
	if err := json.Unmarshal(b, &audit); code != 200 || err != nil ||
		!slices.Contains(audit.Data, struct{ Action, Target string }{"cluster.remove_node", victimID}) {
		t.Fatalf("no audit entry of the removal: %d %s", code, b)
	}
}

// TestClusterFailedLeaveKeepsTheNode: a leave the leader cannot grant (the
// third voter is dead, so removing this one would leave the live voters
// short of a majority) fails, and the node stays a whole member: in the
// configuration, alive in gossip, taking writes.
func TestClusterFailedLeaveKeepsTheNode(t *testing.T) {
	c := startCluster(t, 3, nil, 0)
	followers := c.followers()
	deadID := followers[0].id()
	followers[0].kill()
	c.waitGossipDead(deadID)
	stayer := followers[1]
	if out, errOut, code := stayer.cli(c.root, "cluster", "leave"); code == 0 {
		t.Fatalf("a leave that would cost the quorum succeeded:\n%s%s", out, errOut)
	}
	st, err := c.status(c.leader())
	if err != nil {
		t.Fatal(err)
	}
	if n := st.node(stayer.id()); n.Suffrage != "voter" || n.Gossip != "alive" {
		t.Fatalf("after a failed leave the node is %+v, want an alive voter", n)
	}
	c.write(stayer.node, "POST", "/v1/keys", `{"name":"after a failed leave","workspace_id":"w"}`, 201)
}
