package keyindex

import (
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/google/btree"
)

// Index holds every key in memory: by token hash (the current one, and a
// rotated key's previous one during its grace period), by id, and ordered by
// (workspace, id) for listing. It is safe for one writer and many readers;
// the writer is the FSM, readers are verify and admin reads.
type Index struct {
	mu      sync.RWMutex
	byHash  map[Hash]*entry
	byID    map[string]*entry
	ordered *btree.BTreeG[*Record]
	// rotating holds the entries that still have a previous hash, so purging
	// expired ones does not scan every key.
	rotating map[string]*entry
	// imported counts imported keys: while there are none, a token that
	// fails the checksum is refused without a lookup.
	imported atomic.Int64

	usageMu sync.Mutex
	used    []*entry // entries verified since the last DrainUsage
}

// entry is the index's slot for one key id. The view is replaced on every
// change; the counters live as long as the key, on this node only.
type entry struct {
	view    *keyView
	limiter rateLimiter
	uses    atomic.Int64
	lastNs  atomic.Int64
	dirty   atomic.Bool
}

// keyView is an immutable record plus what the hot path reads of it, laid
// out flat so a verification touches this one object, not the record and
// its fields scattered over the heap.
type keyView struct {
	hash          Hash
	expiresNs     int64 // 0 = never
	prevExpiresNs int64 // end of the previous token's grace
	rateLimit     int
	revoked       bool
	active        bool
	publishable   bool
	imported      bool
	scopes        []string
	origins       []string
	resources     []string
	validBody     []byte
	rec           *Record
}

func newView(r *Record) *keyView {
	v := &keyView{
		hash: r.Hash, expiresNs: unixNanoOrZero(r.ExpiresAt), rateLimit: r.RateLimitPerMin,
		revoked: r.RevokedAt != nil, active: r.Active, publishable: r.Type == TypePublishable, imported: r.Imported,
		scopes: r.Scopes, origins: r.AllowedOrigins, resources: r.AllowedResources,
		validBody: encodeValidPrefix(r), rec: r,
	}
	if r.Rotation != nil {
		v.prevExpiresNs = unixNanoOrZero(&r.Rotation.PreviousExpiresAt)
	}
	return v
}

func orderLess(a, b *Record) bool {
	if a.WorkspaceID != b.WorkspaceID {
		return a.WorkspaceID < b.WorkspaceID
	}
	return a.ID < b.ID
}

// Errors returned by index mutations. The FSM turns them into API errors.
var (
	ErrNotFound  = errors.New("key not found")
	ErrIDExists  = errors.New("a key with this id exists")
	ErrHashInUse = errors.New("a key with this token hash exists")
)

// New returns an empty index.
func New() *Index {
	return &Index{
		byHash:   make(map[Hash]*entry),
		byID:     make(map[string]*entry),
		ordered:  btree.NewG(32, orderLess),
		rotating: make(map[string]*entry),
	}
}

// Len is the number of keys.
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return len(ix.byID)
}

// Get returns the record with this id, or nil. The record must not be changed.
func (ix *Index) Get(id string) *Record {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if e := ix.byID[id]; e != nil {
		return e.view.rec
	}
	return nil
}

// GetByHash returns the record whose current token has this hash, or nil.
// A rotated key's previous token does not count: admin authentication uses
// this and old admin tokens stop working at rotation.
func (ix *Index) GetByHash(h Hash) *Record {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if e := ix.byHash[h]; e != nil && e.view.rec.Hash == h {
		return e.view.rec
	}
	return nil
}

// HashInUse reports whether any key, current or in rotation grace, has this hash.
func (ix *Index) HashInUse(h Hash) bool {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	_, ok := ix.byHash[h]
	return ok
}

// Insert adds a new key.
func (ix *Index) Insert(r *Record) error {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if _, ok := ix.byID[r.ID]; ok {
		return ErrIDExists
	}
	if err := ix.hashesFree(r, nil); err != nil {
		return err
	}
	ix.link(&entry{}, r)
	return nil
}

