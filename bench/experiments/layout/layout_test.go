// Package layoutexp is an experiment, not part of keyraft's build (its own
// module): how much of a verify decision at 1M keys the memory layout of
// the index decides, against the floor of bench/ (SHA-256 and a Go map
// lookup). Each variant is its own function, so that no variant's code
// changes another's: an earlier try that switched variants inside one
// function moved an unchanged variant by 200 ns when others were added.
//
// Variants, each hashing the token, probing an open-addressed table of
// 64-bit words, comparing the stored token hash and counting the use
// (two atomics and a dirty bit), like keyindex.Verify:
//
//   - slotScope: today's layout: table word → 40-byte slot (hot fields and
//     counters) → record (lists, hash), the scope matched against the
//     record's list;
//   - slotNoScope: the same without the scope check;
//   - headerNoScope: the table word locates the record itself, whose
//     arena header holds the hot fields and counters: one dependent miss
//     fewer; no scope check;
//   - headerOneScope: that layout, the key's one granted scope kept in the
//     header and checked straight-line against the request's first 16
//     bytes under a length mask;
//   - headerScope: that layout, the scope matched against the record's list.
//
// Run: cd bench/experiments/layout && go test -bench . -benchtime 1000000x
package layoutexp

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

const (
	keys    = 1_000_000
	huge    = 2 << 20
	listsAt = 52 // where a record's scope list starts
)

// mapHuge maps size bytes on a 2 MiB boundary, asking for huge pages, as
// keyindex/offheap_linux.go does.
func mapHuge(size int) []byte {
	size = (size + huge - 1) / huge * huge
	b, err := syscall.Mmap(-1, 0, size+huge, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		panic(err)
	}
	off := (huge - int(uintptr(unsafe.Pointer(&b[0])))%huge) % huge
	b = b[off : off+size]
	syscall.Madvise(b, 14) // MADV_HUGEPAGE
	return b
}

func words(b []byte) []uint64 { return unsafe.Slice((*uint64)(unsafe.Pointer(&b[0])), len(b)/8) }

// counters are what a verification updates.
type counters struct {
	limiter atomic.Uint64
	lastNs  atomic.Int64
	uses    atomic.Uint32
}

// slot is today's 40-byte slot.
type slot struct {
	counters
	refOff, refLen uint32
	packed         uint32
	listsAt        uint16
	_              uint16
}

// header precedes a record in the header layout.
type header struct {
	counters
	packed    uint32
	slotN     uint32
	listsAt   uint16
	recLen    uint16
	scopeLen  uint8
	scopeStar uint8
	_         [2]byte
	scope     [16]byte
}

const headerLen = uint64(unsafe.Sizeof(header{}))

var (
	tokens   [][]byte
	visit    []int32
	floor    map[[32]byte]*int
	mu       sync.RWMutex
	dirty    []atomic.Uint64
	slotTab  []uint64 // fingerprint<<32 | slot+1
	slots    []slot
	slotRecs []byte
	hdrTab   []uint64 // fingerprint<<35 | record offset/8 + 1
	hdrRecs  []byte
	want     = []byte("calls:start")
)

func home(fp uint32, n int) uint32 { return uint32(uint64(fp) * uint64(n) >> 32) }

func place(t []uint64, w uint64, fp uint32) {
	i := home(fp, len(t))
	for t[i] != 0 {
		if i++; int(i) == len(t) {
			i = 0
		}
	}
	t[i] = w
}

// record is a stand-in of a stored record: head fields, the scope list
// "calls:*" at listsAt, more fields, the token hash last (~130 bytes).
func record(h [32]byte) []byte {
	r := make([]byte, listsAt, 160)
	rand.Read(r)
	r = append(r, 2, 7)
	r = append(r, "calls:*"...)
	r = append(r, 0, 0, 0, 0)
	tail := make([]byte, 40)
	rand.Read(tail)
	r = append(r, tail...)
	return append(r, h[:]...)
}

