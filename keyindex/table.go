package keyindex

import "unsafe"

// hashTable maps 64-bit key hashes to uint32 values (slot numbers) by open
// addressing with linear probing over an array of words, each (the hash's
// top 32 bits << 32 | value+1), 0 for an empty word. It holds no pointers,
// and lives outside the Go heap (offheap.go); it costs 11 to 13 bytes a key
// filled between 60% and 75% (less full below a few million keys, where
// rounding to whole 2 MiB pages adds a larger share) against ~50 for a Go
// map of 32-byte keys.
// The table keeps only 32 bits of each hash: callers confirm a candidate
// value against the real key, and the position is derived from those same
// 32 bits so the table can grow without the original keys.
//
// The array's length is not a power of two: a table that doubled was
// between 37% and 75% full, half empty at exactly a million keys, and the
// two tables were a sixth of the index's memory there. Grown, it is 60%
// full instead (a quarter longer than before: rebuilding ten times from 1M
// to 10M keys, not three, each under the read lock, makeRoom), and a
// fingerprint's home is scaled to the length (home).
type hashTable struct {
	words []uint64 // mem's bytes
	mem   *mapping
	n     int
}

const minTableWords = 64

func fingerprint(h uint64) uint32 { return uint32(h >> 32) }

// home is where the entries of fingerprint fp start: fp scaled to the
// table's length by multiplying and shifting (Lemire's "fastrange"), which,
// unlike a mask, suits any length.
func home(fp uint32, size int) uint32 { return uint32(uint64(fp) * uint64(size) >> 32) }

// probe walks the values stored under one hash's fingerprint, in probe
// order. It is a cursor rather than a callback so that the verify path's
// loop inlines: the callback form cost a fifth of a lookup at 1K keys.
type probe struct {
	words []uint64
	fp, i uint32
}

func (t *hashTable) probe(h uint64) probe {
	return probe{words: t.words, fp: fingerprint(h), i: home(fingerprint(h), len(t.words))}
}

// next returns the next value stored under the fingerprint, or false once
// the probe run ends at an empty word.
func (p *probe) next() (uint32, bool) {
	if len(p.words) == 0 {
		return 0, false
	}
	for {
		w := p.words[p.i]
		if p.i++; p.i == uint32(len(p.words)) {
			p.i = 0
		}
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
	i := home(uint32(w>>32), len(t.words))
	for t.words[i] != 0 {
		i = t.after(i)
	}
	t.words[i] = w
}

// after is the position probed after i.
func (t *hashTable) after(i uint32) uint32 {
	if i++; i == uint32(len(t.words)) {
		return 0
	}
	return i
}

// hasRoomFor reports whether k more entries keep t at most three quarters
// full.
func (t *hashTable) hasRoomFor(k int) bool { return (t.n+k)*4 <= len(t.words)*3 }

// sizeFor is the length of a table grown (or sized) to hold n entries: 60%
// full, so that it grows again after a quarter more, and rounded up to the
// whole pages its mapping takes anyway (offheap.go).
func sizeFor(n int) int {
	return mappedLen(max(minTableWords, (n*5+2)/3)*8) / 8
}

// reserve sizes the table for n keys at once (a restore).
func (t *hashTable) reserve(n int) {
	if size := sizeFor(n); size > len(t.words) {
		t.resize(size)
	}
}

// resize moves the entries to a new array of size words and unmaps the old one: only holders of the write lock get here, and no
// reader can be walking it.
func (t *hashTable) resize(size int) { t.replace(t.copyTo(size)) }

// copyTo returns a table of size words holding t's entries. It only reads t.
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
	i := home(fingerprint(h), len(t.words))
	for t.words[i] != want {
		if t.words[i] == 0 {
			return
		}
		i = t.after(i)
	}
	for j := t.after(i); t.words[j] != 0; j = t.after(j) {
		home := home(uint32(t.words[j]>>32), len(t.words))
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
