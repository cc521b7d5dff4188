package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mayfly-sh/mayfly/internal/apitype"
	"github.com/mayfly-sh/mayfly/internal/client"
	"github.com/mayfly-sh/mayfly/internal/scan"
	"github.com/mayfly-sh/mayfly/internal/version"
)

type scanFlags struct {
	git, staged, stdin      bool
	since, rangeRev         string
	firstParent, allRefs    bool
	format, baseline        string
	rules, output           string
	noColor, revoke         bool
	noDecode                bool
	maxFileSize             string
	workers                 int
	enableRule, disableRule []string
	fingerprintKeyFile      string
	client                  clientFlags
	formatFlag              *outputFormat
}

func newScanCmd() *cobra.Command {
	var f scanFlags
	cmd := &cobra.Command{
		Use:   "scan [PATH…]",
		Short: "Find leaked secrets (mayfly tokens, provider keys, private keys…) in files, git history, a staged diff or stdin",
		Long: `Scan files and folders (default "."), a repository's history (--git), the staged
changes (--staged, for a pre-commit hook) or standard input (--stdin) for secrets.

mayfly tokens are checksum-verified, so look-alikes are never reported. A line holding
"mayfly:allow" is ignored; --baseline ignores findings of a previous JSON report.
--revoke sends every mayfly job or admin token, minted database password (mfyp_) and GitHub
App installation token (ghs_, which mayfly may have minted) found to the
server's POST /v1/leaks (--addr or MAYFLY_ADDR, and --cacert or MAYFLY_CACERT for a private
CA), which revokes its lease; many are sent in several reports, waiting when the
server says it is busy. It sends those on a mayfly:allow line or in the baseline too:
they are kept off the report, not alive.

Exit status: 0 no findings, 1 findings, 2 error.`,
		RunE: func(cmd *cobra.Command, args []string) error { return runScan(cmd, args, &f) },
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.git, "git", false, "scan the lines added in the git history of the repository at PATH (default .), and its commit messages")
	fl.StringVar(&f.since, "since", "", "with --git: only commits after REV (REV..HEAD)")
	fl.StringVar(&f.rangeRev, "range", "", "with --git: only the commits in A..B (or a single REV: its whole history)")
	fl.BoolVar(&f.firstParent, "first-parent", false, "with --git: follow only the first parent of merges")
	fl.BoolVar(&f.allRefs, "all", false, "with --git: every branch, tag (and the annotated tags' messages) and stash entry, not only HEAD")
	fl.BoolVar(&f.staged, "staged", false, "scan the staged changes (git diff --cached) of the repository at PATH (default .)")
	fl.BoolVar(&f.stdin, "stdin", false, "scan standard input, reporting findings as they appear")
	f.formatFlag = addFormatFlag(cmd, "text", "text", "json", "sarif")
	fl.StringVarP(&f.output, "output", "o", "", "write the report to FILE instead of standard output")
	fl.BoolVar(&f.noColor, "no-color", false, "no colours in text output (also NO_COLOR)")
	fl.StringVar(&f.baseline, "baseline", "", "ignore findings whose fingerprint is in this previous JSON report")
	fl.StringVar(&f.rules, "rules", "", "add rules from a YAML or TOML file")
	fl.StringSliceVar(&f.enableRule, "enable-rule", nil, "use only these rule IDs")
	fl.StringSliceVar(&f.disableRule, "disable-rule", nil, "do not use these rule IDs")
	fl.BoolVar(&f.noDecode, "no-decode", false, "do not look inside base64, hex or percent-encoded spans")
	fl.StringVar(&f.maxFileSize, "max-file-size", "0", "skip files larger than this (e.g. 10MB, 1GiB; 0: no limit)")
	fl.IntVarP(&f.workers, "workers", "j", 0, "scanning goroutines (default: number of CPUs)")
	fl.BoolVar(&f.revoke, "revoke", false, "send every mayfly job or admin token, minted password and GitHub App installation token found to the server's /v1/leaks (--addr, default $MAYFLY_ADDR)")
	f.client.register(cmd, false)
	fl.StringVar(&f.fingerprintKeyFile, "fingerprint-key-file", "", "key the findings' fingerprints with this file's contents (also $MAYFLY_SCAN_FINGERPRINT_KEY); use the same key for a baseline and later scans")
	return cmd
}

