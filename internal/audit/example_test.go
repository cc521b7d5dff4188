package audit_test

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/mayfly-sh/mayfly/internal/audit"
)

// exampleKey returns a signer and verifier key named origin from a fixed
// seed, so that the example's signature is the same on every run (Ed25519
// signs deterministically). The seed is no secret: it is all 7s.
func exampleKey(origin string) (skey, vkey string) {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = 7
	}
	pub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
	vkey, err := note.NewEd25519VerifierKey(origin, pub)
	if err != nil {
		panic(err)
	}
	// A verifier key is "<name>+<hash>+<base64(0x01 || public key)>"; the
	// signer key has the same name and hash and the seed instead.
	parts := strings.Split(vkey, "+")
	skey = "PRIVATE+KEY+" + parts[0] + "+" + parts[1] + "+" + base64.StdEncoding.EncodeToString(append([]byte{1}, seed...))
	return skey, vkey
}

// The package comment's worked example: two entries, the tree over them
// and the checkpoint that signs it. TestDocShowsExample checks that the
// package comment shows these bytes.
func Example() {
	fmt.Print(workedExample())
	// Output:
	// entry 0: {"index":0,"time":"2026-01-02T03:04:05Z","type":"token.exchange","lease":"lse_01","issuer":"https://token.actions.githubusercontent.com","subject":"repo:acme/app:ref:refs/heads/main","grant":"deploy","status":200,"source":"10.0.0.1"}
	// leaf 0:  44f36e9db6aa7be840a35043b025d6889b4382cc82013832b7472f775e96ac36
	// entry 1: {"index":1,"time":"2026-01-02T03:04:05Z","type":"gateway.request","lease":"lse_01","upstream":"api","method":"GET","path":"/v1/items","status":200,"bytes_out":512,"duration_ms":3,"detail":{"decision":"allow","rule":0}}
	// leaf 1:  243aac7b0a37d73b633ef50b9b8af23b1cace5b12f0f942f7962c153e055448d
	// root:     c647c151d74ef1c37549e33acc433a7549a50998b6e3afae11d57475aac7d823
	// verifier key: mayfly.example/audit+5918e622+AepKbGPinFIKvvVQexMuxfmVR3auvr57kkIe6mkURtIs
	// checkpoint:
	// mayfly.example/audit
	// 2
	// xkfBUddO8cN1SeM6zEM6dUmlCZi246+uEdV0darH2CM=
	//
	// — mayfly.example/audit WRjmIijduFw565KpbJTvMRuNTK4sFGNfCUiodYOmOY/DYtsH23mEJSTWDx/ZnQu+YyWMGGfgWJmY1IKCrnYlWhNvnQs=
	// checkpoint verifies: true
	// entry 1 proven: true
}

func workedExample() string {
	var b strings.Builder
	t := audit.FormatTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	events := []audit.Event{
		{Type: audit.TypeExchange, Lease: "lse_01", Issuer: "https://token.actions.githubusercontent.com",
			Subject: "repo:acme/app:ref:refs/heads/main", Grant: "deploy", Status: 200, Source: "10.0.0.1"},
		{Type: audit.TypeGateway, Lease: "lse_01", Upstream: "api", Method: "GET", Path: "/v1/items", Status: 200,
			BytesOut: 512, DurationMS: 3, Detail: map[string]any{"decision": "allow", "rule": 0}},
	}
	var entries [][]byte
	var hashes []tlog.Hash
	for i, ev := range events {
		body, err := audit.EncodeEvent(nil, &ev)
		if err != nil {
			panic(err)
		}
		e := audit.AppendEntry(nil, int64(i), t, body)
		entries = append(entries, e)
		fmt.Fprintf(&b, "entry %d: %s\n", i, e)
		leaf := sha256.Sum256(append([]byte{0}, e...)) // RFC 6962 leaf hash
		fmt.Fprintf(&b, "leaf %d:  %x\n", i, leaf)
		hs, err := tlog.StoredHashes(int64(i), e, tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
			out := make([]tlog.Hash, len(idx))
			for j, x := range idx {
				out[j] = hashes[x]
			}
			return out, nil
		}))
		if err != nil {
			panic(err)
		}
		hashes = append(hashes, hs...)
	}
	root, err := tlog.TreeHash(2, tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for j, x := range idx {
			out[j] = hashes[x]
		}
		return out, nil
	}))
	if err != nil {
		panic(err)
	}
	fmt.Fprintf(&b, "root:     %x\n", root[:])

	skey, vkey := exampleKey("mayfly.example/audit")
	signer, err := note.NewSigner(skey)
	if err != nil {
		panic(err)
	}
	cp, err := note.Sign(&note.Note{Text: string(audit.FormatCheckpoint("mayfly.example/audit", 2, root))}, signer)
	if err != nil {
		panic(err)
	}
	fmt.Fprintf(&b, "verifier key: %s\ncheckpoint:\n%s", vkey, cp)

	size, got, err := audit.ParseCheckpoint(cp, vkey)
	fmt.Fprintln(&b, "checkpoint verifies:", err == nil && size == 2 && got == root)
	// Entry 1 is in the tree of size 2: its proof is entry 0's leaf hash.
	err = audit.VerifyInclusion(1, 2, entries[1], root, [][32]byte{hashes[0]})
	fmt.Fprintln(&b, "entry 1 proven:", err == nil)
	return b.String()
}

// TestDocShowsExample keeps the package comment's worked example true:
// every line Example prints that shows bytes (an entry, a hash, the
// checkpoint) is in the comment.
func TestDocShowsExample(t *testing.T) {
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	shown := map[string]bool{}
	for _, l := range strings.Split(string(doc), "\n") {
		shown[strings.TrimPrefix(strings.TrimPrefix(l, "//"), "\t")] = true
	}
	n := 0
	for _, l := range strings.Split(workedExample(), "\n") {
		l, _ = strings.CutPrefix(l, "entry 0: ")
		l, _ = strings.CutPrefix(l, "entry 1: ")
		switch {
		case l == "" || strings.HasSuffix(l, ": true") || l == "checkpoint:":
			continue
		case strings.HasPrefix(l, "verifier key: "):
			if !strings.Contains(string(doc), "(verifier key\n// "+strings.TrimPrefix(l, "verifier key: ")+")") {
				t.Errorf("the package comment does not show the verifier key %s", l)
			}
		case !shown[l]:
			t.Errorf("the package comment does not show %q", l)
		}
		n++
	}
	if n < 9 {
		t.Fatalf("only %d lines checked", n)
	}
}
