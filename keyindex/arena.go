package keyindex

import (
	"encoding/binary"
	"math/bits"
	"sync/atomic"
	"time"
	"unsafe"
)

// The index keeps every record as its binary encoding (codec.go) in large
// byte chunks, and per key a fixed-size slot with where that encoding is,
// the key's current token hash and the counters verification updates.
// Neither holds a pointer, and both live outside the Go heap (offheap.go):
// a million keys are nothing for the garbage collector to scan or to make
// room for, and a key costs its encoding plus a 64-byte slot and 8 bytes
// beside it instead of a graph of Go objects (about 1 KB).
//
// The current token hash is kept in the slot and left out of the stored
// encoding (its last 32 bytes: storedForm), so it is held once. That way a
// verification decides from the hash table's word and the slot alone: at a
// million keys each of those is a cache miss, and the record would be a
// third one, in series after the slot (the record's place is in the slot).
// With it the decision took 2.5 times the floor's time (bench/README.md).

// slot is one key's place in the index. Its record's location, hash, hot
// fields and lists are written under the index's write lock and read under
// its read lock; the counters are atomics that readers update. 64 bytes,
// with no padding (TestSlotSize): the location and the hot fields are
// packed, since at ten million keys every byte of a slot is 10 MB, and a
// chunk's slots start on a page, so each slot is one cache line: a
// verification's second miss. (At 72 bytes, with the last use's time in
// the slot, nearly every slot spanned two lines; the time, written once a
// flush interval, is beside the slots instead: slotChunk.lastNs.)
type slot struct {
	hash    Hash // of the current token (a rotated key's previous one is in its record)
	limiter rateLimiter
	loc     uint64 // where the record is: a recordRef as packRef packs it
	// The hot fields (hotFields): rate limit, flags and publishable packed
	// as setHot does; the expiry as expirySecond condenses it.
	packed  uint32
	expires uint32
	// lists is where the key's scopes, origins and resources are: their
	// id in the index's listSets or, with listsInRecord set, their offset
	// in the record (when the sets are full).
	lists uint32
	uses  atomic.Uint32 // verifications since the last drain, every few seconds
}

// listsInRecord marks a slot's lists that are an offset in the record.
// Records are shorter than 2^31 bytes (maxRecordLen).
const listsInRecord = 1 << 31

// hotFields are what most verifications decide on, copied out of the
// record into its slot when it is stored, so that a decision reads the slot
// it already touches for the rate limit instead of walking the encoding:
// about a third of the decision's time.
type hotFields struct {
	rateLimit   int32  // clamped to [0, MaxRateLimitPerMin], which the API enforces
	expires     uint32 // expirySecond
	flags       byte   // the encoding's flags byte
	publishable bool
}

func hotFieldsOf(r *Record, enc []byte) hotFields {
	return hotFields{rateLimit: int32(min(max(r.RateLimitPerMin, 0), MaxRateLimitPerMin)),
		expires: expirySecond(r.ExpiresAt), flags: enc[0], publishable: r.Type == TypePublishable}
}

// The packed hot word: the rate limit in the low rateLimitBits, the flags
// byte above it, then the publishable bit.
const (
	rateLimitBits   = 20
	rateLimitMask   = 1<<rateLimitBits - 1
	flagsShift      = rateLimitBits
	publishableBit  = 1 << (flagsShift + 8)
	maxExpirySecond = 1<<32 - 2 // expirySecond's largest value
)

// Every rate limit the API accepts fits the packed word.
var _ [rateLimitMask - MaxRateLimitPerMin]byte

func (sl *slot) rateLimit() int    { return int(sl.packed & rateLimitMask) }
func (sl *slot) flags() byte       { return byte(sl.packed >> flagsShift) }
func (sl *slot) publishable() bool { return sl.packed&publishableBit != 0 }
func (sl *slot) ref() recordRef    { return unpackRef(sl.loc) }

