package api

import (
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// TestNeverSent: a forwarded write that could not connect was never seen by
// the leader (NO_LEADER, retry); one whose connection broke after the
// request went out may have been (OUTCOME_UNKNOWN).
func TestNeverSent(t *testing.T) {
	do := func(addr string) error {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI("http://" + addr + "/v1/keys")
		req.Header.SetMethod("POST")
		return forwardClient.DoTimeout(req, resp, 2*time.Second)
	}

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := closed.Addr().String()
	closed.Close()
	if err := do(addr); err == nil || !neverSent(err) {
		t.Errorf("connection refused: %v, neverSent %v", err, neverSent(err))
	}

	// A "leader" that reads the request and hangs up without answering.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Read(make([]byte, 4096))
			c.Close()
		}
	}()
	if err := do(ln.Addr().String()); err == nil || neverSent(err) {
		t.Errorf("connection closed after the request: %v, neverSent %v", err, neverSent(err))
	}
}
