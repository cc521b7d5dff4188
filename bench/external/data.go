//go:build linux

package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/auditlog"
	"github.com/mayfly-sh/mayfly/internal/store"
)

// gzipLines is n bytes of JSON lines (an API's list response or a log
// export), gzip-encoded at the default level as a web server would.
func gzipLines(n int64) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	var plain bytes.Buffer
	for i := 0; int64(plain.Len()) < n; i++ {
		fmt.Fprintf(&plain, `{"id":%d,"state":"open","title":"issue %x","user":{"login":"user%d"},"labels":["bug","p%d"],"created_at":"2026-%02d-%02dT%02d:%02d:00Z"}`+"\n",
			i, r.Uint32(), r.IntN(5000), r.IntN(4), 1+r.IntN(12), 1+r.IntN(28), r.IntN(24), r.IntN(60))
	}
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	zw.Write(plain.Bytes()[:n])
	zw.Close()
	return out.Bytes()
}

// maskSecrets makes n random 32-byte secrets of printable characters (as
// internal/mask's benchmark does).
func maskSecrets(n int) [][]byte {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=.@"
	r := rand.New(rand.NewPCG(7, 8))
	out := make([][]byte, n)
	for i := range out {
		s := make([]byte, 32)
		for j := range s {
			s[j] = alphabet[r.IntN(len(alphabet))]
		}
		out[i] = s
	}
	return out
}

// maskLog is size bytes of build-log-like text (words, paths, hex digests,
// colour codes, some "\r\n") with a secret every ~500 lines.
func maskLog(secrets [][]byte, size int) []byte {
	r := rand.New(rand.NewPCG(9, 10))
	words := strings.Fields("the build step compiling linking test passed failed ok go run pkg internal " +
		"cache download module version error warning info debug using from with into main " +
		"docker image layer push pull sha256 digest artifact upload token request response")
	var b bytes.Buffer
	for line := 0; b.Len() < size; line++ {
		fmt.Fprintf(&b, "2025-01-%02dT12:%02d:%02dZ ", 1+r.IntN(28), r.IntN(60), r.IntN(60))
		if line%7 == 0 {
			b.WriteString("\x1b[32mINFO\x1b[0m ")
		}
		for k := 3 + r.IntN(10); k > 0; k-- {
			switch r.IntN(12) {
			case 0:
				fmt.Fprintf(&b, "%x ", r.Uint64())
			case 1:
				fmt.Fprintf(&b, "pkg/%s/%s.go:%d ", words[r.IntN(len(words))], words[r.IntN(len(words))], r.IntN(900))
			case 2:
				var raw [18]byte
				for i := range raw {
					raw[i] = byte(r.Uint32())
				}
				fmt.Fprintf(&b, "%x ", raw)
			default:
				b.WriteString(words[r.IntN(len(words))])
				b.WriteByte(' ')
			}
		}
		if line%500 == 0 {
			b.Write(secrets[r.IntN(len(secrets))])
		}
		if line%3 == 0 {
			b.WriteString("\r\n")
		} else {
			b.WriteByte('\n')
		}
	}
	return b.Bytes()[:size]
}

// fillAudit appends n gateway-shaped entries to the audit log of the data
// dir made by `mayfly init` at dir, through the audit log package, then
// closes it with a checkpoint.
func fillAudit(dir string, n int) {
	ctx := context.Background()
	key, err := os.ReadFile(filepath.Join(dir, "audit.key"))
	check(err)
	db, err := store.Open(ctx, store.Config{Path: filepath.Join(dir, "mayfly.db")})
	check(err)
	defer db.Close()
	// Group commits straight into the store: the journal refuses appends
	// faster than its fold keeps up, as the gateway's 503 does.
	l, err := auditlog.Open(ctx, db, strings.TrimSpace(string(key)), auditlog.Options{})
	check(err)
	const window = 4000
	futures := make([]auditlog.Future, 0, window)
	for i := range n {
		futures = append(futures, l.Add(ctx, audit.Event{Type: "gateway.request", Lease: fmt.Sprintf("lse_%026d", i%5000),
			Issuer: "ci", Subject: "repo:acme/app:ref:refs/heads/main", Job: fmt.Sprint(i / 50), Repository: "acme/app",
			Grant: "calls", Upstream: "api", Method: "GET", Path: fmt.Sprintf("/repos/acme/app/issues/%d", i%9000), Status: 200,
			Source: "127.0.0.1", BytesOut: 256, DurationMS: 1, Hint: "mfy_…" + fmt.Sprintf("%04d", i%10000), PolicyVersion: "1"}))
		if len(futures) == window || i == n-1 {
			for _, f := range futures {
				if _, err := f.Wait(ctx); err != nil {
					log.Fatal(err)
				}
			}
			futures = futures[:0]
		}
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	check(l.Close(cctx))
}
