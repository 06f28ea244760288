package api

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/keyraft/keyraft/cluster"
	"github.com/keyraft/keyraft/keyindex"
)

// Cluster operations (spec §5) are for root keys only: a workspace admin
// manages keys, never the cluster.
func (s *Server) authenticateRoot(ctx *fasthttp.RequestCtx, scope string) (*keyindex.Record, *apiError) {
	caller, aerr := s.authenticate(ctx, scope)
	if aerr != nil {
		return nil, aerr
	}
	if !caller.IsRoot() {
		return nil, newError(fasthttp.StatusForbidden, codeForbidden, "cluster operations need a root key")
	}
	return caller, nil
}

// nodeView is one node in GET /v1/cluster: the status plus what the node
// itself reports (applied index and state digest).
type nodeView struct {
	cluster.ServerStatus
	AppliedIndex *uint64 `json:"applied_index"`
	Digest       string  `json:"digest,omitempty"`
	Error        string  `json:"error,omitempty"`
}

func (s *Server) handleClusterStatus(ctx *fasthttp.RequestCtx) {
	if _, aerr := s.authenticateRoot(ctx, keyindex.ScopeClusterRead); aerr != nil {
		writeError(ctx, aerr)
		return
	}
	st := s.node.Status()
	views := make([]nodeView, len(st.Servers))
	var wg sync.WaitGroup
	for i, srv := range st.Servers {
		views[i].ServerStatus = srv
		wg.Add(1)
		go func(v *nodeView) {
			defer wg.Done()
			s.fillNodeState(v)
		}(&views[i])
	}
	wg.Wait()
	writeData(ctx, fasthttp.StatusOK, map[string]any{
		"leader_id": st.LeaderID, "leader_raft_addr": st.LeaderAddr, "term": st.Term,
		"commit_index": st.CommitIndex, "votes_withheld": st.VotesWithheld, "nodes": views,
	}, newMeta(ctx))
}

// localState is what GET /v1/internal/state answers.
type localState struct {
	NodeID       string `json:"node_id"`
	AppliedIndex uint64 `json:"applied_index"`
	Digest       string `json:"digest"`
}

func (s *Server) fillNodeState(v *nodeView) {
	var st localState
	if v.ID == s.node.ID() {
		st = s.localState()
	} else if v.HTTPAddr == "" || v.Gossip == cluster.GossipDead || v.Gossip == cluster.GossipLeft {
		v.Error = "unreachable"
		return
	} else {
		status, body, err := forwardClient.GetTimeout(nil, "http://"+v.HTTPAddr+"/v1/internal/state", 3*time.Second)
		if err != nil || status != fasthttp.StatusOK || json.Unmarshal(body, &st) != nil || st.NodeID != v.ID {
			v.Error = "unreachable"
			return
		}
	}
	v.AppliedIndex, v.Digest = &st.AppliedIndex, st.Digest
}

func (s *Server) localState() localState {
	applied, digest := s.fsm.Digest()
	return localState{NodeID: s.node.ID(), AppliedIndex: applied, Digest: digest}
}

// handleInternalState: this node's applied index and state digest. It shows
// no key data, so peers call it without credentials.
func (s *Server) handleInternalState(ctx *fasthttp.RequestCtx) {
	writeJSON(ctx, fasthttp.StatusOK, s.localState())
}

// handleInternalApplied waits (up to 1 s) for min_index, for ?wait=all.
func (s *Server) handleInternalApplied(ctx *fasthttp.RequestCtx) {
	idx, aerr := adminMinIndex(ctx)
	if aerr != nil {
		writeError(ctx, aerr)
		return
	}
	reached := s.node.WaitApplied(idx, maxMinIndexWait)
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"node_id": s.node.ID(), "applied_index": s.fsm.AppliedIndex(), "reached": reached})
}

