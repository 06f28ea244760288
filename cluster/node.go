// Package cluster runs keyraft's Raft node: the raft-boltdb log and stable
// store in the data dir, file snapshots, the TCP transport, the Apply helper
// and the leader's housekeeping (root key, usage flush, rotation purge).
package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/keyraft/keyraft/fsm"
)

// Config is what a node needs to run. Zero durations take the defaults below.
type Config struct {
	NodeID   string // "" = the id stored in the data dir, or a new random one
	DataDir  string
	RaftAddr string // host:port to bind and advertise for Raft
	// Bootstrap makes a node with an empty data dir form a one-node cluster.
	Bootstrap bool

	HeartbeatTimeout  time.Duration
	ElectionTimeout   time.Duration
	CommitTimeout     time.Duration
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	TrailingLogs      uint64
	// SnapshotLogBytes of applied commands also trigger a snapshot, which
	// keeps about TrailingLogBytes of log (see logsize.go).
	SnapshotLogBytes uint64
	TrailingLogBytes uint64
	ApplyTimeout     time.Duration
	// NoSync turns off fsync of the Raft log: only for throwaway benchmarks.
	NoSync bool

	// HTTPAddr is this node's API address, announced so followers can
	// forward writes to the leader.
	HTTPAddr string
	// GossipAddr is the memberlist address (host:port); "" runs without gossip.
	GossipAddr    string
	GossipKey     []byte // 16, 24 or 32 bytes: encrypts and authenticates gossip
	GossipProfile string // lan (default), local or wan: memberlist timing
	// Join lists gossip addresses of running nodes; joining is retried until it works.
	Join []string
	// BootstrapExpect > 1 forms a new cluster once that many voters see each other.
	BootstrapExpect int
	// Nonvoter makes the node a read replica: it replicates and verifies, never votes.
	Nonvoter bool
	// ReapAfter is how long a dead member stays in the Raft configuration.
	ReapAfter time.Duration
	Version   string

	Logger hclog.Logger
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.HeartbeatTimeout, time.Second)
	def(&c.ElectionTimeout, time.Second)
	// Followers learn a commit on the next AppendEntries; raft sends one at
	// least every CommitTimeout, so this bounds how late a follower sees a
	// revocation on an idle cluster.
	def(&c.CommitTimeout, 10*time.Millisecond)
	def(&c.SnapshotInterval, 2*time.Minute)
	def(&c.ApplyTimeout, 5*time.Second)
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = 8192
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = 10240
	}
	if c.SnapshotLogBytes == 0 {
		c.SnapshotLogBytes = 64 << 20
	}
	if c.TrailingLogBytes == 0 {
		c.TrailingLogBytes = 16 << 20
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	def(&c.ReapAfter, 72*time.Hour)
}

// Node is one keyraft Raft node.
type Node struct {
	cfg     Config
	id      string
	fsm     *fsm.FSM
	raft    *raft.Raft
	store   *logStore
	logs    *logCache // what raft reads and writes the log through
	fsmTail fsmTail   // for ReadIndex
	// caughtUpTerm is the last term in which this node, leading, had
	// applied everything committed before it (CaughtUpAsLeader).
	caughtUpTerm atomic.Uint64
	catchUpMu    sync.Mutex
	// restoring counts the RestoreBackup calls running (ReadIndex gives
	// no index meanwhile).
	restoring atomic.Int32
	transport *voteGuard
	log       hclog.Logger

	gossip *gossip // nil without GossipAddr
	// membershipMu serialises changes of the Raft configuration: a
	// reconciliation pass and an operator's RemoveNode each check the
	// configuration and then change it, and raft applies a change without
	// comparing it with the configuration it was planned against (raft
	// reports index 0 for it). Interleaved, a pass could add back a node
	// just removed, or two removals each leave the quorum short.
	membershipMu sync.Mutex
	// removed is set when the leader tells this node it was removed, or it
	// applies its removal; retireOnce runs its exit from elections and
	// gossip once it is out of the configuration too (stopAsRemoved).
	removed    atomic.Bool
	retireOnce sync.Once
	// leaving is set while Leave waits for this node's removal, leaveDone
	// once the leader said it is out (msgLeaveDone).
	leaving, leaveDone atomic.Bool

	snapshotMu sync.Mutex // serialises snapshotKeeping

	shutdownOnce sync.Once
	stop         chan struct{}
	wg           sync.WaitGroup
}

