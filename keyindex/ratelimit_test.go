package keyindex

import (
	"math/rand/v2"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// minuteStart is the start of a fixed window (Unix minutes are whole).
var minuteStart = time.Date(2030, 1, 2, 3, 4, 0, 0, time.UTC).UnixNano()

func at(windows int, offset time.Duration) int64 {
	return minuteStart + int64(windows)*windowNs + int64(offset)
}

func TestRateLimitOneWindow(t *testing.T) {
	for _, limit := range []int{1, 2, 5, 60, 1000, MaxRateLimitPerMin} {
		var l rateLimiter
		now := at(0, 10*time.Second)
		for i := 0; i < limit; i++ {
			ok, rl := l.allow(now, limit)
			if !ok {
				t.Fatalf("limit %d: request %d refused: %+v", limit, i+1, rl)
			}
			if rl.Limit != limit || rl.Remaining != limit-i-1 || rl.RetryAfterMs != 0 {
				t.Fatalf("limit %d: request %d: %+v, want remaining %d", limit, i+1, rl, limit-i-1)
			}
			if rl.ResetMs != 50_000 {
				t.Fatalf("ResetMs = %d, want 50000", rl.ResetMs)
			}
		}
		for i := 0; i < 3; i++ {
			ok, rl := l.allow(now, limit)
			if ok {
				t.Fatalf("limit %d: request %d allowed", limit, limit+i+1)
			}
			if rl.Remaining != 0 || rl.RetryAfterMs <= 0 || rl.Limit != limit {
				t.Fatalf("limit %d: limited answer %+v", limit, rl)
			}
		}
		// Still limited until this window ends: the whole limit was used now.
		if ok, _ := l.allow(at(0, 59*time.Second+999*time.Millisecond), limit); ok {
			t.Fatalf("limit %d: allowed before the window ended", limit)
		}
	}
}

func TestRateLimitResetMs(t *testing.T) {
	var l rateLimiter
	for _, tc := range []struct {
		off  time.Duration
		want int64
	}{
		{0, 60_000},
		{1, 60_000},
		{time.Millisecond, 59_999},
		{30 * time.Second, 30_000},
		{59*time.Second + 999*time.Millisecond + 1, 1},
	} {
		_, rl := l.allow(at(0, tc.off), 1_000_000)
		if rl.ResetMs != tc.want {
			t.Errorf("offset %v: ResetMs = %d, want %d", tc.off, rl.ResetMs, tc.want)
		}
	}
}

func TestRateLimitSlidingWindow(t *testing.T) {
	const limit = 10
	var l rateLimiter
	for i := 0; i < limit; i++ {
		if ok, _ := l.allow(at(0, 5*time.Second), limit); !ok {
			t.Fatal("refused in the first window")
		}
	}
	// Just after the window turns, the previous window weighs almost fully.
	if ok, rl := l.allow(at(1, time.Second), limit); ok {
		t.Fatalf("allowed at the start of the next window: %+v", rl)
	}
	// 30 s into the next window the previous one counts for half: 5 more.
	now := at(1, 30*time.Second)
	for i := 0; i < 5; i++ {
		ok, rl := l.allow(now, limit)
		if !ok {
			t.Fatalf("request %d refused at w+1+30s: %+v", i+1, rl)
		}
		if want := limit - 5 - i - 1; rl.Remaining != want {
			t.Fatalf("remaining %d, want %d", rl.Remaining, want)
		}
	}
	ok, rl := l.allow(now, limit)
	if ok {
		t.Fatal("6th request allowed at w+1+30s")
	}
	// prev=10, cur=5: the estimate drops below 10 once 10*(60-t)/60 <= 4, at t = 36 s.
	if rl.RetryAfterMs != 6000 {
		t.Fatalf("RetryAfterMs = %d, want 6000", rl.RetryAfterMs)
	}
	if ok, _ := l.allow(at(1, 36*time.Second-time.Millisecond), limit); ok {
		t.Fatal("allowed before Retry-After")
	}
	if ok, _ := l.allow(at(1, 36*time.Second), limit); !ok {
		t.Fatal("refused at Retry-After")
	}
	// Two windows later everything is forgotten.
	now = at(3, 0)
	for i := 0; i < limit; i++ {
		ok, rl := l.allow(now, limit)
		if !ok || rl.Remaining != limit-i-1 {
			t.Fatalf("request %d two windows later: %v %+v", i+1, ok, rl)
		}
	}
	if ok, _ := l.allow(now, limit); ok {
		t.Fatal("limit+1 allowed two windows later")
	}
}

func TestRateLimitTwoWindowsLaterFullyReset(t *testing.T) {
	const limit = 7
	var l rateLimiter
	for i := 0; i < limit; i++ {
		l.allow(at(0, 59*time.Second), limit)
	}
	now := at(2, 0) // previous window (w+1) is empty
	for i := 0; i < limit; i++ {
		if ok, rl := l.allow(now, limit); !ok || rl.Remaining != limit-i-1 {
			t.Fatalf("request %d: %v %+v", i+1, ok, rl)
		}
	}
	if ok, _ := l.allow(now, limit); ok {
		t.Fatal("allowed past the limit")
	}
}

func cloneLimiter(l *rateLimiter) *rateLimiter {
	c := &rateLimiter{}
	c.word.Store(l.word.Load())
	return c
}

// Random traffic: each fixed window never admits more than the limit, and
// Retry-After is exact to the millisecond: one more request fits at
// now+RetryAfter and not a millisecond earlier.
func TestRateLimitRetryAfterExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 300; round++ {
		limit := 1 + rng.IntN(40)
		var l rateLimiter
		now := at(0, time.Duration(rng.Int64N(windowNs)))
		perWindow := map[int64]int{}
		for step := 0; step < 200; step++ {
			now += rng.Int64N(int64(4 * time.Second))
			ok, rl := l.allow(now, limit)
			if ok {
				perWindow[now/windowNs]++
				if n := perWindow[now/windowNs]; n > limit {
					t.Fatalf("limit %d: %d requests in one window", limit, n)
				}
				if rl.Remaining < 0 || rl.Remaining >= limit {
					t.Fatalf("remaining %d of %d", rl.Remaining, limit)
				}
				continue
			}
			if rl.RetryAfterMs <= 0 || rl.RetryAfterMs > 2*60_000 {
				t.Fatalf("limit %d: RetryAfterMs %d", limit, rl.RetryAfterMs)
			}
			after := now + rl.RetryAfterMs*1e6
			if ok, _ := cloneLimiter(&l).allow(after, limit); !ok {
				t.Fatalf("limit %d: refused at now+RetryAfter (%d ms), word %x", limit, rl.RetryAfterMs, l.word.Load())
			}
			if rl.RetryAfterMs > 1 {
				if ok, _ := cloneLimiter(&l).allow(after-1e6, limit); ok {
					t.Fatalf("limit %d: allowed 1 ms before Retry-After (%d ms)", limit, rl.RetryAfterMs)
				}
			}
		}
	}
}

