package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"time"
)

// The garbage collector's target (GOGC) is a percentage of the live heap
// that may be allocated before the next collection. The index keeps its
// records, slots and tables outside the heap (keyindex/offheap.go), so
// the live heap is its listing order, Raft's buffers and requests, and a
// collection has little to mark; but on a loaded node each one still takes
// CPU from verification for its mark phase and pauses it briefly, so how
// often collections run shows in the verify p99. By default ("auto") the
// target leaves room for at least gcHeadroom of allocation and at least
// minGCPercent of the live heap, up to Go's default of maxGCPercent: a
// small node no longer collects every few MB of garbage (as a fixed 25%
// made it), and a large one keeps 25%. 10% at ten million keys (250 MB of
// room) saved about 30 bytes a key but collected 2.5 times as often under
// the same usage flushes, and the verify p99 at 10M keys over 10K keys
// went from 1.07-1.46x to 1.69-1.89x (benchrun -long -only scale runs of
// 2026-11-23, docs/design-notes.md).
const (
	gcHeadroom   = 32 << 20
	minGCPercent = 25
	maxGCPercent = 100
	gcTuneEvery  = time.Second
)

// gcPercentFor is the auto target for a live heap of live bytes.
func gcPercentFor(live uint64) int {
	return int(min(max(100*gcHeadroom/max(live, 1), minGCPercent), maxGCPercent))
}

// gcPercentFlag is --gc-percent: "auto", a fixed target, or -1 for the
// runtime's own (GOGC from the environment).
type gcPercentFlag struct {
	auto  bool
	fixed int
}

func (f *gcPercentFlag) String() string {
	if f.auto {
		return "auto"
	}
	return strconv.Itoa(f.fixed)
}

func (f *gcPercentFlag) Set(s string) error {
	if s == "auto" {
		*f = gcPercentFlag{auto: true}
		return nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < -1 {
		return fmt.Errorf("%q: want auto, a percentage, or -1", s)
	}
	*f = gcPercentFlag{fixed: n}
	return nil
}

// apply sets the target once, or for auto starts following the live heap
// until stop closes; the returned channel closes when that has stopped.
func (f *gcPercentFlag) apply(stop <-chan struct{}) (stopped <-chan struct{}) {
	done := make(chan struct{})
	switch {
	case f.auto:
		go followLiveHeap(stop, done)
		return done
	case f.fixed >= 0:
		debug.SetGCPercent(f.fixed)
	}
	close(done)
	return done
}

// After a bulk write (an import, a restore) the heap holds its garbage, and
// the room the collector sized from it, until the next collection, which an
// idle node runs only every two minutes, and the scavenger then returns the
// pages slowly: a node that had just imported a million keys held 258 MB
// where, collected, it needed 216 (bench/README.md, session 7). So under
// auto, when no collection has run for idleRelease and the heap holds more
// than the live heap and a slack of at least releaseSlack, the tuner collects
// and returns the free pages at once (debug.FreeOSMemory). A node under
// steady load collects often enough that this does not happen; a verifying
// node allocates next to nothing, and after one release holds little more
// than its live heap.
var idleRelease = 5 * time.Second // a variable for tests

const releaseSlack = 16 << 20

// releaseIdleHeap collects twice and returns the free pages. The first
// collection moves what sync.Pools hold to their victim caches, the second
// frees it: after an import, encoding/json's encoder pool and fasthttp's
// body pool each held a buffer of the 2 MB request or command, which one
// collection kept (bench/README.md, session 9: 190–196 B a key at 1M
// where the index takes 189.6 B).
func releaseIdleHeap() {
	runtime.GC()
	debug.FreeOSMemory()
}

// heapState is what the tuner reads of the runtime each tick.
type heapState struct {
	cycles uint64 // collections completed
	live   uint64 // live heap found by the last collection
	held   uint64 // heap memory taken from the OS and not given back
}

var heapSamples = []metrics.Sample{
	{Name: "/gc/cycles/total:gc-cycles"},
	{Name: "/gc/heap/live:bytes"},
	{Name: "/memory/classes/heap/objects:bytes"},
	{Name: "/memory/classes/heap/unused:bytes"},
	{Name: "/memory/classes/heap/free:bytes"},
}

func readHeapState() heapState {
	s := append([]metrics.Sample(nil), heapSamples...)
	metrics.Read(s)
	return heapState{cycles: s[0].Value.Uint64(), live: s[1].Value.Uint64(),
		held: s[2].Value.Uint64() + s[3].Value.Uint64() + s[4].Value.Uint64()}
}

// worthReleasing reports whether a heap idle for idleFor holds enough beyond
// its live heap to give back.
func worthReleasing(h heapState, idleFor time.Duration) bool {
	return idleFor >= idleRelease && h.held > h.live+max(releaseSlack, h.live/2)
}

// followLiveHeap sets the auto target from the live heap the last
// collection found, every gcTuneEvery, and gives memory back after bulk
// writes (idleRelease), until stop closes; then it closes done.
func followLiveHeap(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(gcTuneEvery)
	defer t.Stop()
	set := -1
	var lastCycles uint64
	lastCollection := time.Now()
	for {
		h := readHeapState()
		if p := gcPercentFor(h.live); p != set {
			debug.SetGCPercent(p)
			set = p
		}
		if h.cycles != lastCycles {
			lastCycles, lastCollection = h.cycles, time.Now()
		} else if worthReleasing(h, time.Since(lastCollection)) {
			releaseIdleHeap()
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}
