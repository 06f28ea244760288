package cluster

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyraft/keyraft/fsm"
)

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// singleNodeConfig is a one-node cluster on a fresh data dir, with short
// timeouts.
func singleNodeConfig(t *testing.T) Config {
	return Config{DataDir: t.TempDir(), RaftAddr: freeAddr(t), Bootstrap: true, HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond}
}

// openLeader opens a one-node cluster's node and waits until it leads.
func openLeader(t *testing.T, cfg Config) *Node {
	t.Helper()
	n, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !n.IsLeader() {
		if time.Now().After(deadline) {
			n.Shutdown()
			t.Fatal("the node did not become leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return n
}

// A one-node cluster on a real data dir: Apply returns the index, the node
// id sticks to the data dir, and a restart recovers every command.
func TestSingleNodeApplyAndRestart(t *testing.T) {
	cfg := singleNodeConfig(t)
	dir, addr := cfg.DataDir, cfg.RaftAddr
	n := openLeader(t, cfg)
	id := n.ID()
	var last uint64
	for i := 0; i < 5; i++ {
		_, idx, err := n.Apply(&fsm.Command{Op: fsm.OpPurgeRotations})
		if err != nil || idx <= last {
			t.Fatalf("apply %d: index %d after %d, err %v", i, idx, last, err)
		}
		last = idx
	}
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Config{DataDir: dir, RaftAddr: addr, NodeID: "someone-else"}); err == nil {
		t.Fatal("a data dir accepted another node id")
	}
	n2, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Shutdown()
	if n2.ID() != id {
		t.Fatalf("node id %q after restart, was %q", n2.ID(), id)
	}
	if !n2.WaitApplied(last, 5*time.Second) {
		t.Fatalf("restart did not replay the log up to %d (applied %d)", last, n2.FSM().AppliedIndex())
	}
}

func TestRecoverRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	peers := filepath.Join(dir, "peers.json")
	for name, body := range map[string]string{
		"not json":  "{",
		"no id":     `[{"address":"127.0.0.1:1"}]`,
		"no voters": `[{"id":"a","address":"127.0.0.1:1","non_voter":true}]`,
	} {
		os.WriteFile(peers, []byte(body), 0o600)
		if err := Recover(dir, peers, nil); err == nil {
			t.Errorf("%s: recovered", name)
		}
	}
	// A peers file without this node (a mistyped id) is refused before
	// the log is touched: the node would never campaign.
	os.WriteFile(filepath.Join(dir, "node-id"), []byte("node-me\n"), 0o600)
	os.WriteFile(peers, []byte(`[{"id":"node-typo","address":"127.0.0.1:1"}]`), 0o600)
	if err := Recover(dir, peers, nil); err == nil || !strings.Contains(err.Error(), "node-me") {
		t.Errorf("a peers file without this node: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "raft.db")); !os.IsNotExist(err) {
		t.Errorf("the raft log was opened: %v", err)
	}
}

// largeEntryNode opens a one-node cluster with the given log-size settings
// and returns it with a function that applies count commands of about
// 8 KB each (a purge naming 250 ids) and returns the last one's index.
func largeEntryNode(t *testing.T, snapshotLogBytes, trailingLogBytes uint64) (*Node, func(count int) uint64) {
	t.Helper()
	n, err := Open(Config{DataDir: t.TempDir(), RaftAddr: freeAddr(t), Bootstrap: true,
		HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
		SnapshotLogBytes: snapshotLogBytes, TrailingLogBytes: trailingLogBytes})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Shutdown() })
	if !n.WaitLeader(5 * time.Second) {
		t.Fatal("no leader")
	}
	ids := make([]string, 250)
	for i := range ids {
		ids[i] = fmt.Sprintf("key_%026d", i)
	}
	return n, func(count int) (last uint64) {
		t.Helper()
		for range count {
			var err error
			if _, last, err = n.Apply(&fsm.Command{Op: fsm.OpPurgeRotations, IDs: ids}); err != nil {
				t.Fatal(err)
			}
		}
		return last
	}
}

