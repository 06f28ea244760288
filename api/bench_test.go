package api_test

import (
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// BenchmarkVerifyHandler measures the verify handler without the network:
// Server.Handle on a reused request context, as fasthttp calls it.
func BenchmarkVerifyHandler(b *testing.B) {
	n := startNode(b, nodeOptions{usageFlush: time.Second, quiet: true})
	k, idx := n.secretKey("ws_bench", "scopes", []string{"calls:*"}, "metadata", map[string]string{"plan": "pro"})
	if !n.srvWaitApplied(idx) {
		b.Fatal("write not applied")
	}
	for _, c := range []struct {
		name string
		ctx  *fasthttp.RequestCtx
	}{
		{"GET", verifyCtx("GET", "/v1/verify?scope=calls:start", "", "X-API-Key", k.Key)},
		{"POST", verifyCtx("POST", "/v1/verify", `{"key":"`+k.Key+`","scope":"calls:start"}`)},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c.ctx.Response.Reset()
				n.srv.Handle(c.ctx)
			}
			if c.ctx.Response.StatusCode() != fasthttp.StatusOK {
				b.Fatalf("status %d: %s", c.ctx.Response.StatusCode(), c.ctx.Response.Body())
			}
		})
	}
}
