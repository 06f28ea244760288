package keyindex

import (
	"math/rand"
	"testing"
	"time"
)

// TestHashTableAgainstMap: random inserts and removes, with many colliding
// fingerprints and positions, agree with a Go map at every step, and the
// backward-shift deletion never loses an entry behind a hole.
func TestHashTableAgainstMap(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	var tab hashTable
	want := map[uint32]uint64{} // value -> key hash
	// Few distinct hashes so that probe runs are long and wrap around.
	hashes := make([]uint64, 40)
	for i := range hashes {
		hashes[i] = rng.Uint64()
		if i%4 == 0 && i > 0 {
			hashes[i] = hashes[i-1] // equal fingerprints
		}
	}
	lookup := func(h uint64, v uint32) bool { return contains(&tab, h, v) }
	next := uint32(0)
	for step := 0; step < 20000; step++ {
		if len(want) > 0 && rng.Intn(2) == 0 {
			for v, h := range want { // remove a random one
				tab.remove(h, v)
				delete(want, v)
				if lookup(h, v) {
					t.Fatalf("step %d: removed value %d still found", step, v)
				}
				break
			}
		} else {
			h := hashes[rng.Intn(len(hashes))]
			tab.insert(h, next)
			want[next] = h
			next++
		}
		if tab.n != len(want) {
			t.Fatalf("step %d: table holds %d, want %d", step, tab.n, len(want))
		}
		if step%97 == 0 {
			for v, h := range want {
				if !lookup(h, v) {
					t.Fatalf("step %d: value %d lost", step, v)
				}
			}
		}
	}
	// Removing what is not there changes nothing.
	tab.remove(12345, 999999)
	if tab.n != len(want) {
		t.Fatal("removing an absent entry changed the count")
	}
}

// TestHashTableReserve: reserving keeps what is stored and leaves room.
func TestHashTableReserve(t *testing.T) {
	var tab hashTable
	for v := uint32(0); v < 100; v++ {
		tab.insert(uint64(v)*0x9E3779B97F4A7C15, v)
	}
	tab.reserve(10000)
	if len(tab.words)*3 < 10000*4 {
		t.Fatalf("reserve(10000) left %d words", len(tab.words))
	}
	for v := uint32(0); v < 100; v++ {
		if !contains(&tab, uint64(v)*0x9E3779B97F4A7C15, v) {
			t.Fatalf("value %d lost by reserve", v)
		}
	}
}

// contains reports whether the probe for h yields v.
func contains(tab *hashTable, h uint64, v uint32) bool {
	for p := tab.probe(h); ; {
		got, ok := p.next()
		if !ok || got == v {
			return ok
		}
	}
}

// TestTablesGrowUnderReadLock: a write that needs larger hash tables builds
// them while verifications go on (under the read lock), and every key is
// found in them afterwards.
func TestTablesGrowUnderReadLock(t *testing.T) {
	ix := New()
	var recs []*Record
	var toks []string
	for range 40 {
		r, tok := newTestRecord(t, TypeSecret, nil)
		recs, toks = append(recs, r), append(toks, tok)
	}
	if err := ix.InsertAll(recs); err != nil {
		t.Fatal(err)
	}
	built := 0
	testHookRoomBuilt = func() {
		built++
		done := make(chan Code)
		go func() {
			done <- ix.Verify(&VerifyRequest{Token: []byte(toks[0]), NowNs: baseNow.UnixNano()}).Code
		}()
		select {
		case c := <-done:
			if c != CodeValid {
				t.Errorf("verify while the tables grow: %s", c)
			}
		case <-time.After(10 * time.Second):
			// It waits for the write lock: it finishes once the hook returns.
			t.Error("a verification waited for the tables to grow")
		}
	}
	defer func() { testHookRoomBuilt = nil }()

	words := len(ix.st.byHash.words)
	var more []*Record
	for range words*3/4 - len(recs) + 1 { // one more than the table has room for
		r, tok := newTestRecord(t, TypeSecret, nil)
		more, toks = append(more, r), append(toks, tok)
	}
	if err := ix.InsertAll(more); err != nil {
		t.Fatal(err)
	}
	if built == 0 {
		t.Fatalf("filling a table of %d words past three quarters did not grow it", words)
	}
	for i, tok := range toks {
		if d := ix.Verify(&VerifyRequest{Token: []byte(tok), NowNs: baseNow.UnixNano()}); d.Code != CodeValid {
			t.Errorf("key %d after the tables grew: %s", i, d.Code)
		}
	}
	for _, r := range append(recs, more...) {
		if ix.Get(r.ID) == nil {
			t.Errorf("%s not found by id after the tables grew", r.ID)
		}
	}
}

// TestHashTableWrapsAtAnyLength: in a table whose length is not a power of
// two, entries whose home is the last word wrap to the first ones, are
// found there, and survive the removal of the entry before them.
func TestHashTableWrapsAtAnyLength(t *testing.T) {
	tab := (&hashTable{}).copyTo(700)
	last := uint64(0xFFFFFFFF) << 32 // the largest fingerprint: home 699
	if h := home(fingerprint(last), len(tab.words)); h != 699 {
		t.Fatalf("home of the largest fingerprint is %d, want 699", h)
	}
	for v := uint32(0); v < 10; v++ {
		tab.insert(last|uint64(v), v)
	}
	if tab.words[699] == 0 || tab.words[8] == 0 || tab.words[9] != 0 {
		t.Fatalf("entries not at 699, 0…8: %x %x %x", tab.words[699], tab.words[8], tab.words[9])
	}
	tab.remove(last, 0)
	for v := uint32(1); v < 10; v++ {
		if !contains(&tab, last|uint64(v), v) {
			t.Fatalf("value %d lost after removing the one at the end", v)
		}
	}
	if tab.words[699] == 0 || tab.words[8] != 0 {
		t.Fatal("backward shift did not move the wrapped run back across the end")
	}
}

// TestSizeFor: a grown table is about 60% full (the old power-of-two
// lengths left it as little as 37% full), has room for three
// quarters, and uses the whole pages of its mapping.
func TestSizeFor(t *testing.T) {
	for _, n := range []int{0, 1, 100, 10_000, 1_000_000, 10_000_000} {
		size := sizeFor(n)
		if size*3 < n*4 {
			t.Errorf("sizeFor(%d) = %d: less than room for three quarters", n, size)
		}
		page := 4096
		if size*8 >= hugePage/2 {
			page = hugePage
		}
		if size*8%page != 0 {
			t.Errorf("sizeFor(%d) = %d words: not whole pages of %d", n, size, page)
		}
		// 60% full, less what rounding up to 2 MiB adds (at least 256Ki words).
		if n >= 1_000_000 && float64(n)/float64(size) < 0.6*float64(size-1<<18)/float64(size) {
			t.Errorf("sizeFor(%d) = %d: %.2f full, want about 0.6", n, size, float64(n)/float64(size))
		}
	}
}
