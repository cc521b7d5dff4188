package policy

import (
	"strings"
	"testing"
	"unicode"
)

// printable reports the first rune of s a terminal or a page would act on
// or hide (control and format characters), or -1.
func firstHidden(s string) rune {
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return r
		}
	}
	return -1
}

// TestReportsShowNoControlCharacters: a policy under review is someone
// else's text, and what check, plan and test print of it is what the
// reviewer sees. Claim names, audiences and unknown keys are free text:
// printed raw, an ESC sequence erases or rewrites the plan line that
// shows a wider trust, a line break forges a "file:line:" problem line,
// and a bidi override reorders what is shown. They are shown as escapes.
func TestReportsShowNoControlCharacters(t *testing.T) {
	old := mustParse(t, one("policy.yaml", base))
	tests := []struct {
		name string
		src  string // edits base
		show func(t *testing.T, src string) []string
		want string // an escape the lines show
	}{
		{
			name: "claim name in a problem",
			src:  strings.Replace(base, "          project: app\n", "          project: app\n          \"\\e[2K\\rx\": []\n", 1),
			show: problems, want: `\x1b[2K\rx`,
		},
		{
			name: "unknown key forging a problem line",
			src:  base + "\"x\\npolicy.yaml:1: fine\": 1\n",
			show: problems, want: `x\npolicy.yaml:1: fine`,
		},
		{
			name: "claim name erasing a plan line",
			src:  strings.Replace(base, "          project: app\n", "          project: [app, evil]\n      - issuer: ci\n        claims: {\"\\e[1A\\e[2K\": x}\n", 1),
			show: func(t *testing.T, src string) []string { return planLines(t, old, src) },
			want: `\x1b[1A\x1b[2K`,
		},
		{
			name: "audience reordered in a plan line",
			src:  strings.Replace(base, "audience: mayfly", "audience: \"mayfly\\u202e\"", 1),
			show: func(t *testing.T, src string) []string { return planLines(t, old, src) },
			want: `mayfly\u202e`,
		},
		{
			name: "claim name in a mismatch",
			src:  strings.Replace(base, "          project: app\n", "          \"\\e[8m\": app\n", 1),
			show: func(t *testing.T, src string) []string {
				p := mustParse(t, one("policy.yaml", src))
				var out []string
				for _, m := range p.Grants["deploy"].Explain(Identity{Issuer: "ci", Claims: map[string]string{}}) {
					out = append(out, m.String())
				}
				r := p.Admit(Identity{Issuer: "ci", Claims: map[string]string{}}, "deploy")
				return append(out, r.Error())
			},
			want: `\x1b[8m`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lines := tt.show(t, tt.src)
			found := false
			for _, l := range lines {
				if r := firstHidden(l); r >= 0 {
					t.Errorf("%q holds %U", l, r)
				}
				found = found || strings.Contains(l, tt.want)
			}
			if !found {
				t.Errorf("no line shows %s: %q", tt.want, lines)
			}
		})
	}
}

// problems is what check prints of an invalid policy: one line a problem.
func problems(t *testing.T, src string) []string {
	t.Helper()
	_, err := Parse(one("policy.yaml", src), nil)
	es, ok := err.(Errors)
	if !ok {
		t.Fatalf("Parse: %v, want problems", err)
	}
	lines := strings.Split(es.Error(), "\n")
	if len(lines) != len(es) {
		t.Errorf("%d problems printed as %d lines: %q", len(es), len(lines), lines)
	}
	return lines
}

// planLines is what plan prints of applying src over old.
func planLines(t *testing.T, old *Policy, src string) []string {
	t.Helper()
	var out []string
	for _, c := range Plan(old, mustParse(t, one("policy.yaml", src))) {
		out = append(out, c.String())
	}
	return out
}
