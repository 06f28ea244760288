package keyindex

import (
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mapOffHeap maps size bytes of zeroed anonymous memory, rounded up to whole
// pages, or from 1 MiB on to whole huge pages. Such a mapping starts on a
// 2 MiB boundary, so that every 2 MiB of it can be one huge page: it is
// mapped a huge page longer and the unaligned ends unmapped.
func mapOffHeap(size int) []byte {
	huge := size >= hugePage/2
	size = mappedLen(size)
	span := size
	if huge {
		span += hugePage
	}
	p, err := unix.MmapPtr(-1, 0, nil, uintptr(span), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		panic("keyindex: out of memory: mapping " + strconv.Itoa(span) + " bytes: " + err.Error())
	}
	if huge {
		head := (hugePage - uintptr(p)%hugePage) % hugePage
		if head > 0 {
			unix.MunmapPtr(p, head)
		}
		if tail := hugePage - head; tail > 0 {
			unix.MunmapPtr(unsafe.Add(p, head+uintptr(size)), tail)
		}
		p = unsafe.Add(p, head)
	}
	b := unsafe.Slice((*byte)(p), size)
	if huge {
		// Best effort: without huge pages the memory works the same.
		unix.Madvise(b, unix.MADV_HUGEPAGE)
	}
	return b
}

// unmapOffHeap gives b back. It runs in cleanups, where a panic would take
// the node down: should munmap fail (ENOMEM, when splitting a merged
// mapping would pass vm.max_map_count), the memory stays mapped, a leak
// and not a fault.
func unmapOffHeap(b []byte) {
	unix.MunmapPtr(unsafe.Pointer(unsafe.SliceData(b)), uintptr(len(b)))
}
