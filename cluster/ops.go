package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hashicorp/raft"

	"github.com/keyraft/keyraft/fsm"
)

// ServerStatus is one node as the cluster status shows it: Raft's view
// (suffrage) merged with gossip's (addresses, role, state).
type ServerStatus struct {
	ID        string `json:"id"`
	RaftAddr  string `json:"raft_addr"`
	HTTPAddr  string `json:"http_addr"`
	Suffrage  string `json:"suffrage"`   // voter, nonvoter, or "none" when not in the Raft configuration
	RaftState string `json:"raft_state"` // leader or follower as the leader sees it; this node's own state for itself
	Gossip    string `json:"gossip"`     // alive, dead, left, or unknown
	Version   string `json:"version,omitempty"`
}

// Status is the cluster as this node sees it.
type Status struct {
	LeaderID    string `json:"leader_id"`
	LeaderAddr  string `json:"leader_raft_addr"`
	Term        uint64 `json:"term"`
	CommitIndex uint64 `json:"commit_index"`
	// VotesWithheld: the answering node started without Raft state and
	// takes no part in elections until it has caught up (voteGuard).
	VotesWithheld bool           `json:"votes_withheld"`
	Servers       []ServerStatus `json:"nodes"`
}

// Status reports the Raft configuration merged with the gossip ring.
func (n *Node) Status() Status {
	addr, leaderID := n.Leader()
	term, _ := strconv.ParseUint(n.raft.Stats()["term"], 10, 64)
	st := Status{LeaderID: leaderID, LeaderAddr: addr, Term: term, CommitIndex: n.raft.CommitIndex(),
		VotesWithheld: n.transport.withholds()}
	members := map[string]Member{}
	if n.gossip != nil {
		for _, m := range n.gossip.snapshot() {
			members[m.ID] = m
		}
	}
	listed := map[string]bool{}
	for _, s := range n.raftServers() {
		id := string(s.ID)
		listed[id] = true
		ss := ServerStatus{ID: id, RaftAddr: string(s.Address), Suffrage: suffrage(s.Suffrage), Gossip: "unknown", RaftState: "follower"}
		if id == leaderID {
			ss.RaftState = "leader"
		}
		n.fillFromGossip(&ss, members)
		st.Servers = append(st.Servers, ss)
	}
	for id, m := range members {
		if listed[id] {
			continue
		}
		ss := ServerStatus{ID: id, RaftAddr: m.RaftAddr, Suffrage: "none", RaftState: "none"}
		n.fillFromGossip(&ss, members)
		st.Servers = append(st.Servers, ss)
	}
	return st
}

func (n *Node) fillFromGossip(ss *ServerStatus, members map[string]Member) {
	if m, ok := members[ss.ID]; ok {
		ss.HTTPAddr, ss.Gossip, ss.Version = m.HTTPAddr, m.State, m.Version
	}
	if ss.ID == n.id {
		ss.HTTPAddr, ss.Version = n.cfg.HTTPAddr, n.cfg.Version
		ss.RaftState = stateName(n.raft.State())
		if n.gossip == nil {
			ss.Gossip = "off"
		}
	}
}

func suffrage(s raft.ServerSuffrage) string {
	if s == raft.Voter {
		return RoleVoter
	}
	return RoleNonvoter
}

func stateName(s raft.RaftState) string {
	switch s {
	case raft.Leader:
		return "leader"
	case raft.Candidate:
		return "candidate"
	case raft.Follower:
		return "follower"
	}
	return "shutdown"
}

// CaughtUpAsLeader returns once this node, as leader, has applied every
// entry committed before its term. A new leader applies its predecessor's
// last entries only after its own first entry commits; until then its
// state may lack writes already acknowledged (a revoked admin key still
// active), and admin writes are authenticated and checked against it. A
// barrier once per term closes the gap; later calls in the term return at
// once.
func (n *Node) CaughtUpAsLeader() error {
	term := n.raft.CurrentTerm()
	if n.caughtUpTerm.Load() == term {
		return nil
	}
	// One barrier for the requests that arrive together at a new leader,
	// not one (a log entry and an fsync) each.
	n.catchUpMu.Lock()
	defer n.catchUpMu.Unlock()
	if n.caughtUpTerm.Load() == term {
		return nil
	}
	if err := n.raft.Barrier(n.cfg.ApplyTimeout).Error(); err != nil {
		return fmt.Errorf("%w: %v", ErrNotLeader, err)
	}
	// A barrier that finished in a later term than the one read above
	// leaves the cache on the older term: the next call simply asks again.
	n.caughtUpTerm.Store(term)
	return nil
}

// ConfirmLeadership returns once a quorum has confirmed this node still
// leads and everything committed before the call is applied here: the basis
// of ?consistent=true reads.
func (n *Node) ConfirmLeadership() error {
	if err := n.raft.VerifyLeader().Error(); err != nil {
		return fmt.Errorf("%w: %v", ErrNotLeader, err)
	}
	if err := n.raft.Barrier(n.cfg.ApplyTimeout).Error(); err != nil {
		return fmt.Errorf("%w: %v", ErrNotLeader, err)
	}
	return nil
}

