// Package scan finds leaked secrets: mayfly's own tokens (checksum-verified,
// so a look-alike is never reported as one), well-known provider formats,
// private keys, JWTs and high-entropy values assigned to secret-like names,
// also when they are base64-, hex- or percent-encoded. It reads files and
// folders, git history, a staged diff or a stream, in bounded memory, on
// every core, and writes findings as text, JSON or SARIF.
//
// It also parses the leak reports that the server's POST /v1/leaks accepts
// (plain text, GitHub secret-scanning alerts, GitLab token revocation).
//
// It never revokes anything by itself and never prints a secret: a Finding
// carries the secret in memory only (for the caller to report a mayfly token
// to the server); its hint is redacted and its fingerprint is a keyed hash.
package scan

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/mayfly-sh/mayfly/internal/token"
)

// Finding is one secret found. Line and Column are 1-based; Column counts
// bytes. Secret is kept for the caller (e.g. to report a mayfly token to
// the server) and is never written out by this package.
type Finding struct {
	Rule        string `json:"rule"`
	File        string `json:"file"`
	Line        int    `json:"line"`
	Column      int    `json:"column"`
	Commit      string `json:"commit"`
	Author      string `json:"author,omitempty"`
	Date        string `json:"date,omitempty"`
	Hint        string `json:"hint"`
	Fingerprint string `json:"fingerprint"`
	Verified    bool   `json:"verified"`
	// Encoding is how the secret was wrapped ("base64", "hex", "percent",
	// or a chain like "base64+hex"); empty when it was in the clear.
	Encoding string `json:"encoding,omitempty"`
	// Stash names the stash entry ("stash@{N}") whose commit holds the
	// secret, when no other commit before it does (scan --git --all).
	Stash  string `json:"stash,omitempty"`
	Secret string `json:"-"`
	// Allowed: the finding is on a mayfly:allow line (reported only with
	// Options.KeepAllowed).
	Allowed bool `json:"-"`
}

// Options configure a Scanner. The zero value scans with every built-in
// rule, decoding encoded spans, on every core, with no file size limit.
type Options struct {
	// Rules are added to the built-in ones (see LoadRules).
	Rules []Rule
	// Enable, when not empty, keeps only the rules with these IDs;
	// Disable drops rules by ID.
	Enable, Disable []string
	// NoDecode turns off the rescanning of base64, hex and percent-encoded spans.
	NoDecode bool
	// MaxFileSize skips files larger than this many bytes (0: no limit).
	MaxFileSize int64
	// Workers is the number of scanning goroutines (0: GOMAXPROCS).
	Workers int
	// ChunkSize is the size of the window files are read in (0: 1 MiB).
	// Consecutive windows overlap by Overlap bytes (0: 32 KiB), which must
	// exceed the longest secret looked for.
	ChunkSize, Overlap int
	// Warn receives problems that do not stop a scan (an unreadable file);
	// nil ignores them.
	Warn func(error)
	// Progress, when set, receives the running totals of a file scan after
	// each file. It is called from several goroutines at once and must be
	// quick.
	Progress func(Stats)
	// FingerprintKey keys the findings' fingerprints (see KeyedFingerprint);
	// empty: the public default.
	FingerprintKey []byte
	// KeepAllowed reports the findings on a mayfly:allow line too, marked
	// Allowed, for a caller that acts on what a report ignores (scan
	// --revoke: a live token is a leak whatever the line says).
	KeepAllowed bool
}

// Stats count what a scan read.
type Stats struct {
	Files, Skipped, Bytes int64
}

// Scanner scans sources. It is safe for concurrent use.
type Scanner struct {
	e       *engine
	opts    Options
	chunk   int
	overlap int
	workers int
	pool    sync.Pool
}

// New compiles the rules.
func New(opts Options) (*Scanner, error) {
	all := append([]*rule{
		{id: RuleMayflyJob, desc: "mayfly job token (checksum verified)"},
		{id: RuleMayflyAdmin, desc: "mayfly admin token (checksum verified)"},
		{id: RuleMayflyPassword, desc: "mayfly-minted PostgreSQL role password (checksum verified)"},
	}, builtinRules()...)
	seen := map[string]bool{}
	for _, r := range all {
		seen[r.id] = true
	}
	for _, cr := range opts.Rules {
		r, err := cr.compile()
		if err != nil {
			return nil, err
		}
		if seen[r.id] {
			return nil, fmt.Errorf("scan: rule %q defined twice", r.id)
		}
		seen[r.id] = true
		all = append(all, r)
	}
	for _, id := range append(slices.Clone(opts.Enable), opts.Disable...) {
		if !seen[id] {
			return nil, fmt.Errorf("scan: unknown rule %q", id)
		}
	}
	var rules []*rule
	for _, r := range all {
		if len(opts.Enable) > 0 && !slices.Contains(opts.Enable, r.id) || slices.Contains(opts.Disable, r.id) {
			continue
		}
		rules = append(rules, r)
	}
	e, err := newEngine(rules, !opts.NoDecode)
	if err != nil {
		return nil, err
	}
	s := &Scanner{e: e, opts: opts, chunk: opts.ChunkSize, overlap: opts.Overlap, workers: opts.Workers}
	if s.chunk <= 0 {
		s.chunk = 1 << 20
	}
	if s.overlap <= 0 {
		s.overlap = 32 << 10
	}
	if s.workers <= 0 {
		s.workers = runtime.GOMAXPROCS(0)
	}
	size := s.chunk + 2*s.overlap
	s.pool.New = func() any { b := make([]byte, 0, size); return &b }
	return s, nil
}