func runScan(cmd *cobra.Command, args []string, f *scanFlags) error {
	ctx := cmd.Context()
	modes := 0
	for _, b := range []bool{f.git, f.staged, f.stdin} {
		if b {
			modes++
		}
	}
	switch {
	case modes > 1:
		return usageErr("scan: --git, --staged and --stdin exclude each other")
	case f.stdin && len(args) > 0:
		return usageErr("scan: --stdin takes no PATH")
	case (f.git || f.staged) && len(args) > 1:
		return usageErr("scan: --git and --staged take one repository PATH")
	case !f.git && (f.since != "" || f.rangeRev != "" || f.firstParent || f.allRefs):
		return usageErr("scan: --since, --range, --first-parent and --all need --git")
	case f.since != "" && f.rangeRev != "":
		return usageErr("scan: give --since or --range, not both")
	}
	format, err := f.formatFlag.resolve(cmd)
	if err != nil {
		return err
	}
	f.format = format
	maxSize, err := parseSize(f.maxFileSize)
	if err != nil {
		return usageErr("scan: --max-file-size: %v", err)
	}
	opts := scan.Options{
		NoDecode: f.noDecode, MaxFileSize: maxSize, Workers: f.workers,
		Enable: f.enableRule, Disable: f.disableRule, KeepAllowed: f.revoke,
		Warn: func(err error) { fmt.Fprintln(cmd.ErrOrStderr(), "mayfly: warning: "+err.Error()) },
	}
	if opts.FingerprintKey, err = fingerprintKey(f.fingerprintKeyFile); err != nil {
		return usageErr("scan: %v", err)
	}
	if f.rules != "" {
		rs, err := scan.LoadRules(f.rules)
		if err != nil {
			return usageErr("%v", err)
		}
		opts.Rules = rs
	}
	// A person watching a long scan of files sees it move; a pipe or a
	// log file gets nothing of it.
	progress := newScanProgress(cmd.ErrOrStderr())
	if !f.stdin && !f.git && !f.staged && isTerminal(cmd.ErrOrStderr()) {
		opts.Progress = progress.update
	}
	sc, err := scan.New(opts)
	if err != nil {
		return usageErr("%v", err)
	}
	var base scan.Baseline
	if f.baseline != "" {
		bf, err := os.Open(f.baseline)
		if err != nil {
			return usageErr("scan: --baseline: %v", err)
		}
		base, err = scan.LoadBaseline(bf)
		bf.Close()
		if err != nil {
			return usageErr("%v", err)
		}
	}
	var revokeClient *client.Client
	if f.revoke {
		// Checked before scanning: a wrong address or CA file is reported
		// at once, not after a long scan.
		if revokeClient, err = newAPIClient(&f.client, false); err != nil {
			return usageErr("scan: --revoke: %v", err)
		}
	}

	out := cmd.OutOrStdout()
	color := false
	if f.output != "" {
		of, err := os.Create(f.output)
		if err != nil {
			return usageErr("scan: --output: %v", err)
		}
		defer of.Close()
		out = of
	} else if isTerminal(out) {
		color = !f.noColor && os.Getenv("NO_COLOR") == ""
	}

	var findings []scan.Finding
	// seen is every finding, the ignored ones too (on a mayfly:allow line,
	// in the baseline): --revoke sends the secrets of all of them, since a
	// comment or a baseline keeps a finding off the report, not a live
	// token alive.
	var seen []scan.Finding
	var writeErr error
	keep := func(fd scan.Finding) bool {
		if f.revoke {
			seen = append(seen, fd)
		}
		return !fd.Allowed && (base == nil || !base.Contains(fd))
	}
	collect := func(fd scan.Finding) {
		if keep(fd) {
			findings = append(findings, fd)
		}
	}
	switch {
	case f.stdin:
		// Findings are printed as soon as they are found.
		err = sc.ScanReader(ctx, "stdin", cmd.InOrStdin(), func(fd scan.Finding) {
			if !keep(fd) {
				return
			}
			findings = append(findings, fd)
			if f.format == "text" && writeErr == nil {
				writeErr = scan.WriteText(out, fd, color)
			}
		})
	case f.git:
		err = sc.ScanGit(ctx, scan.GitOptions{Dir: firstArg(args), Since: f.since, Range: f.rangeRev,
			FirstParent: f.firstParent, All: f.allRefs}, collect)
	case f.staged:
		err = sc.ScanStaged(ctx, firstArg(args), collect)
	default:
		paths := args
		if len(paths) == 0 {
			paths = []string{"."}
		}
		_, err = sc.ScanPaths(ctx, paths, collect)
		progress.done()
		scan.SortFindings(findings)
	}
	if err != nil {
		if ctx.Err() != nil {
			return usageErr("scan: interrupted")
		}
		if errors.Is(err, scan.ErrNotRepo) {
			return usageErr("scan: %v (--git and --staged read a repository's history; scan a folder's files without them)", err)
		}
		return usageErr("%v", err)
	}
	switch {
	case f.format == "json":
		writeErr = scan.WriteJSON(out, findings)
	case f.format == "sarif":
		writeErr = scan.WriteSARIF(out, findings, sc.Rules(), buildVersion())
	case !f.stdin:
		for _, fd := range findings {
			if writeErr = scan.WriteText(out, fd, color); writeErr != nil {
				break
			}
		}
	}
	if writeErr != nil {
		return usageErr("scan: writing report: %v", writeErr)
	}
	if f.revoke {
		summaryTo := cmd.ErrOrStderr()
		if f.format == "text" && f.output == "" {
			summaryTo = out
		}
		scan.SortFindings(seen)
		if err := revokeFound(ctx, revokeClient, seen, summaryTo); err != nil {
			return usageErr("scan: --revoke: %v", err)
		}
	}
	if len(findings) > 0 {
		noun := "findings"
		if len(findings) == 1 {
			noun = "finding"
		}
		return negative("scan: %d %s", len(findings), noun)
	}
	return nil
}