func TestRateLimitConcurrent(t *testing.T) {
	for _, limit := range []int{1, 100, 5000} {
		var l rateLimiter
		var allowed atomic.Int64
		now := at(0, 20*time.Second)
		var wg sync.WaitGroup
		for g := 0; g < 16; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 2*limit/16+10; i++ {
					if ok, _ := l.allow(now, limit); ok {
						allowed.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		if n := allowed.Load(); n != int64(limit) {
			t.Fatalf("limit %d: %d allowed", limit, n)
		}
	}
}

// Callers read the clock before calling allow, so around a window boundary a
// request stamped just before it can arrive after one stamped just after it.
// Such a late request must not wipe the counts.
func TestRateLimitLateRequestAcrossBoundary(t *testing.T) {
	const limit = 10
	var l rateLimiter
	for i := 0; i < limit; i++ {
		if ok, _ := l.allow(at(0, time.Second), limit); !ok {
			t.Fatal("refused")
		}
	}
	allowedNext := 0
	// 30 s into the next window: 5 fit.
	for i := 0; i < limit; i++ {
		if ok, _ := l.allow(at(1, 30*time.Second), limit); ok {
			allowedNext++
		}
	}
	// A request stamped in the previous window arrives late: that window is full.
	if ok, _ := l.allow(at(0, 59*time.Second), limit); ok {
		t.Error("late request for a full window allowed")
	}
	for i := 0; i < limit; i++ {
		if ok, _ := l.allow(at(1, 30*time.Second), limit); ok {
			allowedNext++
		}
	}
	if allowedNext != 5 {
		t.Fatalf("%d requests allowed 30 s into the next window, want 5", allowedNext)
	}
}

// Many goroutines stamping requests on both sides of a window boundary, as
// real callers do, never get more than limit requests through per window.
func TestRateLimitConcurrentAcrossBoundary(t *testing.T) {
	const limit = 200
	var l rateLimiter
	var before, after atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				// Mostly increasing clock, but with stragglers from before the boundary.
				now := at(0, 59*time.Second+500*time.Millisecond+time.Duration(i)*time.Millisecond*5)
				if (i+g)%7 == 0 {
					now = at(0, 59*time.Second+900*time.Millisecond+time.Duration(i%3)*time.Millisecond)
				}
				if ok, _ := l.allow(now, limit); ok {
					if now < at(1, 0) {
						before.Add(1)
					} else {
						after.Add(1)
					}
				}
			}
		}(g)
	}
	wg.Wait()
	if b, a := before.Load(), after.Load(); b > limit || b+a > limit+2 {
		// The run spans one second around the boundary: the previous window
		// still weighs >= 59.5/60 after it, so at most a request or two more
		// than the limit fit in all.
		t.Fatalf("%d + %d requests allowed around the boundary, limit %d", b, a, limit)
	}
}

