// Command gen writes a synthetic source tree for scanner benchmarks:
// source-like Go, YAML and log files with a few planted mayfly and GitHub
// tokens (and decoys), about -mb megabytes in all.
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"

	"github.com/mayfly-sh/mayfly/internal/token"
)

const (
	b62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	hx  = "0123456789abcdef"
)

func main() {
	out := flag.String("out", "", "folder to write")
	mb := flag.Int("mb", 200, "total size in megabytes")
	fileKB := flag.Int("file-kb", 64, "approximate size of each file in KiB")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "gen: -out is required")
		os.Exit(2)
	}
	r := rand.New(rand.NewPCG(1, 2))
	str := func(abc string, n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = abc[r.IntN(len(abc))]
		}
		return string(b)
	}
	lines := []func() string{
		func() string {
			return fmt.Sprintf("\tif err := s.store.Put(ctx, key%d, value); err != nil {", r.IntN(100))
		},
		func() string { return "\t\treturn fmt.Errorf(\"saving the token for %s: %w\", name, err)" },
		func() string { return fmt.Sprintf("\tuser.PasswordHash = hash(%q)", str("abcdefgh", 6)) },
		func() string { return "// Package auth checks passwords and API tokens against the store." },
		func() string { return "  image: registry.example.com/team/app@sha256:" + str(hx, 64) },
		func() string {
			return fmt.Sprintf("2025-01-02T10:00:00Z INFO request id=%s path=/v1/items/%d status=200", str(hx, 12), r.IntN(1e5))
		},
		func() string { return "\tfor i, tok := range tokens {" },
		func() string { return fmt.Sprintf("\tconst maxRetries = %d", r.IntN(10)) },
		func() string { return "  secretRef:\n    name: db-credentials" },
		func() string { return "commit " + str(hx, 40) },
		func() string {
			return "\tresp, err := http.Get(\"https://api.example.com/v2/users?page=\" + strconv.Itoa(page))"
		},
		func() string { return "func (c *Client) Do(req *http.Request) (*http.Response, error) {" },
		func() string { return "" },
		func() string { return "}" },
	}
	total := int64(*mb) << 20
	var written int64
	planted := 0
	for i := 0; written < total; i++ {
		dir := filepath.Join(*out, fmt.Sprintf("pkg%03d", i/100))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(1)
		}
		ext := []string{".go", ".yaml", ".log"}[i%3]
		var b strings.Builder
		for b.Len() < *fileKB<<10 {
			b.WriteString(lines[r.IntN(len(lines))]())
			b.WriteByte('\n')
		}
		if i%16 == 0 {
			j, _ := token.New(token.Job)
			body := str(b62, 30)
			fmt.Fprintf(&b, "MAYFLY_TOKEN=%s\nGITHUB_TOKEN=ghp_%s%s\n", j, body, token.Checksum(body))
			fmt.Fprintf(&b, "decoy=mfy_%s000000\n", str(b62, 30))
			planted += 2
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%05d%s", i, ext)), []byte(b.String()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(1)
		}
		written += int64(b.Len())
	}
	fmt.Printf("%d %d\n", written, planted)
}
