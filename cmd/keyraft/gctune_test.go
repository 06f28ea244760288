package main

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"
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
