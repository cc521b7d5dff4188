//go:build mayfly_pprof

package main

// A profiling build (go build -tags mayfly_pprof ./cmd/mayfly, used by
// bench/external -pprof): with MAYFLY_PPROF_LISTEN=127.0.0.1:PORT set, the
// process serves net/http/pprof on that loopback address, on its own mux.
// Release builds never contain this file.

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"time"
)

func init() {
	addr := os.Getenv("MAYFLY_PPROF_LISTEN")
	if addr == "" {
		return
	}
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		fmt.Fprintf(os.Stderr, "mayfly: MAYFLY_PPROF_LISTEN must be a loopback address:port, not %q\n", addr)
		os.Exit(2)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.ListenAndServe()
}
