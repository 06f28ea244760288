package api

import (
	"crypto/rand"
	"errors"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/keyraft/keyraft/cluster"
	"github.com/keyraft/keyraft/fsm"
	"github.com/keyraft/keyraft/keyindex"
)

// keyFields are the members of a create or import body that describe a key.
type keyFields struct {
	Name             string
	WorkspaceID      string
	OwnerID          string
	Type             string
	Environment      string
	WorkspacePrefix  string
	Scopes           []string
	AllowedOrigins   []string
	AllowedResources []string
	RateLimitPerMin  int
	Metadata         map[string]string
	Active           bool
	ExpiresAt        time.Time
	fields           map[string]*field
}

func newKeyFields() *keyFields {
	k := &keyFields{Type: string(keyindex.TypeSecret), Environment: string(keyindex.EnvLive), Active: true}
	k.fields = map[string]*field{
		"name":               {target: &k.Name},
		"workspace_id":       {target: &k.WorkspaceID},
		"owner_id":           {target: &k.OwnerID, nullable: true},
		"type":               {target: &k.Type},
		"environment":        {target: &k.Environment},
		"scopes":             {target: &k.Scopes},
		"allowed_origins":    {target: &k.AllowedOrigins},
		"allowed_resources":  {target: &k.AllowedResources},
		"rate_limit_per_min": {target: &k.RateLimitPerMin},
		"metadata":           {target: &k.Metadata},
		"active":             {target: &k.Active},
		"expires_at":         {target: &k.ExpiresAt, nullable: true},
	}
	return k
}

