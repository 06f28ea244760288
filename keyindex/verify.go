package keyindex

import (
	"runtime"
	"unsafe"
)

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
	// MonoNs, when set, times rate-limit windows instead of NowNs: a
	// monotonic clock (nanoseconds since a fixed point of this process).
	// Limits are counted per node in memory, so nothing else reads these
	// times, and a wall clock stepped back minutes would wipe every key's
	// counts (a stored window "ahead" of now reads as stale).
	MonoNs int64
}

// Decision is the answer to a VerifyRequest.
type Decision struct {
	Code Code
	// Rotated is true when the token is the previous one of a rotated key, in grace.
	Rotated bool
	slot    uint32 // the matched key's slot, when mem is set (MatchedRecord)
	// RateLimit is filled for keys that have a limit.
	RateLimit RateLimit
	// loc and mem are set whenever the token matched a key, also for most
	// rejections: where the key's stored bytes are (a recordRef as packRef
	// packs it, copied from the slot), and the mapping of their chunk. The
	// bytes never change; the answer's fields are read from them when asked
	// for (rec). They are outside the Go heap, and the Decision holds their
	// mapping so that they stay mapped for as long as it is reachable
	// (arena). Two words rather than the bytes' slice and mapping: the
	// Decision's fields are nine integers, which Go's amd64 ABI returns
	// in its nine result registers, not through memory (bench/README.md,
	// session 14). A field more would put it back in memory.
	loc uint64
	mem *mapping
}

// Matched reports whether the token matched a key.
func (d *Decision) Matched() bool { return d.mem != nil }

// rec is the matched key's stored bytes.
func (d *Decision) rec() []byte {
	ref := unpackRef(d.loc)
	return d.mem.b[ref.off : ref.off+ref.n : ref.off+ref.n]
}

// MatchedRecord returns the record of the key d matched, as it was when d
// was decided: nil if d matched none, or if the key has changed, moved or
// gone since (then verify again). It allocates: for admin authentication,
// not for the verify answer. (d's stored bytes lack the token hash, which
// is in the key's slot. A slot's record and hash change only together, to
// bytes written anew, and d keeps its bytes' chunk mapped, so while the
// slot still points at d's bytes it holds the record d was decided on.)
func (ix *Index) MatchedRecord(d *Decision) *Record {
	if !d.Matched() {
		return nil
	}
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	st := ix.st
	if d.slot >= st.slots.next || st.slots.get(d.slot).isFree() || unsafe.SliceData(st.rec(d.slot)) != unsafe.SliceData(d.rec()) {
		return nil
	}
	return st.decode(d.slot)
}

// KeyRef is whose a matched key is: what an answer's headers say of it.
type KeyRef struct {
	WorkspaceID, OwnerID string
	Type                 KeyType
	id                   storedID // see AppendID
}

// Key describes the matched key without allocating: its strings point into
// the index's stored bytes, which never change but are valid only while d
// is reachable (runtime.KeepAlive(d) after their last use, where that is
// not a use of d).
func (d *Decision) Key() KeyRef {
	h := readHead(d.rec())
	return KeyRef{WorkspaceID: h.workspace, OwnerID: h.owner, Type: KeyType(h.typ), id: h.id}
}

// AppendID appends the key's id. (The index keeps most ids as their ULID's
// bytes, so there is no stored string of it to point at.) Like the strings,
// it reads the index's memory: valid while the Decision is reachable.
func (k *KeyRef) AppendID(dst []byte) []byte {
	var buf [keyIDLen]byte
	return append(dst, k.id.text(&buf)...)
}

// AppendValidBody appends the JSON answer of a VALID decision up to its
// ratelimit object: the caller writes that object and the closing brace.
func (d *Decision) AppendValidBody(dst []byte) []byte {
	v := readView(d.rec())
	dst = appendValidPrefix(dst, &v)
	runtime.KeepAlive(d) // d.mem maps the bytes v points into
	return dst
}

// MaxImportedTokenLen bounds tokens looked up as imported keys: a longer
// one is refused without hashing, so an imported key whose token is longer
// can never verify (docs/design-notes.md, "Import").
const MaxImportedTokenLen = 512

