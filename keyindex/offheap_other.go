//go:build !linux

package keyindex

// mapOffHeap: elsewhere than Linux the index's slots and tables stay in the
// Go heap (they hold no pointers, so the collector does not scan them).
func mapOffHeap(size int) []byte { return make([]byte, size) }

func unmapOffHeap([]byte) {}
