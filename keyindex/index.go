package keyindex

import (
	"cmp"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash/maphash"
	"math/bits"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Index holds every key in memory: by token hash (the current one, and a
// rotated key's previous one during its grace period), by id, and ordered by
// (workspace, id) for listing. It is safe for concurrent use; its writer is
// the FSM, its readers verify and admin reads.
//
// Records live encoded in an arena (arena.go) and are decoded only for
// admin reads; verification reads them in place (view.go). Records handed
// out (Get, List, MatchedRecord) are fresh copies the caller may keep.
type Index struct {
	// writeMu serialises writers, ahead of mu: a writer that needs larger
	// hash tables builds them under the read lock only (makeRoom), and
	// nothing else may change the tables meanwhile.
	writeMu sync.Mutex
	mu      sync.RWMutex
	st      *store // replaced whole by Install
	// imported counts imported keys: while there are none, a token of a
	// length no generated token has is refused without hashing it.
	imported atomic.Int64
	// snapshotHashes is the memory of the snapshots' copies of token
	// hashes that are not released yet (Records.hold).
	snapshotHashes atomic.Int64
}

// store is the index's data; every method needs the index lock.
type store struct {
	slots slots
	arena arena
	// byHash maps token hashes to slot<<1, with the low bit set for a
	// rotated key's previous hash; byID maps id hashes to slots.
	byHash, byID hashTable
	ordered      *orderSet
	// rotating holds the slots of keys that still have a previous hash,
	// so purging expired ones does not scan every key.
	rotating map[uint32]struct{}
	// pivots holds the search keys of listings in progress, by the
	// orderItem that stands for them in the order's comparisons.
	pivots    sync.Map // orderItem → *pivotKey
	nextPivot atomic.Uint32
	count     int
	scratch   []byte   // encoding buffer for writes
	before    []byte   // AddUsage's copy of a record before its change
	sets      listSets // the keys' lists, interned (listsets.go)
}

// orderItem is a key in the (workspace, id) order: a slot number, whose
// record gives the order, or (with pivotBit set) a listing's search key in
// st.pivots. It holds no pointer, so the order's millions of items are
// nothing for the garbage collector to scan (as a struct with a pivot
// pointer they were most of its marking work), and take 4 bytes.
type orderItem uint32

// pivotBit marks pivots. Slot numbers stay below it: 2^31 keys would be
// hundreds of gigabytes.
const pivotBit = 1 << 31

type pivotKey struct{ workspace, id string }

// addPivot registers p for one search; the caller removes it with
// st.pivots.Delete when the search is done. Listings run concurrently
// under the read lock, so each gets its own number.
func (st *store) addPivot(p *pivotKey) orderItem {
	it := orderItem(st.nextPivot.Add(1) | pivotBit)
	st.pivots.Store(it, p)
	return it
}

func newStore() *store {
	st := &store{arena: newArena(), rotating: map[uint32]struct{}{}, sets: listSets{max: maxListSets}}
	st.ordered = newOrderSet(st.orderCompare)
	return st
}

func (st *store) orderKey(it orderItem) (workspace string, id storedID) {
	if it&pivotBit != 0 {
		p, _ := st.pivots.Load(it)
		return p.(*pivotKey).workspace, storedID{raw: p.(*pivotKey).id}
	}
	return readOrderKey(st.rec(uint32(it)))
}

// orderCompare compares two items in the (workspace, id) order.
func (st *store) orderCompare(a, b orderItem) int {
	wa, ia := st.orderKey(a)
	wb, ib := st.orderKey(b)
	return cmp.Or(strings.Compare(wa, wb), compareIDs(ia, ib))
}

// insertOrdered puts stored keys into the (workspace, id) order, sorted
// first: each comparison reads a stored record, and inserting a million
// keys in random order made nearly every comparison a cache miss; in
// sorted order they fall on records just inserted, and most go after every
// key (orderSet.insert's one comparison). (A restore's keys arrive sorted
// already, Index.Snapshot's order: the sort is one pass.)
func (st *store) insertOrdered(items []orderItem) {
	slices.SortFunc(items, st.orderCompare)
	for _, it := range items {
		st.ordered.insert(it)
	}
}

// rec is the stored form of the key in slot n: its encoding without the
// current token hash (storedForm), which is in the slot. Everything the
// index reads in place (view.go) comes before it.
func (st *store) rec(n uint32) []byte { return st.arena.bytes(st.slots.get(n).ref()) }

// appendEncoded appends the whole encoding of the key in slot n.
func (st *store) appendEncoded(dst []byte, n uint32) []byte {
	sl := st.slots.get(n)
	return appendWithHash(dst, st.arena.bytes(sl.ref()), &sl.hash)
}

// appendWithHash appends the encoding whose stored form is stored and
// whose current token hash is h.
func appendWithHash(dst, stored []byte, h *Hash) []byte {
	return append(append(dst, stored...), h[:]...)
}

// storedForm is what the arena keeps of an encoding: all of it but the
// current token hash, its last bytes (codec.go), which its slot holds.
func storedForm(enc []byte) []byte { return enc[:len(enc)-len(Hash{})] }

// encodedHash is the current token hash of an encoding.
func encodedHash(enc []byte) Hash { return Hash(enc[len(enc)-len(Hash{}):]) }

var idSeed = maphash.MakeSeed()

func idKey(id string) uint64 { return maphash.String(idSeed, id) }

// hashKey: token hashes are SHA-256, already uniform.
func hashKey(h *Hash) uint64 { return binary.LittleEndian.Uint64(h[:8]) }

// findID returns the slot of the key with this id.
func (st *store) findID(id string) (uint32, bool) {
	for p := st.byID.probe(idKey(id)); ; {
		n, ok := p.next()
		if !ok || readHead(st.rec(n)).id.is(id) {
			return n, ok
		}
	}
}

// hashMatch is the key a token hash belongs to: its slot and whether the
// hash is its previous (rotated) one.
type hashMatch struct {
	n        uint32
	sl       *slot
	previous bool
}

// findHash finds the key with this token hash. A current hash is compared
// with its slot's copy, so the verify path never reads the record; a
// previous one is the last bytes of its record's stored form.
func (st *store) findHash(h *Hash) (hashMatch, bool) {
	for p := st.byHash.probe(hashKey(h)); ; {
		v, ok := p.next()
		if !ok {
			return hashMatch{}, false
		}
		sl := st.slots.get(v >> 1)
		previous := v&1 == 1
		if !previous && sl.hash != *h {
			continue // a fingerprint's collision: its record is not needed
		}
		if previous && encodedHash(st.arena.bytes(sl.ref())) != *h { // the stored form ends with the previous hash
			continue
		}
		return hashMatch{n: v >> 1, sl: sl, previous: previous}, true
	}
}

// Errors returned by index mutations. The FSM turns them into API errors.
var (
	ErrNotFound  = errors.New("key not found")
	ErrIDExists  = errors.New("a key with this id exists")
	ErrHashInUse = errors.New("a key with this token hash exists")
)

// New returns an empty index.
func New() *Index { return &Index{st: newStore()} }

// Len is the number of keys.
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.st.count
}

// MappedBytes is the memory the index has mapped outside the Go heap, for
// its records, slots and hash tables (offheap.go), and for the token hashes
// that snapshots not yet released copied (32 bytes a key each): what
// runtime.MemStats leaves out. Chunks of records it has dropped but a
// reader still holds are not counted.
func (ix *Index) MappedBytes() int64 {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.st.mappedBytes() + ix.snapshotHashes.Load()
}

// freeLocked unmaps the slots and tables of a store no longer in use; the
// caller holds the write lock of the index it was replaced in.
func (st *store) freeLocked() {
	for _, m := range st.slots.mem {
		m.free()
	}
	st.slots = slots{}
	st.byHash.replace(hashTable{})
	st.byID.replace(hashTable{})
}

func (st *store) mappedBytes() int64 {
	n := int64(len(st.byHash.words)+len(st.byID.words)) * 8
	for _, m := range st.slots.mem {
		n += int64(len(m.b))
	}
	for _, m := range st.arena.mem {
		if m != nil {
			n += int64(len(m.b))
		}
	}
	return n
}

// Get returns the record with this id, or nil.
func (ix *Index) Get(id string) *Record {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if n, ok := ix.st.findID(id); ok {
		return ix.st.decode(n)
	}
	return nil
}

// decode returns a copy of the record in slot n.
func (st *store) decode(n uint32) *Record { return mustDecode(st.appendEncoded(nil, n)) }

// mustDecode decodes stored bytes. The index encoded them itself, so
// decoding cannot fail short of memory corruption.
func mustDecode(b []byte) *Record {
	r, err := DecodeRecord(b)
	if err != nil {
		panic("keyindex: stored record unreadable: " + err.Error())
	}
	return r
}

// GetByHash returns the record whose current token has this hash, or nil.
// A rotated key's previous token does not count: admin authentication uses
// this and old admin tokens stop working at rotation.
func (ix *Index) GetByHash(h Hash) *Record {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if m, ok := ix.st.findHash(&h); ok && !m.previous {
		return ix.st.decode(m.n)
	}
	return nil
}

// HashInUse reports whether any key, current or in rotation grace, has this hash.
func (ix *Index) HashInUse(h Hash) bool {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	_, ok := ix.st.findHash(&h)
	return ok
}

// Insert adds a new key.
func (ix *Index) Insert(r *Record) error { return ix.InsertAll([]*Record{r}) }

// InsertAll adds many keys atomically: all of them or, on error, none.
func (ix *Index) InsertAll(recs []*Record) error {
	ix.writeMu.Lock()
	defer ix.writeMu.Unlock()
	hashes := 0
	for _, r := range recs {
		hashes += len(hashesOf(r))
	}
	ix.makeRoom(len(recs), hashes)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if err := ix.st.addAll(recs); err != nil {
		return err
	}
	for _, r := range recs {
		ix.countImported(r, 1)
	}
	return nil
}

// makeRoom grows the hash tables ahead of a write that adds up to ids keys
// and hashes token hashes. The larger tables are built under the read lock
// and swapped in under the write lock: at 6.3M keys rebuilding one took 0.4
// s, and under the write lock every verification waited for it (and for
// the id table's, which grows at the same count). The caller holds
// writeMu, so nothing changes the tables in between; an insert then finds
// the room it needs and never grows a table under the write lock.
func (ix *Index) makeRoom(ids, hashes int) {
	ix.mu.RLock()
	st := ix.st
	byHash, growHash := st.byHash.withRoomFor(hashes)
	byID, growID := st.byID.withRoomFor(ids)
	if testHookRoomBuilt != nil && (growHash || growID) {
		testHookRoomBuilt()
	}
	ix.mu.RUnlock()
	if !growHash && !growID {
		return
	}
	ix.mu.Lock()
	if growHash {
		st.byHash.replace(byHash)
	}
	if growID {
		st.byID.replace(byID)
	}
	ix.mu.Unlock()
}

// testHookRoomBuilt, when set by a test, runs while makeRoom holds the read
// lock with larger tables built.
var testHookRoomBuilt func()

func (ix *Index) countImported(r *Record, delta int64) {
	if r.Imported {
		ix.imported.Add(delta)
	}
}

// addAll adds every record or, on error, none: into the arena and tables
// in the order given, then into the (workspace, id) order.
func (st *store) addAll(recs []*Record) error {
	items := make([]orderItem, 0, len(recs))
	for i, r := range recs {
		n, err := st.store(r)
		if err != nil {
			for j := i - 1; j >= 0; j-- {
				st.unstore(uint32(items[j]), recs[j])
			}
			return err
		}
		items = append(items, orderItem(n))
	}
	st.insertOrdered(items)
	st.count += len(recs)
	return nil
}

// store puts a new key in a slot, the arena and the tables (not the order).
func (st *store) store(r *Record) (uint32, error) {
	st.scratch = AppendRecord(st.scratch[:0], r)
	return st.storeEncoded(r, st.scratch)
}

// storeEncoded is store for a record whose encoding enc is at hand.
func (st *store) storeEncoded(r *Record, enc []byte) (uint32, error) {
	if _, ok := st.findID(r.ID); ok {
		return 0, ErrIDExists
	}
	if err := st.hashesFree(r, noSlot); err != nil {
		return 0, err
	}
	n := st.slots.alloc()
	st.putEncoded(n, enc, hotFieldsOf(r, enc))
	st.byID.insert(idKey(r.ID), n)
	st.link(n, r)
	return n, nil
}

// unstore undoes store for slot n, which holds r.
func (st *store) unstore(n uint32, r *Record) {
	st.unlink(n, r)
	st.byID.remove(idKey(r.ID), n)
	sl := st.slots.get(n)
	ref := sl.ref()
	st.sets.release(sl.lists)
	st.slots.release(n) // before compacting: the record must not be moved
	if st.arena.drop(ref) {
		st.arena.compact(ref.chunk, &st.slots)
	}
	st.compactLeft()
}

// compactLeft compacts the chunks the arena stopped filling while they
// were less than half live (arena.left), once the write that moved past
// them is done with its slot. A chunk compacted meanwhile (its number then
// spare, or reused) is skipped, or compacted only if worth it again.
func (st *store) compactLeft() {
	for k := len(st.arena.left); k > 0; k = len(st.arena.left) {
		c := st.arena.left[k-1]
		st.arena.left = st.arena.left[:k-1]
		if st.arena.worthCompacting(c) {
			st.arena.compact(c, &st.slots)
		}
	}
}

// Replace swaps the record of an existing key for r (same id).
func (ix *Index) Replace(r *Record) error {
	ix.writeMu.Lock()
	defer ix.writeMu.Unlock()
	ix.makeRoom(0, len(hashesOf(r)))
	ix.mu.Lock()
	defer ix.mu.Unlock()
	st := ix.st
	n, ok := st.findID(r.ID)
	if !ok {
		return ErrNotFound
	}
	if err := st.hashesFree(r, n); err != nil {
		return err
	}
	old := st.decode(n)
	// The order reads the stored record: take the key out before its
	// workspace changes.
	moved := old.WorkspaceID != r.WorkspaceID
	if moved {
		st.ordered.delete(orderItem(n))
	}
	st.unlink(n, old)
	st.put(n, r)
	st.link(n, r)
	if moved {
		st.ordered.insert(orderItem(n))
	}
	ix.countImported(old, -1)
	ix.countImported(r, 1)
	return nil
}

// Delete removes a key and every hash of it.
func (ix *Index) Delete(id string) error {
	ix.writeMu.Lock()
	defer ix.writeMu.Unlock()
	ix.mu.Lock()
	defer ix.mu.Unlock()
	old, err := ix.st.remove(id)
	if err != nil {
		return err
	}
	ix.countImported(old, -1)
	return nil
}

// remove deletes the key with this id and returns its record.
func (st *store) remove(id string) (*Record, error) {
	n, ok := st.findID(id)
	if !ok {
		return nil, ErrNotFound
	}
	old := st.decode(n)
	st.ordered.delete(orderItem(n))
	st.unstore(n, old)
	st.count--
	return old, nil
}

// noSlot is no key: hashesFree's self for a new key.
const noSlot = ^uint32(0)

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
func (st *store) hashesFree(r *Record, self uint32) error {
	if r.Rotation != nil && r.Rotation.PreviousHash == r.Hash {
		return ErrHashInUse
	}
	for _, h := range hashesOf(r) {
		if other, ok := st.findHash(&h); ok && other.n != self {
			return ErrHashInUse
		}
	}
	return nil
}

// put stores r's encoding for slot n, dropping the one it replaces.
func (st *store) put(n uint32, r *Record) {
	st.scratch = AppendRecord(st.scratch[:0], r)
	st.putEncoded(n, st.scratch, hotFieldsOf(r, st.scratch))
}

// putEncoded stores enc, the encoding of slot n's record, with its hot
// fields and its lists' set.
func (st *store) putEncoded(n uint32, enc []byte, hot hotFields) {
	sl := st.slots.get(n)
	oldLists := sl.lists
	at := readView(enc).listsAt
	if sl.lists = st.sets.acquire(listsBlock(enc, at)); sl.lists == 0 {
		sl.lists = listsInRecord | uint32(at)
	}
	st.sets.release(oldLists) // after acquiring: a rewrite that keeps the lists keeps their set
	st.putKeepingLists(n, enc, hot)
}

// putKeepingLists stores enc for slot n with its hot fields, and leaves
// the slot's lists as they are: for a rewrite that keeps the lists where
// they were (AddUsage changes fields after them).
func (st *store) putKeepingLists(n uint32, enc []byte, hot hotFields) {
	sl := st.slots.get(n)
	old := sl.ref()
	sl.setRef(st.arena.put(n, storedForm(enc)))
	sl.hash = encodedHash(enc)
	sl.setHot(hot)
	if old != (recordRef{}) && st.arena.drop(old) {
		st.arena.compact(old.chunk, &st.slots)
	}
	st.compactLeft()
}

// AddUsage adds count verifications to key id, the last at lastUsed (a
// stored last_used_at that is later stays), and calls changed with the
// record's encoding before and after (for the FSM's state digest), which
// are valid only during the call; it reports false for an unknown id. It
// rewrites only the two fields in the encoding, without
// decoding the record: every usage flush of a busy node changes thousands
// of keys, and decoding, cloning and re-encoding each of them made the
// flushes a visible share of the verify p99. The result is byte for byte
// what AppendRecord writes for the changed record.
func (ix *Index) AddUsage(id string, count int64, lastUsed time.Time, changed func(before, after []byte)) bool {
	ix.writeMu.Lock()
	defer ix.writeMu.Unlock()
	ix.mu.Lock()
	defer ix.mu.Unlock()
	st := ix.st
	n, ok := st.findID(id)
	if !ok {
		return false
	}
	// before is copied whole: putKeepingLists may drop its chunk.
	st.before = st.appendEncoded(st.before[:0], n)
	before := st.before
	u := readUsage(before)
	b := append(st.scratch[:0], before[:u.start]...)
	if before[0]&flagLastUsedAt != 0 && !lastUsed.After(u.lastUsed.time()) {
		b = append(b, before[u.start:u.countAt]...)
	} else {
		b[0] |= flagLastUsedAt
		b = appendTime(b, lastUsed)
	}
	b = binary.AppendVarint(b, u.count+count)
	st.scratch = append(b, before[u.end:]...) // the rest, the hashes included
	hot := st.slots.get(n).hot()
	hot.flags = st.scratch[0]
	st.putKeepingLists(n, st.scratch, hot) // the usage fields come after the lists
	changed(before, st.scratch)
	return true
}

// link indexes slot n (holding r) by its hashes.
func (st *store) link(n uint32, r *Record) {
	st.byHash.insert(hashKey(&r.Hash), n<<1)
	if r.Rotation != nil {
		st.byHash.insert(hashKey(&r.Rotation.PreviousHash), n<<1|1)
		st.rotating[n] = struct{}{}
	}
}

// unlink removes slot n's hashes (old is its record).
func (st *store) unlink(n uint32, old *Record) {
	st.byHash.remove(hashKey(&old.Hash), n<<1)
	if old.Rotation != nil {
		st.byHash.remove(hashKey(&old.Rotation.PreviousHash), n<<1|1)
		delete(st.rotating, n)
	}
}

// ExpiredRotations lists the ids of keys whose previous token's grace period
// has ended at nowNs. The leader turns them into a purge command.
func (ix *Index) ExpiredRotations(nowNs int64) []string {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var ids []string
	for n := range ix.st.rotating {
		if b := ix.st.rec(n); nowNs >= readPrevExpires(b) {
			ids = append(ids, readHead(b).id.String())
		}
	}
	return ids
}

// Snapshot returns a point-in-time copy of every record that stays valid
// while the index keeps changing: the arena's chunks never change once
// written, so the snapshot copies only where each record is and, from the
// slots, the token hashes the stored records leave out. Writers wait
// while it runs, so it reads memory in order: the slots' refs one after the
// other, and the order's blocks (4-byte items); looking each slot up in the
// order instead missed the cache on nearly every key (65 ms at 1M
// keys in 1,000 workspaces, several times the in-order copy). The slots
// change, so their token hashes are copied too, outside the Go heap: a
// snapshot is taken while the index is large, and these 32 bytes a key
// would otherwise stay resident as heap the collector freed (Release).
func (ix *Index) Snapshot() *Records {
	ix.mu.RLock()
	room := int(ix.st.slots.next)
	ix.mu.RUnlock()
	for {
		// The copies are made before taking the lock, with room for the
		// keys added meanwhile: mapping and first touching tens of MB
		// under it would hold every writer, and the verifications queued
		// behind a waiting writer, for as long.
		room += room/16 + 64
		hashes := newSnapshotHashes(room)
		s := &Records{refs: make([]recordRef, room), order: make([]uint32, 0, room)}
		ix.mu.RLock()
		st := ix.st
		if n := int(st.slots.next); n > room {
			ix.mu.RUnlock()
			hashes.free()
			room = n
			continue
		}
		s.chunks = append([][]byte(nil), st.arena.chunks...)
		s.mem = append([]*mapping(nil), st.arena.mem...)
		s.refs = s.refs[:st.slots.next]
		s.hashes = unsafe.Slice((*Hash)(unsafe.Pointer(unsafe.SliceData(hashes.b))), st.slots.next)
		for n := range s.refs {
			sl := st.slots.get(uint32(n))
			s.refs[n], s.hashes[n] = sl.ref(), sl.hash
		}
		st.ordered.ascend(func(it orderItem) bool {
			s.order = append(s.order, uint32(it))
			return true
		})
		ix.mu.RUnlock()
		s.hold(hashes, &ix.snapshotHashes)
		return s
	}
}

// newSnapshotHashes maps room for n token hashes and touches every page of
// it, so that the copy under the lock does not fault them in.
func newSnapshotHashes(n int) *mapping {
	m := newMapping(n * len(Hash{}))
	for i := 0; i < len(m.b); i += basePage {
		m.b[i] = 0
	}
	return m
}

// Records is an immutable set of records from Snapshot, in (workspace, id)
// order: equal states give equal snapshots whatever their history, and a
// restore inserts into the order ascending, each insert after the last
// (Install).
type Records struct {
	chunks    [][]byte
	mem       []*mapping  // keeps chunks mapped while the snapshot is in use
	refs      []recordRef // by slot
	hashes    []Hash      // by slot: the current token hashes, in hashesMem
	hashesMem *mapping
	order     []uint32 // slots in (workspace, id) order
	// held counts hashesMem in the index's MappedBytes until Release, or
	// until the collector finds the snapshot unreachable (uncount).
	held    *atomic.Int64
	uncount runtime.Cleanup
}

// hold makes m the snapshot's copy of the hashes, counted in held.
func (s *Records) hold(m *mapping, held *atomic.Int64) {
	n := int64(len(m.b))
	s.hashesMem, s.held = m, held
	held.Add(n)
	s.uncount = runtime.AddCleanup(s, func(n int64) { held.Add(-n) }, n)
}

// Release gives back the snapshot's copy of the token hashes now rather
// than when the collector finds the snapshot unreachable: the records must
// not be read after it (Released).
func (s *Records) Release() {
	if s == nil || s.hashesMem == nil {
		return
	}
	s.uncount.Stop()
	s.held.Add(-int64(len(s.hashesMem.b)))
	s.hashesMem.free()
	s.hashesMem, s.hashes = nil, nil
}

// Released reports whether Release was called: reading the records then
// panics.
func (s *Records) Released() bool { return s.hashesMem == nil }

// Len is the number of records.
func (s *Records) Len() int { return len(s.order) }

// Each calls fn with a copy of every record until fn returns false.
func (s *Records) Each(fn func(*Record) bool) {
	s.EachEncoded(func(b []byte) bool { return fn(mustDecode(b)) })
}

// EachEncoded calls fn with every record's binary encoding (AppendRecord)
// until fn returns false. fn must not keep or change the bytes.
func (s *Records) EachEncoded(fn func([]byte) bool) {
	defer runtime.KeepAlive(s)
	if s.Released() && len(s.order) > 0 {
		panic("keyindex: Records read after Release")
	}
	var enc []byte
	for _, n := range s.order {
		ref := s.refs[n]
		enc = appendWithHash(enc[:0], s.chunks[ref.chunk][ref.off:ref.off+ref.n], &s.hashes[n])
		if !fn(enc) {
			return
		}
	}
}

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

// CheckCursor reports ErrBadCursor for a cursor that List would refuse for
// a listing of workspaceID ("" for every workspace), without listing.
func CheckCursor(cursor, workspaceID string) error {
	_, _, err := readCursor(cursor, workspaceID)
	return err
}

// readCursor is the workspace and id a cursor continues after.
func readCursor(cursor, workspaceID string) (ws, id string, err error) {
	raw, err := base64.RawURLEncoding.DecodeString(cursor)
	ws, id, ok := strings.Cut(string(raw), "\x00")
	if err != nil || !ok || (workspaceID != "" && ws != workspaceID) {
		return "", "", ErrBadCursor
	}
	return ws, id, nil
}

// List returns records in (workspace, id) order after the cursor, and the
// cursor of the next page ("" on the last page). Ids are ULIDs, so within a
// workspace the order is creation order, and stable across pages.
func (ix *Index) List(q ListQuery) ([]*Record, string, error) {
	var pivot *pivotKey
	if q.Cursor != "" {
		ws, id, err := readCursor(q.Cursor, q.WorkspaceID)
		if err != nil {
			return nil, "", err
		}
		pivot = &pivotKey{workspace: ws, id: id}
	} else if q.WorkspaceID != "" {
		pivot = &pivotKey{workspace: q.WorkspaceID}
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 100
	}
	var page []*Record
	more := false
	ix.mu.RLock()
	st := ix.st
	visit := func(it orderItem) bool {
		v := readView(st.rec(uint32(it)))
		if pivot != nil && q.Cursor != "" && v.workspace == pivot.workspace && v.id.is(pivot.id) {
			return true // the cursor names the last record of the previous page
		}
		if q.WorkspaceID != "" && v.workspace != q.WorkspaceID {
			return false
		}
		if (q.OwnerID != "" && v.owner != q.OwnerID) || (q.Type != "" && v.typ != string(q.Type)) ||
			(q.Active != nil && (v.flags&flagActive != 0) != *q.Active) {
			return true
		}
		if len(page) == limit {
			more = true
			return false
		}
		page = append(page, st.decode(uint32(it)))
		return true
	}
	if pivot != nil {
		it := st.addPivot(pivot)
		st.ordered.ascendFrom(it, visit)
		st.pivots.Delete(it)
	} else {
		st.ordered.ascend(visit)
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

// recordUse counts a successful verification of the key in slot n (under
// the read lock): one locked add on the slot's line, which the decision
// has just read, and more only for the key's first use since the last
// drain (which swaps uses to 0 after clearing the bit).
//
// That first use marks the key in its chunk's bitmap (later ones leave it
// alone: its words sit away from the slot, and each is shared by 64 keys
// that other cores verify too), and its time is the one the drain reports
// as the key's last use. So last_used_at is the first verification of the
// latest flush interval in which the key was verified: about one
// --usage-flush-interval (5 s) before its very latest use at most, which
// spec §2 allows ("within the flush interval"). Keeping the latest use
// exactly took a compare-and-swap at nearly every verification of a large
// index (each key's previous use long past), a second locked instruction
// on the path that waits for the slot's cache miss (bench/README.md,
// session 13).
func (st *store) recordUse(n uint32, sl *slot, nowNs int64) {
	if sl.uses.Add(1) == 1 {
		// The time before the bit: a drain that sees the bit (it swaps the
		// bit's word before reading the time) then reads this use's time,
		// never the zero of a key's first use or an older interval's.
		st.slots.lastUsed(n).Store(nowNs)
		st.slots.markUsed(n)
	}
}

// DrainUsage returns and resets the usage counted since the last call.
func (ix *Index) DrainUsage() []Usage {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	st := ix.st
	var out []Usage
	for c, chunk := range st.slots.chunks {
		for w := range chunk.dirty {
			// Clear the bits before taking the counts: a verification racing
			// with us either lands in this count or sets its bit again.
			word := chunk.dirty[w].Swap(0)
			for word != 0 {
				i := uint32(w*64) + uint32(bits.TrailingZeros64(word))
				word &= word - 1
				n := uint32(c)*slotChunkLen + i
				sl := st.slots.get(n)
				if cnt := sl.uses.Swap(0); cnt > 0 && !sl.isFree() {
					out = append(out, Usage{ID: readHead(st.rec(n)).id.String(), Count: int64(cnt), LastUsedNs: st.slots.lastUsed(n).Load()})
				}
			}
		}
	}
	return out
}