// Verify decides whether a token is good for the request. It allocates
// nothing. A successful verification is counted for usage and against the
// key's rate limit.
//
// The token is looked up by its hash before its form is checked: a stored
// hash is of a token keyraft generated (create, rotate) or parsed (the
// --root-key-file key), which is well formed, or of an imported key's,
// which may have any form. So a token found needs no parse, and the parse
// (a tenth of a decision at 1K keys) runs only to tell a malformed token
// from an unknown one. While no key is imported, a token of a length no
// generated token has is refused before hashing.
func (ix *Index) Verify(req *VerifyRequest) Decision {
	n := len(req.Token)
	if n == 0 {
		return Decision{Code: CodeBadRequest}
	}
	if n > MaxImportedTokenLen || (!tokenLenOK(n) && ix.imported.Load() == 0) {
		return Decision{Code: CodeMalformedKey}
	}
	h := HashToken(req.Token)
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	st := ix.st
	// A requested scope is matched against the common set's scopes before
	// the lookup, while the lookup's cache misses are still to come (it
	// depends only on the request): after them, a key of that set is then
	// decided by comparing its set's id (scopePrecheck).
	var pre scopePrecheck
	scopeOnly := len(req.Resource) == 0 && len(req.Origin) == 0
	if scopeOnly {
		pre = st.sets.precheck(req.Scope)
	}
	m, found := st.findHash(&h)
	if !found {
		if _, err := ParseToken(req.Token); err != nil {
			return Decision{Code: CodeMalformedKey}
		}
		return Decision{Code: CodeKeyNotFound}
	}
	sl := m.sl
	// Most verifications are of a plain key (active, no expiry, no rate
	// limit, not publishable) by its current token, asked for a scope of
	// the common set or nothing: decided by this one test. In a loop of
	// verifications at a million keys, what runs after the slot's cache
	// miss and depends on it delays the next verification: the general
	// checks below cost a third more time there, and so did building the
	// answer before this test (bench/README.md, sessions 13 and 14).
	if !m.previous && sl.plain() && scopeOnly && (len(req.Scope) == 0 || pre.decides(sl.lists) && pre.ok) {
		st.recordUse(m.n, sl, req.NowNs)
		return st.matched(m.n, sl)
	}
	d := st.matched(m.n, sl)
	rec := d.rec()
	if m.previous {
		// The previous token of a rotated key: good only until its grace ends.
		if req.NowNs >= readPrevExpires(rec) {
			return Decision{Code: CodeKeyNotFound}
		}
		d.Rotated = true
	}
	switch flags := sl.flags(); {
	case flags&flagRevokedAt != 0:
		d.Code = CodeKeyRevoked
	case flags&flagActive == 0:
		d.Code = CodeKeyDisabled
	case sl.expires != 0 && sl.expired(req.NowNs, rec):
		d.Code = CodeKeyExpired
	case len(req.Scope) > 0 || len(req.Resource) > 0 || len(req.Origin) > 0 || sl.publishable():
		d.Code = st.listsCode(sl, rec, req, pre)
	}
	if d.Code != CodeValid {
		return d
	}
	if limit := sl.rateLimit(); limit > 0 {
		at := req.MonoNs
		if at == 0 {
			at = req.NowNs
		}
		ok, rl := sl.limiter.allow(at, limit)
		d.RateLimit = rl
		if !ok {
			d.Code = CodeRateLimited
			return d
		}
	}
	st.recordUse(m.n, sl, req.NowNs)
	return d
}

// matched is the answer for the key in slot n, sl, before any check:
// VALID, carrying where its record is.
func (st *store) matched(n uint32, sl *slot) Decision {
	return Decision{slot: n, loc: sl.loc, mem: st.arena.mem[sl.ref().chunk]}
}

// listsCode checks the request against the lists of the key in sl, whose
// record is rec; pre is the request's scope matched against the common
// set, when the request asks for a scope only.
func (st *store) listsCode(sl *slot, rec []byte, req *VerifyRequest, pre scopePrecheck) Code {
	if sl.lists&listsInRecord != 0 {
		return listsCode(rec[sl.lists&^listsInRecord:], sl.publishable(), req)
	}
	if sl.publishable() || len(req.Origin) > 0 || len(req.Resource) > 0 {
		return listsCode(st.sets.block(sl.lists), sl.publishable(), req)
	}
	// Only a scope to check (listsCode would not read further either): the
	// precheck's answer for the common set, else the set's scopes, split
	// when it was interned.
	allowed := pre.ok
	if !pre.decides(sl.lists) {
		allowed = grantsAllow(st.sets.scopes(sl.lists), req.Scope)
	}
	if !allowed {
		return CodeInsufficientScope
	}
	return CodeValid
}

// listsCode checks the request against the key's scopes, origins and
// resources, encoded in that order from b on. It reads only as far as the
// request needs (a scope check never walks the origins), and answers in
// the order of spec §3: origin, then scope, then resource.
func listsCode(b []byte, publishable bool, req *VerifyRequest) Code {
	r := viewReader{b: b}
	scopes := r // the scopes are matched while read, once
	if publishable || len(req.Origin) > 0 || len(req.Resource) > 0 {
		r.list(1) // past the scopes
		if !originOK(r.list(1), publishable, req.Origin) {
			return CodeOriginNotAllowed
		}
	}
	if len(req.Scope) > 0 && !grantsScope(&scopes, req.Scope) {
		return CodeInsufficientScope
	}
	if len(req.Resource) > 0 { // r is past the origins: read above
		if resources := r.list(1); !resources.Empty() && !containsBytes(resources.All(), req.Resource) {
			return CodeResourceNotAllowed
		}
	}
	return CodeValid
}

// grantsScope reads the scope list at r and reports whether one of its
// scopes allows want.
func grantsScope(r *viewReader, want []byte) bool {
	for range int(r.uvarint()) - 1 { // the count is stored plus one, 0 for nil
		if scopeMatch(r.str(), want) {
			return true
		}
	}
	return false
}

// originOK: a publishable key needs an Origin from its list. Any other key
// with a list checks an Origin when the caller sends one; server-side callers
// send none and are not held to it.
func originOK(origins encodedList, publishable bool, origin []byte) bool {
	if publishable {
		return len(origin) > 0 && originAllowed(origins.All(), origin)
	}
	if len(origin) == 0 || origins.Empty() {
		return true
	}
	return originAllowed(origins.All(), origin)
}
