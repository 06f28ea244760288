package api

import (
	"encoding/json"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// freshness implements --max-stale: the time at which this node last knew
// it had applied every write acknowledged before then. Hearing from a
// leader is not enough — a node just back from a partition gets heartbeats
// long before it has caught up, and a deposed leader cut off with a
// minority keeps answering from old state — so every node, the leader
// included, asks the leader for a read index R at time T (cluster.Node.
// ReadIndex: only a leader a quorum confirms answers) and counts T as fresh
// once its own FSM has applied R. A node starts stale: its state on disk
// may be old until it has caught up.
type freshness struct {
	ns atomic.Int64 // Unix ns; 0 = never (stale until the first catch-up)
}

// probe is a read index and when it was asked for.
type probe struct {
	sentNs    int64
	readIndex uint64
}

func (f *freshness) staleFor(nowNs int64, max time.Duration) bool {
	return nowNs-f.ns.Load() > int64(max)
}

// maxPendingProbes bounds the probes kept while this node catches up.
const maxPendingProbes = 64

// readyWindow is how recently a node must have caught up with a confirmed
// leader for /readyz: --max-stale when set, else readyFreshness.
func (s *Server) readyWindow() time.Duration {
	if s.cfg.MaxStale > 0 {
		return s.cfg.MaxStale
	}
	return readyFreshness
}

// readyFreshness: without --max-stale a node still verifies from whatever
// state it has, but is ready only if it caught up with a confirmed leader
// this recently. Commit and applied indexes alone cannot tell: a follower
// far behind counts as committed only what its own log holds.
const readyFreshness = 3 * time.Second

// trackFreshness runs until stop is closed.
func (s *Server) trackFreshness(stop <-chan struct{}) {
	every := min(max(s.readyWindow()/4, 10*time.Millisecond), 250*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	var pending []probe
	for {
		now := time.Now().UnixNano()
		if idx, ok := s.readIndex(every); ok {
			pending = append(pending, probe{sentNs: now, readIndex: idx})
		}
		pending = s.fresh.advance(pending, s.fsm.AppliedIndex())
		if s.fresh.ns.Load() != 0 {
			s.node.MarkCaughtUp()
		}
		if len(pending) > maxPendingProbes { // far behind: keep the newest
			pending = pending[len(pending)-maxPendingProbes:]
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// advance marks the node fresh as of the newest probe it has caught up
// with, and returns the probes still pending. A read index from a leader
// deposed before its last entries committed may never be reached (the new
// leader's log may stay shorter for a while), so it must not hold back the
// newer probes behind it.
func (f *freshness) advance(pending []probe, applied uint64) []probe {
	for i := len(pending) - 1; i >= 0; i-- {
		if pending[i].readIndex <= applied {
			f.ns.Store(pending[i].sentNs)
			return pending[i+1:]
		}
	}
	return pending
}

// readIndex asks the leader for a read index: directly when this node
// leads, else over GET /v1/internal/read-index.
func (s *Server) readIndex(timeout time.Duration) (uint64, bool) {
	if s.node.IsLeader() {
		idx, err := s.node.ReadIndex(timeout)
		return idx, err == nil
	}
	addr, ok := s.node.LeaderHTTPAddr()
	if !ok {
		return 0, false
	}
	status, body, err := forwardClient.GetTimeout(nil, "http://"+addr+"/v1/internal/read-index", timeout)
	var ri readIndexAnswer
	if err != nil || status != fasthttp.StatusOK || json.Unmarshal(body, &ri) != nil {
		return 0, false
	}
	return ri.ReadIndex, true
}

// readIndexAnswer is what GET /v1/internal/read-index answers.
type readIndexAnswer struct {
	ReadIndex uint64 `json:"read_index"`
}

// handleReadIndex answers a freshness probe, only while this node is a
// leader a quorum confirms (503 NO_LEADER otherwise).
func (s *Server) handleReadIndex(ctx *fasthttp.RequestCtx) {
	idx, err := s.node.ReadIndex(readIndexTimeout)
	if err != nil {
		writeError(ctx, noLeader("not a confirmed leader"))
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, readIndexAnswer{ReadIndex: idx})
}

// readIndexTimeout bounds a leader's quorum round for a probe; the prober
// gives up sooner anyway.
const readIndexTimeout = time.Second
