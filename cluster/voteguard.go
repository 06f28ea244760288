package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// voteGuard keeps a node that may have lost its Raft state out of elections
// until it has caught up with a leader.
//
// Raft's safety rests on a voter never forgetting what it acknowledged. A
// voter whose data dir was wiped (or replaced) and that starts again at the
// same address, under its old id or a new one, has forgotten: the leader
// keeps sending it the old voter's traffic, and with an empty log it would
// grant its vote to any candidate. Say A led, X acknowledged an entry B had
// not received yet, then X lost its disk and A died: X, empty, votes for B,
// and B leads without the acknowledged entry. The node cannot know from its
// empty data dir whether it was a voter, so every node that starts without
// Raft state withholds its vote, and asks for none, until it has applied a
// read index a confirmed leader gave after it started (Node.MarkCaughtUp):
// from then on its log holds everything committed, whatever it forgot.
// A node that creates the cluster's first state (a lone `keyraft serve`,
// or --bootstrap-expect's bootstrap) forgot nothing and votes at once.
//
// It wraps the transport: raft offers no hook into its vote handling. Vote
// and pre-vote requests are answered "not granted" here, without reaching
// raft, a leadership transfer to this node is refused, and its own
// requests fail, so it never campaigns either.
// The cost is liveness, and only where it protects data: if the remaining
// voters cannot elect a leader without this node, the cluster waits for a
// voter that kept its state (or for `keyraft recover`).
//
// One exception keeps --bootstrap-expect working: a vote for a candidate
// whose log is only the bootstrap configuration (index 1, term 1) passes.
// A node that bootstraps announces it has state, and the expected nodes
// that had not bootstrapped yet then wait to be added instead, so the
// first election may need their votes; no write exists before it. The
// exception leaves one hole, which needs three faults at once: a voter
// down since the cluster was bootstrapped, a voter that lost its data, and
// every other voter gone (docs/operations.md, "A node that lost its data").
type voteGuard struct {
	*raft.NetworkTransport
	withholding atomic.Bool
	// retired: an operator removed this node (Node.stopAsRemoved). It
	// takes no part in elections again, whatever it learns after: a removed
	// node that never received its removal would otherwise campaign for
	// good, and every member would log refusing it.
	retired   atomic.Bool
	header    raft.RPCHeader // this node's, in the answers it gives itself
	consumer  chan raft.RPC
	stop      chan struct{}
	closeOnce sync.Once
}

// errWithholdingVotes fails this node's vote requests while it withholds.
var errWithholdingVotes = errors.New("this node started without raft state and has not caught up with a leader yet: it takes no part in elections")

// errRemovedNode fails the vote requests of a node an operator removed.
var errRemovedNode = errors.New("this node was removed from the cluster: it takes no part in elections")

// newVoteGuard wraps t, withholding this node's votes from the start or
// not. It runs until Close.
func newVoteGuard(t *raft.NetworkTransport, id raft.ServerID, withhold bool) *voteGuard {
	g := &voteGuard{NetworkTransport: t, consumer: make(chan raft.RPC), stop: make(chan struct{}),
		header: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(id), Addr: t.EncodePeer(id, t.LocalAddr())}}
	g.withholding.Store(withhold)
	go g.pass()
	return g
}

// withheldMarker is the file in the data dir that says this node withholds
// its vote. It outlives restarts: a node that started empty has some state
// (a term, part of the log) after its first contact with a leader, and a
// restart before it caught up must not make it a full voter.
const withheldMarker = "votes-withheld"

// withholdsVotes reports whether the node on dir withholds its vote,
// writing the marker (synced) first when it starts to.
func withholdsVotes(dir string, start bool) (bool, error) {
	path := filepath.Join(dir, withheldMarker)
	if start {
		if err := writeSynced(path, []byte("this node started without raft state; it votes once it has caught up with a leader\n")); err != nil {
			return false, fmt.Errorf("marking the node as withholding its vote: %w", err)
		}
		return true, nil
	}
	_, err := os.Stat(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	return err == nil, nil
}

// writeSynced writes a small file and syncs it and its directory.
func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// withholds reports whether the node withholds its vote now.
func (g *voteGuard) withholds() bool { return g.refusal() != nil }

// refusal is why the node takes no part in elections now, or nil.
func (g *voteGuard) refusal() error {
	switch {
	case g.retired.Load():
		return errRemovedNode
	case g.withholding.Load():
		return errWithholdingVotes
	}
	return nil
}

// retire keeps the node out of elections for good: resume does not undo it.
func (g *voteGuard) retire() { g.retired.Store(true) }

func (g *voteGuard) isRetired() bool { return g.retired.Load() }

// resume lets the node vote; it reports whether it was withholding.
func (g *voteGuard) resume() bool { return g.withholding.Swap(false) }

// Close stops passing requests and closes the transport (raft's shutdown
// calls it, and so does the node's).
func (g *voteGuard) Close() error {
	g.closeOnce.Do(func() { close(g.stop) })
	return g.NetworkTransport.Close()
}

// Consumer is what raft reads incoming requests from: the transport's,
// less the vote requests answered here.
func (g *voteGuard) Consumer() <-chan raft.RPC { return g.consumer }

func (g *voteGuard) pass() {
	in := g.NetworkTransport.Consumer()
	for {
		var rpc raft.RPC
		select {
		case rpc = <-in:
		case <-g.stop:
			return
		}
		if g.withholds() && g.refuse(rpc) {
			continue
		}
		select {
		case g.consumer <- rpc:
		case <-g.stop:
			return
		}
	}
}

// refuse answers rpc itself if it asks for a vote, unless for a cluster's
// first election, or for a leadership transfer. A vote's answer carries
// the candidate's own term, so the candidate neither counts it nor steps
// down.
func (g *voteGuard) refuse(rpc raft.RPC) bool {
	switch req := rpc.Command.(type) {
	case *raft.RequestVoteRequest:
		if onlyBootstrapped(req.LastLogIndex, req.LastLogTerm) {
			return false
		}
		rpc.Respond(&raft.RequestVoteResponse{RPCHeader: g.header, Term: req.Term}, nil)
	case *raft.RequestPreVoteRequest:
		if onlyBootstrapped(req.LastLogIndex, req.LastLogTerm) {
			return false
		}
		rpc.Respond(&raft.RequestPreVoteResponse{RPCHeader: g.header, Term: req.Term}, nil)
	case *raft.TimeoutNowRequest:
		// A leader handing over must pick another voter: this one would
		// campaign without asking anyone, and depose the leader for nothing.
		rpc.Respond(nil, g.refusal())
	default:
		return false
	}
	return true
}

// onlyBootstrapped reports whether a candidate's last log entry is the
// configuration raft.BootstrapCluster writes (index 1, term 1).
func onlyBootstrapped(lastIndex, lastTerm uint64) bool { return lastIndex == 1 && lastTerm == 1 }

func (g *voteGuard) RequestVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	if err := g.refusal(); err != nil {
		return err
	}
	return g.NetworkTransport.RequestVote(id, target, args, resp)
}

func (g *voteGuard) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	if err := g.refusal(); err != nil {
		return err
	}
	return g.NetworkTransport.RequestPreVote(id, target, args, resp)
}
