package console

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// The browser's verifier (static/verify.js, run by node) accepts the
// proofs Go produces and refuses every tampered one. In CI node is
// required; elsewhere the test skips without it.
func TestVerifierJS(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("node is needed to test static/verify.js")
		}
		t.Skip("node not installed")
	}
	b := newBench(t, storetest.SQLite(t).DB, 0, 37)
	ctx := context.Background()
	cp, err := b.log.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	key := b.log.VerifierKey()
	size, _, err := audit.ParseCheckpoint(cp, key)
	if err != nil || size != 37 {
		t.Fatalf("checkpoint: %d %v", size, err)
	}
	data := func(idx int64) proofData {
		es, err := b.log.Entries(ctx, idx, 1)
		if err != nil {
			t.Fatal(err)
		}
		p, err := b.log.InclusionProof(ctx, idx, size)
		if err != nil {
			t.Fatal(err)
		}
		pd := proofData{Index: idx, Entry: base64.StdEncoding.EncodeToString(es[0]), Checkpoint: string(cp), Key: key}
		for _, h := range p {
			pd.Proof = append(pd.Proof, base64.StdEncoding.EncodeToString(h[:]))
		}
		return pd
	}
	flip := func(s string) string { // one bit of a base64 value
		raw, _ := base64.StdEncoding.DecodeString(s)
		raw[len(raw)/2] ^= 1
		return base64.StdEncoding.EncodeToString(raw)
	}
	_, otherKey, _ := audit.GenerateKey("mayfly.test/audit")
	type tc struct {
		Name string    `json:"name"`
		Data proofData `json:"data"`
		ok   bool
	}
	var cases []tc
	for _, idx := range []int64{0, 1, 2, 15, 16, 31, 32, 35, 36} {
		cases = append(cases, tc{Name: "valid " + strconv.FormatInt(idx, 10), Data: data(idx), ok: true})
	}
	mut := func(name string, idx int64, f func(*proofData)) {
		pd := data(idx)
		f(&pd)
		cases = append(cases, tc{Name: name, Data: pd})
	}
	mut("entry byte changed", 5, func(p *proofData) {
		raw, _ := base64.StdEncoding.DecodeString(p.Entry)
		raw = []byte(strings.Replace(string(raw), `"status":200`, `"status":201`, 1))
		p.Entry = base64.StdEncoding.EncodeToString(raw)
	})
	mut("proof hash changed", 5, func(p *proofData) { p.Proof[1] = flip(p.Proof[1]) })
	mut("proof hash missing", 5, func(p *proofData) { p.Proof = p.Proof[:len(p.Proof)-1] })
	mut("proof hash added", 5, func(p *proofData) { p.Proof = append(p.Proof, p.Proof[0]) })
	mut("proof of another entry", 5, func(p *proofData) { p.Proof = data(6).Proof })
	mut("index claimed differs", 5, func(p *proofData) { p.Index = 6 })
	mut("signature changed", 5, func(p *proofData) {
		i := strings.LastIndex(p.Checkpoint, " ")
		p.Checkpoint = p.Checkpoint[:i+1] + flip(strings.TrimSpace(p.Checkpoint[i+1:])) + "\n"
	})
	mut("checkpoint size changed", 36, func(p *proofData) {
		p.Checkpoint = strings.Replace(p.Checkpoint, "\n37\n", "\n38\n", 1)
	})
	mut("checkpoint root changed", 5, func(p *proofData) {
		lines := strings.SplitN(p.Checkpoint, "\n", 4)
		lines[2] = flip(lines[2])
		p.Checkpoint = strings.Join(lines, "\n")
	})
	mut("another key", 5, func(p *proofData) { p.Key = otherKey })
	mut("key hash forged", 5, func(p *proofData) {
		parts := strings.Split(p.Key, "+")
		parts[1] = "00000000"
		p.Key = strings.Join(parts, "+")
	})
	mut("no signature", 5, func(p *proofData) { p.Checkpoint = p.Checkpoint[:strings.Index(p.Checkpoint, "\n\n")+2] })
	mut("garbage", 5, func(p *proofData) { p.Entry = "!!!" })

	dir := t.TempDir()
	file := filepath.Join(dir, "cases.json")
	js, _ := json.Marshal(cases)
	if err := os.WriteFile(file, js, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(node, "testdata/verify_cases.mjs", file).CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if name, res, ok := strings.Cut(line, "\t"); ok {
			got[name] = res
		}
	}
	for _, c := range cases {
		res, ok := got[c.Name]
		switch {
		case !ok:
			t.Errorf("%s: no result (node printed %s)", c.Name, out)
		case c.ok && res != "ok":
			t.Errorf("%s: %s", c.Name, res)
		case !c.ok && !strings.HasPrefix(res, "fail: "):
			t.Errorf("%s: tampered, but the verifier said %s", c.Name, res)
		default:
			t.Logf("%s: %s", c.Name, res)
		}
	}
}
