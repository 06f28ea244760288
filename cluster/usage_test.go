package cluster

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/keyraft/keyraft/fsm"
)

// TestSendUsage: pending counts go out in batches of usageChunk; a batch
// whose outcome is unknown is dropped, not sent again (it may have
// committed); a batch that fails stays pending with the rest.
func TestSendUsage(t *testing.T) {
	pendingOf := func(n int) map[string]fsm.Usage {
		m := map[string]fsm.Usage{}
		for i := range n {
			id := fmt.Sprintf("key_%d", i)
			m[id] = fsm.Usage{ID: id, Count: 1}
		}
		return m
	}
	// failing makes a propose that answers err to its call number at,
	// noting the batches' sizes and how often each key was sent.
	sent := map[string]int{}
	failing := func(at int, err error, calls *[]int) func([]fsm.Usage) error {
		return func(b []fsm.Usage) error {
			for _, u := range b {
				sent[u.ID]++
			}
			if *calls = append(*calls, len(b)); len(*calls) == at {
				return err
			}
			return nil
		}
	}

	var calls []int
	pending := pendingOf(2500)
	unknown, err := sendUsage(pending, failing(0, nil, &calls))
	if len(pending) != 0 || unknown != 0 || err != nil || !slices.Equal(calls, []int{1000, 1000, 500}) {
		t.Fatalf("all sent: %d pending, %d unknown, err %v, batches %v", len(pending), unknown, err, calls)
	}
	if len(sent) != 2500 {
		t.Fatalf("%d keys sent, want 2500", len(sent))
	}
	for id, n := range sent {
		if n != 1 {
			t.Fatalf("%s sent %d times", id, n)
		}
	}

	calls = nil
	pending = pendingOf(2500)
	unknown, err = sendUsage(pending, failing(2, fmt.Errorf("apply: %w", ErrOutcomeUnknown), &calls))
	if len(pending) != 0 || unknown != 1000 || err != nil || len(calls) != 3 {
		t.Fatalf("an unknown outcome: %d pending, %d unknown, err %v, batches %v", len(pending), unknown, err, calls)
	}

	calls = nil
	pending = pendingOf(2500)
	unknown, err = sendUsage(pending, failing(2, ErrNotLeader, &calls))
	if len(pending) != 1500 || unknown != 0 || !errors.Is(err, ErrNotLeader) || len(calls) != 2 {
		t.Fatalf("a failed batch: %d pending, %d unknown, err %v, batches %v", len(pending), unknown, err, calls)
	}
}

// TestUsageWait: flushes wait the interval, and longer after a flush of more
// keys than the bound allows in it, in proportion.
func TestUsageWait(t *testing.T) {
	for _, c := range []struct {
		keys, max int
		want      time.Duration
	}{
		{0, 10_000, 5 * time.Second},
		{50_000, 10_000, 5 * time.Second}, // exactly what the interval allows
		{100_000, 10_000, 10 * time.Second},
		{1_000_000, 10_000, 100 * time.Second},
		{1_000_000, 0, 5 * time.Second}, // no bound
		{3, 2, 5 * time.Second},
		{15, 2, 7500 * time.Millisecond},
	} {
		if got := usageWait(5*time.Second, c.keys, c.max); got != c.want {
			t.Errorf("usageWait(5s, %d keys, %d/s) = %s, want %s", c.keys, c.max, got, c.want)
		}
	}
}