// check validates the fields (prefix names them in details) and fills the
// defaults; the returned record has no id, token or times yet.
func (k *keyFields) check(c *checker, prefix string, caller *keyindex.Record) *keyindex.Record {
	t, env := keyindex.KeyType(k.Type), keyindex.Environment(k.Environment)
	if !t.Valid() {
		c.add(prefix+"type", "must be secret, publishable or admin")
	}
	if !env.Valid() {
		c.add(prefix+"environment", "must be live or test")
	}
	if !k.fields["name"].present {
		c.add(prefix+"name", "required")
	} else {
		c.name(prefix+"name", k.Name)
	}
	switch {
	case !k.fields["workspace_id"].present && caller.IsRoot():
		c.add(prefix+"workspace_id", "required when a root key creates keys")
	case !k.fields["workspace_id"].present:
		k.WorkspaceID = caller.WorkspaceID
	case k.WorkspaceID == keyindex.RootWorkspace:
		if t != keyindex.TypeAdmin {
			c.add(prefix+"workspace_id", `"*" is only for root admin keys`)
		}
	default:
		c.workspaceID(prefix+"workspace_id", k.WorkspaceID)
	}
	c.ownerID(prefix+"owner_id", k.OwnerID)
	c.scopes(prefix+"scopes", k.Scopes, t)
	c.origins(prefix+"allowed_origins", k.AllowedOrigins, t)
	c.resources(prefix+"allowed_resources", k.AllowedResources)
	c.rateLimit(prefix+"rate_limit_per_min", k.RateLimitPerMin)
	c.metadata(prefix+"metadata", k.Metadata)
	r := &keyindex.Record{
		WorkspaceID: k.WorkspaceID, OwnerID: k.OwnerID, Name: k.Name, Type: t, Environment: env,
		Scopes: nonNil(k.Scopes), AllowedOrigins: nonNil(k.AllowedOrigins), AllowedResources: nonNil(k.AllowedResources),
		RateLimitPerMin: k.RateLimitPerMin, Metadata: k.Metadata, Active: k.Active, CreatedBy: caller.ID,
	}
	if r.Metadata == nil {
		r.Metadata = map[string]string{}
	}
	if k.fields["expires_at"].present && !k.fields["expires_at"].null {
		e := k.ExpiresAt.UTC()
		r.ExpiresAt = &e
	}
	return r
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// authorizeTarget rejects writes into a workspace the caller does not own,
// and admin keys with more rights than the caller's.
func authorizeTarget(caller, r *keyindex.Record) *apiError {
	if !canSee(caller, r.WorkspaceID) {
		return newError(fasthttp.StatusForbidden, codeForbidden, "this admin key cannot create keys in workspace "+r.WorkspaceID)
	}
	if r.Type == keyindex.TypeAdmin && !grantsAll(caller, r.Scopes) {
		return newError(fasthttp.StatusForbidden, codeForbidden, "an admin key cannot grant scopes it does not hold")
	}
	return nil
}

// keyWithToken is a record plus its plaintext: the one answer that shows it.
type keyWithToken struct {
	*keyindex.Record
	Key string `json:"key"`
}

func (s *Server) handleCreate(ctx *fasthttp.RequestCtx) {
	caller, aerr := s.authenticate(ctx, keyindex.ScopeKeysWrite)
	if aerr != nil {
		writeError(ctx, aerr)
		return
	}
	k := newKeyFields()
	prefix := &field{target: &k.WorkspacePrefix}
	k.fields["workspace_prefix"] = prefix
	bad, aerr := decodeObject(ctx.PostBody(), "", k.fields)
	if aerr != nil {
		writeError(ctx, aerr)
		return
	}
	c := &checker{bad: bad}
	now := time.Now().UTC()
	rec := k.check(c, "", caller)
	if prefix.present && !keyindex.ValidWSPrefix(k.WorkspacePrefix) {
		c.add("workspace_prefix", "must be 1 to 12 characters of a-z and 0-9")
	}
	if rec.ExpiresAt != nil {
		c.futureTime("expires_at", *rec.ExpiresAt, now)
	}
	if len(c.bad) > 0 {
		writeError(ctx, validationError(c.details()))
		return
	}
	if aerr := authorizeTarget(caller, rec); aerr != nil {
		writeError(ctx, aerr)
		return
	}
	tok, err := keyindex.GenerateToken(rand.Reader, k.WorkspacePrefix, rec.Type, rec.Environment)
	if err != nil {
		writeError(ctx, internal(err))
		return
	}
	rec.ID, err = keyindex.NewID(now, rand.Reader)
	if err != nil {
		writeError(ctx, internal(err))
		return
	}
	rec.SetToken(tok)
	rec.CreatedAt, rec.UpdatedAt = now, now
	cmd := &fsm.Command{Op: fsm.OpCreate, Record: fsm.Store(rec), Audit: s.audit(ctx, caller, "key.create", rec.WorkspaceID, rec.ID, now)}
	res, idx, aerr := s.propose(cmd)
	if aerr != nil {
		writeError(ctx, aerr)
		return
	}
	m := s.writeMeta(ctx, idx)
	writeData(ctx, fasthttp.StatusCreated, keyWithToken{res.Record, tok.Plaintext}, m)
}

func (s *Server) handleGet(ctx *fasthttp.RequestCtx, id string) {
	caller, aerr := s.authenticate(ctx, keyindex.ScopeKeysRead)
	if aerr == nil {
		aerr = s.awaitMinIndex(ctx)
	}
	if aerr != nil {
		writeError(ctx, aerr)
		return
	}
	rec, aerr := s.visibleKey(caller, id)
	if aerr != nil {
		writeError(ctx, aerr)
		return
	}
	writeData(ctx, fasthttp.StatusOK, rec, newMeta(ctx))
}

// targetKey authenticates a write on the key with this id and finds the
// key; when it returns false it has written the error answer.
func (s *Server) targetKey(ctx *fasthttp.RequestCtx, id string) (caller, cur *keyindex.Record, ok bool) {
	caller, aerr := s.authenticate(ctx, keyindex.ScopeKeysWrite)
	if aerr == nil {
		cur, aerr = s.visibleKey(caller, id)
		if aerr != nil {
			// This node's state may trail the cluster's (a leader that has
			// not applied its whole log yet, or one that no longer leads):
			// a 404 from it would not be linearizable. Confirm leadership
			// and apply everything committed, then look again.
			if err := s.node.ConfirmLeadership(); err != nil {
				aerr = noLeader("leadership could not be confirmed; retry")
			} else {
				cur, aerr = s.visibleKey(caller, id)
			}
		}
	}
	if aerr == nil && cur.Type == keyindex.TypeAdmin && !grantsAll(caller, cur.Scopes) {
		// Rotating such a key would hand its caller a token with more
		// rights than its own; disabling or deleting it would let a
		// weaker key lock a stronger one out.
		aerr = newError(fasthttp.StatusForbidden, codeForbidden, "an admin key can change only admin keys whose scopes it holds all of")
	}
	if aerr != nil {
		writeError(ctx, aerr)
		return nil, nil, false
	}
	return caller, cur, true
}

// visibleKey returns the key with this id if the caller may see it; a key of
// another workspace is reported exactly like a missing one.
func (s *Server) visibleKey(caller *keyindex.Record, id string) (*keyindex.Record, *apiError) {
	rec := s.index.Get(id)
	if rec == nil || !canSee(caller, rec.WorkspaceID) {
		return nil, newError(fasthttp.StatusNotFound, codeNotFound, "no key with id "+strconv.Quote(id))
	}
	return rec, nil
}

func (s *Server) handleList(ctx *fasthttp.RequestCtx) {
	caller, aerr := s.authenticate(ctx, keyindex.ScopeKeysRead)
	if aerr == nil {
		aerr = s.awaitMinIndex(ctx)
	}
	if aerr != nil {
		writeError(ctx, aerr)
		return
	}
	args := ctx.QueryArgs()
	c := &checker{}
	q := keyindex.ListQuery{
		WorkspaceID: string(args.Peek("workspace_id")),
		OwnerID:     string(args.Peek("owner_id")),
		Type:        keyindex.KeyType(args.Peek("type")),
		Cursor:      string(args.Peek("cursor")),
		Limit:       100,
	}
	if q.Type != "" && !q.Type.Valid() {
		c.add("type", "must be secret, publishable or admin")
	}
	if a := string(args.Peek("active")); a != "" {
		v, err := strconv.ParseBool(a)
		if err != nil {
			c.add("active", "must be true or false")
		}
		q.Active = &v
	}
	if l := args.Peek("limit"); len(l) > 0 {
		n, err := strconv.Atoi(string(l))
		if err != nil || n < 1 || n > 1000 {
			c.add("limit", "must be an integer from 1 to 1000")
		}
		q.Limit = n
	}
	if !caller.IsRoot() && q.WorkspaceID == "" {
		q.WorkspaceID = caller.WorkspaceID
	}
	if q.Cursor != "" && keyindex.CheckCursor(q.Cursor, q.WorkspaceID) != nil {
		c.add("cursor", "is not a cursor of this listing")
	}
	if len(c.bad) > 0 {
		writeError(ctx, validationError(c.details()))
		return
	}
	if !caller.IsRoot() && q.WorkspaceID != caller.WorkspaceID {
		// Another workspace's keys are invisible: an empty page, for a
		// request checked above as that workspace's own listing would be.
		writeData(ctx, fasthttp.StatusOK, []*keyindex.Record{}, newMeta(ctx))
		return
	}
	page, next, err := s.index.List(q)
	if err != nil { // the cursor was checked above: List's own check agrees
		writeError(ctx, validationError([]FieldError{{"cursor", "is not a cursor of this listing"}}))
		return
	}
	if page == nil {
		page = []*keyindex.Record{}
	}
	m := newMeta(ctx)
	m.NextCursor = next
	writeData(ctx, fasthttp.StatusOK, page, m)
}

func (s *Server) handleUpdate(ctx *fasthttp.RequestCtx, id string) {
	caller, cur, ok := s.targetKey(ctx, id)
	if !ok {
		return
	}
	var (
		u                          fsm.Update
		name                       string
		scopes, origins, resources []string
		rateLimit                  int
		metadata                   map[string]string
		active                     bool
		expiresAt                  time.Time
	)
	fields := map[string]*field{
		"name":               {target: &name},
		"scopes":             {target: &scopes},
		"allowed_origins":    {target: &origins},
		"allowed_resources":  {target: &resources},
		"rate_limit_per_min": {target: &rateLimit},
		"metadata":           {target: &metadata},
		"active":             {target: &active},
		"expires_at":         {target: &expiresAt, nullable: true},
	}
	bad, aerr := decodeObject(ctx.PostBody(), "", fields)
	if aerr != nil {
		writeError(ctx, aerr)
		return
	}
	c := &checker{bad: bad}
	now := time.Now().UTC()
	if fields["name"].present {
		c.name("name", name)
		u.Name = &name
	}
	if fields["scopes"].present {
		scopes = nonNil(scopes)
		c.scopes("scopes", scopes, cur.Type)
		u.Scopes = &scopes
	}
	if fields["allowed_origins"].present {
		origins = nonNil(origins)
		c.origins("allowed_origins", origins, cur.Type)
		u.AllowedOrigins = &origins
	}
	if fields["allowed_resources"].present {
		resources = nonNil(resources)
		c.resources("allowed_resources", resources)
		u.AllowedResources = &resources
	}
	if fields["rate_limit_per_min"].present {
		c.rateLimit("rate_limit_per_min", rateLimit)
		u.RateLimitPerMin = &rateLimit
	}
	if fields["metadata"].present {
		if metadata == nil {
			metadata = map[string]string{}
		}
		c.metadata("metadata", metadata)
		u.Metadata = &metadata
	}
	if fields["active"].present {
		u.Active = &active
	}
	if f := fields["expires_at"]; f.present && f.null {
		u.ClearExpiry = true
	} else if f.present {
		e := expiresAt.UTC()
		c.futureTime("expires_at", e, now)
		u.ExpiresAt = &e
	}
	present := 0
	for _, f := range fields {
		if f.present {
			present++
		}
	}
	if present == 0 && len(c.bad) == 0 {
		c.add("body", "name at least one field to change")
	}
	if len(c.bad) > 0 {
		writeError(ctx, validationError(c.details()))
		return
	}
	if cur.Type == keyindex.TypeAdmin && u.Scopes != nil && !grantsAll(caller, *u.Scopes) {
		writeError(ctx, newError(fasthttp.StatusForbidden, codeForbidden, "an admin key cannot grant scopes it does not hold"))
		return
	}
	// keepOneRootKey checks the full root key too: one scan of the root
	// keys, not two, for a PATCH that disables and narrows at once.
	switch {
	case u.Active != nil && !*u.Active:
		aerr = s.keepOneRootKey(cur, "disabled")
	case u.ExpiresAt != nil || (u.Scopes != nil && !keyindex.HoldsAdminScopes(*u.Scopes)):
		aerr = s.keepOneFullRootKey(cur)
	}
	if aerr != nil {
		writeError(ctx, aerr)
		return
	}
	s.writeChange(ctx, &fsm.Command{Op: fsm.OpUpdate, ID: id, Time: now, Update: &u, KeepRoot: cur.IsRoot(),
		Audit: s.audit(ctx, caller, "key.update", cur.WorkspaceID, id, now)}, "")
}

func (s *Server) handleRotate(ctx *fasthttp.RequestCtx, id string) {
	caller, cur, ok := s.targetKey(ctx, id)
	if !ok {
		return
	}
	var grace int
	fields := map[string]*field{"grace_period_seconds": {target: &grace}}
	bad, aerr := decodeObject(ctx.PostBody(), "", fields)
	if aerr != nil {
		writeError(ctx, aerr)
		return
	}
	c := &checker{bad: bad}
	if grace < 0 || grace > maxGraceSeconds {
		c.add("grace_period_seconds", "must be 0 to 2592000 (30 days)")
	}
	if len(c.bad) > 0 {
		writeError(ctx, validationError(c.details()))
		return
	}
	// The new token keeps the key's workspace prefix, kind and environment.
	tok, err := keyindex.GenerateToken(rand.Reader, cur.WorkspacePrefix(), cur.Type, cur.Environment)
	if err != nil {
		writeError(ctx, internal(err))
		return
	}
	now := time.Now().UTC()
	rot := &fsm.Rotate{SHA256: tok.Hash, KeyPrefix: tok.Prefix, KeySuffix: tok.Suffix, Preview: tok.Preview}
	if grace > 0 {
		end := now.Add(time.Duration(grace) * time.Second)
		rot.PreviousExpiresAt = &end
	}
	s.writeChange(ctx, &fsm.Command{Op: fsm.OpRotate, ID: id, Time: now, Rotate: rot,
		Audit: s.audit(ctx, caller, "key.rotate", cur.WorkspaceID, id, now)}, tok.Plaintext)
}

func (s *Server) handleRevoke(ctx *fasthttp.RequestCtx, id string) {
	s.simpleWrite(ctx, id, fsm.OpRevoke, "key.revoke", "revoked")
}

func (s *Server) handleDelete(ctx *fasthttp.RequestCtx, id string) {
	s.simpleWrite(ctx, id, fsm.OpDelete, "key.delete", "deleted")
}

// simpleWrite runs revoke and delete: no body fields, a visible target.
func (s *Server) simpleWrite(ctx *fasthttp.RequestCtx, id string, op fsm.Op, action, verb string) {
	caller, cur, ok := s.targetKey(ctx, id)
	if !ok {
		return
	}
	bad, aerr := decodeObject(ctx.PostBody(), "", nil)
	if aerr == nil && len(bad) > 0 {
		aerr = validationError(bad)
	}
	if aerr == nil {
		aerr = s.keepOneRootKey(cur, verb)
	}
	if aerr != nil {
		writeError(ctx, aerr)
		return
	}
	now := time.Now().UTC()
	s.writeChange(ctx, &fsm.Command{Op: op, ID: id, Time: now, KeepRoot: cur.IsRoot(),
		Audit: s.audit(ctx, caller, action, cur.WorkspaceID, id, now)}, "")
}

// keepOneRootKey refuses to revoke, disable or delete the last working root
// key: nobody could administer the cluster afterwards.
// The command carries KeepRoot too, for two such writes racing.
func (s *Server) keepOneRootKey(target *keyindex.Record, verb string) *apiError {
	if s.fsm.LastActiveRoot(target.ID, time.Now()) {
		return newError(fasthttp.StatusConflict, codeConflict, "the last active root key cannot be "+verb+"; create another root key first")
	}
	return s.keepOneFullRootKey(target)
}

// keepOneFullRootKey refuses to revoke, disable or delete, narrow the
// scopes of, or set an expiry on the last root key that holds every admin
// scope: without one, no key could create another root key or manage the
// cluster again (a narrower root key cannot grant what it lacks). Unlike
// the last active root key (KeepRoot), Apply does not check it again, so
// two such changes racing on two root keys can both pass; logs written
// before this check replay as they applied.
func (s *Server) keepOneFullRootKey(target *keyindex.Record) *apiError {
	if s.fsm.LastFullRoot(target.ID, time.Now()) {
		return newError(fasthttp.StatusConflict, codeConflict, "the last root key holding every admin scope cannot be revoked, disabled or deleted, lose a scope or get an expiry; create another root key holding them first")
	}
	return nil
}

// writeChange proposes a change of one key and answers with the record
// (with the new plaintext after a rotation), or 204 after a delete.
func (s *Server) writeChange(ctx *fasthttp.RequestCtx, cmd *fsm.Command, plaintext string) {
	res, idx, aerr := s.propose(cmd)
	if aerr != nil {
		writeError(ctx, aerr)
		return
	}
	m := s.writeMeta(ctx, idx)
	switch {
	case cmd.Op == fsm.OpDelete:
		ctx.SetStatusCode(fasthttp.StatusNoContent) // meta went into the headers
	case plaintext != "":
		writeData(ctx, fasthttp.StatusOK, keyWithToken{res.Record, plaintext}, m)
	default:
		writeData(ctx, fasthttp.StatusOK, res.Record, m)
	}
}

// propose applies a command through Raft and maps its failures to answers.
func (s *Server) propose(cmd *fsm.Command) (*fsm.Result, uint64, *apiError) {
	res, idx, err := s.node.Apply(cmd)
	switch {
	case errors.Is(err, cluster.ErrNotLeader):
		return nil, 0, noLeader("no leader is available to accept writes; retry")
	case errors.Is(err, cluster.ErrOutcomeUnknown):
		return nil, 0, outcomeUnknown()
	case err != nil:
		return nil, 0, internal(err)
	case errors.Is(res.Err, fsm.ErrNotFound):
		return nil, 0, newError(fasthttp.StatusNotFound, codeNotFound, "no key with id "+strconv.Quote(cmd.ID))
	case errors.Is(res.Err, fsm.ErrConflict):
		return nil, 0, newError(fasthttp.StatusConflict, codeConflict, res.Err.Error())
	case res.Err != nil:
		return nil, 0, internal(res.Err)
	}
	return res, idx, nil
}

func (s *Server) audit(ctx *fasthttp.RequestCtx, caller *keyindex.Record, action, ws, target string, now time.Time) *fsm.AuditEntry {
	return &fsm.AuditEntry{Time: now, ActorKeyID: caller.ID, WorkspaceID: ws, Action: action, Target: target, RequestID: requestID(ctx)}
}

// adminMinIndex is the request's min_index, or the 422 an admin call
// answers when it is not a non-negative integer.
func adminMinIndex(ctx *fasthttp.RequestCtx) (uint64, *apiError) {
	idx, ok := requestedMinIndex(ctx.QueryArgs(), &ctx.Request.Header)
	if !ok {
		return 0, validationError([]FieldError{{"min_index", "must be a non-negative integer"}})
	}
	return idx, nil
}

// awaitMinIndex makes an admin read wait (up to 1 s) for min_index.
func (s *Server) awaitMinIndex(ctx *fasthttp.RequestCtx) *apiError {
	idx, aerr := adminMinIndex(ctx)
	if aerr != nil {
		return aerr
	}
	if idx > 0 && !s.node.WaitApplied(idx, maxMinIndexWait) {
		e := newError(fasthttp.StatusServiceUnavailable, codeStale, "this node has not applied index "+strconv.FormatUint(idx, 10)+" yet")
		e.RetryAfter = 1
		return e
	}
	return nil
}

func internal(err error) *apiError {
	return newError(fasthttp.StatusInternalServerError, codeInternal, err.Error())
}