// InsertAll adds many keys atomically: all of them or, on error, none.
// Each record is checked against the index as it stands, earlier records of
// recs included, and linked at once; on error the ones linked are unlinked
// again (under the lock, so no reader sees them).
func (ix *Index) InsertAll(recs []*Record) error {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for i, r := range recs {
		var err error
		if _, dup := ix.byID[r.ID]; dup {
			err = ErrIDExists
		} else {
			err = ix.hashesFree(r, nil)
		}
		if err != nil {
			for _, done := range recs[:i] {
				ix.unlink(ix.byID[done.ID])
				delete(ix.byID, done.ID)
			}
			return err
		}
		ix.link(&entry{}, r)
	}
	return nil
}

// Replace swaps the record of an existing key for r (same id and workspace).
func (ix *Index) Replace(r *Record) error {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	e := ix.byID[r.ID]
	if e == nil {
		return ErrNotFound
	}
	if err := ix.hashesFree(r, e); err != nil {
		return err
	}
	ix.unlink(e)
	ix.link(e, r)
	return nil
}

// Delete removes a key and every hash of it.
func (ix *Index) Delete(id string) error {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	e := ix.byID[id]
	if e == nil {
		return ErrNotFound
	}
	ix.unlink(e)
	delete(ix.byID, id)
	return nil
}

// ReplaceAll drops every key and loads recs instead (snapshot restore). On
// error the index is unchanged.
func (ix *Index) ReplaceAll(recs []*Record) error {
	fresh := New()
	// Sized for recs at once: a restore loads a million keys.
	fresh.byHash, fresh.byID = make(map[Hash]*entry, len(recs)), make(map[string]*entry, len(recs))
	if err := fresh.InsertAll(recs); err != nil {
		return err
	}
	ix.mu.Lock()
	ix.byHash, ix.byID, ix.ordered, ix.rotating = fresh.byHash, fresh.byID, fresh.ordered, fresh.rotating
	ix.imported.Store(fresh.imported.Load())
	ix.mu.Unlock()
	ix.usageMu.Lock()
	ix.used = nil
	ix.usageMu.Unlock()
	return nil
}

func hashesOf(r *Record) []Hash {
	if r.Rotation != nil {
		return []Hash{r.Hash, r.Rotation.PreviousHash}
	}
	return []Hash{r.Hash}
}

// hashesFree checks that r's hashes belong to no key other than self, and
// that a rotated key's previous token is not its current one: such a record
// would be accepted one at a time but refused by a batch (a snapshot
// restore), so no path accepts it.
func (ix *Index) hashesFree(r *Record, self *entry) error {
	if r.Rotation != nil && r.Rotation.PreviousHash == r.Hash {
		return ErrHashInUse
	}
	for _, h := range hashesOf(r) {
		if other, ok := ix.byHash[h]; ok && other != self {
			return ErrHashInUse
		}
	}
	return nil
}

func (ix *Index) link(e *entry, r *Record) {
	e.view = newView(r)
	ix.byID[r.ID] = e
	for _, h := range hashesOf(r) {
		ix.byHash[h] = e
	}
	if r.Rotation != nil {
		ix.rotating[r.ID] = e
	}
	if r.Imported {
		ix.imported.Add(1)
	}
	ix.ordered.ReplaceOrInsert(r)
}

func (ix *Index) unlink(e *entry) {
	r := e.view.rec
	for _, h := range hashesOf(r) {
		delete(ix.byHash, h)
	}
	delete(ix.rotating, r.ID)
	if r.Imported {
		ix.imported.Add(-1)
	}
	ix.ordered.Delete(r)
}

// ExpiredRotations lists the ids of keys whose previous token's grace period
// has ended at nowNs. The leader turns them into a purge command.
func (ix *Index) ExpiredRotations(nowNs int64) []string {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var ids []string
	for id, e := range ix.rotating {
		if nowNs >= e.view.prevExpiresNs {
			ids = append(ids, id)
		}
	}
	return ids
}

// Snapshot returns a point-in-time, ordered view of every record that stays
// valid while the index keeps changing (the btree is copy-on-write).
func (ix *Index) Snapshot() *Records {
	ix.mu.Lock() // Clone mutates copy-on-write bookkeeping in both trees.
	defer ix.mu.Unlock()
	return &Records{tree: ix.ordered.Clone()}
}

