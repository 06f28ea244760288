package keyindex

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// vma is the /proc/self/smaps entry of the mapping holding addr: its range
// and whether the kernel would back it with huge pages.
type vma struct {
	start, end  uintptr
	thpEligible bool
}

func findVMA(t *testing.T, addr uintptr) (vma, bool) {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cur vma
	found := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		var s, e uintptr
		if n, _ := fmt.Sscanf(line, "%x-%x ", &s, &e); n == 2 { // a mapping's first line
			if found {
				return cur, true
			}
			cur = vma{start: s, end: e}
			found = addr >= s && addr < e
			continue
		}
		if found && strings.HasPrefix(line, "THPeligible:") {
			cur.thpEligible = strings.TrimSpace(strings.TrimPrefix(line, "THPeligible:")) == "1"
		}
	}
	return cur, found
}

func thpEnabled() bool {
	b, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	return err == nil && !strings.Contains(string(b), "[never]")
}

func TestMapOffHeap(t *testing.T) {
	for _, size := range []int{100, 1 << 20, 5 << 20} {
		b := mapOffHeap(size)
		addr := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
		huge := size > hugePage/2
		if huge && (addr%hugePage != 0 || len(b)%hugePage != 0) {
			t.Errorf("size %d: mapped %d bytes at %#x, want whole huge pages on a 2 MiB boundary", size, len(b), addr)
		}
		if len(b) < size {
			t.Fatalf("size %d: mapped only %d bytes", size, len(b))
		}
		for i := 0; i < len(b); i += 4096 {
			if b[i] != 0 {
				t.Fatalf("size %d: byte %d is %d, want zeroed memory", size, i, b[i])
			}
			b[i] = 1
		}
		v, ok := findVMA(t, addr)
		if !ok {
			t.Fatalf("size %d: no mapping at %#x", size, addr)
		}
		if huge && thpEnabled() && !v.thpEligible {
			t.Errorf("size %d: the mapping %#x-%#x may not get huge pages", size, v.start, v.end)
		}
		unmapOffHeap(b)
		if v, ok := findVMA(t, addr); ok {
			t.Errorf("size %d: %#x still mapped after unmapping (%#x-%#x)", size, addr, v.start, v.end)
		}
	}
}

