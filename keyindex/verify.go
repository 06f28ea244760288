package keyindex

// Code is the outcome of a verification (spec §3).
type Code uint8

const (
	CodeValid Code = iota
	CodeBadRequest
	CodeMalformedKey
	CodeKeyNotFound
	CodeKeyDisabled
	CodeKeyRevoked
	CodeKeyExpired
	CodeOriginNotAllowed
	CodeInsufficientScope
	CodeResourceNotAllowed
	CodeRateLimited
	CodeStale
)

var codeInfo = [...]struct {
	name    string
	status  int
	message string
}{
	CodeValid:              {"VALID", 200, "key is valid"},
	CodeBadRequest:         {"BAD_REQUEST", 400, "no key in the request, or the body is unreadable"},
	CodeMalformedKey:       {"MALFORMED_KEY", 401, "key has the wrong shape or checksum"},
	CodeKeyNotFound:        {"KEY_NOT_FOUND", 401, "key not found"},
	CodeKeyDisabled:        {"KEY_DISABLED", 401, "key is disabled"},
	CodeKeyRevoked:         {"KEY_REVOKED", 401, "key was revoked"},
	CodeKeyExpired:         {"KEY_EXPIRED", 401, "key has expired"},
	CodeOriginNotAllowed:   {"ORIGIN_NOT_ALLOWED", 403, "origin is missing or not allowed for this key"},
	CodeInsufficientScope:  {"INSUFFICIENT_SCOPE", 403, "key lacks the requested scope"},
	CodeResourceNotAllowed: {"RESOURCE_NOT_ALLOWED", 403, "key may not act on this resource"},
	CodeRateLimited:        {"RATE_LIMITED", 429, "rate limit exceeded"},
	CodeStale:              {"STALE", 503, "this node's state may be stale: it has not applied the requested index in time, or has not heard from a leader within --max-stale"},
}

// String is the code as it appears in answers.
func (c Code) String() string { return codeInfo[c].name }

// HTTPStatus is the status an answer with this code carries.
func (c Code) HTTPStatus() int { return codeInfo[c].status }

// Message is a short human-readable explanation.
func (c Code) Message() string { return codeInfo[c].message }

// VerifyRequest is one verification. The byte slices are only read during
// Verify, so they may point into a reused request buffer.
type VerifyRequest struct {
	Token    []byte
	Scope    []byte // optional
	Resource []byte // optional
	Origin   []byte // optional; required for publishable keys
	NowNs    int64  // the node's clock, Unix nanoseconds
}

// Decision is the answer to a VerifyRequest.
type Decision struct {
	Code Code
	// Record is set whenever the token matched a key, also for most rejections.
	Record *Record
	// Rotated is true when the token is the previous one of a rotated key, in grace.
	Rotated bool
	// RateLimit is filled for keys that have a limit.
	RateLimit RateLimit
	// ValidBody is the pre-encoded start of a VALID JSON answer; see encodeValidPrefix.
	ValidBody []byte
}

// MaxImportedTokenLen bounds tokens looked up as imported keys.
const MaxImportedTokenLen = 512

// Verify decides whether a token is good for the request. It allocates
// nothing and holds the index's read lock only for the lookup. A successful
// verification is counted for usage and against the key's rate limit.
func (ix *Index) Verify(req *VerifyRequest) Decision {
	if len(req.Token) == 0 {
		return Decision{Code: CodeBadRequest}
	}
	_, err := ParseToken(req.Token)
	if err != nil && (ix.imported.Load() == 0 || len(req.Token) > MaxImportedTokenLen) {
		return Decision{Code: CodeMalformedKey}
	}
	h := HashToken(req.Token)
	ix.mu.RLock()
	e := ix.byHash[h]
	var v *keyView
	if e != nil {
		v = e.view
	}
	ix.mu.RUnlock()
	if err != nil && (e == nil || !v.imported) {
		return Decision{Code: CodeMalformedKey}
	}
	if e == nil {
		return Decision{Code: CodeKeyNotFound}
	}
	d := Decision{Record: v.rec}
	if h != v.hash {
		// The previous token of a rotated key: good only until its grace ends.
		if req.NowNs >= v.prevExpiresNs {
			return Decision{Code: CodeKeyNotFound}
		}
		d.Rotated = true
	}
	switch {
	case v.revoked:
		d.Code = CodeKeyRevoked
	case !v.active:
		d.Code = CodeKeyDisabled
	case v.expiresNs != 0 && req.NowNs >= v.expiresNs:
		d.Code = CodeKeyExpired
	case !v.originOK(req.Origin):
		d.Code = CodeOriginNotAllowed
	case len(req.Scope) > 0 && !scopesAllow(v.scopes, req.Scope):
		d.Code = CodeInsufficientScope
	case len(req.Resource) > 0 && len(v.resources) > 0 && !containsBytes(v.resources, req.Resource):
		d.Code = CodeResourceNotAllowed
	}
	if d.Code != CodeValid {
		return d
	}
	if v.rateLimit > 0 {
		ok, rl := e.limiter.allow(req.NowNs, v.rateLimit)
		d.RateLimit = rl
		if !ok {
			d.Code = CodeRateLimited
			return d
		}
	}
	ix.recordUse(e, req.NowNs)
	d.ValidBody = v.validBody
	return d
}

// originOK: a publishable key needs an Origin from its list. Any other key
// with a list checks an Origin when the caller sends one; server-side callers
// send none and are not held to it.
func (v *keyView) originOK(origin []byte) bool {
	if v.publishable {
		return len(origin) > 0 && originAllowed(v.origins, origin)
	}
	if len(origin) == 0 || len(v.origins) == 0 {
		return true
	}
	return originAllowed(v.origins, origin)
}
