// Package api serves keyraft's HTTP API over fasthttp: verify (the hot path),
// the admin API with admin-key authentication, health and metrics.
package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/valyala/fasthttp"

	"github.com/keyraft/keyraft/cluster"
	"github.com/keyraft/keyraft/fsm"
	"github.com/keyraft/keyraft/keyindex"
)

// Config tunes the HTTP server. Zero values take the defaults.
type Config struct {
	ReadTimeout  time.Duration // whole request, headers and body (default 10s)
	WriteTimeout time.Duration // default 10s
	IdleTimeout  time.Duration // keep-alive connections (default 60s)
	MaxBodyBytes int           // every route but import (default 1 MiB)
	// MaxImportBytes bounds POST /v1/keys/import, which carries up to 10,000 keys (default 16 MiB).
	MaxImportBytes int
	// MaxHeaderBytes bounds the request line and headers (default 16 KiB).
	MaxHeaderBytes int
	// MaxRestoreBytes bounds POST /v1/cluster/restore (default 4 GiB).
	MaxRestoreBytes int64
	// MaxConnsPerIP bounds the open connections from one client address
	// (default 2048; negative: no limit). Each open connection holds about
	// 25 KiB (a goroutine, its read buffer of MaxHeaderBytes, the request
	// context), so this bounds what idle or slow connections from one
	// address can take; one over the limit is answered 429 and closed.
	MaxConnsPerIP int
	// ReadyLag is how far the applied index may trail the commit index for /readyz.
	ReadyLag uint64
	// MaxStale, when set, makes verify answer 503 STALE on a node that has
	// not heard from a leader for longer (instead of answering from old state).
	MaxStale time.Duration
	// OnLeave is called after this node left the cluster (POST /v1/cluster/leave).
	OnLeave func()
	Logger  hclog.Logger
}

// DefaultMaxConnsPerIP is Config.MaxConnsPerIP's default: well above what a
// proxy or a follower forwarding writes (up to 1024) keeps open.
const DefaultMaxConnsPerIP = 2048

// Server is one node's HTTP API.
type Server struct {
	cfg     Config
	node    *cluster.Node
	fsm     *fsm.FSM
	index   *keyindex.Index
	log     hclog.Logger
	http    *fasthttp.Server
	metrics metrics
	fresh   freshness     // for MaxStale and /readyz
	stop    chan struct{} // closed by Shutdown: ends background work
}

type metrics struct {
	verifications [keyindex.CodeStale + 1]atomic.Uint64
	adminRequests atomic.Uint64
	adminErrors   atomic.Uint64
}

