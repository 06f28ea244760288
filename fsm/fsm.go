package fsm

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/keyraft/keyraft/keyindex"
)

// Errors a command can fail with in Apply. They reach the API as 404/409.
var (
	ErrNotFound = keyindex.ErrNotFound
	ErrConflict = errors.New("conflict")
)

// Result is what Apply returns for a command (raft's ApplyFuture.Response()).
type Result struct {
	Record *keyindex.Record // the record after the change, where there is one
	Err    error
}

// FSM applies commands to a keyindex.Index. Apply runs on raft's FSM
// goroutine only; readers use Index() and the query methods concurrently.
type FSM struct {
	// stateMu is held by Apply and Restore while they change state, and by
	// Digest to capture a state and its applied index together.
	stateMu     sync.RWMutex
	index       *keyindex.Index
	audit       auditLog
	initialized atomic.Bool
	// removedNodes are the ids of nodes an operator removed (OpNodeRemoved).
	removedNodes map[string]bool

	// records and audits are set hashes of the state (see digest.go),
	// changed with it under stateMu.
	records, audits setHash

	applied  atomic.Uint64
	restores atomic.Uint64 // snapshots restored into this FSM
	// unsnapshotted counts the log applied since the last snapshot (bytes
	// of command data, and entries), so the node can snapshot by size.
	unsnapshotted logVolume
	waitMu        sync.Mutex
	advancedC     chan struct{} // closed and replaced whenever applied grows
}

// New returns an empty state machine.
func New() *FSM {
	return &FSM{index: keyindex.New(), removedNodes: map[string]bool{}, advancedC: make(chan struct{})}
}

// Index is the live key index: verify and admin reads use it directly.
func (f *FSM) Index() *keyindex.Index { return f.index }

// Initialized reports whether the cluster's first root key has been created.
func (f *FSM) Initialized() bool { return f.initialized.Load() }

// NodeRemoved reports whether an operator removed the node with this id.
func (f *FSM) NodeRemoved(id string) bool {
	f.stateMu.RLock()
	defer f.stateMu.RUnlock()
	return f.removedNodes[id]
}

// sortedRemovedNodes lists the removed node ids in order (under stateMu).
func (f *FSM) sortedRemovedNodes() []string {
	return slices.Sorted(maps.Keys(f.removedNodes))
}

// AppliedIndex is the Raft index of the last command applied.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// Advanced returns a channel closed the next time the applied index grows.
func (f *FSM) Advanced() <-chan struct{} {
	f.waitMu.Lock()
	defer f.waitMu.Unlock()
	return f.advancedC
}

// Audit returns a page of the audit log, newest first.
func (f *FSM) Audit(q AuditQuery) ([]AuditEntry, uint64) { return f.audit.page(q) }

func (f *FSM) setApplied(i uint64) {
	f.applied.Store(i)
	f.waitMu.Lock()
	close(f.advancedC)
	f.advancedC = make(chan struct{})
	f.waitMu.Unlock()
}

// Apply implements raft.FSM.
func (f *FSM) Apply(l *raft.Log) interface{} {
	f.stateMu.Lock()
	defer f.stateMu.Unlock()
	res := f.apply(l)
	f.setApplied(l.Index)
	return res
}

// ApplyBatch implements raft.BatchingFSM: one wake-up of readers per batch.
func (f *FSM) ApplyBatch(logs []*raft.Log) []interface{} {
	f.stateMu.Lock()
	defer f.stateMu.Unlock()
	out := make([]interface{}, len(logs))
	for i, l := range logs {
		out[i] = f.apply(l)
	}
	if len(logs) > 0 {
		f.setApplied(logs[len(logs)-1].Index)
	}
	return out
}