// plain reports whether the key is active, not revoked, not publishable,
// and has no rate limit and no expiry: one whose current token verifies
// with no other check than its scope (Index.Verify).
func (sl *slot) plain() bool {
	const mask = rateLimitMask | publishableBit | (flagRevokedAt|flagActive)<<flagsShift
	return sl.packed&mask == flagActive<<flagsShift && sl.expires == 0
}
func (sl *slot) setRef(r recordRef) { sl.loc = packRef(r) }
func (sl *slot) isFree() bool       { return sl.loc == 0 } // a stored record follows its header: its offset is not 0

func (sl *slot) hot() hotFields {
	return hotFields{rateLimit: int32(sl.rateLimit()), expires: sl.expires, flags: sl.flags(), publishable: sl.publishable()}
}

func (sl *slot) setHot(h hotFields) {
	sl.packed = uint32(h.rateLimit) | uint32(h.flags)<<flagsShift
	if h.publishable {
		sl.packed |= publishableBit
	}
	sl.expires = h.expires
}

// expirySecond condenses an expiry into 4 bytes: 0 for none, otherwise its
// Unix second plus one, clamped to [1, maxExpirySecond]. An expiry of
// second s-1 lies in [(s-1)e9, s·e9) ns, so a verification outside that
// second decides from the slot alone; one inside it, or against a clamped
// value (before 1970 or after 2106), reads the exact time from the record
// (expired).
func expirySecond(t *time.Time) uint32 {
	if t == nil {
		return 0
	}
	return uint32(min(max(t.Unix(), 0), maxExpirySecond-1) + 1)
}

// expired reports whether the key of this slot, which has an expiry, has
// expired at nowNs. rec is its record.
func (sl *slot) expired(nowNs int64, rec []byte) bool {
	if s := int64(sl.expires); s > 1 && s < maxExpirySecond {
		if nowNs < (s-1)*1e9 {
			return false
		}
		if nowNs >= s*1e9 {
			return true
		}
	}
	return nowNs >= readView(rec).expires.unixNano()
}

// recordRef locates an encoded record: chunk number and the offset and
// length of its bytes.
type recordRef struct{ chunk, off, n uint32 }

// A slot keeps its recordRef in 64 bits: the offset in the low refOffBits
// (a chunk is at most arenaChunkLen long, or holds one larger record at its
// start: newChunk), the chunk number above it, then the length. Packed, it
// leaves room in the slot for the lists' set id.
const (
	refOffBits   = 21
	refChunkBits = 16
	refLenBits   = 64 - refOffBits - refChunkBits
	// maxRecordLen bounds a stored encoding; the API's limits keep records
	// under 100 KB.
	maxRecordLen = 1<<refLenBits - 1
)

// Every offset within a chunk of arenaChunkLen fits.
var _ [1<<refOffBits - arenaChunkLen]byte

func packRef(r recordRef) uint64 {
	if r.off >= 1<<refOffBits || r.chunk >= 1<<refChunkBits || r.n > maxRecordLen {
		panic("keyindex: a record location a slot cannot hold") // newChunk and put keep within them
	}
	return uint64(r.off) | uint64(r.chunk)<<refOffBits | uint64(r.n)<<(refOffBits+refChunkBits)
}

func unpackRef(w uint64) recordRef {
	return recordRef{off: uint32(w & (1<<refOffBits - 1)), chunk: uint32(w >> refOffBits & (1<<refChunkBits - 1)),
		n: uint32(w >> (refOffBits + refChunkBits))}
}

// maxArenaChunks: a slot keeps a chunk number in refChunkBits.
const maxArenaChunks = 1 << refChunkBits

// slotChunkLen is how many slots a chunk holds: as many as fit, with their
// dirty bits, in one huge page (offheap.go). A multiple of 64, so that a
// chunk's dirty bits fill whole words.
const slotChunkLen = 29_056

// slotChunk is a fixed block of slots, so growing the index never copies
// (or moves under a reader) the slots already handed out. dirty has a bit
// per slot: used since the last usage drain; lastNs is each slot's time of
// that use (recordUse). Chunks are mapped outside the Go heap, from a page
// boundary: the slots come first, so each is aligned to its cache line.
type slotChunk struct {
	slots  [slotChunkLen]slot
	lastNs [slotChunkLen]atomic.Int64
	dirty  [slotChunkLen / 64]atomic.Uint64
}

