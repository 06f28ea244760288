package api

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/keyraft/keyraft/cluster"
)

// Writes and consistent reads are served by the leader. A follower proxies
// them there with the caller's own credentials and relays the answer, so a
// client can talk to any node.

const (
	// forwardedByHeader marks a proxied request with the sending node's id:
	// the leader refuses it from a node that is not a member, and a node
	// never proxies a request a second time.
	forwardedByHeader = "Keyraft-Forwarded-By"
	// noLeaderWait is how long a request waits for a leader to appear.
	noLeaderWait   = 2 * time.Second
	forwardTimeout = 30 * time.Second
)

var forwardClient = &fasthttp.Client{
	Name:                "keyraft-forward",
	ReadTimeout:         forwardTimeout,
	WriteTimeout:        forwardTimeout,
	MaxConnsPerHost:     1024,
	MaxResponseBodySize: 0, // answers of the leader's own: bounded by its handlers
	// Keys travel in these requests: never follow redirects or retry writes.
	RetryIfErr: func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
}

// transferClient forwards the two requests whose bodies can be large, a
// backup downloaded and one restored, as streams: forwardClient would hold
// a whole backup in this node's memory, and its bound on the whole
// exchange would cut off one that takes longer. Its connections time out
// on a stall instead, however long the transfer (idleTimeoutConn).
var transferClient = &fasthttp.Client{
	Name:               "keyraft-forward",
	StreamResponseBody: true,
	MaxConnsPerHost:    64,
	Dial: func(addr string) (net.Conn, error) {
		c, err := fasthttp.DialTimeout(addr, forwardTimeout)
		if err != nil {
			return nil, err
		}
		return &idleTimeoutConn{Conn: c,
			reads:  deadlineMover{set: c.SetReadDeadline, timeout: forwardTimeout},
			writes: deadlineMover{set: c.SetWriteDeadline, timeout: forwardTimeout}}, nil
	},
	RetryIfErr: func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
}

// idleTimeoutConn fails a read or a write that waits longer than its
// timeout: each moves its deadline forward as the transfer progresses.
type idleTimeoutConn struct {
	net.Conn
	reads, writes deadlineMover
}

func (c *idleTimeoutConn) Read(p []byte) (int, error) {
	c.reads.progress()
	return c.Conn.Read(p)
}

func (c *idleTimeoutConn) Write(p []byte) (int, error) {
	c.writes.progress()
	return c.Conn.Write(p)
}

// needsLeader reports whether a request must be served by the leader.
func needsLeader(ctx *fasthttp.RequestCtx, path string) bool {
	switch {
	case path == "/v1/cluster/leave", isInternal(path):
		return false // about this very node
	case path == snapshotPath:
		return true // backups come from the leader's state
	case !ctx.IsGet() && !ctx.IsHead():
		return true // every admin write
	}
	return consistentRead(ctx)
}

func consistentRead(ctx *fasthttp.RequestCtx) bool {
	v := ctx.QueryArgs().Peek("consistent")
	return len(v) > 0 && string(v) != "false" && string(v) != "0"
}

// leaderGate runs before an admin route that needs the leader. It returns
// true when the request was answered here (forwarded or refused).
func (s *Server) leaderGate(ctx *fasthttp.RequestCtx) bool {
	if s.node.IsLeader() {
		if from := ctx.Request.Header.Peek(forwardedByHeader); len(from) > 0 && !s.node.IsMember(string(from)) {
			writeError(ctx, newError(fasthttp.StatusForbidden, codeForbidden, "forwarded by a node that is not a member of this cluster"))
			return true
		}
		if consistentRead(ctx) && ctx.IsGet() {
			if err := s.node.ConfirmLeadership(); err != nil {
				writeError(ctx, noLeader("leadership could not be confirmed; retry"))
				return true
			}
		} else if err := s.node.CaughtUpAsLeader(); err != nil {
			// Writes are authenticated and checked against this state.
			writeError(ctx, noLeader("the new leader has not caught up yet; retry"))
			return true
		}
		return false
	}
	s.forward(ctx)
	return true
}