func firstArg(args []string) string {
	if len(args) > 0 {
		return args[0]
	}
	return "."
}

// buildVersion is the version SARIF names the tool by: the module version
// of a release, "devel+<revision>" for a build from a working tree.
func buildVersion() string { return version.Get().Version }

// parseSize reads a byte count with an optional KB/MB/GB (powers of 1000)
// or KiB/MiB/GiB (powers of 1024) suffix.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(strings.ToUpper(s), strings.ToUpper(u.suf)) && (u.suf != "B" || !strings.HasSuffix(s, "iB")) {
			s, mult = strings.TrimSpace(s[:len(s)-len(u.suf)]), u.m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

// A leak report carries at most leakBatch tokens and about leakBatchBytes:
// well under the server's defaults (1000 tokens, 1 MiB). A server set
// lower answers 413 and the batch halves; a busy one answers 429 and its
// Retry-After is honoured.
const (
	leakBatch      = 500
	leakBatchBytes = 256 << 10
	leakAttempts   = 8
)

// maxHint bounds a hint the server sends back: a prefix, four characters
// and "…" (token.Hint) fit; a whole token does not.
const maxHint = 10

// revokeFound posts every distinct mayfly job or admin token, admin session,
// minted database password and GitHub App installation token among findings to
// /v1/leaks, one per line, in as many reports as it takes, and prints the
// server's summary.
func revokeFound(ctx context.Context, c *client.Client, findings []scan.Finding, w io.Writer) error {
	seen := map[string]bool{}
	var toks []string
	for _, fd := range findings {
		switch fd.Rule {
		case scan.RuleMayflyJob, scan.RuleMayflyAdmin, scan.RuleMayflySession, scan.RuleMayflyPassword, scan.RuleGitHubAppToken:
		default:
			continue
		}
		if !seen[fd.Secret] {
			seen[fd.Secret] = true
			toks = append(toks, fd.Secret)
		}
	}
	if len(toks) == 0 {
		fmt.Fprintln(w, "revoke: no mayfly token, minted password or GitHub App installation token found, nothing sent")
		return nil
	}
	var sum apitype.LeakResponse
	sent, batch := 0, leakBatch
	for sent < len(toks) {
		var body bytes.Buffer
		n := 0
		for _, t := range toks[sent:] {
			if n == batch || (n > 0 && body.Len()+len(t)+1 > leakBatchBytes) {
				break
			}
			body.WriteString(t + "\n")
			n++
		}
		part, err := reportLeaks(ctx, c, body.Bytes(), w)
		clear(body.Bytes())
		var e *client.Error
		if errors.As(err, &e) && e.Status == http.StatusRequestEntityTooLarge && n > 1 {
			batch = n / 2
			continue
		}
		if err != nil {
			if sent > 0 {
				return fmt.Errorf("%d of %d token(s) were reported before: %w", sent, len(toks), err)
			}
			return err
		}
		sum.Revoked = append(sum.Revoked, part.Revoked...)
		sum.RevokedAdmin = append(sum.RevokedAdmin, part.RevokedAdmin...)
		sum.RevokedSessions = append(sum.RevokedSessions, part.RevokedSessions...)
		sum.AlreadyRevoked += part.AlreadyRevoked
		sum.Unknown += part.Unknown
		sent += n
	}
	fmt.Fprintf(w, "revoke: sent %d token(s): %d revoked, %d already revoked, %d unknown\n",
		len(toks), len(sum.Revoked)+len(sum.RevokedAdmin)+len(sum.RevokedSessions), sum.AlreadyRevoked, sum.Unknown)
	// The server's words go to a CI log: one line each, and a hint no
	// longer than token.Hint makes one, whatever the server sent.
	for _, r := range sum.Revoked {
		fmt.Fprintf(w, "revoked %s (%s)\n", client.OneLine(r.LeaseID, 64), client.OneLine(r.Hint, maxHint))
	}
	for _, r := range sum.RevokedAdmin {
		fmt.Fprintf(w, "revoked admin token (%s)\n", client.OneLine(r.Hint, maxHint))
	}
	for _, r := range sum.RevokedSessions {
		fmt.Fprintf(w, "revoked admin session %s\n", client.OneLine(r.ID, 64))
	}
	return nil
}