// ReadIndex returns an index that covers every write acknowledged before
// the call: a node whose FSM has applied up to it misses none of them (the
// read-index of the Raft thesis, §6.4). Only a leader that a quorum still
// confirms answers, so a deposed leader cannot vouch for its old state; and
// it answers from its last log index, not its applied one, because a new
// leader's log holds every committed entry (Leader Completeness) before
// its FSM has applied them all — stepping back from it past entries the
// FSM never sees (fsmTail), so that the index is one an FSM reaches.
func (n *Node) ReadIndex(timeout time.Duration) (uint64, error) {
	if !n.IsLeader() {
		return 0, ErrNotLeader
	}
	if n.restoring.Load() > 0 {
		return 0, fmt.Errorf("%w: a restore is being confirmed", ErrNotLeader)
	}
	// VerifyLeader has no deadline of its own: a leader cut off from its
	// quorum only fails it when it steps down.
	confirmed := make(chan error, 1)
	go func() { confirmed <- n.raft.VerifyLeader().Error() }()
	select {
	case err := <-confirmed:
		if err != nil {
			return 0, fmt.Errorf("%w: %v", ErrNotLeader, err)
		}
	case <-time.After(timeout):
		return 0, fmt.Errorf("%w: no quorum confirmed the leadership within %s", ErrNotLeader, timeout)
	}
	return n.fsmTail.newestVisible(n.logs.headsOnly(), n.raft.LastIndex(), n.fsm.AppliedIndex), nil
}

// MarkCaughtUp tells the node it has applied a read index that a confirmed
// leader gave after it started (the API's freshness probes): its log holds
// everything committed, so a node that started without Raft state takes
// part in elections from now on (voteGuard).
func (n *Node) MarkCaughtUp() { n.resumeVoting("caught up with a leader") }

// resumeVoting lets this node vote from now on, also after a restart.
func (n *Node) resumeVoting(why string) {
	if !n.transport.resume() {
		return
	}
	if err := os.Remove(filepath.Join(n.cfg.DataDir, withheldMarker)); err != nil && !errors.Is(err, os.ErrNotExist) {
		// It votes now; after a restart it withholds again until caught up.
		n.log.Warn("removing the votes-withheld marker", "error", err)
	}
	n.log.Info("this node takes part in elections", "reason", why)
}

// Errors of RestoreBackup. ErrRestoreUnconfirmed: this node may have taken
// the backup's state while the cluster has not (its leadership or quorum
// was lost before a quorum confirmed the restore); restoring again
// through the current leader puts every node on the backup.
var (
	ErrBadBackup          = errors.New("not a complete keyraft snapshot")
	ErrRestoreUnconfirmed = errors.New("the restore was not confirmed by a quorum")
)

// RestoreBackup replaces the whole cluster's state with a backup made by
// fsm.Backup (leader only), then commits an fsm.OpRestored entry carrying
// audit, and returns its index: once it is acknowledged a quorum holds the
// restored state, and a node that has applied the index answers from it.
// The stream is checked completely before Raft sees it, so a damaged
// backup changes nothing.
func (n *Node) RestoreBackup(r io.Reader, audit *fsm.AuditEntry) (uint64, error) {
	if !n.IsLeader() {
		return 0, ErrNotLeader
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return 0, err
	}
	applied, err := fsm.CheckSnapshot(bytes.NewReader(data))
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrBadBackup, err)
	}
	sm := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Index: applied, Size: int64(len(data))}
	// Until the OpRestored entry is applied, this node's state is the
	// backup's while its log ends in the gap raft leaves for it: no read
	// index names an entry that only nodes holding the backup reach, so
	// none is given (ReadIndex).
	n.restoring.Add(1)
	defer n.restoring.Add(-1)
	restoresBefore := n.fsm.Restores()
	// No timeout: raft's one timer covers the restore and the no-op after
	// it, so a large backup that takes longer would fail a restore that
	// took effect. Losing leadership or shutting down still ends the wait.
	if err := n.raft.Restore(sm, bytes.NewReader(data), 0); err != nil {
		switch {
		case n.fsm.Restores() != restoresBefore:
			return 0, fmt.Errorf("%w: %v", ErrRestoreUnconfirmed, err)
		case errors.Is(err, raft.ErrNotLeader):
			return 0, ErrNotLeader // refused before anything changed
		}
		return 0, fmt.Errorf("restoring: %w", err)
	}
	res, idx, err := n.Apply(&fsm.Command{Op: fsm.OpRestored, Audit: audit})
	if err == nil {
		err = res.Err
	}
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrRestoreUnconfirmed, err)
	}
	return idx, nil
}

// IsMember reports whether id is in the Raft configuration.
func (n *Node) IsMember(id string) bool {
	for _, s := range n.raftServers() {
		if string(s.ID) == id {
			return true
		}
	}
	return false
}