// New builds the API of node.
func New(node *cluster.Node, cfg Config) *Server {
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = 10 * time.Second
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 60 * time.Second
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.MaxImportBytes == 0 {
		cfg.MaxImportBytes = 16 << 20
	}
	if cfg.MaxRestoreBytes == 0 {
		cfg.MaxRestoreBytes = 4 << 30
	}
	if cfg.MaxHeaderBytes == 0 {
		cfg.MaxHeaderBytes = 16 << 10
	}
	if cfg.MaxConnsPerIP == 0 {
		cfg.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	if cfg.ReadyLag == 0 {
		cfg.ReadyLag = 1000
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	s := &Server{cfg: cfg, node: node, fsm: node.FSM(), index: node.FSM().Index(), log: cfg.Logger, stop: make(chan struct{})}
	go s.trackFreshness(s.stop) // for /readyz, and verify with MaxStale
	s.http = &fasthttp.Server{
		Handler:            s.Handle,
		ErrorHandler:       s.handleTransportError,
		Name:               "keyraft",
		MaxConnsPerIP:      max(cfg.MaxConnsPerIP, 0),
		ReadTimeout:        cfg.ReadTimeout,
		WriteTimeout:       cfg.WriteTimeout,
		IdleTimeout:        cfg.IdleTimeout,
		MaxRequestBodySize: max(cfg.MaxBodyBytes, cfg.MaxImportBytes),
		// Bodies above the limit are streamed rather than refused, so that
		// restores of large backups never sit in memory twice; every other
		// route refuses them by Content-Length before reading them into
		// memory (checkBodySize).
		StreamRequestBody: true,
		// No route takes multipart forms. Pre-parsing them would read a
		// multipart body of any declared size (into memory and temporary
		// files) before the handler could apply its body limits.
		DisablePreParseMultipartForm:  true,
		ReadBufferSize:                cfg.MaxHeaderBytes,
		DisableHeaderNamesNormalizing: false,
		NoDefaultDate:                 true,
		NoDefaultContentType:          true,
		CloseOnShutdown:               true,
		// Nothing here logs request URLs or headers: keys travel in them.
		// fasthttp quotes request bytes in some errors even in its secure
		// mode, so fasthttpLogger withholds those too.
		SecureErrorLogMessage: true,
		Logger:                fasthttpLogger{cfg.Logger.Named("http")},
	}
	return s
}

// Serve answers requests on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error { return s.http.Serve(ln) }

// Shutdown stops accepting connections and waits for requests in flight.
func (s *Server) Shutdown(ctx context.Context) error {
	close(s.stop)
	return s.http.ShutdownWithContext(ctx)
}

// Handle routes one request. Routes are matched by hand: the verify path
// must not pay for a router's allocations.
func (s *Server) Handle(ctx *fasthttp.RequestCtx) {
	path := ctx.Path()
	if aerr := s.checkBodySize(ctx, path); aerr != nil {
		ctx.SetConnectionClose() // the rest of the body is not read
		writeError(ctx, aerr)
		return
	}
	// Verify takes any method: a forward-auth proxy asks with the method of
	// the request it guards (nginx auth_request, Envoy ext_authz).
	if string(path) == verifyPath {
		s.handleVerify(ctx, ctx.QueryArgs())
		return
	}
	if bytes.HasPrefix(path, verifySubpaths) {
		// Envoy's path_prefix puts the guarded request's path and query
		// after ours: that query is not ours to read, nor to refuse.
		s.handleVerify(ctx, &noArgs)
		return
	}
	switch string(path) {
	case "/healthz":
		s.handleHealth(ctx)
		return
	case "/readyz":
		s.handleReady(ctx)
		return
	case "/metrics":
		s.handleMetrics(ctx)
		return
	}
	if strings.HasPrefix(string(path), "/v1/") {
		s.metrics.adminRequests.Add(1)
		s.routeAdmin(ctx, string(path))
		if ctx.Response.StatusCode() >= 400 {
			s.metrics.adminErrors.Add(1)
		}
		return
	}
	writeError(ctx, newError(fasthttp.StatusNotFound, codeNotFound, "no such endpoint"))
}

// verifySubpaths: /v1/verify/… is verify too (Envoy ext_authz's
// path_prefix appends the guarded request's path).
var verifySubpaths = []byte(verifyPath + "/")

const (
	verifyPath   = "/v1/verify"
	importPath   = "/v1/keys/import"
	restorePath  = "/v1/cluster/restore"
	snapshotPath = "/v1/cluster/snapshot"
)

// checkBodySize applies the per-route body limits: 1 MiB, import 16 MiB,
// restore MaxRestoreBytes (read as a stream by its handler). path is
// compared, never converted: a string of it longer than 32 bytes (a
// forward-auth /v1/verify/… path) would be allocated on every request.
func (s *Server) checkBodySize(ctx *fasthttp.RequestCtx, path []byte) *apiError {
	limit := int64(s.cfg.MaxBodyBytes)
	switch string(path) {
	case importPath:
		limit = int64(s.cfg.MaxImportBytes)
	case restorePath:
		limit = s.cfg.MaxRestoreBytes
	}
	size := int64(ctx.Request.Header.ContentLength())
	if size < 0 && !ctx.Request.IsBodyStream() { // chunked, and small enough to have been read
		size = int64(len(ctx.Request.Body()))
	}
	if size < 0 && string(path) != restorePath {
		// A chunked body: with StreamRequestBody fasthttp hands every one
		// over as a stream, whatever its size. Read it here, at most one
		// byte past the limit, so that the handlers see a buffered body.
		body, err := io.ReadAll(io.LimitReader(ctx.RequestBodyStream(), limit+1))
		if err != nil {
			return newError(fasthttp.StatusBadRequest, codeBadRequest, "the request body could not be read")
		}
		if size = int64(len(body)); size <= limit {
			ctx.Request.SetBody(body)
		}
	}
	if size > limit {
		// The connection is closed after the answer. Unread body bytes
		// would make that a reset, which the client sees instead of the
		// 413, so discard a bounded amount of the rest first.
		if ctx.Request.IsBodyStream() {
			io.CopyN(io.Discard, ctx.RequestBodyStream(), maxDrainBytes)
		}
		return bodyTooLarge(int(limit))
	}
	return nil
}

// maxDrainBytes is how much of a body over the limit is read and discarded
// so that its sender gets the 413; beyond it the connection is just closed,
// and a sender still writing sees a reset instead of the answer. Draining
// holds no memory, and ReadTimeout (counted from the request's first byte)
// bounds how long a slow sender can keep it going; the bound is set well
// above the largest body a route takes (import: 16 MiB), so that the usual
// oversized upload (a few MiB to a 1 MiB route) gets its 413.
const maxDrainBytes = 64 << 20

// restoreBody reads the restore upload, streamed or buffered, up to the limit.
func (s *Server) restoreBody(ctx *fasthttp.RequestCtx) io.Reader {
	if ctx.Request.IsBodyStream() {
		return io.LimitReader(s.uploadStream(ctx), s.cfg.MaxRestoreBytes)
	}
	return bytes.NewReader(ctx.PostBody())
}

// uploadStream is a streamed request body whose read timeout bounds each
// stretch of progress, not the whole upload, as for backups.
func (s *Server) uploadStream(ctx *fasthttp.RequestCtx) io.Reader {
	return &deadlineReader{ctx.RequestBodyStream(), deadlineMover{set: ctx.Conn().SetReadDeadline, timeout: s.cfg.ReadTimeout}}
}

func bodyTooLarge(limit int) *apiError {
	return newError(fasthttp.StatusRequestEntityTooLarge, codeBodyTooLarge, fmt.Sprintf("the body exceeds the limit of %d bytes", limit))
}

func methodNotAllowed() *apiError {
	return newError(fasthttp.StatusMethodNotAllowed, codeMethodNotAllowed, "method not allowed on this endpoint")
}

// isInternal reports whether path is one of the endpoints nodes ask each
// other (/v1/internal/…): about the node that answers, never forwarded,
// and answered by a removed node too.
func isInternal(path string) bool { return strings.HasPrefix(path, "/v1/internal/") }

// routeAdmin dispatches /v1/keys…, /v1/audit, /v1/cluster….
func (s *Server) routeAdmin(ctx *fasthttp.RequestCtx, path string) {
	if s.node.Removed() && !isInternal(path) {
		// Its state stopped at its removal: no revocation reaches it, and
		// reads would answer from a past the cluster has left.
		writeError(ctx, noLeader("this node was removed from the cluster and serves no admin requests: send them to another node"))
		return
	}
	if needsLeader(ctx, path) && s.leaderGate(ctx) {
		return
	}
	method := string(ctx.Method())
	rest, isKeys := strings.CutPrefix(path, "/v1/keys")
	switch {
	case path == "/v1/cluster":
		s.only(ctx, method, "GET", s.handleClusterStatus)
	case path == snapshotPath:
		s.only(ctx, method, "GET", s.handleSnapshot)
	case path == restorePath:
		s.only(ctx, method, "POST", s.handleRestore)
	case path == "/v1/cluster/leave":
		s.only(ctx, method, "POST", s.handleLeave)
	case strings.HasPrefix(path, "/v1/cluster/nodes/"):
		id := strings.TrimPrefix(path, "/v1/cluster/nodes/")
		s.only(ctx, method, "DELETE", func(ctx *fasthttp.RequestCtx) { s.handleRemoveNode(ctx, id) })
	case path == "/v1/internal/state":
		s.only(ctx, method, "GET", s.handleInternalState)
	case path == "/v1/internal/read-index":
		s.only(ctx, method, "GET", s.handleReadIndex)
	case path == "/v1/internal/applied":
		s.only(ctx, method, "GET", s.handleInternalApplied)
	case path == "/v1/audit":
		s.only(ctx, method, "GET", s.handleAudit)
	case isKeys && rest == "":
		switch method {
		case "POST":
			s.handleCreate(ctx)
		case "GET":
			s.handleList(ctx)
		default:
			writeError(ctx, methodNotAllowed())
		}
	case path == importPath:
		s.only(ctx, method, "POST", s.handleImport)
	case isKeys && strings.HasPrefix(rest, "/"):
		id, action, _ := strings.Cut(rest[1:], "/")
		switch {
		case action == "" && method == "GET":
			s.handleGet(ctx, id)
		case action == "" && method == "PATCH":
			s.handleUpdate(ctx, id)
		case action == "" && method == "DELETE":
			s.handleDelete(ctx, id)
		case action == "rotate":
			s.only(ctx, method, "POST", func(ctx *fasthttp.RequestCtx) { s.handleRotate(ctx, id) })
		case action == "revoke":
			s.only(ctx, method, "POST", func(ctx *fasthttp.RequestCtx) { s.handleRevoke(ctx, id) })
		case action == "":
			writeError(ctx, methodNotAllowed())
		default:
			writeError(ctx, newError(fasthttp.StatusNotFound, codeNotFound, "no such endpoint"))
		}
	default:
		writeError(ctx, newError(fasthttp.StatusNotFound, codeNotFound, "no such endpoint"))
	}
}

func (s *Server) only(ctx *fasthttp.RequestCtx, method, want string, h fasthttp.RequestHandler) {
	if method != want {
		writeError(ctx, methodNotAllowed())
		return
	}
	h(ctx)
}

// handleTransportError answers requests fasthttp could not read: too large,
// too slow, malformed. The body is never echoed.
func (s *Server) handleTransportError(ctx *fasthttp.RequestCtx, err error) {
	var sizeErr *fasthttp.ErrSmallBuffer
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		writeError(ctx, bodyTooLarge(s.cfg.MaxImportBytes))
	case errors.As(err, &sizeErr):
		writeError(ctx, newError(fasthttp.StatusRequestHeaderFieldsTooLarge, codeHeaderTooLarge, "the request headers are too large"))
	default:
		var netErr net.Error
		if errors.As(err, &netErr) && netErr.Timeout() {
			writeError(ctx, newError(fasthttp.StatusRequestTimeout, "REQUEST_TIMEOUT", "the request was not received in time"))
			return
		}
		writeError(ctx, newError(fasthttp.StatusBadRequest, codeBadRequest, "the request could not be read"))
	}
}

// fasthttpLogger passes fasthttp's messages (mostly connections it gave up
// on) to the node's log at debug level, without any bytes of the request:
// fasthttp quotes parts of a malformed request line or header in its errors
// (%q), and those parts may hold a key. Addresses and numbers are kept.
type fasthttpLogger struct{ l hclog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	safe := make([]any, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case net.Addr:
			safe[i] = v.String()
		case int, int64, uint64, float64, time.Duration:
			safe[i] = v
		default:
			safe[i] = withholdRequestBytes(fmt.Sprint(v))
		}
	}
	f.l.Debug(strings.TrimSpace(format), "args", safe)
}

// withholdRequestBytes cuts a message at its first quoted part: fasthttp
// formats every piece of a request it reports with %q.
func withholdRequestBytes(msg string) string {
	if i := strings.IndexAny(msg, "\"`"); i >= 0 {
		return msg[:i] + "[request bytes withheld]"
	}
	return msg
}