// Rules lists the rules in use.
func (s *Scanner) Rules() []RuleInfo {
	out := make([]RuleInfo, len(s.e.rules))
	for i, r := range s.e.rules {
		out[i] = r.info()
	}
	return out
}

// BuiltinRules lists the built-in rules.
func BuiltinRules() []RuleInfo {
	s, _ := New(Options{NoDecode: true})
	return s.Rules()
}

func (s *Scanner) warn(err error) {
	if s.opts.Warn != nil {
		s.opts.Warn(err)
	}
}

// srcMeta says where a buffer came from.
type srcMeta struct {
	file, commit, author, date string
}

// lineRef maps a buffer offset to a line of the original (git diffs,
// whose added lines are scanned together).
type lineRef struct {
	off, line, col0 int
}

// job is one buffer to scan: b[own0:own1] is owned, the rest is context.
// line and col give the position of b[own0] when lmap is nil.
type job struct {
	meta       *srcMeta
	b          []byte
	own0, own1 int
	line, col  int
	lmap       []lineRef
	pooled     *[]byte
}

// scanJob runs the engine over a job and turns matches into findings,
// sorted by position, without those on a mayfly:allow line.
func (s *Scanner) scanJob(j *job) []Finding {
	ms := s.e.scan(j.b, j.own0, j.own1, 0, j.meta.file)
	if len(ms) == 0 {
		return nil
	}
	slices.SortFunc(ms, func(a, b rawMatch) int { return a.pos - b.pos })
	out := make([]Finding, 0, len(ms))
	cur, line, col := j.own0, j.line, j.col
	for _, m := range ms {
		allow := allowed(j.b, m.pos)
		if allow && !s.opts.KeepAllowed {
			continue
		}
		var l, c int
		if j.lmap != nil {
			i, found := slices.BinarySearchFunc(j.lmap, m.pos, func(r lineRef, t int) int { return r.off - t })
			if !found {
				i--
			}
			r := j.lmap[max(i, 0)]
			l, c = r.line, r.col0+m.pos-r.off+1
		} else {
			seg := j.b[cur:m.pos]
			if k := bytes.LastIndexByte(seg, '\n'); k >= 0 {
				line += bytes.Count(seg, []byte{'\n'})
				col = m.pos - (cur + k)
			} else {
				col += m.pos - cur
			}
			cur = m.pos
			l, c = line, col
		}
		f := s.finding(m, j.meta, l, c)
		f.Allowed = allow
		out = append(out, f)
	}
	return out
}

func (s *Scanner) finding(m rawMatch, meta *srcMeta, line, col int) Finding {
	r := s.e.rules[m.rule]
	return Finding{
		Rule: r.id, File: meta.file, Line: line, Column: col,
		Commit: meta.commit, Author: meta.author, Date: meta.date,
		Hint: Hint(r.id, m.secret), Fingerprint: KeyedFingerprint(s.opts.FingerprintKey, r.id, meta.file, m.secret),
		Verified: m.verified, Encoding: m.enc, Secret: m.secret,
	}
}

// Hint is a redacted form of a secret, safe to print: token.Hint for
// mayfly tokens, the header of a private key, else at most four leading
// characters (never more than a quarter of it), "…" and its length.
func Hint(rule, secret string) string {
	switch rule {
	case RuleMayflyJob, RuleMayflyAdmin:
		return token.Hint(secret)
	case RuleMayflyPassword:
		return token.PasswordHint(secret)
	case "private-key":
		if i := strings.Index(secret, "-----\n"); i > 0 && i < 60 {
			return secret[:i+5] + "…"
		}
		if i := strings.Index(secret, "KEY-----"); i > 0 && i < 60 {
			return secret[:i+8] + "…"
		}
	}
	n := min(4, len(secret)/4)
	for n > 0 && !utf8.RuneStart(secret[n]) {
		n--
	}
	return fmt.Sprintf("%s…(%d)", secret[:n], len(secret))
}

// Fingerprint identifies a finding across runs and line moves: it depends
// on the rule, the file and the secret only. It is KeyedFingerprint with
// no key, so anyone can recompute it from a report and the secret.
func Fingerprint(rule, file, secret string) string { return KeyedFingerprint(nil, rule, file, secret) }