// A chunk must fit in a huge page (the array's length would be negative).
var _ [hugePage - unsafe.Sizeof(slotChunk{})]byte

// slots hands out slot numbers, reusing freed ones.
type slots struct {
	chunks []*slotChunk
	mem    []*mapping // chunks[i] is in mem[i]: kept for as long as the chunks are used
	next   uint32     // slots below next have been handed out at least once
	free   []uint32
}

func (s *slots) get(n uint32) *slot { return &s.chunks[n/slotChunkLen].slots[n%slotChunkLen] }

// dirtyBit is the word and bit of slot n's dirty bit.
func (s *slots) dirtyBit(n uint32) (*atomic.Uint64, uint64) {
	i := n % slotChunkLen
	return &s.chunks[n/slotChunkLen].dirty[i/64], 1 << (i % 64)
}

func (s *slots) alloc() uint32 {
	if k := len(s.free); k > 0 {
		n := s.free[k-1]
		s.free = s.free[:k-1]
		return n
	}
	n := s.next
	if n >= pivotBit {
		panic("keyindex: more than 2^31 keys") // slot numbers must stay below the listing pivots'
	}
	if int(n/slotChunkLen) == len(s.chunks) {
		m := newMapping(int(unsafe.Sizeof(slotChunk{})))
		s.mem = append(s.mem, m)
		s.chunks = append(s.chunks, (*slotChunk)(unsafe.Pointer(unsafe.SliceData(m.b))))
	}
	s.next++
	return n
}

// release frees slot n; its counters start from zero for the next key.
func (s *slots) release(n uint32) {
	sl := s.get(n)
	sl.hash = Hash{}
	sl.setRef(recordRef{})
	sl.setHot(hotFields{})
	sl.lists = 0 // its set was released with the key (unstore)
	sl.limiter.word.Store(0)
	sl.uses.Store(0)
	s.lastUsed(n).Store(0)
	word, bit := s.dirtyBit(n)
	word.And(^bit)
	s.free = append(s.free, n)
}

// lastUsed is the time of slot n's first use since the last drain.
func (s *slots) lastUsed(n uint32) *atomic.Int64 {
	return &s.chunks[n/slotChunkLen].lastNs[n%slotChunkLen]
}

// markUsed sets slot n's dirty bit (once per drain: recordUse).
func (s *slots) markUsed(n uint32) {
	word, bit := s.dirtyBit(n)
	word.Or(bit)
}

// arena stores encoded records in chunks. A record is appended after a
// header of its slot number (4 bytes) and its length (a uvarint: one byte
// for most records, which are under 128 bytes when imported, two or three
// for longer ones), so a chunk can be walked to find which of its records are still
// live. Chunk bytes are
// never changed once written: a record that changes is appended anew, and
// a chunk whose live bytes fall under half is compacted by copying its
// live records into the current chunk and dropping it.
//
// Chunks are mapped outside the Go heap, in huge pages (offheap.go), like
// the slots; but unlike those, a record is read after the index lock is
// released (a Decision's answer, a snapshot being written). So a dropped
// chunk is not unmapped at once: the arena only lets go of its mapping, and
// whoever reads a chunk's bytes after the lock holds that mapping (Decision,
// Records), so the collector's cleanup unmaps it when the last of them is
// done.
type arena struct {
	// chunks[i] is mem[i]'s bytes from their start, never reallocated:
	// put checks the room first. A Decision finds its record in the
	// mapping alone (Decision.rec), by the offset in chunks[i].
	chunks [][]byte
	mem    []*mapping
	live   []int    // live bytes (headers included) per chunk
	cur    int      // the chunk being filled; -1 before the first
	spare  []uint32 // numbers of dropped chunks, for reuse
	// left holds chunks put stopped filling while less than half of them
	// was live, for the store to compact (compactLeft) once it has
	// finished the write: drop looks only at chunks other than the current
	// one, so records that died while their chunk was current, and were
	// never followed by another drop there, would keep it mapped for good.
	left []uint32
}

const (
	arenaChunkLen = hugePage
	slotNumberLen = 4 // the header's first part
)

