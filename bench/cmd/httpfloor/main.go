// Command httpfloor is the HTTP floor of keyraft's verify benchmark: a bare
// fasthttp server that answers every request with the same fixed JSON body,
// shaped like keyraft's VALID answer. Nothing answers an HTTP verify faster
// on the same machine with the same server library.
//
//	go run ./bench/cmd/httpfloor --addr 127.0.0.1:9090
package main

import (
	"flag"
	"log"

	"github.com/valyala/fasthttp"
)

// body is the size and shape of keyraft's answer to a valid key.
var body = []byte(`{"valid":true,"code":"VALID","key_id":"key_01JAAAAAAAAAAAAAAAAAAAAAAA","workspace_id":"bench","owner_id":"","type":"secret","environment":"live","scopes":[],"metadata":{},"ratelimit":{"limit":0,"remaining":0,"reset_ms":0}}`)

var jsonType = []byte("application/json")

func main() {
	addr := flag.String("addr", "127.0.0.1:9090", "listen address")
	flag.Parse()
	s := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			ctx.Response.Header.SetContentTypeBytes(jsonType)
			ctx.Response.SetBodyRaw(body)
		},
		Name: "httpfloor",
	}
	log.Fatal(s.ListenAndServe(*addr))
}
