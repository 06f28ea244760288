package keyindex

import "unsafe"

// hashTable maps 64-bit key hashes to uint32 values (slot numbers) by open
// addressing with linear probing over a power-of-two array of words, each
// (the hash's top 32 bits << 32 | value+1), 0 for an empty word. It holds
// no pointers, and lives outside the Go heap (offheap.go); it costs about 11
// bytes a key at its load factor against ~50 for a Go map of 32-byte keys.
// The table keeps only 32 bits of each hash: callers confirm a candidate
// value against the real key, and the position is derived from those same
// 32 bits so the table can grow without the original keys.
type hashTable struct {
	words []uint64 // mem's bytes
	mem   *mapping
	n     int
}

const minTableWords = 64

func fingerprint(h uint64) uint32 { return uint32(h >> 32) }

func (t *hashTable) mask() uint32 { return uint32(len(t.words) - 1) }

// probe walks the values stored under one hash's fingerprint, in probe
// order. It is a cursor rather than a callback so that the verify path's
// loop inlines: the callback form cost a fifth of a lookup at 1K keys.
type probe struct {
	words []uint64
	fp, i uint32
}

func (t *hashTable) probe(h uint64) probe {
	return probe{words: t.words, fp: fingerprint(h), i: fingerprint(h)}
}

// next returns the next value stored under the fingerprint, or false once
// the probe run ends at an empty word.
func (p *probe) next() (uint32, bool) {
	if len(p.words) == 0 {
		return 0, false
	}
	m := uint32(len(p.words) - 1)
	for {
		w := p.words[p.i&m]
		p.i++
		if w == 0 {
			return 0, false
		}
		if uint32(w>>32) == p.fp {
			return uint32(w) - 1, true
		}
	}
}

// insert adds v under h; the caller has checked it is not there yet.
func (t *hashTable) insert(h uint64, v uint32) {
	if !t.hasRoomFor(1) {
		t.resize(sizeFor(t.n + 1))
	}
	t.place(uint64(fingerprint(h))<<32 | uint64(v+1))
	t.n++
}

func (t *hashTable) place(w uint64) {
	m := t.mask()
	i := uint32(w>>32) & m
	for t.words[i] != 0 {
		i = (i + 1) & m
	}
	t.words[i] = w
}

// hasRoomFor reports whether k more entries keep t at most three quarters
// full.
func (t *hashTable) hasRoomFor(k int) bool { return (t.n+k)*4 <= len(t.words)*3 }

// sizeFor is the smallest table length (a power of two) that holds n
// entries at most three quarters full.
func sizeFor(n int) int {
	size := minTableWords
	for size*3 < n*4 {
		size *= 2
	}
	return size
}

// reserve sizes the table for n keys at once (a restore).
func (t *hashTable) reserve(n int) {
	if size := sizeFor(n); size > len(t.words) {
		t.resize(size)
	}
}

// resize moves the entries to a new array of size words (a power of two)
// and unmaps the old one: only holders of the write lock get here, and no
// reader can be walking it.
func (t *hashTable) resize(size int) { t.replace(t.copyTo(size)) }

// copyTo returns a table of size words (a power of two) holding t's
// entries. It only reads t.
func (t *hashTable) copyTo(size int) hashTable {
	nt := hashTable{mem: newMapping(size * 8), n: t.n}
	nt.words = unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(nt.mem.b))), size)
	for _, w := range t.words {
		if w != 0 {
			nt.place(w)
		}
	}
	return nt
}

// withRoomFor returns a copy of t with room for k more entries, and true,
// if t itself has not that room.
func (t *hashTable) withRoomFor(k int) (hashTable, bool) {
	if t.hasRoomFor(k) {
		return hashTable{}, false
	}
	return t.copyTo(sizeFor(t.n + k)), true
}

// replace makes nt t's contents and unmaps t's old words (under the write
// lock: no reader can be walking them).
func (t *hashTable) replace(nt hashTable) {
	if t.mem != nil {
		t.mem.free()
	}
	*t = nt
}

// remove deletes the entry (h, v) if present. Backward-shift deletion:
// every later entry of the probe run that could sit in the hole moves
// into it, so lookups never need tombstones.
func (t *hashTable) remove(h uint64, v uint32) {
	if len(t.words) == 0 {
		return
	}
	want := uint64(fingerprint(h))<<32 | uint64(v+1)
	m := t.mask()
	i := fingerprint(h) & m
	for t.words[i] != want {
		if t.words[i] == 0 {
			return
		}
		i = (i + 1) & m
	}
	for j := (i + 1) & m; t.words[j] != 0; j = (j + 1) & m {
		home := uint32(t.words[j]>>32) & m
		// The entry at j may move to the hole at i unless its home lies
		// cyclically in (i, j]: then i comes before its home.
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			t.words[i] = t.words[j]
			i = j
		}
	}
	t.words[i] = 0
	t.n--
}