func (f *FSM) apply(l *raft.Log) *Result {
	if l.Type != raft.LogCommand {
		return &Result{}
	}
	f.unsnapshotted.add(len(l.Data))
	c, err := Decode(l.Data)
	if errors.Is(err, ErrNewerCommand) {
		// Nodes of the newer build apply it. Refusing it here, as the
		// builds before did, would leave this node a state without it (a
		// revocation missed) while its applied index says it is caught up.
		// So it stops: raft has not counted the entry applied, and once
		// upgraded the node applies it on restart.
		panic(fmt.Sprintf("keyraft: raft log entry %d holds a command a newer keyraft wrote (%v): upgrade this node; it stops rather than skip the entry and diverge from the cluster", l.Index, err))
	}
	if err != nil {
		// A command no build reads (malformed): every node refuses it the
		// same way.
		return &Result{Err: err}
	}
	res := f.applyCommand(c)
	if res.Err == nil && c.Audit != nil {
		e := *c.Audit
		e.Seq = l.Index
		f.audits.add(auditHash(&e))
		if evicted, ok := f.audit.add(e); ok {
			f.audits.sub(auditHash(&evicted))
		}
	}
	return res
}

func (f *FSM) applyCommand(c *Command) *Result {
	ix := f.index
	if c.KeepRoot && c.takesAwayKey() && f.LastActiveRoot(c.ID, c.Time) {
		return &Result{Err: fmt.Errorf("%w: the last active root key cannot be revoked, disabled or deleted", ErrConflict)}
	}
	switch c.Op {
	case OpCreate:
		r, err := c.Record.record()
		if err != nil {
			return &Result{Err: err}
		}
		if err := ix.Insert(r); err != nil {
			return &Result{Err: conflict(err)}
		}
		f.records.add(recordHash(r))
		if c.Bootstrap {
			f.initialized.Store(true)
		}
		return &Result{Record: r}
	case OpImport:
		recs := make([]*keyindex.Record, len(c.Records))
		for i, s := range c.Records {
			r, err := s.record()
			if err != nil {
				return &Result{Err: err}
			}
			recs[i] = r
		}
		if err := ix.InsertAll(recs); err != nil {
			return &Result{Err: conflict(err)}
		}
		for _, r := range recs {
			f.records.add(recordHash(r))
		}
		return &Result{}
	case OpUpdate:
		return f.change(c.ID, func(r *keyindex.Record) error { return applyUpdate(r, c.Update, c.Time) })
	case OpRotate:
		return f.change(c.ID, func(r *keyindex.Record) error { return applyRotate(r, c.Rotate, c.Time) })
	case OpRevoke:
		return f.change(c.ID, func(r *keyindex.Record) error {
			if r.RevokedAt != nil {
				return fmt.Errorf("%w: key is already revoked", ErrConflict)
			}
			t := c.Time
			r.RevokedAt, r.Active, r.UpdatedAt = &t, false, t
			return nil
		})
	case OpDelete:
		cur := ix.Get(c.ID)
		if err := ix.Delete(c.ID); err != nil {
			return &Result{Err: err}
		}
		f.records.sub(recordHash(cur))
		return &Result{}
	case OpUsage:
		for _, u := range c.Usage {
			// Keys deleted since the node counted them are skipped.
			f.index.AddUsage(u.ID, u.Count, u.LastUsedAt, func(before, after []byte) {
				f.records.sub(encodedRecordHash(before))
				f.records.add(encodedRecordHash(after))
			})
		}
		return &Result{}
	case OpRestored:
		return &Result{}
	case OpNodeRemoved:
		f.removedNodes[c.ID] = true
		return &Result{}
	case OpPurgeRotations:
		for _, id := range c.IDs {
			f.change(id, func(r *keyindex.Record) error {
				// Re-checked here: the key may have been rotated again since
				// the leader listed it.
				if r.Rotation == nil || c.Time.Before(r.Rotation.PreviousExpiresAt) {
					return errUnchanged
				}
				r.Rotation = nil
				return nil
			})
		}
		return &Result{}
	}
	return &Result{Err: fmt.Errorf("unknown command %q", c.Op)}
}

var errUnchanged = errors.New("unchanged")

