package api

import (
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	"github.com/valyala/fasthttp"

	"github.com/keyraft/keyraft/keyindex"
)

// handleHealth: the process is up and serving HTTP.
func (s *Server) handleHealth(ctx *fasthttp.RequestCtx) {
	writeJSON(ctx, fasthttp.StatusOK, map[string]string{"status": "ok"})
}

// handleReady: 200 only with a known leader, the applied index within
// ReadyLag of the commit index, and a node that caught up with a confirmed
// leader's read index within --max-stale (readyFreshness without it). A
// node cut off from the leader, or catching up after a partition, still
// verifies on its last state (unless --max-stale), but says here that it
// is not ready, so load balancers send the traffic elsewhere.
func (s *Server) handleReady(ctx *fasthttp.RequestCtx) {
	r := s.node.Raft()
	leaderAddr, leaderID := s.node.Leader()
	commit, applied := r.CommitIndex(), r.AppliedIndex()
	body := map[string]any{
		"leader": leaderID, "leader_addr": leaderAddr, "state": r.State().String(),
		"commit_index": commit, "applied_index": applied, "initialized": s.fsm.Initialized(),
	}
	status, ready := fasthttp.StatusOK, true
	switch {
	case s.node.Removed():
		ready, body["reason"] = false, "removed from the cluster"
	case leaderAddr == "":
		ready, body["reason"] = false, "no known leader"
	case commit > applied+s.cfg.ReadyLag:
		ready, body["reason"] = false, fmt.Sprintf("applied index trails the commit index by %d", commit-applied)
	case !s.fsm.Initialized():
		ready, body["reason"] = false, "cluster not initialized yet"
	case s.fresh.staleFor(time.Now().UnixNano(), s.readyWindow()):
		ready, body["reason"] = false, "stale: not caught up with a confirmed leader within "+s.readyWindow().String()
	}
	if !ready {
		status = fasthttp.StatusServiceUnavailable
	}
	body["ready"] = ready
	writeJSON(ctx, status, body)
}

// handleMetrics writes Prometheus text format.
func (s *Server) handleMetrics(ctx *fasthttp.RequestCtx) {
	r := s.node.Raft()
	ctx.SetContentType("text/plain; version=0.0.4")
	w := ctx.Response.BodyWriter()
	fmt.Fprintln(w, "# HELP keyraft_verifications_total Verifications answered by this node, by code.")
	fmt.Fprintln(w, "# TYPE keyraft_verifications_total counter")
	for c := range s.metrics.verifications {
		fmt.Fprintf(w, "keyraft_verifications_total{code=%q} %d\n", keyindex.Code(c).String(), s.metrics.verifications[c].Load())
	}
	fmt.Fprintln(w, "# HELP keyraft_admin_requests_total Admin API requests answered by this node.")
	fmt.Fprintln(w, "# TYPE keyraft_admin_requests_total counter")
	fmt.Fprintf(w, "keyraft_admin_requests_total %d\n", s.metrics.adminRequests.Load())
	fmt.Fprintln(w, "# HELP keyraft_admin_errors_total Admin API requests answered with status 400 or above.")
	fmt.Fprintln(w, "# TYPE keyraft_admin_errors_total counter")
	fmt.Fprintf(w, "keyraft_admin_errors_total %d\n", s.metrics.adminErrors.Load())
	fmt.Fprintln(w, "# HELP keyraft_keys Keys in this node's index.")
	fmt.Fprintln(w, "# TYPE keyraft_keys gauge")
	fmt.Fprintf(w, "keyraft_keys %d\n", s.index.Len())
	fmt.Fprintln(w, "# HELP keyraft_index_mapped_bytes Memory the index has mapped outside the Go heap (records, slots, tables), which Go's memory statistics leave out.")
	fmt.Fprintln(w, "# TYPE keyraft_index_mapped_bytes gauge")
	fmt.Fprintf(w, "keyraft_index_mapped_bytes %d\n", s.index.MappedBytes())
	fmt.Fprintln(w, "# HELP keyraft_raft_commit_index Raft commit index known to this node.")
	fmt.Fprintln(w, "# TYPE keyraft_raft_commit_index gauge")
	fmt.Fprintf(w, "keyraft_raft_commit_index %d\n", r.CommitIndex())
	fmt.Fprintln(w, "# HELP keyraft_raft_applied_index Raft index applied by this node.")
	fmt.Fprintln(w, "# TYPE keyraft_raft_applied_index gauge")
	fmt.Fprintf(w, "keyraft_raft_applied_index %d\n", r.AppliedIndex())
	fmt.Fprintln(w, "# HELP keyraft_raft_leader 1 if this node is the leader.")
	fmt.Fprintln(w, "# TYPE keyraft_raft_leader gauge")
	leader := 0
	if r.State() == raft.Leader {
		leader = 1
	}
	fmt.Fprintf(w, "keyraft_raft_leader %d\n", leader)
}