func init() {
	floor = make(map[[32]byte]*int, keys)
	tableLen := keys * 5 / 3
	slotTab = words(mapHuge(tableLen * 8))[:tableLen]
	hdrTab = words(mapHuge(tableLen * 8))[:tableLen]
	slots = unsafe.Slice((*slot)(unsafe.Pointer(&mapHuge(keys * 40)[0])), keys)
	slotRecs = mapHuge(keys * 150)[:0]
	hdrRecs = mapHuge(keys * 220)[:0]
	dirty = make([]atomic.Uint64, keys/64+1)
	one := 1
	for i := range keys {
		tok := make([]byte, 40)
		rand.Read(tok)
		tokens = append(tokens, tok)
		h := sha256.Sum256(tok)
		floor[h] = &one
		rec := record(h)
		fp := uint32(binary.LittleEndian.Uint64(h[:8]) >> 32)

		slotRecs = append(slotRecs, 0, 0, 0, 0, byte(len(rec)))
		sl := &slots[i]
		sl.refOff, sl.refLen, sl.listsAt, sl.packed = uint32(len(slotRecs)), uint32(len(rec)), listsAt, 1<<20
		slotRecs = append(slotRecs, rec...)
		place(slotTab, uint64(fp)<<32|uint64(i)+1, fp)

		for len(hdrRecs)%8 != 0 {
			hdrRecs = append(hdrRecs, 0)
		}
		off := len(hdrRecs)
		hdrRecs = hdrRecs[:off+int(headerLen)]
		hd := (*header)(unsafe.Pointer(&hdrRecs[off]))
		hd.packed, hd.slotN, hd.listsAt, hd.recLen = 1<<20, uint32(i), listsAt, uint16(len(rec))
		hd.scopeLen, hd.scopeStar = uint8(copy(hd.scope[:], "calls:")), 1
		hdrRecs = append(hdrRecs, rec...)
		place(hdrTab, uint64(fp>>3)<<35|uint64(off/8)+1, fp>>3<<3)
	}
	visit = make([]int32, keys)
	x := uint32(2463534242)
	for i := range visit { // bench/hotpath_test.go's order
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		visit[i] = int32(x % keys)
	}
}

func fingerprint(h *[32]byte) uint32 { return uint32(binary.LittleEndian.Uint64(h[:8]) >> 32) }

// findSlot: table → slot → record, the record's hash compared.
func findSlot(h *[32]byte) (uint32, *slot, []byte) {
	fp := fingerprint(h)
	for i := home(fp, len(slotTab)); ; {
		w := slotTab[i]
		if i++; int(i) == len(slotTab) {
			i = 0
		}
		if w == 0 {
			return 0, nil, nil
		}
		if uint32(w>>32) != fp {
			continue
		}
		n := uint32(w) - 1
		sl := &slots[n]
		rec := slotRecs[sl.refOff : sl.refOff+sl.refLen]
		if string(rec[len(rec)-32:]) == string(h[:]) {
			return n, sl, rec
		}
	}
}

// findHeader: table → header and record, the record's hash compared.
func findHeader(h *[32]byte) (*header, []byte) {
	fp := fingerprint(h) >> 3
	for i := home(fp<<3, len(hdrTab)); ; {
		w := hdrTab[i]
		if i++; int(i) == len(hdrTab) {
			i = 0
		}
		if w == 0 {
			return nil, nil
		}
		if uint32(w>>35) != fp {
			continue
		}
		off := (w&(1<<35-1) - 1) * 8
		hd := (*header)(unsafe.Pointer(&hdrRecs[off]))
		rec := hdrRecs[off+headerLen : off+headerLen+uint64(hd.recLen)]
		if string(rec[len(rec)-32:]) == string(h[:]) {
			return hd, rec
		}
	}
}

// count records a use as keyindex's recordUse does.
func count(c *counters, n uint32, now int64) {
	if c.uses.Add(1) == 1 {
		dirty[n/64].Or(1 << (n % 64))
	}
	for last := c.lastNs.Load(); now-last >= 1e6; last = c.lastNs.Load() {
		if c.lastNs.CompareAndSwap(last, now) {
			return
		}
	}
}

// grants matches want against a scope list: count+1, then length-prefixed
// scopes; "prefix*" grants any request with that prefix and no ":" after it.
func grants(list []byte, want []byte) bool {
	n, p := int(list[0])-1, 1
	for range n {
		l := int(list[p])
		g := list[p+1 : p+1+l]
		p += 1 + l
		if k := l - 1; k >= 0 && g[k] == '*' && len(want) >= k && string(want[:k]) == string(g[:k]) {
			ok := true
			for _, c := range want[k:] {
				ok = ok && c != ':'
			}
			if ok {
				return true
			}
		} else if string(g) == string(want) {
			return true
		}
	}
	return false
}