// change applies fn to a copy of the record with this id and stores it.
func (f *FSM) change(id string, fn func(*keyindex.Record) error) *Result {
	cur := f.index.Get(id)
	if cur == nil {
		return &Result{Err: ErrNotFound}
	}
	next := cur.Clone()
	if err := fn(next); err != nil {
		if err == errUnchanged {
			return &Result{Record: cur}
		}
		return &Result{Err: err}
	}
	if err := f.index.Replace(next); err != nil {
		return &Result{Err: conflict(err)}
	}
	f.records.sub(recordHash(cur))
	f.records.add(recordHash(next))
	return &Result{Record: next}
}

// takesAwayKey reports whether c leaves its key unable to authenticate.
func (c *Command) takesAwayKey() bool {
	switch c.Op {
	case OpRevoke, OpDelete:
		return true
	case OpUpdate:
		return c.Update != nil && c.Update.Active != nil && !*c.Update.Active
	}
	return false
}

// LastActiveRoot reports whether key id is a root key that works at time
// at and no other root key does: active, not revoked, not expired.
func (f *FSM) LastActiveRoot(id string, at time.Time) bool { return f.lastRoot(id, at, false) }

// LastFullRoot is LastActiveRoot counting only root keys that hold every
// admin scope.
func (f *FSM) LastFullRoot(id string, at time.Time) bool { return f.lastRoot(id, at, true) }

func (f *FSM) lastRoot(id string, at time.Time, full bool) bool {
	works := func(r *keyindex.Record) bool {
		return r != nil && r.IsRoot() && r.Active && r.RevokedAt == nil && (r.ExpiresAt == nil || at.Before(*r.ExpiresAt)) &&
			(!full || keyindex.HoldsAdminScopes(r.Scopes))
	}
	if !works(f.index.Get(id)) {
		return false
	}
	active := true
	q := keyindex.ListQuery{WorkspaceID: keyindex.RootWorkspace, Type: keyindex.TypeAdmin, Active: &active, Limit: 100}
	for {
		page, next, _ := f.index.List(q)
		for _, r := range page {
			if r.ID != id && works(r) {
				return false
			}
		}
		if next == "" {
			return true
		}
		q.Cursor = next
	}
}

func conflict(err error) error {
	if err == nil || errors.Is(err, ErrNotFound) {
		return err
	}
	return fmt.Errorf("%w: %v", ErrConflict, err)
}

func applyUpdate(r *keyindex.Record, u *Update, at time.Time) error {
	if u == nil {
		return errors.New("update command without changes")
	}
	if r.RevokedAt != nil {
		return fmt.Errorf("%w: a revoked key cannot be changed", ErrConflict)
	}
	if u.Name != nil {
		r.Name = *u.Name
	}
	if u.Scopes != nil {
		r.Scopes = *u.Scopes
	}
	if u.AllowedOrigins != nil {
		r.AllowedOrigins = *u.AllowedOrigins
	}
	if u.AllowedResources != nil {
		r.AllowedResources = *u.AllowedResources
	}
	if u.RateLimitPerMin != nil {
		r.RateLimitPerMin = *u.RateLimitPerMin
	}
	if u.Metadata != nil {
		r.Metadata = *u.Metadata
	}
	if u.Active != nil {
		r.Active = *u.Active
	}
	if u.ClearExpiry {
		r.ExpiresAt = nil
	} else if u.ExpiresAt != nil {
		t := *u.ExpiresAt
		r.ExpiresAt = &t
	}
	r.UpdatedAt = at
	return nil
}

func applyRotate(r *keyindex.Record, rot *Rotate, at time.Time) error {
	if rot == nil {
		return errors.New("rotate command without a new hash")
	}
	if r.RevokedAt != nil {
		return fmt.Errorf("%w: a revoked key cannot be rotated", ErrConflict)
	}
	// Only the token being replaced gets a grace period; a token that was
	// already in grace from an earlier rotation stops working now.
	r.Rotation = nil
	if rot.PreviousExpiresAt != nil {
		r.Rotation = &keyindex.Rotation{PreviousExpiresAt: *rot.PreviousExpiresAt, PreviousHash: r.Hash}
	}
	r.Hash, r.KeyPrefix, r.KeySuffix, r.Preview = rot.SHA256, rot.KeyPrefix, rot.KeySuffix, rot.Preview
	r.UpdatedAt = at
	return nil
}

