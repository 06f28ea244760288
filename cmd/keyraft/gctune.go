package main

import (
	"fmt"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"time"
)

// The garbage collector's target (GOGC) is a percentage of the live heap
// that may be allocated before the next collection. A node's live heap is
// mostly its index, nearly pointer-free (keyindex/arena.go), so a
// collection has little to mark and collecting often costs little CPU;
// memory above the live heap is what a high target costs. A fixed target
// fits one size only: 25% was 70 MB above the index at a million keys and
// 600 MB at ten million, while a small node at 10% would collect every few
// hundred KB of garbage. So by default ("auto") the target follows the live
// heap: room for gcHeadroom of allocation between collections, between
// minGCPercent (large indexes) and maxGCPercent (small ones, Go's default).
const (
	gcHeadroom   = 32 << 20
	minGCPercent = 10
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

// followLiveHeap sets the auto target from the live heap the last
// collection found, every gcTuneEvery, until stop closes; then it closes done.
func followLiveHeap(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	t := time.NewTicker(gcTuneEvery)
	defer t.Stop()
	set := -1
	for {
		metrics.Read(sample)
		if p := gcPercentFor(sample[0].Value.Uint64()); p != set {
			debug.SetGCPercent(p)
			set = p
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}
