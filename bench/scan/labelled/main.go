// Command labelled scores mayfly scan and gitleaks on a labelled corpus in
// the form of Plazmaz/leaky-repo: a folder, and a CSV of
// "path,num_risk,num_informative" lines counting the lines of each file
// that hold a secret. A file's score follows that corpus's own convention:
// the distinct lines a tool reports, up to num_risk, are true positives,
// the rest false positives; risk lines not reached are misses. Files not
// in the CSV are not scored.
//
//	go run ./bench/scan/labelled -dir CORPUS -labels CORPUS/.leaky-meta/secrets.csv [-gitleaks PATH]
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

func main() {
	dir := flag.String("dir", "", "the corpus folder")
	labels := flag.String("labels", "", "the CSV of path,num_risk,num_informative")
	mayfly := flag.String("mayfly", "", "a mayfly binary (default: go build ./cmd/mayfly)")
	gitleaks := flag.String("gitleaks", "gitleaks", "a gitleaks binary (empty: skip)")
	flag.Parse()
	if *dir == "" || *labels == "" {
		flag.Usage()
		os.Exit(2)
	}
	want, err := readLabels(*labels)
	if err != nil {
		fail(err)
	}
	tmp, err := os.MkdirTemp("", "mayfly-labelled")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(tmp)
	if *mayfly == "" {
		*mayfly = filepath.Join(tmp, "mayfly")
		if out, err := exec.Command("go", "build", "-o", *mayfly, "./cmd/mayfly").CombinedOutput(); err != nil {
			fail(fmt.Errorf("building mayfly: %v\n%s", err, out))
		}
	}
	abs, _ := filepath.Abs(*dir)

	t0 := time.Now()
	out, _ := exec.Command(*mayfly, "scan", "--format", "json", abs).Output()
	dm := time.Since(t0)
	var mf []struct {
		Rule, File string
		Line       int
	}
	if err := json.Unmarshal(out, &mf); err != nil {
		fail(fmt.Errorf("mayfly output: %v", err))
	}
	got := map[string]map[int]bool{}
	for _, f := range mf {
		add(got, rel(abs, f.File), f.Line)
	}
	report("mayfly", want, got, dm)

	if *gitleaks == "" {
		return
	}
	rep := filepath.Join(tmp, "gl.json")
	t0 = time.Now()
	if out, err := exec.Command(*gitleaks, "dir", "--no-banner", "--exit-code", "0", "--log-level", "error",
		"--report-format", "json", "--report-path", rep, abs).CombinedOutput(); err != nil {
		fail(fmt.Errorf("gitleaks: %v\n%s", err, out))
	}
	dg := time.Since(t0)
	b, err := os.ReadFile(rep)
	if err != nil {
		fail(err)
	}
	var gf []struct {
		File      string
		StartLine int
	}
	if err := json.Unmarshal(b, &gf); err != nil {
		fail(fmt.Errorf("gitleaks report: %v", err))
	}
	got = map[string]map[int]bool{}
	for _, f := range gf {
		add(got, rel(abs, f.File), f.StartLine)
	}
	report("gitleaks", want, got, dg)
}

func add(m map[string]map[int]bool, file string, line int) {
	if m[file] == nil {
		m[file] = map[int]bool{}
	}
	m[file][line] = true
}

func rel(base, p string) string {
	if r, err := filepath.Rel(base, p); err == nil && !strings.HasPrefix(r, "..") {
		return filepath.ToSlash(r)
	}
	return filepath.ToSlash(p)
}

func report(name string, want map[string]int, got map[string]map[int]bool, d time.Duration) {
	var tp, fp, fn int
	var missed []string
	for file, n := range want {
		lines := len(got[file])
		tp += min(lines, n)
		fp += max(0, lines-n)
		fn += max(0, n-lines)
		if lines < n {
			missed = append(missed, fmt.Sprintf("%s(%d/%d)", file, lines, n))
		}
	}
	recall := float64(tp) / float64(max(1, tp+fn))
	precision := float64(tp) / float64(max(1, tp+fp))
	fmt.Printf("%-9s recall %.2f (%d/%d)  precision %.2f (%d FP)  %v\n", name, recall, tp, tp+fn, precision, fp, d.Round(time.Millisecond))
	fmt.Printf("          short: %s\n", strings.Join(missed, " "))
}

func readLabels(path string) (map[string]int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.Split(line, ",")
		if len(parts) < 2 {
			return nil, fmt.Errorf("%s: bad line %q", path, line)
		}
		n, err := strconv.Atoi(strings.TrimSpace(parts[1]))
		if err != nil {
			return nil, fmt.Errorf("%s: %q: %v", path, line, err)
		}
		m[parts[0]] = n
	}
	return m, sc.Err()
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "labelled:", err)
	os.Exit(2)
}