// Errors of Apply. ErrNotLeader: the command was not proposed, and may be
// sent again. ErrOutcomeUnknown: it was proposed but leadership was lost
// (or the node shut down) before it committed; a later leader may still
// commit it, so sending it again may apply it twice.
var (
	ErrNotLeader      = errors.New("this node is not the leader")
	ErrOutcomeUnknown = errors.New("leadership was lost before the command committed")
)

// Open starts a node on cfg.DataDir, recovering whatever state is there.
func Open(cfg Config) (*Node, error) {
	cfg.setDefaults()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data dir: %w", err)
	}
	id, err := nodeID(cfg.DataDir, cfg.NodeID)
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, id: id, fsm: fsm.New(), log: cfg.Logger, stop: make(chan struct{})}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(id)
	rc.Logger = cfg.Logger.Named("raft")
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.HeartbeatTimeout / 2
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.TrailingLogs
	// Group commits: many concurrent admin writes reach the FSM in one batch.
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = 256

	n.store, err = openLogStore(filepath.Join(cfg.DataDir, "raft.db"), cfg.NoSync)
	if err != nil {
		return nil, fmt.Errorf("opening raft log: %w", err)
	}
	fail := func(err error) (*Node, error) {
		if n.transport != nil {
			n.transport.Close()
		}
		n.store.Close()
		return nil, err
	}
	n.logs = newLogCache(n.store)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(cfg.DataDir, "snapshots"), 2, cfg.Logger.Named("snapshot"))
	if err != nil {
		return fail(fmt.Errorf("opening snapshot store: %w", err))
	}
	advertise, err := net.ResolveTCPAddr("tcp", cfg.RaftAddr)
	if err != nil {
		return fail(fmt.Errorf("raft address %q: %w", cfg.RaftAddr, err))
	}
	if advertise.IP == nil || advertise.IP.IsUnspecified() {
		return fail(fmt.Errorf("raft address %q must name a reachable IP, not 0.0.0.0", cfg.RaftAddr))
	}
	existing, err := raft.HasExistingState(n.logs, n.store, snaps)
	if err != nil {
		return fail(err)
	}
	withhold, err := withholdsVotes(cfg.DataDir, !existing && !cfg.Bootstrap)
	if err != nil {
		return fail(err)
	}
	tcp, err := raft.NewTCPTransportWithLogger(cfg.RaftAddr, advertise, 3, 10*time.Second, cfg.Logger.Named("transport"))
	if err != nil {
		return fail(fmt.Errorf("raft transport: %w", err))
	}
	n.transport = newVoteGuard(tcp, rc.LocalID, withhold)
	if withhold {
		n.log.Info("this node started without raft state and takes no part in elections until it has caught up with a leader (it may be a voter that lost its data)")
	}
	if !existing && cfg.Bootstrap {
		boot := raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: n.transport.LocalAddr()}}}
		if err := raft.BootstrapCluster(rc, n.logs, n.store, snaps, n.transport, boot); err != nil {
			return fail(fmt.Errorf("bootstrapping: %w", err))
		}
	}
	n.raft, err = raft.NewRaft(rc, n.fsm, n.logs, n.store, snaps, n.transport)
	if err != nil {
		return fail(fmt.Errorf("starting raft: %w", err))
	}
	n.wg.Add(2)
	go n.snapshotBySize(snaps, time.Second)
	go n.every(dropMappedEvery, func() bool {
		n.store.dropMapped()
		return true
	})
	if cfg.GossipAddr != "" {
		if err := n.startGossip(); err != nil {
			n.Shutdown()
			return nil, err
		}
		n.wg.Add(2)
		go n.handleInbox()
		go n.gossip.reconnectLoop(n.gossip.reconnectEvery)
		if len(cfg.Join) > 0 {
			n.wg.Add(1)
			go n.gossip.joinLoop(cfg.Join)
		}
		if cfg.BootstrapExpect > 1 && !existing {
			n.wg.Add(1)
			go n.bootstrapLoop()
		}
	}
	n.wg.Add(1)
	go n.watchOwnRemoval() // after n.gossip is set: it announces the removal
	return n, nil
}

