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
// intact when live, and the live byte count matches what is left.
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
		live += recordHeaderLen(sizes[n]) + sizes[n]
	}
	if got := a.live[a.cur]; got != live {
		t.Errorf("live bytes %d, want %d", got, live)
	}
}
