package keyindex

import "sync/atomic"

// rateLimiter is a per-node sliding-window limiter in a single atomic word,
// so the verify path takes no lock and allocates nothing. The estimate is the
// classic two-window approximation: count in the current minute plus the
// previous minute's count weighted by how much of it still overlaps the
// sliding 60 s window.
//
// Word layout: window (24 bits, minutes of the clock the caller times with,
// VerifyRequest.MonoNs or NowNs, mod 2^24) |
// previous window's count (20 bits) | current count (20 bits). Counts never
// exceed the limit, and limits are capped at MaxRateLimitPerMin < 2^20.
type rateLimiter struct{ word atomic.Uint64 }

// MaxRateLimitPerMin is the largest rate_limit_per_min a key may have.
const MaxRateLimitPerMin = 1_000_000

const (
	windowNs   = int64(60e9)
	countBits  = 20
	countMask  = 1<<countBits - 1
	windowMask = 1<<24 - 1
)

// RateLimit is the state reported with a verify answer.
type RateLimit struct {
	Limit     int   // 0 = unlimited
	Remaining int   // requests left in the sliding window
	ResetMs   int64 // ms until the current fixed window ends
	// RetryAfterMs is, when limited, how long until one more request fits.
	RetryAfterMs int64
}

// allow counts one request at nowNs if it fits under limit.
func (l *rateLimiter) allow(nowNs int64, limit int) (bool, RateLimit) {
	nowWin := uint64(nowNs/windowNs) & windowMask
	nowElapsed := nowNs % windowNs
	rl := RateLimit{Limit: limit, ResetMs: (windowNs - nowElapsed + 999_999) / 1e6}
	for {
		win, elapsed := nowWin, nowElapsed
		old := l.word.Load()
		oldWin, prev, cur := old>>(2*countBits), (old>>countBits)&countMask, old&countMask
		if old != 0 && oldWin == (win+1)&windowMask {
			// Callers read the clock before calling, so a request stamped just
			// before a window boundary can arrive after one stamped after it.
			// Count it at the start of the newer window instead of treating
			// the stored counts as stale, which would wipe them.
			win, elapsed = oldWin, 0
		}
		if oldWin != win {
			if oldWin == (win-1)&windowMask {
				prev = cur
			} else {
				prev = 0
			}
			cur = 0
		}
		// Weighted share of the previous window, in whole requests, rounded up
		// so the limit is never exceeded.
		weighted := (int64(prev)*(windowNs-elapsed) + windowNs - 1) / windowNs
		used := weighted + int64(cur)
		if used >= int64(limit) {
			rl.RetryAfterMs = retryAfterMs(int64(prev), int64(cur), int64(limit), elapsed)
			return false, rl
		}
		next := win<<(2*countBits) | prev<<countBits | (cur + 1)
		if l.word.CompareAndSwap(old, next) {
			rl.Remaining = int(int64(limit) - used - 1)
			return true, rl
		}
	}
}

// retryAfterMs computes when the estimate first drops below limit, assuming no
// other request arrives: within this window as the previous one's weight
// decays, or else in the next window as this one's does.
func retryAfterMs(prev, cur, limit, elapsed int64) int64 {
	var wait int64
	if cur < limit && prev > 0 {
		// The weighted share is rounded up, so we need
		// prev*(W-t)/W <= limit-cur-1  =>  t >= W - (limit-cur-1)*W/prev.
		t := windowNs - (limit-cur-1)*windowNs/prev
		wait = t - elapsed
	} else {
		// Next window: cur becomes the previous count.
		// Need cur*(W-t)/W <= limit-1  =>  t >= W - (limit-1)*W/cur.
		wait = windowNs - elapsed + windowNs - (limit-1)*windowNs/cur
	}
	if wait < 1e6 {
		wait = 1e6
	}
	return (wait + 999_999) / 1e6
}