func TestVerifyRateLimited(t *testing.T) {
	ix := New()
	const limit = 3
	r, tok := newTestRecord(t, TypeSecret, func(r *Record) { r.RateLimitPerMin = limit })
	mustInsert(t, ix, r)
	req := &VerifyRequest{Token: []byte(tok), NowNs: at(0, 0)}
	for i := 0; i < limit; i++ {
		d := ix.Verify(req)
		if d.Code != CodeValid || d.RateLimit.Remaining != limit-i-1 || d.RateLimit.Limit != limit {
			t.Fatalf("request %d: %s %+v", i+1, d.Code, d.RateLimit)
		}
	}
	d := ix.Verify(req)
	if d.Code != CodeRateLimited || d.RateLimit.RetryAfterMs <= 0 || !reflect.DeepEqual(ix.MatchedRecord(&d), r) {
		t.Fatalf("over limit: %s %+v", d.Code, d.RateLimit)
	}
	if u := ix.DrainUsage(); len(u) != 1 || u[0].Count != limit {
		t.Fatalf("usage counts rejected requests: %+v", u)
	}
	// Raising the limit through Replace keeps the count and applies at once.
	r2 := r.Clone()
	r2.RateLimitPerMin = limit + 1
	if err := ix.Replace(r2); err != nil {
		t.Fatal(err)
	}
	if d := ix.Verify(req); d.Code != CodeValid || d.RateLimit.Remaining != 0 {
		t.Fatalf("after raise: %s %+v", d.Code, d.RateLimit)
	}
	if d := ix.Verify(req); d.Code != CodeRateLimited {
		t.Fatalf("after raise, over: %s", d.Code)
	}
	// Lowering it below the count limits at once, without overflow.
	r3 := r2.Clone()
	r3.RateLimitPerMin = 1
	if err := ix.Replace(r3); err != nil {
		t.Fatal(err)
	}
	if d := ix.Verify(req); d.Code != CodeRateLimited || d.RateLimit.RetryAfterMs <= 0 {
		t.Fatalf("after lower: %s %+v", d.Code, d.RateLimit)
	}
	// Removing the limit lets everything through.
	r4 := r3.Clone()
	r4.RateLimitPerMin = 0
	if err := ix.Replace(r4); err != nil {
		t.Fatal(err)
	}
	if d := ix.Verify(req); d.Code != CodeValid || d.RateLimit != (RateLimit{}) {
		t.Fatalf("unlimited: %s %+v", d.Code, d.RateLimit)
	}
}

// TestVerifyRateLimitOnTheMonotonicClock: with MonoNs set, a wall clock
// stepped back minutes (NowNs) leaves a key's counts alone; on the wall
// clock the step would have wiped them.
func TestVerifyRateLimitOnTheMonotonicClock(t *testing.T) {
	ix := New()
	const limit = 2
	r, tok := newTestRecord(t, TypeSecret, func(r *Record) { r.RateLimitPerMin = limit })
	mustInsert(t, ix, r)
	req := &VerifyRequest{Token: []byte(tok), NowNs: at(10, 0), MonoNs: at(0, 1)}
	for range limit {
		if d := ix.Verify(req); d.Code != CodeValid {
			t.Fatalf("within the limit: %s", d.Code)
		}
	}
	req.NowNs, req.MonoNs = at(7, 0), at(0, 2) // the wall clock three minutes back
	if d := ix.Verify(req); d.Code != CodeRateLimited {
		t.Fatalf("after a wall clock step back: %s, want RATE_LIMITED", d.Code)
	}
	req.MonoNs = 0 // on the wall clock, the step wipes the counts
	if d := ix.Verify(req); d.Code != CodeValid {
		t.Fatalf("on the wall clock: %s", d.Code)
	}
}

func TestVerifyRateLimitConcurrent(t *testing.T) {
	ix := New()
	const limit = 500
	r, tok := newTestRecord(t, TypeSecret, func(r *Record) { r.RateLimitPerMin = limit })
	mustInsert(t, ix, r)
	var valid, limited atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := &VerifyRequest{Token: []byte(tok), NowNs: at(0, 10*time.Second)}
			for i := 0; i < 100; i++ {
				switch d := ix.Verify(req); d.Code {
				case CodeValid:
					valid.Add(1)
				case CodeRateLimited:
					limited.Add(1)
				default:
					t.Errorf("code %s", d.Code)
				}
			}
		}()
	}
	wg.Wait()
	if valid.Load() != limit || limited.Load() != 800-limit {
		t.Fatalf("valid %d limited %d", valid.Load(), limited.Load())
	}
}
