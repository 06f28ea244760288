//go:build race

package keyindex

// The race detector does not watch memory outside the Go heap: under it the
// slots and tables stay in the heap, so that their races are still found.
func init() { useOffHeap = false }
