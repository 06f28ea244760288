package keyindex

import "runtime"

// The index's slots and hash tables live outside the Go heap, in memory
// mapped for them, for two reasons:
//
//   - The collector's room grows with the live heap (at least a quarter of
//     it under `serve --gc-percent auto`): slots and tables in the heap cost
//     their own 88 bytes a key and about 22 more of room.
//   - Every verification reads a table word and a slot at random. In the
//     heap they sit in 4 KiB pages, and at a million keys nearly every
//     lookup missed the TLB as well as the cache. Mappings of 2 MiB and
//     more are aligned to 2 MiB and asked to be backed by huge pages
//     (MADV_HUGEPAGE: honoured where transparent huge pages are "madvise"
//     or "always", the kernel's defaults).
//
// Race-detector builds (the tests' `go test -race`) keep them in the heap
// (offheap_race.go): the detector does not watch memory outside it, and the
// slots' counters are what concurrent verifications share.
//
// This is safe because only code holding the index lock reads them (a
// Decision keeps record bytes, which stay in the heap, never a slot), and
// because they hold no Go pointer, which the collector would not see there.
// A mapping replaced under the write lock (a table that grew) is unmapped
// at once; those of a store no longer in use (replaced by Install, or a
// dropped Loader) when a cleanup finds the store unreachable.

// mapping is zeroed memory outside the Go heap. Whoever reads its bytes
// keeps the mapping reachable: the cleanup unmaps it once it is not.
type mapping struct {
	b       []byte
	cleanup runtime.Cleanup
}

// hugePage is the size of a transparent huge page on x86-64 and arm64
// (4 KiB base pages).
const hugePage = 2 << 20

// useOffHeap: false in race-detector builds.
var useOffHeap = true

func newMapping(size int) *mapping {
	if !useOffHeap {
		return &mapping{b: make([]byte, size)}
	}
	m := &mapping{b: mapOffHeap(size)}
	m.cleanup = runtime.AddCleanup(m, unmapOffHeap, m.b)
	return m
}

// free unmaps m now: the caller holds the write lock and drops every
// reference to its bytes.
func (m *mapping) free() {
	if useOffHeap {
		m.cleanup.Stop()
		unmapOffHeap(m.b)
	}
	m.b = nil
}