// TestOffHeapReleased: a table that grows unmaps its old words at once, and
// the mappings of an index nobody holds any more are unmapped by the
// collector's cleanup.
func TestOffHeapReleased(t *testing.T) {
	defer func(was bool) { useOffHeap = was }(useOffHeap)
	useOffHeap = true // also under -race: nothing else touches this index

	ix := New()
	insertKeys(t, ix, 1000)
	st := ix.st
	oldTable := st.byHash.mem
	insertKeys(t, ix, 50_000)
	if oldTable == st.byHash.mem {
		t.Fatal("the table did not grow")
	}
	// Unmapped, not left to the cleanup (TestMapOffHeap checks the unmap
	// itself; the address may already hold a newer mapping).
	if oldTable.b != nil {
		t.Error("the table's words before it grew are still mapped")
	}
	want := int64(len(st.byHash.words)+len(st.byID.words))*8 + int64(len(st.slots.mem))*hugePage
	for _, m := range st.arena.mem {
		want += int64(len(m.b))
	}
	if got := ix.MappedBytes(); got != want {
		t.Errorf("MappedBytes = %d, want %d", got, want)
	}

	addrs := []uintptr{uintptr(unsafe.Pointer(unsafe.SliceData(st.byHash.words))),
		uintptr(unsafe.Pointer(unsafe.SliceData(st.byID.words))), uintptr(unsafe.Pointer(st.slots.chunks[0])),
		uintptr(unsafe.Pointer(unsafe.SliceData(st.arena.chunks[0])))}
	for _, a := range addrs {
		if _, ok := findVMA(t, a); !ok {
			t.Fatalf("%#x is not mapped while the index is in use", a)
		}
	}
	ix, st = nil, nil
	deadline := time.Now().Add(10 * time.Second)
	for _, a := range addrs {
		for {
			runtime.GC()
			if _, ok := findVMA(t, a); !ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%#x is still mapped after the index became unreachable", a)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// insertKeys adds n keys to ix in one batch.
func insertKeys(t *testing.T, ix *Index, n int) {
	t.Helper()
	recs := make([]*Record, n)
	for i := range recs {
		recs[i], _ = newTestRecord(t, TypeSecret, nil)
	}
	if err := ix.InsertAll(recs); err != nil {
		t.Fatal(err)
	}
}

// TestDroppedChunkStaysWhileRead: a Decision and a snapshot read records
// after the index lock is released; the chunk holding them stays mapped
// after compaction drops it from the arena, until they are done with it.
func TestDroppedChunkStaysWhileRead(t *testing.T) {
	defer func(was bool) { useOffHeap = was }(useOffHeap)
	useOffHeap = true

	ix := New()
	r, tok := newTestRecord(t, TypeSecret, nil)
	mustInsert(t, ix, r)
	d := ix.Verify(&VerifyRequest{Token: []byte(tok), NowNs: baseNow.UnixNano()})
	snap := ix.Snapshot()
	first := uintptr(unsafe.Pointer(unsafe.SliceData(ix.st.arena.chunks[0])))

	// Rewrite the key until its first chunk is full, dropped and compacted.
	for i := 0; ix.st.arena.mem[0] != nil; i++ {
		if i > 100_000 {
			t.Fatal("the first chunk was never compacted")
		}
		ix.AddUsage(r.ID, 1, baseNow, func(_, _ []byte) {})
	}
	for range 3 {
		runtime.GC()
		time.Sleep(10 * time.Millisecond) // cleanups run on their own goroutine
	}
	if _, ok := findVMA(t, first); !ok {
		t.Fatal("the dropped chunk was unmapped while a Decision and a snapshot held records in it")
	}
	k := d.Key()
	if id := string(k.AppendID(nil)); d.Code != CodeValid || id != r.ID || k.WorkspaceID != r.WorkspaceID {
		t.Errorf("decision after compaction: %s %s %+v", d.Code, id, k)
	}
	n := 0
	snap.Each(func(got *Record) bool {
		n++
		if !same(got, r) {
			t.Errorf("snapshot record after compaction: %+v, want %+v", got, r)
		}
		return true
	})
	if n != 1 {
		t.Errorf("snapshot has %d records, want 1", n)
	}
	runtime.KeepAlive(d)
	runtime.KeepAlive(snap)

	d, snap = Decision{}, nil
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		if _, ok := findVMA(t, first); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the dropped chunk is still mapped after its last reader let go")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestInstallUnmapsOldSlotsAndTables: a restore's Install unmaps the slots
// and tables it replaces at once (only lock holders read them), and the
// index answers from the new store.
func TestInstallUnmapsOldSlotsAndTables(t *testing.T) {
	defer func(was bool) { useOffHeap = was }(useOffHeap)
	useOffHeap = true

	ix := New()
	insertKeys(t, ix, 100)
	old := ix.st
	mems := append([]*mapping{old.byHash.mem, old.byID.mem}, old.slots.mem...)

	r, tok := newTestRecord(t, TypeSecret, nil)
	l := NewLoader(1)
	if err := l.Add(AppendRecord(nil, r)); err != nil {
		t.Fatal(err)
	}
	ix.Install(l)
	for i, m := range mems {
		if m.b != nil {
			t.Errorf("mapping %d of the replaced store is still mapped", i)
		}
	}
	if d := ix.Verify(&VerifyRequest{Token: []byte(tok), NowNs: baseNow.UnixNano()}); d.Code != CodeValid || string(keyID(d)) != r.ID {
		t.Errorf("verify after Install: %s", d.Code)
	}
	if ix.Len() != 1 {
		t.Errorf("Len = %d after Install, want 1", ix.Len())
	}
}