// Records is an immutable ordered set of records from Snapshot.
type Records struct{ tree *btree.BTreeG[*Record] }

// Len is the number of records.
func (s *Records) Len() int { return s.tree.Len() }

// Each calls fn for every record in (workspace, id) order until fn returns false.
func (s *Records) Each(fn func(*Record) bool) { s.tree.Ascend(fn) }

// ListQuery selects a page of records. Empty fields do not filter.
type ListQuery struct {
	WorkspaceID string // "" = every workspace (root keys only)
	OwnerID     string
	Type        KeyType
	Active      *bool
	Limit       int
	Cursor      string // from a previous page's NextCursor
}

// ErrBadCursor is returned for a cursor this index did not hand out.
var ErrBadCursor = errors.New("cursor is not valid")

// List returns records in (workspace, id) order after the cursor, and the
// cursor of the next page ("" on the last page). Ids are ULIDs, so within a
// workspace the order is creation order, and stable across pages.
func (ix *Index) List(q ListQuery) ([]*Record, string, error) {
	var pivot *Record
	if q.Cursor != "" {
		raw, err := base64.RawURLEncoding.DecodeString(q.Cursor)
		ws, id, ok := strings.Cut(string(raw), "\x00")
		if err != nil || !ok || (q.WorkspaceID != "" && ws != q.WorkspaceID) {
			return nil, "", ErrBadCursor
		}
		pivot = &Record{WorkspaceID: ws, ID: id}
	} else if q.WorkspaceID != "" {
		pivot = &Record{WorkspaceID: q.WorkspaceID}
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 100
	}
	var page []*Record
	more := false
	visit := func(r *Record) bool {
		if pivot != nil && q.Cursor != "" && r.WorkspaceID == pivot.WorkspaceID && r.ID == pivot.ID {
			return true // the cursor names the last record of the previous page
		}
		if q.WorkspaceID != "" && r.WorkspaceID != q.WorkspaceID {
			return false
		}
		if (q.OwnerID != "" && r.OwnerID != q.OwnerID) || (q.Type != "" && r.Type != q.Type) ||
			(q.Active != nil && r.Active != *q.Active) {
			return true
		}
		if len(page) == limit {
			more = true
			return false
		}
		page = append(page, r)
		return true
	}
	ix.mu.RLock()
	if pivot != nil {
		ix.ordered.AscendGreaterOrEqual(pivot, visit)
	} else {
		ix.ordered.Ascend(visit)
	}
	ix.mu.RUnlock()
	next := ""
	if more {
		last := page[len(page)-1]
		next = base64.RawURLEncoding.EncodeToString([]byte(last.WorkspaceID + "\x00" + last.ID))
	}
	return page, next, nil
}

// Usage is one key's verifications on this node since the last drain.
type Usage struct {
	ID         string
	Count      int64
	LastUsedNs int64
}

// recordUse counts a successful verification. The first use of a key since
// the last drain puts it on the list; later ones only touch atomics.
func (ix *Index) recordUse(e *entry, nowNs int64) {
	e.uses.Add(1)
	for {
		last := e.lastNs.Load()
		if nowNs <= last || e.lastNs.CompareAndSwap(last, nowNs) {
			break
		}
	}
	if e.dirty.CompareAndSwap(false, true) {
		ix.usageMu.Lock()
		ix.used = append(ix.used, e)
		ix.usageMu.Unlock()
	}
}

// DrainUsage returns and resets the usage counted since the last call.
func (ix *Index) DrainUsage() []Usage {
	ix.usageMu.Lock()
	used := ix.used
	ix.used = make([]*entry, 0, len(used))
	ix.usageMu.Unlock()
	out := make([]Usage, 0, len(used))
	ix.mu.RLock() // e.view is written under the index lock
	defer ix.mu.RUnlock()
	for _, e := range used {
		// Clear the flag before taking the count: a verification racing with
		// us either lands in this count or re-lists the entry for next time.
		e.dirty.Store(false)
		if n := e.uses.Swap(0); n > 0 {
			out = append(out, Usage{ID: e.view.rec.ID, Count: n, LastUsedNs: e.lastNs.Load()})
		}
	}
	return out
}
