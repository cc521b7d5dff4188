package gateway

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/lease"
)

// A gzip answer that decodes to far more than it weighs (a decompression
// bomb) is cut once it has decoded past its first MiB at more than
// MaxGzipRatio times what was read of it; ordinary answers pass whole.
func TestGzipBombCut(t *testing.T) {
	// Made once: 64 MiB of zeros weigh ~64 KiB as gzip (ratio ~1000).
	gz := func(b []byte) []byte {
		var out bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&out, gzip.BestCompression)
		zw.Write(b)
		zw.Close()
		return out.Bytes()
	}
	random := make([]byte, 4<<20)
	rand.New(rand.NewSource(1)).Read(random)
	var json bytes.Buffer // an API's list
	for i := range 100_000 {
		fmt.Fprintf(&json, `{"id":%d,"name":"repo-%d","private":false,"sha":"%040x","topics":["ci","go"]},`, 1000000+i*7, i, uint64(i)*0x9e3779b97f4a7c15)
	}
	bodies := map[string][]byte{
		"bomb":    gz(make([]byte, 64<<20)),
		"small":   gz(make([]byte, 512<<10)),                                                                                       // ratio ~1000, but within the first MiB
		"random":  gz(random),                                                                                                      // ratio ~1
		"repeats": gz([]byte(strings.Repeat(`{"id":12345,"name":"a repository","private":false,"topics":["ci","go"]},`, 100_000))), // 7 MB, ratio ~290
		"json":    gz(json.Bytes()),                                                                                                // 12 MB, ratio ~7
	}
	sizes := map[string]int{"bomb": 64 << 20, "small": 512 << 10, "random": 4 << 20, "repeats": 100_000 * 72, "json": json.Len()}
	for _, tc := range []struct {
		name  string
		ratio int
		path  string
		whole bool
	}{
		{"default cuts a bomb", 0, "bomb", false},
		{"default passes what fits the first MiB", 0, "small", true},
		{"default passes random", 0, "random", true},
		{"default passes JSON", 0, "json", true},
		{"default cuts identical records", 0, "repeats", false},
		{"ratio 5 cuts JSON", 5, "json", false},
		{"ratio 400 passes identical records", 400, "repeats", true},
		{"ratio 2000 passes a bomb", 2000, "bomb", true},
		{"negative: no cap", -1, "bomb", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarnessWith(t, func(c *Config) { c.MaxGzipRatio = tc.ratio })
			h.up.mu.Lock()
			h.up.hostile = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Encoding", "gzip")
				w.Write(bodies[strings.TrimPrefix(r.URL.Path, "/base/repos/acme/app/hostile/")])
			})
			h.up.mu.Unlock()
			tok := h.issue(lease.Request{Grants: []string{"read"}})
			req, _ := http.NewRequest("GET", h.srv.URL+"/gw/api/repos/acme/app/hostile/"+tc.path, nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Accept-Encoding", "identity") // the decoded body
			resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if tc.whole {
				if err != nil || n != int64(sizes[tc.path]) {
					t.Fatalf("got %d bytes, %v; want the whole %d", n, err, sizes[tc.path])
				}
				return
			}
			if err == nil {
				t.Fatalf("the answer came whole (%d bytes): want it cut", n)
			}
			if n >= int64(sizes[tc.path]) {
				t.Fatalf("%d bytes reached the client", n)
			}
			var found bool
			for _, e := range h.waitEntries(2) {
				if e.Status == http.StatusOK && strings.Contains(e.Reason, "decoded") {
					found = true
				}
			}
			if !found {
				t.Fatalf("no entry records the cut: %+v", h.entries())
			}
		})
	}
}