func noLeader(msg string) *apiError {
	e := newError(fasthttp.StatusServiceUnavailable, codeNoLeader, msg)
	e.RetryAfter = 1
	return e
}

// outcomeUnknown answers a write that may or may not take effect: unlike
// NO_LEADER it has no Retry-After, since sending it again may apply it
// twice (a second key, a second rotation ending the first one's grace).
func outcomeUnknown() *apiError {
	return newError(fasthttp.StatusServiceUnavailable, codeOutcomeUnknown,
		"the write was in flight when leadership was lost: it may still take effect; check before sending it again")
}

// waitLeaderHTTP waits up to noLeaderWait for a leader whose API address is known.
func (s *Server) waitLeaderHTTP() (string, bool) {
	deadline := time.Now().Add(noLeaderWait)
	for {
		if s.node.IsLeader() {
			return "", true
		}
		if addr, ok := s.node.LeaderHTTPAddr(); ok {
			return addr, true
		}
		if time.Now().After(deadline) {
			return "", false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// forward proxies the request to the leader and relays its answer.
func (s *Server) forward(ctx *fasthttp.RequestCtx) { s.forwardTo(ctx, false) }

// forwardTo proxies to the leader; relay allows a second hop, for the one
// case where this node moved leadership away on purpose (removing itself).
func (s *Server) forwardTo(ctx *fasthttp.RequestCtx, relay bool) {
	if !relay && len(ctx.Request.Header.Peek(forwardedByHeader)) > 0 {
		// Leadership moved while the request was on its way: one hop only.
		writeError(ctx, noLeader("leadership is changing; retry"))
		return
	}
	addr, ok := s.waitLeaderHTTP()
	if !ok {
		writeError(ctx, noLeader("no leader is available; retry"))
		return
	}
	if addr == "" { // this node became the leader while waiting
		if relay {
			// It handed leadership away and got it back: answering here
			// would hand it over again, and again.
			writeError(ctx, noLeader("leadership is changing; retry"))
			return
		}
		s.Handle(ctx)
		return
	}
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	ctx.Request.CopyTo(req)
	path := string(ctx.Path())
	transfer := path == snapshotPath || path == restorePath
	if ctx.Request.IsBodyStream() {
		// The server streams request bodies (StreamRequestBody): CopyTo
		// takes only the part read with the headers. The stream yields that
		// part again, then the rest, straight from the client's connection.
		body := ctx.RequestBodyStream()
		if transfer {
			body = s.uploadStream(ctx) // as the leader's own restore reads it
		}
		req.SetBodyStream(body, ctx.Request.Header.ContentLength())
	}
	req.SetHost(addr)
	req.URI().SetScheme("http")
	req.Header.Set(forwardedByHeader, s.node.ID())
	if transfer {
		s.forwardTransfer(ctx, req, addr)
		return
	}
	resp := &ctx.Response
	if err := forwardClient.DoTimeout(req, resp, forwardTimeout); err != nil {
		resp.Reset()
		s.forwardFailed(ctx, addr, err)
		return
	}
	s.awaitRelayed(&resp.Header)
}

// forwardFailed answers a request the leader did not answer.
func (s *Server) forwardFailed(ctx *fasthttp.RequestCtx, leader string, err error) {
	s.log.Warn("forwarding to the leader failed", "leader", leader, "error", err)
	if !ctx.IsGet() && !ctx.IsHead() && !neverSent(err) {
		// The leader may have the write: no answer in time, or the
		// connection broke after the request went out.
		writeError(ctx, outcomeUnknown())
		return
	}
	writeError(ctx, noLeader("the leader could not be reached; retry"))
}

// awaitRelayed gives read-your-writes on this node too: it waits (briefly)
// until the node has applied the write whose answer it relays.
func (s *Server) awaitRelayed(h *fasthttp.ResponseHeader) {
	if idx, err := strconv.ParseUint(string(h.Peek("Keyraft-Index")), 10, 64); err == nil && idx > 0 {
		s.node.WaitApplied(idx, maxMinIndexWait)
	}
}

// forwardTransfer forwards a backup download or a restore
// (transferClient) and relays the leader's answer as it arrives, the write
// timeout bounding each stretch of progress as for the leader's own.
func (s *Server) forwardTransfer(ctx *fasthttp.RequestCtx, req *fasthttp.Request, leader string) {
	resp := fasthttp.AcquireResponse()
	if err := transferClient.Do(req, resp); err != nil {
		fasthttp.ReleaseResponse(resp)
		s.forwardFailed(ctx, leader, err)
		return
	}
	s.awaitRelayed(&resp.Header)
	resp.Header.CopyTo(&ctx.Response.Header)
	if !resp.IsBodyStream() {
		ctx.SetBody(resp.Body())
		fasthttp.ReleaseResponse(resp)
		return
	}
	body, conn, timeout := resp.BodyStream(), ctx.Conn(), s.cfg.WriteTimeout
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		defer fasthttp.ReleaseResponse(resp)
		// A stream cut here, on either side, lacks the backup's closing
		// checksum: no client can take it for a whole one.
		if _, err := io.Copy(&deadlineWriter{w, deadlineMover{set: conn.SetWriteDeadline, timeout: timeout}}, body); err != nil {
			s.log.Warn("relaying the leader's answer failed", "leader", leader, "error", err)
		}
		resp.CloseBodyStream()
	})
}

// neverSent reports whether a forwarding error means the request never
// reached the leader: no connection could be made.
func neverSent(err error) bool {
	var op *net.OpError
	return errors.Is(err, fasthttp.ErrDialTimeout) || errors.Is(err, fasthttp.ErrNoFreeConns) ||
		(errors.As(err, &op) && op.Op == "dial")
}

// writeMeta is the meta of a write's answer: its index, and with ?wait=all
// which live nodes have applied it (also as headers, for 204 answers).
func (s *Server) writeMeta(ctx *fasthttp.RequestCtx, idx uint64) meta {
	m := newMeta(ctx)
	m.Index = idx
	ctx.Response.Header.Set("Keyraft-Index", strconv.FormatUint(idx, 10))
	if string(ctx.QueryArgs().Peek("wait")) == "all" {
		m.Wait = s.waitAll(idx)
		ctx.Response.Header.Set("Keyraft-Applied-Nodes", strings.Join(m.Wait.Applied, ","))
		ctx.Response.Header.Set("Keyraft-Pending-Nodes", strings.Join(m.Wait.Pending, ","))
	}
	return m
}

// waitResult says which live nodes applied a write (?wait=all).
type waitResult struct {
	Applied []string `json:"applied"`
	Pending []string `json:"pending"`
}

// waitAllTimeout bounds ?wait=all; nodes not there by then are reported pending.
const waitAllTimeout = 5 * time.Second

// waitAll waits until every live member has applied index idx.
func (s *Server) waitAll(idx uint64) *waitResult {
	res := &waitResult{Applied: []string{s.node.ID()}, Pending: []string{}}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for _, m := range s.node.Status().Servers {
		if m.ID == s.node.ID() || m.Gossip != cluster.GossipAlive || m.Suffrage == "none" || m.HTTPAddr == "" {
			continue
		}
		wg.Add(1)
		go func(id, addr string) {
			defer wg.Done()
			ok := awaitRemoteIndex(addr, idx, time.Now().Add(waitAllTimeout))
			mu.Lock()
			defer mu.Unlock()
			if ok {
				res.Applied = append(res.Applied, id)
			} else {
				res.Pending = append(res.Pending, id)
			}
		}(m.ID, m.HTTPAddr)
	}
	wg.Wait()
	return res
}

// awaitRemoteIndex asks a node (GET /v1/internal/applied) until it reports idx applied.
func awaitRemoteIndex(addr string, idx uint64, deadline time.Time) bool {
	url := "http://" + addr + "/v1/internal/applied?min_index=" + strconv.FormatUint(idx, 10)
	for time.Now().Before(deadline) {
		status, body, err := forwardClient.GetTimeout(nil, url, 2*time.Second)
		if err == nil && status == fasthttp.StatusOK {
			var r struct {
				Reached bool `json:"reached"`
			}
			if json.Unmarshal(body, &r) == nil && r.Reached {
				return true
			}
			continue // the node waited its full second: ask again
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}
