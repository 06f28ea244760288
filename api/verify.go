package api

import (
	"bytes"
	"runtime"
	"strconv"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"

	"github.com/keyraft/keyraft/keyindex"
)

// The verify path is the product's hot path: it allocates nothing, takes no
// Raft round trip and writes pre-encoded bytes. Everything below is written
// with that in mind (pooled JSON parser, byte slices into the request,
// static answer bodies).

var (
	verifyParsers fastjson.ParserPool
	jsonType      = []byte("application/json")
	bearerPrefix  = []byte("bearer ")
	// failBodies[code] is the whole JSON answer of a rejection.
	failBodies = func() (out [keyindex.CodeStale + 1][]byte) {
		for c := range out {
			code := keyindex.Code(c)
			out[c] = []byte(`{"valid":false,"code":"` + code.String() + `","message":"` + code.Message() + `"}`)
		}
		return out
	}()
)

const maxMinIndexWait = time.Second

// noArgs is an empty query, never written to.
var noArgs fasthttp.Args

// processStart anchors the monotonic clock of clocks.
var processStart = time.Now()

// clocks reads the time once for a verification: the wall clock (expiry,
// grace periods, last use) and a monotonic one for rate-limit windows
// (keyindex.VerifyRequest.MonoNs; never 0).
func clocks() (wallNs, monoNs int64) {
	now := time.Now()
	return now.UnixNano(), int64(now.Sub(processStart)) + 1
}

// handleVerify serves both forms of spec §3: POST with a JSON body, and
// the forward-auth form, with the key in X-API-Key or Authorization:
// Bearer. A proxy asks with the guarded request's method and without its
// body (nginx auth_request, Envoy ext_authz; Traefik always GETs), so
// every request without a body, whatever its method, is of that form.
// args is the request's own query: empty under /v1/verify/… (Handle).
func (s *Server) handleVerify(ctx *fasthttp.RequestCtx, args *fasthttp.Args) {
	var req keyindex.VerifyRequest
	if tokenInQuery(args) {
		// A key in a URL ends up in proxy and browser logs; refuse it, in
		// either form, before it is used.
		s.writeVerifyProblem(ctx, keyindex.CodeBadRequest, "send the key in the X-API-Key or Authorization header (or the POST body), never in the query string")
		return
	}
	var body []byte
	if ctx.IsPost() {
		body = ctx.PostBody()
	}
	if len(body) > 0 {
		p := verifyParsers.Get()
		defer verifyParsers.Put(p)
		if msg := readVerifyBody(p, body, &req); msg != "" {
			s.writeVerifyProblem(ctx, keyindex.CodeBadRequest, msg)
			return
		}
		if len(req.Origin) == 0 {
			req.Origin = ctx.Request.Header.Peek(fasthttp.HeaderOrigin)
		}
	} else {
		req.Token = headerToken(&ctx.Request.Header)
		req.Scope = args.Peek("scope")
		req.Resource = args.Peek("resource")
		req.Origin = ctx.Request.Header.Peek(fasthttp.HeaderOrigin)
	}
	if minIndex, ok := requestedMinIndex(args, &ctx.Request.Header); !ok {
		s.writeVerifyProblem(ctx, keyindex.CodeBadRequest, "min_index must be a non-negative integer")
		return
	} else if minIndex > 0 && !s.node.WaitApplied(minIndex, maxMinIndexWait) {
		s.writeVerifyAnswer(ctx, &keyindex.Decision{Code: keyindex.CodeStale})
		return
	}
	req.NowNs, req.MonoNs = clocks()
	if s.node.Removed() || (s.cfg.MaxStale > 0 && s.fresh.staleFor(req.NowNs, s.cfg.MaxStale)) {
		// Removed from the cluster, or cut off from the leader for too
		// long: a revocation may be missing here.
		s.writeVerifyAnswer(ctx, &keyindex.Decision{Code: keyindex.CodeStale})
		return
	}
	d := s.index.Verify(&req)
	s.writeVerifyAnswer(ctx, &d)
}

// tokenInQuery reports whether the query string carries what looks like a
// key: a parameter named like one (any case), or a value with the shape and
// checksum of a keyraft token under any name.
func tokenInQuery(args *fasthttp.Args) bool {
	if args.Len() == 0 {
		return false
	}
	for k, v := range args.All() {
		if _, err := keyindex.ParseToken(v); err == nil {
			return true
		}
		for _, name := range keyParamNames {
			if bytes.EqualFold(k, name) {
				return true
			}
		}
	}
	return false
}

var keyParamNames = [][]byte{[]byte("key"), []byte("api_key"), []byte("apikey"), []byte("api-key"),
	[]byte("x-api-key"), []byte("token"), []byte("access_token")}