func (s *Server) handleRemoveNode(ctx *fasthttp.RequestCtx, id string) {
	caller, aerr := s.authenticateRoot(ctx, keyindex.ScopeClusterWrite)
	if aerr != nil {
		writeError(ctx, aerr)
		return
	}
	err := s.node.RemoveNode(id, s.audit(ctx, caller, "cluster.remove_node", keyindex.RootWorkspace, id, time.Now().UTC()))
	switch {
	case errors.Is(err, cluster.ErrHandedOver):
		// Removing the leader: it handed leadership over; the new leader
		// finishes the removal (also when this request was itself
		// forwarded here: the new leader removes another node, so it
		// never hands the request on again).
		s.forwardTo(ctx, true)
		return
	case errors.Is(err, cluster.ErrNotLeader):
		writeError(ctx, noLeader("leadership is changing; retry"))
		return
	case errors.Is(err, cluster.ErrOutcomeUnknown):
		writeError(ctx, outcomeUnknown())
		return
	case errors.Is(err, cluster.ErrUnknownNode):
		writeError(ctx, newError(fasthttp.StatusNotFound, codeNotFound, "no node "+strconv.Quote(id)+" in the cluster"))
		return
	case err != nil:
		writeError(ctx, newError(fasthttp.StatusConflict, codeConflict, err.Error()))
		return
	}
	requestID(ctx)
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

func (s *Server) handleSnapshot(ctx *fasthttp.RequestCtx) {
	if _, aerr := s.authenticateRoot(ctx, keyindex.ScopeClusterRead); aerr != nil {
		writeError(ctx, aerr)
		return
	}
	if err := s.node.ConfirmLeadership(); err != nil {
		writeError(ctx, noLeader("leadership could not be confirmed; retry"))
		return
	}
	backup := s.fsm.Backup()
	ctx.SetContentType("application/octet-stream")
	ctx.Response.Header.Set("Content-Disposition", `attachment; filename="keyraft.snapshot"`)
	ctx.Response.Header.Set("Keyraft-Index", strconv.FormatUint(backup.AppliedIndex(), 10))
	// Streamed as it is encoded: a backup of millions of keys never sits in
	// memory. A failure mid-stream leaves the checksum missing, so a client
	// can never mistake a cut backup for a whole one.
	conn, timeout := ctx.Conn(), s.cfg.WriteTimeout
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		// The write timeout bounds each stretch of progress, not the whole
		// backup, which may take minutes.
		if err := backup.Write(&deadlineWriter{w, deadlineMover{set: conn.SetWriteDeadline, timeout: timeout}}); err != nil {
			s.log.Error("streaming a backup failed", "error", err)
		}
	})
}

// deadlineMover pushes a connection deadline forward, at most once a second,
// while a long transfer makes progress.
type deadlineMover struct {
	set     func(time.Time) error // conn.SetReadDeadline or SetWriteDeadline
	timeout time.Duration
	last    time.Time
}

func (m *deadlineMover) progress() {
	if now := time.Now(); now.Sub(m.last) > time.Second {
		m.last = now
		m.set(now.Add(m.timeout))
	}
}

type deadlineWriter struct {
	w io.Writer
	deadlineMover
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	d.progress()
	return d.w.Write(p)
}

type deadlineReader struct {
	r io.Reader
	deadlineMover
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	d.progress()
	return d.r.Read(p)
}

func (s *Server) handleRestore(ctx *fasthttp.RequestCtx) {
	caller, aerr := s.authenticateRoot(ctx, keyindex.ScopeClusterWrite)
	if aerr != nil {
		writeError(ctx, aerr)
		return
	}
	idx, err := s.node.RestoreBackup(s.restoreBody(ctx), s.audit(ctx, caller, "cluster.restore", keyindex.RootWorkspace, "cluster", time.Now().UTC()))
	switch {
	case errors.Is(err, cluster.ErrBadBackup):
		writeError(ctx, newError(fasthttp.StatusBadRequest, codeBadRequest, err.Error()))
	case errors.Is(err, cluster.ErrNotLeader):
		writeError(ctx, noLeader("leadership changed; retry"))
	case errors.Is(err, cluster.ErrRestoreUnconfirmed):
		writeError(ctx, noLeader("leadership was lost during the restore, so the cluster may not hold the backup everywhere: restore it again"))
	case err != nil:
		writeError(ctx, internal(err))
	default:
		writeData(ctx, fasthttp.StatusOK, map[string]any{"restored": true, "keys": s.index.Len()}, s.writeMeta(ctx, idx))
	}
}

// handleLeave makes this node leave the cluster for good, then stop.
func (s *Server) handleLeave(ctx *fasthttp.RequestCtx) {
	if _, aerr := s.authenticateRoot(ctx, keyindex.ScopeClusterWrite); aerr != nil {
		writeError(ctx, aerr)
		return
	}
	if err := s.node.Leave(10 * time.Second); err != nil {
		writeError(ctx, newError(fasthttp.StatusConflict, codeConflict, err.Error()))
		return
	}
	writeData(ctx, fasthttp.StatusOK, map[string]any{"left": s.node.ID()}, newMeta(ctx))
	if s.cfg.OnLeave != nil {
		// After the answer is written: the process shuts down.
		go s.cfg.OnLeave()
	}
}
