package main

import (
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
	"time"
	"weak"
)

func TestGCPercentFor(t *testing.T) {
	for _, tc := range []struct {
		live uint64
		want int
	}{
		{0, maxGCPercent},
		{4 << 20, maxGCPercent},    // a small node: Go's default
		{64 << 20, 50},             // room for 32 MiB
		{100 << 20, 32},            // room for 32 MiB
		{276 << 20, minGCPercent},  // a million keys: the floor
		{2500 << 20, minGCPercent}, // ten million
		{1 << 62, minGCPercent},
	} {
		if got := gcPercentFor(tc.live); got != tc.want {
			t.Errorf("gcPercentFor(%d MiB) = %d, want %d", tc.live>>20, got, tc.want)
		}
	}
}

func TestGCPercentFlag(t *testing.T) {
	for in, want := range map[string]gcPercentFlag{"auto": {auto: true}, "25": {fixed: 25}, "0": {fixed: 0}, "-1": {fixed: -1}} {
		var f gcPercentFlag
		if err := f.Set(in); err != nil || f != want || f.String() != in {
			t.Errorf("Set(%q): %+v %v, String %q", in, f, err, f.String())
		}
	}
	for _, in := range []string{"", "-2", "ten", "25%"} {
		var f gcPercentFlag
		if err := f.Set(in); err == nil {
			t.Errorf("Set(%q) accepted", in)
		}
	}
}

// With auto, the target follows the live heap: 64 MiB kept live asks for
// room of 32 MiB, about 50%.
func TestGCPercentFollowsLiveHeap(t *testing.T) {
	prev := debug.SetGCPercent(100)
	live := make([]byte, 64<<20)
	stop := make(chan struct{})
	stopped := (&gcPercentFlag{auto: true}).apply(stop)
	defer func() { // the tuner must be gone before GOGC is put back
		close(stop)
		<-stopped
		debug.SetGCPercent(prev)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtime.GC()
		p := debug.SetGCPercent(-1)
		debug.SetGCPercent(p)
		if p >= 40 && p <= 50 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GOGC is %d with 64 MiB live, want about 50", p)
		}
		time.Sleep(100 * time.Millisecond)
	}
	runtime.KeepAlive(live)
}

func TestWorthReleasing(t *testing.T) {
	idle := idleRelease
	for _, tc := range []struct {
		h       heapState
		idleFor time.Duration
		want    bool
	}{
		{heapState{live: 10 << 20, held: 60 << 20}, idle, true},      // an import's garbage
		{heapState{live: 10 << 20, held: 60 << 20}, idle / 2, false}, // still collecting
		{heapState{live: 10 << 20, held: 25 << 20}, idle, false},     // within the slack
		{heapState{live: 100 << 20, held: 140 << 20}, idle, false},   // within half the live heap
		{heapState{live: 100 << 20, held: 160 << 20}, idle, true},
	} {
		if got := worthReleasing(tc.h, tc.idleFor); got != tc.want {
			t.Errorf("worthReleasing(%+v, %v) = %v, want %v", tc.h, tc.idleFor, got, tc.want)
		}
	}
}

// Under auto, a heap left holding a burst's garbage is given back to the
// OS once no collection has run for idleRelease.
func TestIdleHeapIsReleased(t *testing.T) {
	startIdleReleaser(t)
	live := make([]byte, 32<<20)
	garbageBurst(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		h := readHeapState()
		if h.held <= h.live+releaseSlack {
			runtime.KeepAlive(live)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the heap still holds %d MiB with %d MiB live", h.held>>20, h.live>>20)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestIdleReleaseEmptiesPools: a buffer a sync.Pool keeps, as
// encoding/json's and fasthttp's keep an import's, is freed by the idle
// release, not kept in the pool's victim cache by a single collection.
func TestIdleReleaseEmptiesPools(t *testing.T) {
	startIdleReleaser(t)
	buf := new([16 << 20]byte)
	live := make([]byte, 32<<20)
	garbageBurst(t)
	// Pooled after the burst's collection, so that only the release's
	// collections can free it.
	var pool sync.Pool
	pooled := weak.Make(buf)
	pool.Put(buf)
	buf = nil
	deadline := time.Now().Add(10 * time.Second)
	for pooled.Value() != nil {
		if time.Now().After(deadline) {
			t.Fatal("the pooled buffer survived the idle release")
		}
		time.Sleep(100 * time.Millisecond)
	}
	runtime.KeepAlive(live)
	runtime.KeepAlive(&pool)
}

// startIdleReleaser runs the auto tuner with a short idle time until the
// test ends.
func startIdleReleaser(t *testing.T) {
	prevIdle, prevPercent := idleRelease, debug.SetGCPercent(100)
	idleRelease = 300 * time.Millisecond
	stop := make(chan struct{})
	stopped := (&gcPercentFlag{auto: true}).apply(stop)
	t.Cleanup(func() {
		close(stop)
		<-stopped
		idleRelease = prevIdle
		debug.SetGCPercent(prevPercent)
	})
}

// garbageBurst leaves 28 MiB of garbage after a collection, with the
// caller's 32 MiB live: under the room the target leaves, so no collection
// runs after it, and enough for the tuner to release.
func garbageBurst(t *testing.T) {
	runtime.GC()
	var sink []byte
	for range 28 {
		sink = make([]byte, 1<<20)
	}
	runtime.KeepAlive(sink)
	if h := readHeapState(); !worthReleasing(h, idleRelease) {
		t.Fatalf("the burst left only %d MiB held with %d MiB live", h.held>>20, h.live>>20)
	}
}
