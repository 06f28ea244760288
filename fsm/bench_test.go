package fsm

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/keyraft/keyraft/keyindex"
)

// benchSnapshot is the snapshot stream of n records shaped like real ones,
// written by the FSM's own snapshot writer.
func benchSnapshot(b *testing.B, n int) []byte {
	b.Helper()
	recs := make([]*keyindex.Record, n)
	for i := range recs {
		created := t0.Add(time.Duration(i) * time.Second)
		id, err := keyindex.NewID(created, rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		tok, err := keyindex.GenerateToken(rand.Reader, "acme", keyindex.TypeSecret, keyindex.EnvLive)
		if err != nil {
			b.Fatal(err)
		}
		expires, used := created.AddDate(1, 0, 0), created.Add(time.Hour)
		recs[i] = &keyindex.Record{
			ID: id, WorkspaceID: fmt.Sprintf("ws_%d", i%100), OwnerID: fmt.Sprintf("user_%d", i%5000),
			Name: fmt.Sprintf("backend key %d", i), Type: keyindex.TypeSecret, Environment: keyindex.EnvLive,
			Scopes: []string{"calls:*", "files:read"}, AllowedOrigins: []string{}, AllowedResources: []string{},
			RateLimitPerMin: 600, Metadata: map[string]string{"team": "payments"}, Active: true,
			ExpiresAt: &expires, CreatedAt: created, UpdatedAt: created, CreatedBy: "key_01JROOT0000000000000000000",
			LastUsedAt: &used, UsageCount: int64(i),
		}
		recs[i].SetToken(tok)
	}
	f := New()
	if err := f.index.InsertAll(recs); err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	if err := f.Backup().Write(&buf); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkRestore times a node catching up by snapshot: 100,000 keys.
func BenchmarkRestore(b *testing.B) {
	snap := benchSnapshot(b, 100_000)
	b.SetBytes(int64(len(snap)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := New().Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUsageCommand encodes and decodes a full usage command (a
// thousand keys, cluster's usageChunk) by hand (Encode, Decode) and, as
// the baseline in the same run, with encoding/json.
func BenchmarkUsageCommand(b *testing.B) {
	c := &Command{Op: OpUsage}
	for i := range 1000 {
		id, err := keyindex.NewID(t0.Add(time.Duration(i)*time.Second), rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		c.Usage = append(c.Usage, Usage{ID: id, Count: int64(i % 17), LastUsedAt: t0.Add(time.Duration(i) * time.Millisecond)})
	}
	b.Run("by-hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			enc, err := Encode(c)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := Decode(enc); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			enc, err := json.Marshal(c)
			if err != nil {
				b.Fatal(err)
			}
			var d Command
			if err := json.Unmarshal(enc, &d); err != nil {
				b.Fatal(err)
			}
		}
	})
}
