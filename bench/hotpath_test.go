package bench

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyraft/keyraft/keyindex"
)

// defaultSizes are the index sizes the hot path is measured at when
// BENCH_SIZES is not set. scripts/bench.sh sets BENCH_SIZES: 1000,100000
// with --quick, 1000,1000000 by default, 1000,1000000,10000000 with --long.
var defaultSizes = []int{1_000, 100_000}

// pairs is how many interleaved decision/floor pairs BenchmarkPair runs per
// size (BENCH_PAIRS; at least 3).
const defaultPairs = 3

func sizes(b testing.TB) []int {
	env := os.Getenv("BENCH_SIZES")
	if env == "" {
		return defaultSizes
	}
	var out []int
	for _, f := range strings.Split(env, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			b.Fatalf("BENCH_SIZES: bad size %q", f)
		}
		out = append(out, n)
	}
	return out
}

func pairCount(b testing.TB) int {
	if n, err := strconv.Atoi(os.Getenv("BENCH_PAIRS")); err == nil && n >= 3 {
		return n
	}
	return defaultPairs
}

// fixture is an index of n keys, the plaintext tokens of all of them, and
// the floor: a plain Go map from token hash to the same records.
type fixture struct {
	index  *keyindex.Index
	tokens [][]byte
	hashes []keyindex.Hash
	floor  map[[32]byte]*keyindex.Record
}

var fixtures = map[int]*fixture{}

func load(b *testing.B, n int) *fixture {
	if f, ok := fixtures[n]; ok {
		return f
	}
	b.StopTimer()
	defer b.StartTimer()
	f := &fixture{index: keyindex.New(), floor: make(map[[32]byte]*keyindex.Record, n),
		tokens: make([][]byte, 0, n), hashes: make([]keyindex.Hash, 0, n)}
	now := time.Now()
	recs := make([]*keyindex.Record, 0, n)
	for i := 0; i < n; i++ {
		r, tok := benchRecord(b, now)
		recs = append(recs, r)
		f.tokens = append(f.tokens, []byte(tok.Plaintext))
		f.hashes = append(f.hashes, tok.Hash)
		f.floor[tok.Hash] = r
	}
	if err := f.index.InsertAll(recs); err != nil {
		b.Fatal(err)
	}
	fixtures[n] = f
	return f
}

// order returns a pseudo-random visiting order of n tokens, so consecutive
// lookups do not walk memory in insertion order (the caches would flatter
// large sizes). The same order is used by the decision and the floor.
func order(n int) []int32 {
	o := make([]int32, n)
	x := uint32(2463534242)
	for i := range o {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		o[i] = int32(x % uint32(n))
	}
	return o
}

func runDecision(b *testing.B, f *fixture, ord []int32) {
	req := keyindex.VerifyRequest{Scope: []byte("calls:start"), NowNs: time.Now().UnixNano()}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req.Token = f.tokens[ord[i%len(ord)]]
		if d := f.index.Verify(&req); d.Code != keyindex.CodeValid {
			b.Fatal(d.Code)
		}
	}
}

func runFloor(b *testing.B, f *fixture, ord []int32) {
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if f.floor[sha256.Sum256(f.tokens[ord[i%len(ord)]])] == nil {
			b.Fatal("missing")
		}
	}
}

// BenchmarkVerifyDecision is the whole decision: parse, checksum, hash,
// lookup, checks, usage counting.
func BenchmarkVerifyDecision(b *testing.B) {
	for _, n := range sizes(b) {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			f := load(b, n)
			runDecision(b, f, order(n))
		})
	}
}

// BenchmarkFloor is what no verification can beat: SHA-256 of the token
// and a lookup in a plain Go map of the same size.
func BenchmarkFloor(b *testing.B) {
	for _, n := range sizes(b) {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			f := load(b, n)
			runFloor(b, f, order(n))
		})
	}
}

// BenchmarkPair runs the decision and the floor interleaved, A B A B, on
// the same fixture, so their ratio is taken under the same machine noise:
// BenchmarkPair/n=SIZE/p=I/decision and …/floor. The runner takes the
// ratio of each pair and reports the median with min and max.
func BenchmarkPair(b *testing.B) {
	for _, n := range sizes(b) {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			ord := order(n)
			for p := 0; p < pairCount(b); p++ {
				b.Run(fmt.Sprintf("p=%d", p), func(b *testing.B) {
					b.Run("decision", func(b *testing.B) { runDecision(b, load(b, n), ord) })
					b.Run("floor", func(b *testing.B) { runFloor(b, load(b, n), ord) })
				})
			}
		})
	}
}