// every calls f every d until the node stops or f returns false. The
// caller has added the goroutine to n.wg.
func (n *Node) every(d time.Duration, f func() (again bool)) {
	defer n.wg.Done()
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		if !f() {
			return
		}
	}
}

// hasState reports whether this node belongs to a Raft cluster yet.
func (n *Node) hasState() bool { return n.raft.LastIndex() > 0 }

// Removed reports whether the leader removed this node from the cluster.
func (n *Node) Removed() bool { return n.removed.Load() }

// LeaderHTTPAddr returns the leader's API address, from its gossip metadata.
func (n *Node) LeaderHTTPAddr() (string, bool) {
	_, id := n.Leader()
	if id == "" {
		return "", false
	}
	if id == n.id {
		return n.cfg.HTTPAddr, true
	}
	if n.gossip == nil {
		return "", false
	}
	m, ok := n.gossip.member(id)
	if !ok || m.HTTPAddr == "" {
		return "", false
	}
	return m.HTTPAddr, true
}

// nodeID returns the configured id, or the one stored in the data dir, or a
// new random one that is stored for the next start. A node keeps its id for
// life, so the Raft configuration recognises it after a restart.
func nodeID(dir, configured string) (string, error) {
	path := filepath.Join(dir, "node-id")
	stored, err := os.ReadFile(path)
	switch {
	case err == nil:
		s := strings.TrimSpace(string(stored))
		if configured != "" && configured != s {
			return "", fmt.Errorf("data dir %s belongs to node %q, not %q", dir, s, configured)
		}
		return s, nil
	case !errors.Is(err, os.ErrNotExist):
		return "", err
	}
	id := configured
	if id == "" {
		var b [6]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", err
		}
		id = "node-" + hex.EncodeToString(b[:])
	}
	if err := os.WriteFile(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("storing node id: %w", err)
	}
	return id, nil
}

// ID is this node's Raft server id.
func (n *Node) ID() string { return n.id }

// FSM is the node's state machine; its index serves verify and admin reads.
func (n *Node) FSM() *fsm.FSM { return n.fsm }

// Raft exposes the raft instance for status pages and cluster operations.
func (n *Node) Raft() *raft.Raft { return n.raft }

// RaftAddr is the address other nodes reach this node's Raft transport at.
func (n *Node) RaftAddr() string { return string(n.transport.LocalAddr()) }

// IsLeader reports whether this node is the leader now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the current leader's Raft address and id ("" when unknown).
func (n *Node) Leader() (addr, id string) {
	a, i := n.raft.LeaderWithID()
	return string(a), string(i)
}

// Apply proposes c and waits until this node has applied it. It returns the
// FSM's result and the Raft index of the command.
func (n *Node) Apply(c *fsm.Command) (*fsm.Result, uint64, error) {
	b, err := fsm.Encode(c)
	if err != nil {
		return nil, 0, err
	}
	f := n.raft.Apply(b, n.cfg.ApplyTimeout)
	if err := f.Error(); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
			return nil, 0, fmt.Errorf("%w: %v", ErrNotLeader, err)
		case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrRaftShutdown):
			// The entry may be in the log already, and a later leader
			// may commit it.
			return nil, 0, fmt.Errorf("%w: %v", ErrOutcomeUnknown, err)
		}
		return nil, 0, err
	}
	res, _ := f.Response().(*fsm.Result)
	if res == nil {
		res = &fsm.Result{}
	}
	return res, f.Index(), nil
}

// WaitApplied blocks until the FSM has applied index idx or the timeout
// passes; it reports whether the index was reached.
func (n *Node) WaitApplied(idx uint64, timeout time.Duration) bool {
	// Only the FSM's own counter will do: raft counts an entry applied when
	// it hands it to the FSM goroutine, before the index has changed. Every
	// index the API hands out is a command's (configuration entries reach
	// the FSM too, as it batches), so the FSM's counter gets there.
	if n.fsm.AppliedIndex() >= idx {
		return true
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		advanced := n.fsm.Advanced()
		if n.fsm.AppliedIndex() >= idx {
			return true
		}
		select {
		case <-advanced:
		case <-deadline.C:
			return n.fsm.AppliedIndex() >= idx
		}
	}
}

