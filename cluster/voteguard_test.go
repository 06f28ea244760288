package cluster

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func tcpTransport(t *testing.T) *raft.NetworkTransport {
	t.Helper()
	tr, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// TestVoteGuardWithholdsUntilResumed: while withholding, a node's vote and
// pre-vote requests are answered "not granted" at the candidate's own term
// without reaching raft (but for a cluster's first election), its own
// requests fail, and every other request passes; once resumed, vote
// requests reach raft again.
func TestVoteGuardWithholdsUntilResumed(t *testing.T) {
	candidate := tcpTransport(t)
	defer candidate.Close()
	g := newVoteGuard(tcpTransport(t), "wiped", true)
	defer g.Close()
	to := g.LocalAddr()

	var vote raft.RequestVoteResponse
	if err := candidate.RequestVote("wiped", to, &raft.RequestVoteRequest{Term: 7, LastLogIndex: 3, LastLogTerm: 2}, &vote); err != nil {
		t.Fatal(err)
	}
	if vote.Granted || vote.Term != 7 || string(vote.ID) != "wiped" {
		t.Fatalf("withheld vote: %+v, want not granted at term 7 from wiped", vote)
	}
	var pre raft.RequestPreVoteResponse
	if err := candidate.RequestPreVote("wiped", to, &raft.RequestPreVoteRequest{Term: 8, LastLogIndex: 1, LastLogTerm: 2}, &pre); err != nil {
		t.Fatal(err)
	}
	if pre.Granted || pre.Term != 8 {
		t.Fatalf("withheld pre-vote: %+v, want not granted at term 8", pre)
	}
	// A leadership transfer to it fails: it would campaign without votes.
	if err := candidate.TimeoutNow("wiped", to, &raft.TimeoutNowRequest{}, &raft.TimeoutNowResponse{}); err == nil {
		t.Fatal("a leadership transfer to a withholding node was accepted")
	}
	select {
	case rpc := <-g.Consumer():
		t.Fatalf("a vote or transfer request reached raft while withholding: %T", rpc.Command)
	default:
	}

	// Replication passes through.
	answered := make(chan error, 1)
	go func() {
		var resp raft.AppendEntriesResponse
		answered <- candidate.AppendEntries("wiped", to, &raft.AppendEntriesRequest{Term: 7, Entries: []*raft.Log{{Index: 1, Term: 7}}}, &resp)
	}()
	rpc := receive(t, g)
	if _, ok := rpc.Command.(*raft.AppendEntriesRequest); !ok {
		t.Fatalf("got %T, want the append entries request", rpc.Command)
	}
	rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil)
	if err := <-answered; err != nil {
		t.Fatal(err)
	}

	// Its own campaign fails before anything is sent.
	if err := g.RequestVote("other", candidate.LocalAddr(), &raft.RequestVoteRequest{Term: 9}, &vote); !errors.Is(err, errWithholdingVotes) {
		t.Fatalf("own vote request while withholding: %v", err)
	}
	if err := g.RequestPreVote("other", candidate.LocalAddr(), &raft.RequestPreVoteRequest{Term: 9}, &pre); !errors.Is(err, errWithholdingVotes) {
		t.Fatalf("own pre-vote request while withholding: %v", err)
	}

	// A cluster's first election, its candidate holding only the bootstrap
	// configuration, passes.
	go func() {
		var resp raft.RequestVoteResponse
		answered <- candidate.RequestVote("wiped", to, &raft.RequestVoteRequest{Term: 2, LastLogIndex: 1, LastLogTerm: 1}, &resp)
	}()
	rpc = receive(t, g)
	if _, ok := rpc.Command.(*raft.RequestVoteRequest); !ok {
		t.Fatalf("got %T, want the first election's vote request", rpc.Command)
	}
	rpc.Respond(&raft.RequestVoteResponse{Term: 2, Granted: true}, nil)
	if err := <-answered; err != nil {
		t.Fatal(err)
	}

	if !g.resume() || g.resume() {
		t.Fatal("resume should report withholding once")
	}
	go func() {
		var resp raft.RequestVoteResponse
		answered <- candidate.RequestVote("wiped", to, &raft.RequestVoteRequest{Term: 10}, &resp)
	}()
	rpc = receive(t, g)
	if req, ok := rpc.Command.(*raft.RequestVoteRequest); !ok || req.Term != 10 {
		t.Fatalf("got %#v, want the vote request of term 10", rpc.Command)
	}
	rpc.Respond(&raft.RequestVoteResponse{Term: 10, Granted: true}, nil)
	if err := <-answered; err != nil {
		t.Fatal(err)
	}
}