// readVerifyBody fills req from {"key","scope","resource","origin"}; it
// returns a message when the body is not such an object.
func readVerifyBody(p *fastjson.Parser, body []byte, req *keyindex.VerifyRequest) string {
	v, err := p.ParseBytes(body)
	if err != nil {
		return "the body must be a JSON object"
	}
	obj, err := v.Object()
	if err != nil {
		return "the body must be a JSON object"
	}
	known := 0
	for _, f := range [...]struct {
		name string
		dst  *[]byte
	}{{"key", &req.Token}, {"scope", &req.Scope}, {"resource", &req.Resource}, {"origin", &req.Origin}} {
		m := obj.Get(f.name)
		if m == nil {
			continue
		}
		known++
		if m.Type() == fastjson.TypeNull {
			continue
		}
		b, err := m.StringBytes()
		if err != nil {
			return "key, scope, resource and origin must be strings"
		}
		*f.dst = b
	}
	if known != obj.Len() {
		return "unknown field: the body takes only key, scope, resource and origin"
	}
	return ""
}

// headerToken returns the key from X-API-Key, or else from Authorization: Bearer.
func headerToken(h *fasthttp.RequestHeader) []byte {
	if tok := h.Peek("X-Api-Key"); len(tok) > 0 {
		return tok
	}
	auth := h.Peek(fasthttp.HeaderAuthorization)
	if len(auth) > len(bearerPrefix) && bytes.EqualFold(auth[:len(bearerPrefix)], bearerPrefix) {
		return bytes.TrimSpace(auth[len(bearerPrefix):])
	}
	return nil
}

// requestedMinIndex reads min_index (query) or Keyraft-Min-Index (header).
func requestedMinIndex(args *fasthttp.Args, h *fasthttp.RequestHeader) (uint64, bool) {
	raw := args.Peek("min_index")
	if len(raw) == 0 {
		raw = h.Peek("Keyraft-Min-Index")
	}
	if len(raw) == 0 {
		return 0, true
	}
	n, err := fasthttp.ParseUint(raw)
	return uint64(n), err == nil
}

// writeVerifyAnswer writes the status, headers and body of a decision.
func (s *Server) writeVerifyAnswer(ctx *fasthttp.RequestCtx, d *keyindex.Decision) {
	s.metrics.verifications[d.Code].Add(1)
	resp := &ctx.Response
	resp.SetStatusCode(d.Code.HTTPStatus())
	resp.Header.SetContentTypeBytes(jsonType)
	switch d.Code {
	case keyindex.CodeValid:
		k := d.Key()
		// SetCanonical: the names are written canonical already, and Set
		// would normalize them again on every answer (a tenth of the
		// handler's time). The values are copied into the header.
		var id [64]byte
		resp.Header.SetCanonical(headerKeyID, k.AppendID(id[:0]))
		resp.Header.SetCanonical(headerWorkspaceID, unsafeBytes(k.WorkspaceID))
		resp.Header.SetCanonical(headerOwnerID, unsafeBytes(k.OwnerID))
		if d.Rotated {
			resp.Header.SetCanonical(headerKeyRotated, []byte("true"))
		}
		// Written into the response's own (pooled) body buffer: no allocation.
		resp.SwapBody(d.AppendValidBody(resp.SwapBody(nil)[:0]))
		appendRateLimit(resp, &d.RateLimit)
		resp.AppendBodyString("}")
		runtime.KeepAlive(d) // k's strings are in the index's memory, held by d
	case keyindex.CodeRateLimited:
		var num [20]byte
		resp.Header.SetBytesV(fasthttp.HeaderRetryAfter, strconv.AppendInt(num[:0], (d.RateLimit.RetryAfterMs+999)/1000, 10))
		body := failBodies[d.Code]
		resp.AppendBody(body[:len(body)-1])
		resp.AppendBodyString(`,"ratelimit":`)
		appendRateLimit(resp, &d.RateLimit)
		resp.AppendBodyString("}")
	default:
		resp.SetBodyRaw(failBodies[d.Code])
	}
}

var (
	headerKeyID       = []byte("Keyraft-Key-Id")
	headerWorkspaceID = []byte("Keyraft-Workspace-Id")
	headerOwnerID     = []byte("Keyraft-Owner-Id")
	headerKeyRotated  = []byte("Keyraft-Key-Rotated")
)

// unsafeBytes views s as bytes without copying, for fasthttp calls that
// take []byte and copy it; the result must never be written to.
func unsafeBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

func appendRateLimit(resp *fasthttp.Response, rl *keyindex.RateLimit) {
	var num [20]byte
	resp.AppendBodyString(`{"limit":`)
	resp.AppendBody(strconv.AppendInt(num[:0], int64(rl.Limit), 10))
	resp.AppendBodyString(`,"remaining":`)
	resp.AppendBody(strconv.AppendInt(num[:0], int64(rl.Remaining), 10))
	resp.AppendBodyString(`,"reset_ms":`)
	resp.AppendBody(strconv.AppendInt(num[:0], rl.ResetMs, 10))
	resp.AppendBodyString("}")
}

// writeVerifyProblem answers a request that never reached the decision.
func (s *Server) writeVerifyProblem(ctx *fasthttp.RequestCtx, code keyindex.Code, msg string) {
	s.metrics.verifications[code].Add(1)
	writeJSON(ctx, code.HTTPStatus(), struct {
		Valid   bool   `json:"valid"`
		Code    string `json:"code"`
		Message string `json:"message"`
	}{false, code.String(), msg})
}