// Large entries trigger snapshots by their bytes long before raft's count
// threshold (8192 entries), and the log is truncated to about
// TrailingLogBytes (here the floor of minTrailingLogs entries) while the
// configured TrailingLogs comes back for raft's own snapshots.
func TestSnapshotByLogSize(t *testing.T) {
	n, applyLarge := largeEntryNode(t, 256<<10, 64<<10)
	cfg := n.cfg
	const entries = 200
	last := applyLarge(entries)
	deadline := time.Now().Add(10 * time.Second)
	for {
		first, err := n.store.FirstIndex()
		if err != nil {
			t.Fatal(err)
		}
		bytes, _ := n.fsm.Unsnapshotted()
		if kept := last - first + 1; first > 1 && bytes < cfg.SnapshotLogBytes {
			if kept < minTrailingLogs || kept > minTrailingLogs+entries/2 {
				t.Fatalf("log keeps %d entries (%d..%d), want about %d", kept, first, last, minTrailingLogs)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no snapshot by size: log %d..%d, %d bytes unsnapshotted", first, last, bytes)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The truncation above can be seen while a snapshot is still running
	// with its lowered count; once none runs, the configured one is back.
	n.snapshotMu.Lock()
	got := n.raft.ReloadableConfig().TrailingLogs
	n.snapshotMu.Unlock()
	if got != 10240 {
		t.Fatalf("TrailingLogs left at %d, want the configured 10240", got)
	}
}

func TestSnapshotTriggerGrowsWithState(t *testing.T) {
	cfg := Config{SnapshotLogBytes: 64 << 20, TrailingLogBytes: 16 << 20, TrailingLogs: 10240}
	for _, tc := range []struct {
		logBytes, lastSnapshot uint64
		due                    bool
	}{
		{63 << 20, 0, false},
		{64 << 20, 0, true},
		{64 << 20, 10 << 20, true},
		{64 << 20, 200 << 20, false}, // a large state is not rewritten for every 64 MiB
		{200 << 20, 200 << 20, true},
	} {
		if got := tc.logBytes >= snapshotTrigger(cfg, tc.lastSnapshot); got != tc.due {
			t.Errorf("snapshot due at log %d MiB, last snapshot %d MiB) = %v", tc.logBytes>>20, tc.lastSnapshot>>20, got)
		}
	}
	for _, tc := range []struct{ avg, want uint64 }{
		{2 << 20, minTrailingLogs}, // imports of 2 MB: the floor
		{1 << 20, 16},
		{500, 10240}, // single-key writes: the configured count
	} {
		if got := trailingFor(cfg, tc.avg); got != tc.want {
			t.Errorf("trailingFor(avg %d B) = %d, want %d", tc.avg, got, tc.want)
		}
	}
}

// Before a member is added, a leader with more than TrailingLogBytes of
// log since its last snapshot takes one, so the new node installs current
// state; with less it leaves the log alone.
func TestSnapshotForNewMember(t *testing.T) {
	n, apply := largeEntryNode(t, 1<<30, 64<<10)
	apply(4) // 32 KB: under TrailingLogBytes
	n.snapshotForNewMember()
	if first, _ := n.store.FirstIndex(); first != 1 {
		t.Fatalf("a small log was compacted (first index %d)", first)
	}
	last := apply(40) // 320 KB
	n.snapshotForNewMember()
	first, err := n.store.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	if kept := last - first + 1; kept != minTrailingLogs {
		t.Fatalf("log keeps %d entries (%d..%d) after the snapshot, want %d", kept, first, last, minTrailingLogs)
	}
	if bytes, _ := n.fsm.Unsnapshotted(); bytes != 0 {
		t.Fatalf("%d bytes still unsnapshotted", bytes)
	}
}