// reportLeaks sends one report, waiting out a busy server (429 or 503) as
// its Retry-After asks, a second when it names no wait.
func reportLeaks(ctx context.Context, c *client.Client, body []byte, w io.Writer) (*apitype.LeakResponse, error) {
	for attempt := 1; ; attempt++ {
		sum, err := c.ReportLeaks(ctx, body)
		var e *client.Error
		if !errors.As(err, &e) || (e.Status != http.StatusTooManyRequests && e.Status != http.StatusServiceUnavailable) || attempt == leakAttempts {
			return sum, err
		}
		wait := e.RetryAfter
		if wait == 0 {
			wait = time.Second
		}
		fmt.Fprintf(w, "revoke: the server is busy (HTTP %d); retrying in %v\n", e.Status, wait)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// fingerprintKey reads the key of the findings' fingerprints: a file's
// contents, else $MAYFLY_SCAN_FINGERPRINT_KEY, else none (the public default).
func fingerprintKey(file string) ([]byte, error) {
	if file == "" {
		return []byte(os.Getenv("MAYFLY_SCAN_FINGERPRINT_KEY")), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("--fingerprint-key-file: %w", err)
	}
	if k := bytes.TrimSpace(b); len(k) > 0 {
		return k, nil
	}
	return nil, fmt.Errorf("--fingerprint-key-file %s: empty", file)
}

// isTerminal reports whether w is a terminal (a character device), for
// colours and progress that only a person watching should get.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
