package keyindex

import (
	"testing"
	"time"
)

func benchIndex(b *testing.B, n int) (*Index, []string) {
	b.Helper()
	ix := New()
	toks := make([]string, n)
	recs := make([]*Record, n)
	for i := 0; i < n; i++ {
		recs[i], toks[i] = newTestRecord(b, TypeSecret, func(r *Record) {
			r.Scopes = []string{"files:read", "calls:*"}
			r.AllowedResources = []string{"asst_1", "asst_2"}
			r.AllowedOrigins = []string{"https://app.example.com"}
			r.RateLimitPerMin = MaxRateLimitPerMin
			r.Metadata = map[string]string{"plan": "pro"}
		})
	}
	if err := ix.InsertAll(recs); err != nil {
		b.Fatal(err)
	}
	return ix, toks
}

func BenchmarkVerify(b *testing.B) {
	ix, toks := benchIndex(b, 1000)
	req := &VerifyRequest{
		Token:    []byte(toks[500]),
		Scope:    []byte("calls:start"),
		Resource: []byte("asst_2"),
		Origin:   []byte("https://app.example.com"),
	}
	// Spread the calls over many minutes so the rate limit never bites.
	start := baseNow.UnixNano()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req.NowNs = start + int64(i)*int64(time.Millisecond)
		if d := ix.Verify(req); d.Code != CodeValid {
			b.Fatalf("code %s", d.Code)
		}
	}
}

func BenchmarkVerifyParallel(b *testing.B) {
	ix, toks := benchIndex(b, 1000)
	b.ReportAllocs()
	b.ResetTimer()
	tokBytes := make([][]byte, len(toks))
	for i, t := range toks {
		tokBytes[i] = []byte(t)
	}
	scope := []byte("files:read")
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			req := VerifyRequest{Token: tokBytes[i%len(tokBytes)], Scope: scope, NowNs: baseNow.UnixNano()}
			if d := ix.Verify(&req); d.Code != CodeValid && d.Code != CodeRateLimited {
				b.Errorf("code %s", d.Code)
				return
			}
			i++
		}
	})
}

func BenchmarkVerifyNotFound(b *testing.B) {
	ix, _ := benchIndex(b, 1000)
	req := &VerifyRequest{Token: []byte(mustGenerate(b, "acme", TypeSecret, EnvLive).Plaintext), NowNs: baseNow.UnixNano()}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if d := ix.Verify(req); d.Code != CodeKeyNotFound {
			b.Fatalf("code %s", d.Code)
		}
	}
}

func BenchmarkParseToken(b *testing.B) {
	tok := []byte(mustGenerate(b, "acme", TypeSecret, EnvLive).Plaintext)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := ParseToken(tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGenerateToken(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		mustGenerate(b, "acme", TypeSecret, EnvLive)
	}
}

// BenchmarkScopeMatch is one granted scope of the common "prefix*" form
// against a request it grants (docs/design-notes.md, "Scopes").
func BenchmarkScopeMatch(b *testing.B) {
	want := []byte("calls:start")
	for b.Loop() {
		if !scopeMatch("calls:*", want) {
			b.Fatal("not granted")
		}
	}
}
