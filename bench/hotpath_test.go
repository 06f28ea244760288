package bench

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/keyraft/keyraft/keyindex"
)

// sizes of the index the hot path is measured at; larger sizes are issue
// "performance" territory and run from scripts/bench.sh.
var sizes = []int{1_000, 100_000}

// fixture is an index of n keys and the plaintext tokens of all of them.
type fixture struct {
	index  *keyindex.Index
	tokens [][]byte
	floor  map[[32]byte]*keyindex.Record
}

var fixtures = map[int]*fixture{}

func load(b *testing.B, n int) *fixture {
	if f, ok := fixtures[n]; ok {
		return f
	}
	f := &fixture{index: keyindex.New(), floor: make(map[[32]byte]*keyindex.Record, n)}
	now := time.Now()
	for i := 0; i < n; i++ {
		tok, err := keyindex.GenerateToken(rand.Reader, "", keyindex.TypeSecret, keyindex.EnvLive)
		if err != nil {
			b.Fatal(err)
		}
		id, _ := keyindex.NewID(now, rand.Reader)
		r := &keyindex.Record{ID: id, WorkspaceID: "ws", Name: "k", Type: keyindex.TypeSecret, Environment: keyindex.EnvLive,
			Scopes: []string{"calls:*"}, Active: true, CreatedAt: now, UpdatedAt: now}
		r.SetToken(tok)
		if err := f.index.Insert(r); err != nil {
			b.Fatal(err)
		}
		f.tokens = append(f.tokens, []byte(tok.Plaintext))
		f.floor[tok.Hash] = r
	}
	fixtures[n] = f
	return f
}

// BenchmarkVerifyDecision is the whole decision: parse, checksum, hash,
// lookup, checks, usage counting.
func BenchmarkVerifyDecision(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			f := load(b, n)
			req := keyindex.VerifyRequest{Scope: []byte("calls:start"), NowNs: time.Now().UnixNano()}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				req.Token = f.tokens[i%len(f.tokens)]
				if d := f.index.Verify(&req); d.Code != keyindex.CodeValid {
					b.Fatal(d.Code)
				}
			}
		})
	}
}

// BenchmarkFloor is what no verification can beat: SHA-256 of the token
// and a lookup in a plain Go map of the same size.
func BenchmarkFloor(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			f := load(b, n)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if f.floor[sha256.Sum256(f.tokens[i%len(f.tokens)])] == nil {
					b.Fatal("missing")
				}
			}
		})
	}
}