// Digest returns the applied index and a digest of the replicated state at
// that index (keys with their hashes, audit log, initialization): nodes with
// equal states have equal digests, and a difference anywhere changes it. It
// is kept current by Apply, so asking costs nothing.
func (f *FSM) Digest() (uint64, string) {
	f.stateMu.RLock()
	defer f.stateMu.RUnlock()
	h := sha256.New()
	h.Write(f.records.bytes())
	h.Write(f.audits.bytes())
	if f.initialized.Load() {
		h.Write([]byte{1})
	}
	for _, id := range f.sortedRemovedNodes() {
		h.Write([]byte("\x00removed\x00" + id))
	}
	return f.applied.Load(), hex.EncodeToString(h.Sum(nil))
}

// Snapshot implements raft.FSM. It captures a point-in-time view cheaply
// (the index is copy-on-write); Persist streams it while Apply goes on.
//
// The log applied since the last snapshot starts counting anew here, not in
// a backup (which truncates no log), and is counted back should the
// snapshot not be persisted: raft then keeps the log, and the next snapshot by size
// (cluster/logsize.go) must not wait for another threshold's worth.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	// raft calls Snapshot between applies: everything applied so far is in it.
	s := f.capture()
	bytes, entries := f.unsnapshotted.take()
	s.notPersisted = func() { f.unsnapshotted.addBack(bytes, entries) }
	return s, nil
}

func (f *FSM) capture() *snapshot {
	applied := f.applied.Load()
	return &snapshot{
		applied: applied,
		meta: snapshotMeta{
			AppliedIndex: applied,
			Initialized:  f.initialized.Load(),
			RemovedNodes: f.sortedRemovedNodes(),
			Audit:        f.audit.all(),
		},
		records: f.index.Snapshot(),
	}
}

// Restore implements raft.FSM. A snapshot that is truncated, corrupted or
// from a newer version is refused and the current state is kept.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	res, err := readSnapshot(rc)
	if err != nil {
		return err
	}
	meta := res.meta
	f.stateMu.Lock()
	defer f.stateMu.Unlock()
	f.index.Install(res.keys)
	f.audit.reset(meta.Audit)
	f.records, f.audits = res.records, setHash{}
	for i := range meta.Audit {
		f.audits.add(auditHash(&meta.Audit[i]))
	}
	f.initialized.Store(meta.Initialized)
	f.removedNodes = map[string]bool{}
	for _, id := range meta.RemovedNodes {
		f.removedNodes[id] = true
	}
	f.unsnapshotted.reset()
	// The snapshot's own index, even when it is below what this node had
	// applied (a backup an operator restores): this state has applied
	// nothing after it, and a node that got the backup but not the
	// cluster's later entries (a restore whose leader lost its quorum) must
	// not count itself caught up with them. The OpRestored entry after a
	// restore moves every node holding it past the index it replaced.
	f.setApplied(meta.AppliedIndex)
	f.restores.Add(1)
	return nil
}

// Restores counts the snapshots restored into this FSM (raft's installs
// and restores, and the one a node starts from).
func (f *FSM) Restores() uint64 { return f.restores.Load() }

// Unsnapshotted is how much log (bytes of command data, and entries) was
// applied since the last snapshot or restore.
func (f *FSM) Unsnapshotted() (bytes, entries uint64) { return f.unsnapshotted.load() }

// logVolume is a running count of applied log entries and their bytes.
type logVolume struct{ bytes, entries atomic.Uint64 }

func (v *logVolume) add(n int) {
	v.bytes.Add(uint64(n))
	v.entries.Add(1)
}

func (v *logVolume) reset() {
	v.bytes.Store(0)
	v.entries.Store(0)
}

// take resets the volume and returns what it was.
func (v *logVolume) take() (bytes, entries uint64) { return v.bytes.Swap(0), v.entries.Swap(0) }

func (v *logVolume) addBack(bytes, entries uint64) {
	v.bytes.Add(bytes)
	v.entries.Add(entries)
}

func (v *logVolume) load() (bytes, entries uint64) { return v.bytes.Load(), v.entries.Load() }
