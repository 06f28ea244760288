package keyindex

import "runtime"

// The index's memory, its records, slots and hash tables, lives outside the
// Go heap, in memory mapped for it, for two reasons:
//
//   - The collector's room grows with the live heap (at least a quarter of
//     it under `serve --gc-percent auto`): with the records in the heap a
//     node holding ten million keys kept about 330 MB more resident, as
//     room and garbage (bench/README.md, session 6).
//   - Every verification reads a table word and a slot at random (and its
//     answer the record),
//     which in 4 KiB pages is a TLB miss as well as a cache miss at a
//     million keys. Mappings of 1 MiB and more are whole 2 MiB pages,
//     aligned, and asked to be backed by huge pages (MADV_HUGEPAGE: honoured
//     where transparent huge pages are "madvise" or "always", the kernel's
//     defaults). On the machine of bench/README.md the decision at 1M keys
//     took the same time with them: there the cache misses are the cost.
//
// None of it holds a Go pointer, which the collector would not see there.
// Slots and tables are read only by code holding the index lock, so a
// mapping replaced under the write lock (a table that grew) is unmapped at
// once. Records are also read after the lock is released, by a Decision's
// answer and by a snapshot being written: a chunk of them is unmapped by a
// cleanup once neither the arena nor any reader holds its mapping (arena).
// A store replaced by Install has its slots and tables unmapped at once and
// its chunks left to their cleanups; a dropped Loader's mappings all go by
// cleanup.
//
// Race-detector builds (the tests' `go test -race`) keep all of it in the
// heap (offheap_race.go): the detector does not watch memory outside it,
// and the slots' counters are what concurrent verifications share.

// mapping is zeroed memory outside the Go heap (in race builds, in it).
// Whoever reads its bytes keeps the mapping reachable: the cleanup unmaps it
// once it is not.
type mapping struct {
	b       []byte
	offHeap bool // mapped, not made in the heap (useOffHeap when it was made)
	cleanup runtime.Cleanup
}

// hugePage is the size of a transparent huge page on x86-64 and arm64
// (4 KiB base pages).
const hugePage = 2 << 20

// basePage is the size of a base page (x86-64, arm64).
const basePage = 4 << 10

// mappedLen is the length a mapping of size bytes takes: whole pages, and
// from half a huge page on whole huge pages (mapOffHeap). The hash tables
// size themselves to it, so none of what is mapped goes unused.
func mappedLen(size int) int {
	page := basePage
	if size >= hugePage/2 {
		page = hugePage
	}
	return (size + page - 1) &^ (page - 1)
}

// useOffHeap: false in race-detector builds.
var useOffHeap = true

func newMapping(size int) *mapping {
	if !useOffHeap {
		return &mapping{b: make([]byte, size)}
	}
	m := &mapping{b: mapOffHeap(size), offHeap: true}
	m.cleanup = runtime.AddCleanup(m, unmapOffHeap, m.b)
	return m
}

// free unmaps m now: the caller holds the write lock and drops every
// reference to its bytes.
func (m *mapping) free() {
	if m.offHeap {
		m.cleanup.Stop()
		unmapOffHeap(m.b)
	}
	m.b = nil
}
