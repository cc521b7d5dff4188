package scan

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// WriteJSON writes findings as a JSON array (never the secrets).
func WriteJSON(w io.Writer, fs []Finding) error {
	if fs == nil {
		fs = []Finding{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(fs); err != nil {
		return fmt.Errorf("scan: writing JSON: %w", err)
	}
	return nil
}

// ANSI colours for text output.
const (
	colRed    = "\x1b[31m"
	colYellow = "\x1b[33m"
	colDim    = "\x1b[2m"
	colBold   = "\x1b[1m"
	colReset  = "\x1b[0m"
)

// printable is s for a terminal: a name or author from the scanned
// repository holding a control character (a newline that forges a report
// line, an escape that erases one) is Go-quoted instead.
func printable(s string) string {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return strconv.Quote(s)
		}
	}
	return s
}

// WriteText writes one finding as one line:
// "file:line:col: rule hint [verified] [encoding] [commit abcdef012345 [(stash@{N})] by author on date]".
func WriteText(w io.Writer, f Finding, color bool) error {
	c := func(code, s string) string {
		if !color {
			return s
		}
		return code + s + colReset
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s:%d:%d: ", c(colBold, printable(f.File)), f.Line, f.Column)
	ruleCol := colYellow
	if f.Verified {
		ruleCol = colRed
	}
	b.WriteString(c(ruleCol, f.Rule))
	b.WriteString(" " + printable(f.Hint))
	if f.Verified {
		b.WriteString(" " + c(colRed, "verified"))
	}
	if f.Encoding != "" {
		b.WriteString(" (" + f.Encoding + ")")
	}
	if f.Commit != "" {
		short := f.Commit
		if len(short) > 12 {
			short = short[:12]
		}
		extra := "commit " + short
		if f.Stash != "" {
			extra += " (" + f.Stash + ")"
		}
		if f.Author != "" {
			extra += " by " + printable(f.Author)
		}
		if f.Date != "" {
			extra += " on " + printable(f.Date)
		}
		b.WriteString(" " + c(colDim, extra))
	}
	b.WriteByte('\n')
	_, err := io.WriteString(w, b.String())
	return err
}

// SARIF 2.1.0, the subset GitHub code scanning reads.
type sarifLog struct {
	Schema  string     `json:"$schema"`
	Version string     `json:"version"`
	Runs    []sarifRun `json:"runs"`
}

type sarifRun struct {
	Tool    sarifTool     `json:"tool"`
	Results []sarifResult `json:"results"`
}

type sarifTool struct {
	Driver sarifDriver `json:"driver"`
}

type sarifDriver struct {
	Name           string      `json:"name"`
	InformationURI string      `json:"informationUri,omitempty"`
	Version        string      `json:"version,omitempty"`
	Rules          []sarifRule `json:"rules"`
}

type sarifText struct {
	Text string `json:"text"`
}

type sarifRule struct {
	ID                   string         `json:"id"`
	Name                 string         `json:"name"`
	ShortDescription     sarifText      `json:"shortDescription"`
	FullDescription      sarifText      `json:"fullDescription"`
	Help                 sarifText      `json:"help"`
	DefaultConfiguration map[string]any `json:"defaultConfiguration"`
	Properties           map[string]any `json:"properties"`
}

type sarifResult struct {
	RuleID              string            `json:"ruleId"`
	RuleIndex           int               `json:"ruleIndex"`
	Level               string            `json:"level"`
	Message             sarifText         `json:"message"`
	Locations           []sarifLocation   `json:"locations"`
	PartialFingerprints map[string]string `json:"partialFingerprints"`
	Properties          map[string]any    `json:"properties,omitempty"`
}

type sarifLocation struct {
	PhysicalLocation sarifPhysical `json:"physicalLocation"`
}

type sarifPhysical struct {
	ArtifactLocation sarifArtifact `json:"artifactLocation"`
	Region           sarifRegion   `json:"region"`
}

type sarifArtifact struct {
	URI string `json:"uri"`
}

type sarifRegion struct {
	StartLine   int `json:"startLine"`
	StartColumn int `json:"startColumn"`
}

// WriteSARIF writes findings as a SARIF 2.1.0 log for GitHub code
// scanning. rules lists the rules in use (Scanner.Rules); any rule a
// finding names that is missing from it is added.
func WriteSARIF(w io.Writer, fs []Finding, rules []RuleInfo, version string) error {
	idx := map[string]int{}
	var srules []sarifRule
	addRule := func(ri RuleInfo) {
		if _, ok := idx[ri.ID]; ok {
			return
		}
		idx[ri.ID] = len(srules)
		precision := "high"
		if ri.ID == RuleGeneric {
			precision = "medium"
		}
		srules = append(srules, sarifRule{
			ID: ri.ID, Name: sarifName(ri.ID),
			ShortDescription:     sarifText{Text: ri.Description},
			FullDescription:      sarifText{Text: ri.Description + " found in the repository."},
			Help:                 sarifText{Text: "Revoke or rotate the secret, then remove it from the code (and history). mayfly tokens found with --revoke are revoked by the server."},
			DefaultConfiguration: map[string]any{"level": "error"},
			Properties:           map[string]any{"tags": []string{"security", "secret"}, "precision": precision, "security-severity": "9.0"},
		})
	}
	for _, r := range rules {
		addRule(r)
	}
	results := make([]sarifResult, 0, len(fs))
	for _, f := range fs {
		addRule(RuleInfo{ID: f.Rule, Description: f.Rule})
		msg := fmt.Sprintf("%s: %s", f.Rule, f.Hint)
		if f.Verified {
			msg += " (verified)"
		}
		if f.Encoding != "" {
			msg += " (" + f.Encoding + "-encoded)"
		}
		props := map[string]any{"verified": f.Verified}
		if f.Commit != "" {
			props["commit"] = f.Commit
			msg += " in commit " + f.Commit
		}
		if f.Stash != "" {
			props["stash"] = f.Stash
			msg += " (" + f.Stash + ")"
		}
		results = append(results, sarifResult{
			RuleID: f.Rule, RuleIndex: idx[f.Rule], Level: "error",
			Message: sarifText{Text: msg},
			Locations: []sarifLocation{{PhysicalLocation: sarifPhysical{
				ArtifactLocation: sarifArtifact{URI: sarifURI(f.File)},
				Region:           sarifRegion{StartLine: max(f.Line, 1), StartColumn: max(f.Column, 1)},
			}}},
			PartialFingerprints: map[string]string{"mayfly/v2": f.Fingerprint},
			Properties:          props,
		})
	}
	log := sarifLog{
		Schema:  "https://json.schemastore.org/sarif-2.1.0.json",
		Version: "2.1.0",
		Runs: []sarifRun{{
			Tool:    sarifTool{Driver: sarifDriver{Name: "mayfly", InformationURI: "https://github.com/mayfly-sh/mayfly", Version: version, Rules: srules}},
			Results: results,
		}},
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(log); err != nil {
		return fmt.Errorf("scan: writing SARIF: %w", err)
	}
	return nil
}

func sarifName(id string) string {
	var b strings.Builder
	up := true
	for _, r := range id {
		if r == '-' || r == '_' || r == '.' {
			up = true
			continue
		}
		if up {
			b.WriteString(strings.ToUpper(string(r)))
			up = false
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

func sarifURI(p string) string {
	p = strings.TrimPrefix(p, "./")
	return (&url.URL{Path: p}).EscapedPath()
}

// Baseline is the set of fingerprints of a previous JSON report. Entries
// whose fingerprint is of the older, PBKDF2 form are kept by rule and file
// too, so that a report written before fingerprints v2 still works.
type Baseline map[string]struct{}

// LoadBaseline reads a JSON report (an array of findings with a
// "fingerprint" field) written by WriteJSON.
func LoadBaseline(r io.Reader) (Baseline, error) {
	var items []struct {
		Rule        string `json:"rule"`
		File        string `json:"file"`
		Fingerprint string `json:"fingerprint"`
	}
	dec := json.NewDecoder(io.LimitReader(r, 256<<20))
	if err := dec.Decode(&items); err != nil {
		return nil, fmt.Errorf("scan: reading baseline: %w", err)
	}
	b := Baseline{}
	for _, it := range items {
		if it.Fingerprint == "" {
			return nil, errors.New("scan: baseline: an entry has no fingerprint")
		}
		b[it.Fingerprint] = struct{}{}
		if len(it.Fingerprint) == 32 { // the legacy form
			b[legacyKey(it.Rule, it.File)] = struct{}{}
		}
	}
	return b, nil
}

func legacyKey(rule, file string) string {
	if file != "" {
		file = path.Clean(filepath.ToSlash(file))
	}
	return "\x00legacy\x00" + rule + "\x00" + file
}

// Contains reports whether f was already in the baseline.
func (b Baseline) Contains(f Finding) bool {
	if _, ok := b[f.Fingerprint]; ok {
		return true
	}
	if _, ok := b[legacyKey(f.Rule, f.File)]; !ok || f.Secret == "" {
		return false
	}
	_, ok := b[legacyFingerprint(f.Rule, f.File, f.Secret)]
	return ok
}