// TestVoteGuardRetiredForGood: a removed node's guard asks for no vote,
// with the removal as the reason, refuses vote requests, and resuming (a
// removed node may still catch up with a leader) does not let it vote.
func TestVoteGuardRetiredForGood(t *testing.T) {
	candidate := tcpTransport(t)
	defer candidate.Close()
	g := newVoteGuard(tcpTransport(t), "removed", false)
	defer g.Close()
	g.retire()
	if g.resume() {
		t.Fatal("resume reported withholding on a node that only retired")
	}
	if err := g.RequestPreVote("other", candidate.LocalAddr(), &raft.RequestPreVoteRequest{Term: 3}, &raft.RequestPreVoteResponse{}); !errors.Is(err, errRemovedNode) {
		t.Fatalf("own pre-vote request of a removed node: %v", err)
	}
	if err := g.RequestVote("other", candidate.LocalAddr(), &raft.RequestVoteRequest{Term: 3}, &raft.RequestVoteResponse{}); !errors.Is(err, errRemovedNode) {
		t.Fatalf("own vote request of a removed node: %v", err)
	}
	var vote raft.RequestVoteResponse
	if err := candidate.RequestVote("removed", g.LocalAddr(), &raft.RequestVoteRequest{Term: 4, LastLogIndex: 5, LastLogTerm: 3}, &vote); err != nil {
		t.Fatal(err)
	}
	if vote.Granted {
		t.Fatal("a removed node granted its vote")
	}
	select {
	case rpc := <-g.Consumer():
		t.Fatalf("a vote request reached a removed node's raft: %T", rpc.Command)
	default:
	}
}

func receive(t *testing.T, g *voteGuard) raft.RPC {
	t.Helper()
	select {
	case rpc := <-g.Consumer():
		return rpc
	case <-time.After(5 * time.Second):
		t.Fatal("no request reached raft")
		return raft.RPC{}
	}
}

// TestNodeWithoutStateWithholdsVotes: a node that starts on an empty data
// dir without bootstrapping withholds its vote, across restarts (it has
// state once a leader reached it), until MarkCaughtUp; one that
// bootstraps, or restarts on its own state, does not.
func TestNodeWithoutStateWithholdsVotes(t *testing.T) {
	cfg := singleNodeConfig(t)
	cfg.Bootstrap = false
	reopen := func(cfg Config) *Node {
		t.Helper()
		n, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	n := reopen(cfg)
	if !n.Status().VotesWithheld {
		t.Fatal("a node started without state should withhold its vote")
	}
	n.Shutdown()
	n = reopen(cfg)
	if !n.Status().VotesWithheld {
		t.Fatal("a restart made a node that had not caught up a voter")
	}
	n.MarkCaughtUp()
	if n.Status().VotesWithheld {
		t.Fatal("still withholding after catching up")
	}
	n.Shutdown()
	if withholding, err := withholdsVotes(cfg.DataDir, false); err != nil || withholding {
		t.Fatalf("after catching up the marker says withholding=%v (%v)", withholding, err)
	}

	cfg = singleNodeConfig(t)
	boot := openLeader(t, cfg)
	if boot.Status().VotesWithheld {
		t.Fatal("a node that bootstrapped the cluster should vote")
	}
	boot.Shutdown()
	cfg.Bootstrap = false
	again := openLeader(t, cfg) // it elects itself: it kept its state
	if again.Status().VotesWithheld {
		t.Fatal("a node restarted on its own state should vote")
	}
	again.Shutdown()
	// With state and the marker (a node that started empty and got part of
	// the log before it restarted) it withholds.
	if _, err := withholdsVotes(cfg.DataDir, true); err != nil {
		t.Fatal(err)
	}
	marked := reopen(cfg)
	if !marked.Status().VotesWithheld {
		t.Fatal("a node with state and the marker should withhold its vote")
	}
	id := marked.ID()
	marked.Shutdown()
	// Lost-quorum recovery accepts what the node may have forgotten, and
	// the new configuration may need its vote: it no longer withholds it.
	// (Alone in the configuration it would lead either way: a lone voter
	// votes for itself without the transport.)
	peers := filepath.Join(t.TempDir(), "peers.json")
	os.WriteFile(peers, []byte(`[{"id":"`+id+`","address":"`+cfg.RaftAddr+`"}]`), 0o600)
	if err := Recover(cfg.DataDir, peers, nil); err != nil {
		t.Fatal(err)
	}
	recovered := openLeader(t, cfg)
	defer recovered.Shutdown()
	if recovered.Status().VotesWithheld {
		t.Fatal("a recovered node still withholds its vote")
	}
}

// TestRemovedNodeVotesUntilOutOfTheConfiguration: a node that applied its
// own removal stops serving at once, but leaves elections only once it is
// out of the Raft configuration (its own, or the leader says so): until
// the configuration change commits, a quorum may need its vote.
func TestRemovedNodeVotesUntilOutOfTheConfiguration(t *testing.T) {
	n := openLeader(t, singleNodeConfig(t))
	defer n.Shutdown()
	n.stopAsRemoved(false) // its own configuration still holds it
	if !n.Removed() || n.transport.isRetired() {
		t.Fatalf("removed %v, retired %v: want removed and still voting", n.Removed(), n.transport.isRetired())
	}
	n.stopAsRemoved(true) // the leader says it is out
	if !n.transport.isRetired() {
		t.Fatal("told it is out of the configuration, the node still takes part in elections")
	}
}