// WaitLeader waits until the cluster has a leader; it reports whether one appeared.
func (n *Node) WaitLeader(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if a, _ := n.Leader(); a != "" {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// Snapshot asks raft to take a snapshot now (and compact the log).
func (n *Node) Snapshot() error { return n.raft.Snapshot().Error() }

// Shutdown stops the node's loops, hands leadership over when there is
// another voter to take it, and closes Raft and the stores. Every write
// acknowledged before it is already in the fsynced log.
func (n *Node) Shutdown() error {
	var err error
	n.shutdownOnce.Do(func() {
		close(n.stop)
		n.wg.Wait()
		n.handOver()
		if n.gossip != nil {
			n.gossip.shutdown()
		}
		err = n.raft.Shutdown().Error()
		n.transport.Close()
		if cerr := n.store.Close(); err == nil {
			err = cerr
		}
	})
	return err
}

// handOver transfers leadership when this node leads and another voter can take it.
func (n *Node) handOver() {
	if n.IsLeader() && n.otherVoters() > 0 {
		if err := n.raft.LeadershipTransfer().Error(); err != nil {
			n.log.Warn("leadership transfer failed", "error", err)
			return
		}
		_, to := n.Leader()
		n.log.Info("leadership transferred", "to", to)
	}
}

// Leave departs the cluster: hand over leadership, ask the leader over
// gossip to remove this node from Raft, wait (up to timeout) until the
// removal reaches this node, then leave the gossip ring. If the removal
// does not come, the node takes its request back and stays a member.
// Shutdown follows a successful leave.
func (n *Node) Leave(timeout time.Duration) error {
	if n.gossip == nil {
		return errors.New("leaving needs gossip (--gossip-addr)")
	}
	if n.IsLeader() && n.otherVoters() == 0 {
		return errors.New("this node is the cluster's only voter: there is no cluster to leave")
	}
	n.handOver()
	// Ask first, leave the ring only once the removal is done: a node that
	// left gossip but not Raft would count as a dead voter until reaped.
	n.leaveDone.Store(false)
	n.leaving.Store(true)
	n.gossip.announce()
	deadline := time.Now().Add(timeout)
	for !n.leaveDone.Load() && !n.outOfCommittedConfig(n.id) {
		n.handOver() // if elected again while waiting: a leader is not removed here
		if time.Now().After(deadline) {
			n.leaving.Store(false)
			n.gossip.announce()
			return errors.New("the leader did not remove this node in time (it does not while that would leave the live voters short of a majority): it stays a member")
		}
		time.Sleep(50 * time.Millisecond)
	}
	n.gossip.leave(timeout)
	n.log.Info("left the cluster")
	return nil
}

// outOfCommittedConfig reports whether server id is out of this node's
// latest Raft configuration, and that configuration is committed: raft
// reports its latest one, which may be an entry appended and not yet
// committed (a removal whose leader then lost its leadership may be
// undone). It is committed if everything in this node's log is. Raft sets
// its last index before its latest configuration when it appends a
// configuration entry, so the configuration is read first: a removal seen
// there is then covered by the last index read after it, and that before
// the commit index.
func (n *Node) outOfCommittedConfig(id string) bool {
	if n.inConfig(id) {
		return false
	}
	last := n.raft.LastIndex()
	return n.raft.CommitIndex() >= last
}

// inConfig reports whether server id is in this node's latest Raft
// configuration (or this node cannot tell).
func (n *Node) inConfig(id string) bool {
	f := n.raft.GetConfiguration()
	return f.Error() != nil || slices.ContainsFunc(f.Configuration().Servers, func(s raft.Server) bool { return string(s.ID) == id })
}

func (n *Node) otherVoters() int {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	count := 0
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter && string(s.ID) != n.id {
			count++
		}
	}
	return count
}