// BenchmarkIndexLookup is the index's lookup alone, by a precomputed hash.
func BenchmarkIndexLookup(b *testing.B) {
	for _, n := range sizes(b) {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			f := load(b, n)
			ord := order(n)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if f.index.GetByHash(f.hashes[ord[i%len(ord)]]) == nil {
					b.Fatal("missing")
				}
			}
		})
	}
}

// BenchmarkParseToken is shape and checksum of one token, no lookup.
func BenchmarkParseToken(b *testing.B) {
	tok := mustToken(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := keyindex.ParseToken(tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSHA256 is the hash of one token (the floor's first half).
func BenchmarkSHA256(b *testing.B) {
	tok := mustToken(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(tok)))
	var sink [32]byte
	for b.Loop() {
		sink = sha256.Sum256(tok)
	}
	_ = sink
}

// benchRecord is a minimal secret key with a fresh token: the record every
// in-process figure is measured on.
func benchRecord(tb testing.TB, now time.Time) (*keyindex.Record, keyindex.Token) {
	tok, err := keyindex.GenerateToken(rand.Reader, "", keyindex.TypeSecret, keyindex.EnvLive)
	if err != nil {
		tb.Fatal(err)
	}
	id, _ := keyindex.NewID(now, rand.Reader)
	r := &keyindex.Record{ID: id, WorkspaceID: "ws", Name: "k", Type: keyindex.TypeSecret, Environment: keyindex.EnvLive,
		Scopes: []string{"calls:*"}, Active: true, CreatedAt: now, UpdatedAt: now}
	r.SetToken(tok)
	return r, tok
}

func mustToken(tb testing.TB) []byte {
	tok, err := keyindex.GenerateToken(rand.Reader, "", keyindex.TypeSecret, keyindex.EnvLive)
	if err != nil {
		tb.Fatal(err)
	}
	return []byte(tok.Plaintext)
}

// TestVerifyDecisionAllocs asserts (not times) that the verify decision
// allocates nothing, for a valid key, an unknown one and a malformed one.
func TestVerifyDecisionAllocs(t *testing.T) {
	ix := keyindex.New()
	now := time.Now()
	r, tok := benchRecord(t, now)
	if err := ix.Insert(r); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		token []byte
		want  keyindex.Code
	}{
		"valid":     {[]byte(tok.Plaintext), keyindex.CodeValid},
		"unknown":   {mustToken(t), keyindex.CodeKeyNotFound},
		"malformed": {[]byte("sk_live_nope"), keyindex.CodeMalformedKey},
	} {
		req := keyindex.VerifyRequest{Token: c.token, Scope: []byte("calls:start"), NowNs: now.UnixNano()}
		var got keyindex.Code
		allocs := testing.AllocsPerRun(100, func() { got = ix.Verify(&req).Code })
		if got != c.want {
			t.Errorf("%s: code %s, want %s", name, got, c.want)
		}
		if allocs != 0 {
			t.Errorf("%s: %.1f allocs per verification, want 0", name, allocs)
		}
	}
}

// BenchmarkIndexHeap reports the memory the index holds per key (B/key):
// the live heap it adds (records, btree) plus what it maps outside the heap
// (slots, hash tables; reported alone as mapped-B/key), built the way
// BenchmarkPair's fixture is, without the tokens or the floor map: the
// in-process part of a node's memory per key.
func BenchmarkIndexHeap(b *testing.B) {
	for _, n := range sizes(b) {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			now := time.Now()
			var perKey, mappedPerKey float64
			for i := 0; i < b.N; i++ {
				before := liveHeap()
				recs := make([]*keyindex.Record, n)
				for j := range recs {
					recs[j], _ = benchRecord(b, now)
				}
				ix := keyindex.New()
				if err := ix.InsertAll(recs); err != nil {
					b.Fatal(err)
				}
				recs = nil
				mapped := ix.MappedBytes()
				perKey = float64(liveHeap()-before+mapped) / float64(n)
				mappedPerKey = float64(mapped) / float64(n)
				runtime.KeepAlive(ix)
			}
			b.ReportMetric(perKey, "B/key")
			b.ReportMetric(mappedPerKey, "mapped-B/key")
		})
	}
}

// liveHeap is the heap in use after a full collection.
func liveHeap() int64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
