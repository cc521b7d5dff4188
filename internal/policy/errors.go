package policy

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// Error is one problem found in a policy, with where it is.
type Error struct {
	File   string // the file's name as given to Parse
	Line   int    // 1-based; problems with a whole file (too large, unreadable YAML without a line) say line 1
	Column int    // 1-based, 0 when unknown
	Path   string // the key path, e.g. "grants.deploy-prod.ttl"; empty for whole-file problems
	Msg    string // the reason
}

// Error renders "file:line: path: reason".
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s:%d: ", Shown(e.File), e.Line)
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem Parse found, in file and line order. Parse returns
// it (never an empty one) as its error; errors.As(err, &policy.Errors{})
// recovers the list.
type Errors []*Error

// Error renders one problem per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As and errors.Is look at each problem.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// pos is where something was written.
type pos struct {
	file      string
	line, col int
}

func (p pos) String() string { return fmt.Sprintf("%s:%d", p.file, p.line) }

// errList collects errors and warnings, bounded so a hostile file cannot make
// an unbounded report.
type errList struct {
	errs     Errors
	warns    Errors
	dropped  int
	maxItems int
	order    map[string]int // file name → position in the input, for sorting
}

func (l *errList) add(at pos, path, format string, args ...any) {
	if len(l.errs) >= l.maxItems {
		l.dropped++
		return
	}
	l.errs = append(l.errs, newError(at, path, format, args...))
}

func (l *errList) warn(at pos, path, format string, args ...any) {
	if len(l.warns) >= l.maxItems {
		return
	}
	l.warns = append(l.warns, newError(at, path, format, args...))
}

func newError(at pos, path, format string, args ...any) *Error {
	line := at.line
	if line < 1 {
		line = 1
	}
	return &Error{File: at.file, Line: line, Column: at.col, Path: Shown(path), Msg: Shown(fmt.Sprintf(format, args...))}
}

// Shown is s as a report may print it (problems, plan lines, refusals,
// and what policy test shows of an ID token), with every control or
// format character written as its Go escape ("\x1b", "\n", "\u202e").
// A policy under review is someone else's text, and its
// claim names, audiences and keys are free text: raw, an ESC sequence
// erases the plan line that shows a wider trust, a line break forges a
// "file:line:" problem, a bidi override reorders what the reviewer reads.
func Shown(s string) string { return escaped(s, hidden) }

// ShownText is Shown for text a page lays out on several lines (the
// console's claims, entries, a policy's source): line breaks, carriage
// returns and tabs stay as they are.
func ShownText(s string) string {
	return escaped(s, func(r rune) bool { return r != '\n' && r != '\r' && r != '\t' && hidden(r) })
}

// escaped is s with each character esc reports written as its Go escape.
func escaped(s string, esc func(rune) bool) string {
	if !strings.ContainsFunc(s, esc) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if esc(r) {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// hidden: a character a terminal acts on or a page does not show as
// itself (C0, DEL, C1; bidi controls, zero-width and other format
// characters).
func hidden(r rune) bool {
	return unicode.IsControl(r) || unicode.Is(unicode.Cf, r)
}
