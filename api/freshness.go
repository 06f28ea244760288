package api

import (
	"encoding/json"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// freshness implements --max-stale: the time at which this node last knew
// it had applied everything the leader had applied. Hearing from a leader
// is not enough — a node just back from a partition gets heartbeats long
// before it has caught up, and would answer from state that misses a
// revocation — so a follower asks the leader for its applied index L at
// time T, and counts T as fresh once its own applied index reaches L.
// Every acknowledged write had been applied on the leader before its
// acknowledgement, so a node fresh at T has every write acknowledged
// before T. The leader is fresh while it leads (checked on the spot, so a
// node that just won an election never answers STALE). A node starts
// stale: its state on disk may be old until it has caught up.
type freshness struct {
	ns atomic.Int64 // Unix ns; 0 = never (stale until the first catch-up)
}

// probe is a leader's applied index and when it was asked for.
type probe struct {
	sentNs  int64
	applied uint64
}

func (f *freshness) staleFor(nowNs int64, max time.Duration) bool {
	return nowNs-f.ns.Load() > int64(max)
}

// trackFreshness runs until stop is closed.
func (s *Server) trackFreshness(stop <-chan struct{}) {
	every := min(max(s.cfg.MaxStale/4, 10*time.Millisecond), 250*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	var pending []probe
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		if s.node.IsLeader() {
			s.fresh.ns.Store(now)
			pending = pending[:0]
			continue
		}
		if p, ok := s.probeLeader(every); ok {
			pending = append(pending, probe{sentNs: now, applied: p})
		}
		applied := s.fsm.AppliedIndex()
		for len(pending) > 0 && pending[0].applied <= applied {
			s.fresh.ns.Store(pending[0].sentNs)
			pending = pending[1:]
		}
		if len(pending) > 64 { // far behind: keep the newest probes only
			pending = pending[len(pending)-64:]
		}
	}
}

// probeLeader asks the leader (GET /v1/internal/state) for its applied index.
func (s *Server) probeLeader(timeout time.Duration) (uint64, bool) {
	addr, ok := s.node.LeaderHTTPAddr()
	if !ok {
		return 0, false
	}
	status, body, err := forwardClient.GetTimeout(nil, "http://"+addr+"/v1/internal/state", timeout)
	var st localState
	if err != nil || status != fasthttp.StatusOK || json.Unmarshal(body, &st) != nil {
		return 0, false
	}
	return st.AppliedIndex, true
}