// KeyedFingerprint is the hex of the first 20 bytes of
// HMAC-SHA-256(key, "mayfly-scan-fp-v2" NUL rule NUL file NUL SHA-256(secret)),
// with the key "mayfly-scan-fp-v2" when key is empty. It is stable and
// does not reveal the secret; it is not meant to slow down guessing (a
// low-entropy generic secret can be confirmed from an unkeyed report):
// whoever publishes reports beyond the repository's readers sets a key
// (Options.FingerprintKey, mayfly scan --fingerprint-key-file), which then
// must be the same for a baseline and the scans compared with it.
func KeyedFingerprint(key []byte, rule, file, secret string) string {
	if file != "" {
		// "a.txt" and "./a.txt" are one file: a baseline made one way must
		// match a scan made the other.
		file = path.Clean(filepath.ToSlash(file))
	}
	if len(key) == 0 {
		key = []byte(fingerprintV2)
	}
	sh := sha256.Sum256([]byte(secret))
	m := hmac.New(sha256.New, key)
	m.Write([]byte(fingerprintV2 + "\x00" + rule + "\x00" + file + "\x00"))
	m.Write(sh[:])
	return hex.EncodeToString(m.Sum(nil)[:20]) // 40 digits; the legacy form has 32
}

const fingerprintV2 = "mayfly-scan-fp-v2"

// legacyFingerprint is the fingerprint of reports written before v2: the
// hex of the first 16 bytes of PBKDF2-HMAC-SHA256(password: hex SHA-256(secret),
// salt: "mayfly-scan-fp-v1" NUL rule NUL file, 4096 iterations). At about
// a millisecond each it made finding-dense scans slow; it is computed now
// only to match a finding against an old baseline entry of its rule and file.
func legacyFingerprint(rule, file, secret string) string {
	if file != "" {
		file = path.Clean(filepath.ToSlash(file))
	}
	h := sha256.Sum256([]byte(secret))
	salt := "mayfly-scan-fp-v1\x00" + rule + "\x00" + file
	k, err := pbkdf2.Key(sha256.New, hex.EncodeToString(h[:]), []byte(salt), 4096, 16)
	if err != nil {
		panic("scan: pbkdf2: " + err.Error()) // only for FIPS-mode key lengths, which these are not
	}
	return hex.EncodeToString(k)
}

// ScanBytes scans b, known as name, as one buffer.
func (s *Scanner) ScanBytes(name string, b []byte) []Finding {
	return s.scanJob(&job{meta: &srcMeta{file: name}, b: b, own0: 0, own1: len(b), line: 1, col: 1})
}

// ScanReader scans a stream in bounded memory and calls emit as soon as
// each finding is known: complete lines are scanned as they arrive, so a
// log piped through the scanner is reported line by line.
func (s *Scanner) ScanReader(ctx context.Context, name string, r io.Reader, emit func(Finding)) error {
	meta := &srcMeta{file: name}
	C, ov := s.chunk, s.overlap
	buf := make([]byte, 0, C+3*ov)
	own0 := 0
	line, col := 1, 1
	eof := false
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !eof && len(buf) < cap(buf) {
			n, err := r.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if errors.Is(err, io.EOF) {
				eof = true
			} else if err != nil {
				return fmt.Errorf("scan: reading %s: %w", name, err)
			}
			if n == 0 && !eof {
				continue
			}
		}
		var own1 int
		switch {
		case eof:
			own1 = len(buf)
		case len(buf)-own0 >= C+ov:
			own1 = own0 + C
		default:
			k := bytes.LastIndexByte(buf[own0:], '\n')
			if k < 0 {
				continue
			}
			own1 = own0 + k + 1
			// Hold back an unterminated private key block until it is whole:
			// only the last header counts, so a finished block before it (whose
			// END line also ends in "PRIVATE KEY-----") holds nothing back.
			if p := lastPEMHeader(buf[own0:own1]); p >= 0 &&
				!bytes.Contains(buf[own0+p:own1], []byte("-----END")) {
				ls := bytes.LastIndexByte(buf[own0:own0+p], '\n')
				if ls < 0 {
					continue
				}
				own1 = own0 + ls + 1
			}
		}
		if own1 > own0 {
			for _, f := range s.scanJob(&job{meta: meta, b: buf, own0: own0, own1: own1, line: line, col: col}) {
				emit(f)
			}
			line, col = advance(buf[own0:own1], line, col)
		}
		if eof {
			return nil
		}
		// Keep ov bytes of context before own1 and everything after it.
		keep := max(0, own1-ov)
		n := copy(buf, buf[keep:])
		buf = buf[:n]
		own0 = own1 - keep
	}
}

// lastPEMHeader returns the offset of the last private key BEGIN header in
// seg, or -1.
func lastPEMHeader(seg []byte) int {
	if !bytes.Contains(seg, []byte("PRIVATE KEY")) { // most lines: skip the regexp
		return -1
	}
	hs := pemHeader.FindAllIndex(seg, -1)
	if len(hs) == 0 {
		return -1
	}
	return hs[len(hs)-1][0]
}

// advance moves a line/column position over seg.
func advance(seg []byte, line, col int) (int, int) {
	if k := bytes.LastIndexByte(seg, '\n'); k >= 0 {
		return line + bytes.Count(seg, []byte{'\n'}), len(seg) - k
	}
	return line, col + len(seg)
}
