// Package goproxy is the benches' anchor: the reverse proxy a Go
// programmer would write, httputil.ReverseProxy with a kept-alive
// transport and a pooled copy buffer (as mayfly's gateway has), so that
// mayfly is measured against Go's own proxy and not against its garbage.
// It is a measuring stick for bench/, never part of mayfly.
package goproxy

import (
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"
)

// New returns a reverse proxy to target over tr (nil: a transport that
// keeps up to 256 idle connections per host), with a pool of 256 copy
// buffers and no error log (benches end with requests in flight).
func New(target *url.URL, tr http.RoundTripper) *httputil.ReverseProxy {
	if tr == nil {
		tr = &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second}
	}
	return &httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport:  tr,
		BufferPool: NewBufferPool(256),
		ErrorLog:   log.New(io.Discard, "", 0),
	}
}

// BufferPool is a bounded pool of 32 KiB copy buffers (httputil.BufferPool).
type BufferPool struct{ c chan []byte }

// NewBufferPool returns a pool that keeps up to n buffers.
func NewBufferPool(n int) *BufferPool { return &BufferPool{c: make(chan []byte, n)} }

func (p *BufferPool) Get() []byte {
	select {
	case b := <-p.c:
		return b
	default:
		return make([]byte, 32<<10)
	}
}

func (p *BufferPool) Put(b []byte) {
	select {
	case p.c <- b[:cap(b)]:
	default:
	}
}
