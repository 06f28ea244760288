package keyindex

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// TestUvarintLen: the header's length field takes what AppendUvarint writes.
func TestUvarintLen(t *testing.T) {
	for _, v := range []uint64{0, 1, 127, 128, 16383, 16384, 1<<21 - 1, 1 << 21, 1<<63 + 5} {
		if got, want := uvarintLen(v), len(binary.AppendUvarint(nil, v)); got != want {
			t.Errorf("uvarintLen(%d) = %d, want %d", v, got, want)
		}
	}
}

// TestArenaCompactsEveryHeaderLength: records whose lengths take one, two
// and three bytes in their headers are walked past when dead and moved
// intact when live (read as a Decision reads them, too), and the live byte
// count matches what is left.
func TestArenaCompactsEveryHeaderLength(t *testing.T) {
	a := newArena()
	var s slots
	sizes := []int{100, 127, 128, 5000, 16383, 16384, 20000, 90} // one 64 KiB chunk
	recs := make([][]byte, len(sizes))
	for i, size := range sizes {
		recs[i] = bytes.Repeat([]byte{byte('a' + i)}, size)
		n := s.alloc()
		s.get(n).setRef(a.put(n, recs[i]))
	}
	for n := 0; n < len(sizes); n += 2 { // every other one dies
		a.drop(s.get(uint32(n)).ref())
		s.release(uint32(n))
	}
	first := s.get(1).ref().chunk
	if s.get(uint32(len(sizes)-1)).ref().chunk != first {
		t.Fatal("the records did not fit one chunk")
	}
	a.newChunk(a.nextChunkLen()) // compaction moves records into the current chunk
	a.compact(first, &s)
	live := 0
	for n := 1; n < len(sizes); n += 2 {
		ref := s.get(uint32(n)).ref()
		if ref.chunk == first || !bytes.Equal(a.bytes(ref), recs[n]) {
			t.Fatalf("record of %d bytes not moved intact: %+v", sizes[n], ref)
		}
		// A Decision reads it through the chunk's mapping alone.
		if d := (Decision{loc: packRef(ref), mem: a.mem[ref.chunk]}); !bytes.Equal(d.rec(), recs[n]) {
			t.Fatalf("record of %d bytes read through its mapping differs: %+v", sizes[n], ref)
		}
		live += recordHeaderLen(sizes[n]) + sizes[n]
	}
	if got := a.live[a.cur]; got != live {
		t.Errorf("live bytes %d, want %d", got, live)
	}
}

// TestArenaOversizeRecord: a record longer than a chunk gets a chunk of its
// own, and the records after it go to a new one, so that every location
// fits a slot's packed form: the large record's mapping is rounded up to
// whole huge pages, and its room past the record is not used.
func TestArenaOversizeRecord(t *testing.T) {
	a := newArena()
	var s slots
	sizes := []int{100, 3 << 20, 100, 5000}
	recs := make([][]byte, len(sizes))
	for i, size := range sizes {
		recs[i] = bytes.Repeat([]byte{byte('a' + i)}, size)
		n := s.alloc()
		s.get(n).setRef(a.put(n, recs[i])) // packRef refuses a location it cannot hold
	}
	for n := range sizes {
		if ref := s.get(uint32(n)).ref(); !bytes.Equal(a.bytes(ref), recs[n]) {
			t.Fatalf("record %d (%d bytes) not read back at %+v", n, sizes[n], ref)
		}
	}
	if big := s.get(1).ref().chunk; s.get(2).ref().chunk == big {
		t.Fatal("a record was put after the oversize one, in its chunk")
	}
}

// TestPackRefRoundTrip: locations at the packed form's limits unpack as
// they were packed.
func TestPackRefRoundTrip(t *testing.T) {
	for _, r := range []recordRef{
		{chunk: 0, off: 5, n: 1},
		{chunk: maxArenaChunks - 1, off: 1<<refOffBits - 1, n: maxRecordLen},
		{chunk: 1, off: arenaChunkLen - 1, n: 1},
	} {
		if got := unpackRef(packRef(r)); got != r {
			t.Errorf("unpackRef(packRef(%+v)) = %+v", r, got)
		}
	}
}

// TestArenaFreesChunksLeftMostlyDead: keys created and deleted over and
// over (each dies while its chunk is still the one being filled) leave the
// index holding about what it holds live, not every record ever written.
// Without compacting the chunks put moves past, each 2 MiB chunk stayed
// mapped once filled.
func TestArenaFreesChunksLeftMostlyDead(t *testing.T) {
	ix := New()
	keep, _ := newTestRecord(t, TypeSecret, nil)
	if err := ix.Insert(keep); err != nil {
		t.Fatal(err)
	}
	base := ix.MappedBytes()
	written := 0
	for written < 32*arenaChunkLen {
		r, _ := newTestRecord(t, TypeSecret, nil)
		if err := ix.Insert(r); err != nil {
			t.Fatal(err)
		}
		written += len(AppendRecord(nil, r))
		if err := ix.Delete(r.ID); err != nil {
			t.Fatal(err)
		}
	}
	if grown := ix.MappedBytes() - base; grown > 3*arenaChunkLen {
		t.Fatalf("after writing %d MiB of records that all died, the index maps %d MiB more", written>>20, grown>>20)
	}
	if ix.Get(keep.ID) == nil {
		t.Fatal("the live key is gone")
	}
}
