package api

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/keyraft/keyraft/fsm"
	"github.com/keyraft/keyraft/keyindex"
)

// maxImport is the most keys one import call may carry.
const maxImport = 10_000

// handleImport loads existing keys by their SHA-256, for migrations from
// another key store. All of them land in one command: all or none.
func (s *Server) handleImport(ctx *fasthttp.RequestCtx) {
	caller, aerr := s.authenticate(ctx, keyindex.ScopeKeysWrite)
	if aerr != nil {
		writeError(ctx, aerr)
		return
	}
	var items []json.RawMessage
	bad, aerr := decodeObject(ctx.PostBody(), "", map[string]*field{"keys": {target: &items}})
	if aerr != nil {
		writeError(ctx, aerr)
		return
	}
	c := &checker{bad: bad}
	switch {
	case len(items) == 0:
		c.add("keys", "required: a non-empty array of keys")
	case len(items) > maxImport:
		c.add("keys", fmt.Sprintf("at most %d keys per call", maxImport))
	}
	// The items are checked even when other members are bad (unknown
	// ones), so that one answer names every bad field.
	for _, b := range c.bad {
		if b.Field == "keys" {
			writeError(ctx, validationError(c.details()))
			return
		}
	}
	now := time.Now().UTC()
	recs := make([]*fsm.StoredRecord, 0, len(items))
	seen := make(map[keyindex.Hash]int, len(items))
	for i, raw := range items {
		rec := s.importedRecord(c, fmt.Sprintf("keys[%d].", i), raw, caller, now)
		if rec == nil {
			continue
		}
		if j, dup := seen[rec.Hash]; dup {
			c.add(fmt.Sprintf("keys[%d].sha256", i), fmt.Sprintf("same hash as keys[%d]", j))
		}
		seen[rec.Hash] = i
		recs = append(recs, fsm.Store(rec))
	}
	if len(c.bad) > 0 {
		writeError(ctx, validationError(c.details()))
		return
	}
	var conflicts []FieldError
	for i, r := range recs {
		if aerr := authorizeTarget(caller, r.Record); aerr != nil {
			writeError(ctx, aerr)
			return
		}
		if s.index.HashInUse(r.Hash) {
			conflicts = append(conflicts, FieldError{fmt.Sprintf("keys[%d].sha256", i), "a key with this hash exists"})
		}
	}
	if len(conflicts) > 0 {
		e := newError(fasthttp.StatusConflict, codeConflict, "some keys exist already; nothing was imported")
		e.Details = conflicts
		writeError(ctx, e)
		return
	}
	cmd := &fsm.Command{Op: fsm.OpImport, Records: recs,
		Audit: s.audit(ctx, caller, "key.import", importWorkspace(recs), strconv.Itoa(len(recs))+" keys", now)}
	_, idx, aerr := s.propose(cmd)
	if aerr != nil {
		writeError(ctx, aerr)
		return
	}
	ids := make([]string, len(recs))
	for i, r := range recs {
		ids[i] = r.ID
	}
	m := s.writeMeta(ctx, idx)
	writeData(ctx, fasthttp.StatusCreated, map[string]any{"imported": len(recs), "ids": ids}, m)
}

// importWorkspace names the workspace of an import for its audit entry.
func importWorkspace(recs []*fsm.StoredRecord) string {
	ws := recs[0].WorkspaceID
	for _, r := range recs[1:] {
		if r.WorkspaceID != ws {
			return keyindex.RootWorkspace
		}
	}
	return ws
}

// importedRecord validates one import item; nil when it is unusable.
func (s *Server) importedRecord(c *checker, prefix string, raw json.RawMessage, caller *keyindex.Record, now time.Time) *keyindex.Record {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		c.add(prefix[:len(prefix)-1], "must be an object")
		return nil
	}
	k := newKeyFields()
	var sha, keyPrefix, keySuffix string
	var createdAt time.Time
	k.fields["sha256"] = &field{target: &sha}
	k.fields["key_prefix"] = &field{target: &keyPrefix}
	k.fields["key_suffix"] = &field{target: &keySuffix}
	k.fields["created_at"] = &field{target: &createdAt}
	for _, e := range decodeMembers(obj, prefix, k.fields) {
		c.add(e.Field, e.Issue)
	}
	rec := k.check(c, prefix, caller)
	var h keyindex.Hash
	if !hexHashRE.MatchString(sha) || h.UnmarshalText([]byte(sha)) != nil {
		c.add(prefix+"sha256", "required: SHA-256 of the token as 64 lowercase hex characters")
	}
	if len(keyPrefix) > 32 {
		c.add(prefix+"key_prefix", "at most 32 characters")
	}
	if len(keySuffix) > 8 {
		c.add(prefix+"key_suffix", "at most 8 characters")
	}
	if createdAt.IsZero() {
		createdAt = now
	}
	id, err := keyindex.NewID(createdAt, rand.Reader)
	if err != nil {
		c.add(prefix+"created_at", "cannot be used as an id time")
		return nil
	}
	rec.ID, rec.Hash, rec.Imported = id, h, true
	rec.KeyPrefix, rec.KeySuffix = keyPrefix, keySuffix
	if keySuffix != "" {
		rec.Preview = "…" + keySuffix
	}
	rec.CreatedAt, rec.UpdatedAt = createdAt.UTC(), now
	return rec
}

func (s *Server) handleAudit(ctx *fasthttp.RequestCtx) {
	caller, aerr := s.authenticate(ctx, keyindex.ScopeAuditRead)
	if aerr == nil {
		aerr = s.awaitMinIndex(ctx)
	}
	if aerr != nil {
		writeError(ctx, aerr)
		return
	}
	args := ctx.QueryArgs()
	c := &checker{}
	q := fsm.AuditQuery{Limit: 100}
	if !caller.IsRoot() {
		q.WorkspaceID = caller.WorkspaceID
	}
	if l := args.Peek("limit"); len(l) > 0 {
		n, err := strconv.Atoi(string(l))
		if err != nil || n < 1 || n > 1000 {
			c.add("limit", "must be an integer from 1 to 1000")
		}
		q.Limit = n
	}
	if cur := args.Peek("cursor"); len(cur) > 0 {
		n, err := strconv.ParseUint(string(cur), 10, 64)
		if err != nil || n == 0 {
			c.add("cursor", "is not a cursor of this listing")
		}
		q.Before = n
	}
	if len(c.bad) > 0 {
		writeError(ctx, validationError(c.details()))
		return
	}
	entries, next := s.fsm.Audit(q)
	m := newMeta(ctx)
	if next != 0 {
		m.NextCursor = strconv.FormatUint(next, 10)
	}
	writeData(ctx, fasthttp.StatusOK, entries, m)
}
