package api

import (
	"github.com/valyala/fasthttp"

	"github.com/keyraft/keyraft/keyindex"
)

// authenticate checks the admin key in Authorization: Bearer and that it
// carries scope. The key goes through the same verify decision as any other
// (revoked, disabled, expired, rate limited, rotation grace), then must be an
// admin key. Its scopes are read from the record that decision was made
// on: should the key change in between (a PATCH, a usage flush rewriting
// it), the decision is made again, so that no request is allowed by one
// version of a key and scoped by another.
func (s *Server) authenticate(ctx *fasthttp.RequestCtx, scope string) (*keyindex.Record, *apiError) {
	tok := headerToken(&ctx.Request.Header)
	if len(tok) == 0 {
		return nil, newError(fasthttp.StatusUnauthorized, codeUnauthorized, "send an admin key in Authorization: Bearer")
	}
	for range maxAuthAttempts {
		switch caller, aerr := s.authenticateOnce(tok); {
		case aerr != nil:
			return nil, aerr
		case caller == nil: // the key changed since the decision
		case !caller.HasScope(scope):
			return nil, newError(fasthttp.StatusForbidden, codeForbidden, "this admin key lacks the scope "+scope)
		default:
			return caller, nil
		}
	}
	return nil, newError(fasthttp.StatusConflict, codeConflict, "the admin key changed during the request; retry")
}

// maxAuthAttempts bounds the decisions made again for a key that keeps
// changing: each is counted as a use, and a key changes at most every few
// milliseconds (a write through Raft), so a second one nearly always does.
const maxAuthAttempts = 3

// authenticateOnce decides on tok and returns the admin key's record as
// the decision saw it, an error, or neither when the key changed since.
func (s *Server) authenticateOnce(tok []byte) (*keyindex.Record, *apiError) {
	req := keyindex.VerifyRequest{Token: tok}
	req.NowNs, req.MonoNs = clocks()
	d := s.index.Verify(&req)
	if d.Matched() && d.Key().Type != keyindex.TypeAdmin {
		// A secret or publishable key is never an admin credential, whatever
		// the verify decision says of it: a publishable key sent without an
		// Origin must not read as "admin key rejected: origin" (401).
		return nil, newError(fasthttp.StatusForbidden, codeForbidden, "only admin keys (rk_…) may call the admin API")
	}
	switch d.Code {
	case keyindex.CodeValid:
	case keyindex.CodeRateLimited:
		e := newError(fasthttp.StatusTooManyRequests, codeRateLimited, "this admin key's rate limit is exhausted")
		e.RetryAfter = int((d.RateLimit.RetryAfterMs + 999) / 1000)
		return nil, e
	default:
		return nil, newError(fasthttp.StatusUnauthorized, codeUnauthorized, "admin key rejected: "+d.Code.Message())
	}
	return s.index.MatchedRecord(&d), nil
}

// canSee reports whether caller may see keys of workspace ws. Keys of other
// workspaces answer 404, as if they did not exist.
func canSee(caller *keyindex.Record, ws string) bool {
	return caller.IsRoot() || caller.WorkspaceID == ws
}

// grantsAll reports whether caller holds every one of scopes: an admin key
// cannot create or widen an admin key beyond its own rights.
func grantsAll(caller *keyindex.Record, scopes []string) bool {
	for _, sc := range scopes {
		if !caller.HasScope(sc) {
			return false
		}
	}
	return true
}