// recordHeaderLen is the size of the header of a record of n bytes.
func recordHeaderLen(n int) int { return slotNumberLen + uvarintLen(uint64(n)) }

// uvarintLen is the length of binary.AppendUvarint's encoding of v.
func uvarintLen(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }

func newArena() arena { return arena{cur: -1} }

// put appends rec for slot n and returns where it is.
func (a *arena) put(n uint32, rec []byte) recordRef {
	need := recordHeaderLen(len(rec)) + len(rec)
	if a.cur < 0 || cap(a.chunks[a.cur])-len(a.chunks[a.cur]) < need {
		prev := a.cur
		a.newChunk(max(a.nextChunkLen(), need))
		if prev >= 0 && a.worthCompacting(uint32(prev)) {
			a.left = append(a.left, uint32(prev))
		}
	}
	c := a.chunks[a.cur]
	off := len(c) + need - len(rec)
	c = binary.LittleEndian.AppendUint32(c, n)
	c = binary.AppendUvarint(c, uint64(len(rec)))
	a.chunks[a.cur] = append(c, rec...)
	a.live[a.cur] += need
	return recordRef{chunk: uint32(a.cur), off: uint32(off), n: uint32(len(rec))}
}

// nextChunkLen is the size of the next chunk: the first is 64 KiB and each
// new one doubles up to arenaChunkLen, so that a small index (a test, a
// node with a few keys, a restore refused early) does not take 2 MiB.
func (a *arena) nextChunkLen() int { return arenaChunkLen >> max(0, 5-len(a.chunks)) }

// newChunk starts a chunk of at least size bytes. Appends to it stay within
// its mapping: put checks the room first.
func (a *arena) newChunk(size int) {
	m := newMapping(size)
	// A chunk fills its mapping (rounded up to whole pages) up to
	// arenaChunkLen, so that offsets fit a slot's refOffBits; a chunk made
	// for a larger record holds that record only.
	c := m.b[:0:min(len(m.b), max(size, arenaChunkLen))]
	if k := len(a.spare); k > 0 {
		a.cur = int(a.spare[k-1])
		a.spare = a.spare[:k-1]
		a.chunks[a.cur], a.mem[a.cur] = c, m
		return
	}
	if len(a.chunks) == maxArenaChunks {
		panic("keyindex: the arena's chunk numbers are exhausted") // 128 GiB of records
	}
	a.chunks = append(a.chunks, c)
	a.mem = append(a.mem, m)
	a.live = append(a.live, 0)
	a.cur = len(a.chunks) - 1
}

// bytes returns the record at ref; capped so that appending to it cannot
// write into the chunk.
func (a *arena) bytes(ref recordRef) []byte {
	return a.chunks[ref.chunk][ref.off : ref.off+ref.n : ref.off+ref.n]
}

// drop forgets the record at ref and reports whether its chunk is now worth
// compacting.
func (a *arena) drop(ref recordRef) bool {
	a.live[ref.chunk] -= recordHeaderLen(int(ref.n)) + int(ref.n)
	return a.worthCompacting(ref.chunk)
}

// worthCompacting: a chunk in use, not the one being filled, less than
// half live.
func (a *arena) worthCompacting(c uint32) bool {
	return int(c) != a.cur && a.chunks[c] != nil && a.live[c]*2 < len(a.chunks[c])
}

// compact moves the live records of chunk c (those whose slot still points
// at them) to the current chunk and drops c.
func (a *arena) compact(c uint32, s *slots) {
	old := a.chunks[c]
	for off := 0; off < len(old); {
		n := binary.LittleEndian.Uint32(old[off:])
		size, k := binary.Uvarint(old[off+slotNumberLen:])
		start := off + slotNumberLen + k
		at := recordRef{chunk: c, off: uint32(start), n: uint32(size)}
		if n < s.next && s.get(n).ref() == at {
			s.get(n).setRef(a.put(n, old[start:start+int(size)]))
		}
		off = start + int(size)
	}
	a.chunks[c], a.mem[c], a.live[c] = nil, nil, 0
	a.spare = append(a.spare, c)
}