// request is the request's scope, prepared before the lookup: its first
// 16 bytes in two words, its length, and its last ":".
type request struct {
	w0, w1       uint64
	n, lastColon int
}

func prepare(w []byte) request {
	r := request{n: len(w), lastColon: -1}
	for i, c := range w {
		switch {
		case i < 8:
			r.w0 |= uint64(c) << (8 * i)
		case i < 16:
			r.w1 |= uint64(c) << (8 * (i - 8))
		}
		if c == ':' {
			r.lastColon = i
		}
	}
	return r
}

var masks = func() (m [16][2]uint64) {
	for l := range 16 {
		for i := range l {
			m[l][i/8] |= 0xff << (8 * (i % 8))
		}
	}
	return
}()

// oneScope checks the header's scope: its literal part (before a final
// "*") against the request's first bytes under a mask of its length.
func oneScope(hd *header, r *request) bool {
	l := int(hd.scopeLen) & 15
	m := &masks[l]
	if (binary.LittleEndian.Uint64(hd.scope[:])^r.w0)&m[0] != 0 || (binary.LittleEndian.Uint64(hd.scope[8:])^r.w1)&m[1] != 0 {
		return false
	}
	if hd.scopeStar != 0 {
		return l <= r.n && r.lastColon < l
	}
	return l == r.n
}

//go:noinline
func slotScope(tok []byte, now int64) bool {
	h := sha256.Sum256(tok)
	mu.RLock()
	defer mu.RUnlock()
	n, sl, rec := findSlot(&h)
	if sl == nil || sl.packed>>20&1 == 0 || !grants(rec[sl.listsAt:], want) {
		return false
	}
	count(&sl.counters, n, now)
	return true
}

//go:noinline
func slotNoScope(tok []byte, now int64) bool {
	h := sha256.Sum256(tok)
	mu.RLock()
	defer mu.RUnlock()
	n, sl, _ := findSlot(&h)
	if sl == nil || sl.packed>>20&1 == 0 {
		return false
	}
	count(&sl.counters, n, now)
	return true
}

//go:noinline
func headerNoScope(tok []byte, now int64) bool {
	h := sha256.Sum256(tok)
	mu.RLock()
	defer mu.RUnlock()
	hd, _ := findHeader(&h)
	if hd == nil || hd.packed>>20&1 == 0 {
		return false
	}
	count(&hd.counters, hd.slotN, now)
	return true
}

//go:noinline
func headerOneScope(tok []byte, now int64) bool {
	r := prepare(want)
	h := sha256.Sum256(tok)
	mu.RLock()
	defer mu.RUnlock()
	hd, _ := findHeader(&h)
	if hd == nil || hd.packed>>20&1 == 0 || !oneScope(hd, &r) {
		return false
	}
	count(&hd.counters, hd.slotN, now)
	return true
}

//go:noinline
func headerScope(tok []byte, now int64) bool {
	h := sha256.Sum256(tok)
	mu.RLock()
	defer mu.RUnlock()
	hd, rec := findHeader(&h)
	if hd == nil || hd.packed>>20&1 == 0 || !grants(rec[hd.listsAt:], want) {
		return false
	}
	count(&hd.counters, hd.slotN, now)
	return true
}

// BenchmarkLayout runs every variant and the floor, interleaved, 3 times.
func BenchmarkLayout(b *testing.B) {
	now := time.Now().UnixNano()
	variants := []struct {
		name   string
		verify func([]byte, int64) bool
	}{
		{"slotScope", slotScope}, {"slotNoScope", slotNoScope},
		{"headerNoScope", headerNoScope}, {"headerOneScope", headerOneScope}, {"headerScope", headerScope},
		{"floor", func(tok []byte, _ int64) bool { return floor[sha256.Sum256(tok)] != nil }},
	}
	for p := range 3 {
		for _, v := range variants {
			b.Run(fmt.Sprintf("p=%d/%s", p, v.name), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					if !v.verify(tokens[visit[i%keys]], now) {
						b.Fatal("a stored token did not verify")
					}
				}
			})
		}
	}
}
