package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mayfly-sh/mayfly/internal/authority"
	"github.com/mayfly-sh/mayfly/internal/identity"
	"github.com/mayfly-sh/mayfly/internal/policy"
)

// maxIDTokenFile bounds the file `policy test --id-token` reads.
const maxIDTokenFile = identity.DefaultMaxTokenSize + 1024

const unverifiedNote = "the ID token's signature is not checked offline (nor its expiry): this says what the policy would decide if the token is genuine"

// testedGrant is one grant's answer in `policy test`.
type testedGrant struct {
	Grant   string `json:"grant"`
	Granted bool   `json:"granted"`
	// OnlyFrom: granted only when the job calls from these networks (no
	// --source was given to decide).
	OnlyFrom []string           `json:"only_from,omitempty"`
	Reason   string             `json:"reason,omitempty"` // policy.Reason code
	Why      string             `json:"why,omitempty"`    // the refusal as the server words it
	Who      []*policy.Mismatch `json:"who,omitempty"`    // per who entry: its first unmet line (null: met)
	// Allow: a granted grant's allow rules, the methods each allows (GET's
	// HEAD with it: policy.Rule.ImpliesHead).
	Allow []testedRule `json:"allow,omitempty"`
	text  string       // the reason in words
}

// testedRule is one allow rule of a granted grant in `policy test`.
type testedRule struct {
	Methods []string `json:"methods"`
	Paths   []string `json:"paths"`
	text    string   // the methods as written, "(and HEAD)" after GET's
}

// rulesOf is g's allow rules as policy test shows them.
func rulesOf(g *policy.Grant) []testedRule {
	var out []testedRule
	for i := range g.Rules {
		r := &g.Rules[i]
		tr := testedRule{Methods: slices.Clone(r.Methods), Paths: r.Paths, text: strings.Join(r.Methods, ", ")}
		if r.ImpliesHead() {
			tr.Methods, tr.text = append(tr.Methods, "HEAD"), tr.text+" (and HEAD)"
		}
		out = append(out, tr)
	}
	return out
}

type policyTestResult struct {
	SignatureChecked bool              `json:"signature_checked"`
	Note             string            `json:"note"`
	Iss              string            `json:"iss"`
	Audience         []string          `json:"aud"`
	Expires          *time.Time        `json:"expires_at,omitempty"`
	Issuer           string            `json:"issuer,omitempty"` // the policy's issuer the token routes to
	IssuerProblem    string            `json:"issuer_problem,omitempty"`
	Claims           map[string]string `json:"claims"`
	Grants           []testedGrant     `json:"grants"`
}

func newPolicyTestCmd() *cobra.Command {
	var idFile, source string
	var outFmt *outputFormat
	var grants []string
	c := &cobra.Command{
		Use:   "test --id-token FILE [--grant G…] [--source ADDR] FILE_OR_DIR…",
		Short: "Say offline which grants an ID token would get under a policy, and why not",
		Long: `Decodes the ID token in FILE (its signature is NOT checked offline, nor its
expiry) and decides, as the server's exchange would, which grants of the policy
it may have: for a refused grant, the first line of each who entry that the
token does not satisfy (name, expected, got). Claim values are not secret; the
token's signature is never printed. --source ADDR decides source_cidrs lines;
without it a grant they alone refuse is reported as granted only from them.
Exit 0 when every --grant named (or, without --grant, some grant) would be
given, 1 otherwise, 2 on a usage error or an invalid policy.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if idFile == "" {
				return usageErr("policy test: --id-token FILE is required")
			}
			format, err := outFmt.resolve(cmd)
			if err != nil {
				return err
			}
			var addr netip.Addr
			if source != "" {
				a, err := netip.ParseAddr(source)
				if err != nil {
					return usageErr("policy test: --source %q is not an IP address", source)
				}
				addr = a
			}
			raw, err := readIDTokenFile(idFile)
			if err != nil {
				return err
			}
			u, err := identity.DecodeUnverified(raw)
			if err != nil {
				return usageErr("policy test: %s: %v", idFile, err)
			}
			p, _, err := parsePolicy(cmd.ErrOrStderr(), args)
			if err != nil {
				var ee *exitError
				if errors.As(err, &ee) && ee.code == exitNegative {
					ee.code = exitUsage // an invalid policy answers nothing about the token
				}
				return err
			}
			var names []string
			for _, g := range grants {
				names = append(names, strings.FieldsFunc(g, func(r rune) bool { return r == ',' || r == ' ' })...)
			}
			res := testPolicy(p, u, names, addr)
			if format == "json" {
				if err := printJSON(cmd.OutOrStdout(), res); err != nil {
					return err
				}
			} else {
				printPolicyTest(cmd.OutOrStdout(), res)
			}
			given := 0
			for _, g := range res.Grants {
				if g.Granted {
					given++
				}
			}
			switch {
			case len(names) > 0 && given < len(res.Grants):
				return silentExit(exitNegative)
			case given == 0:
				return silentExit(exitNegative)
			}
			return nil
		},
	}
	c.Flags().StringVar(&idFile, "id-token", "", "file holding the ID token (a JWT)")
	c.Flags().StringSliceVar(&grants, "grant", nil, "grant(s) to test: NAME[,NAME…] (default: every grant)")
	c.Flags().StringVar(&source, "source", "", "the job's address, to decide source_cidrs")
	outFmt = addFormatFlag(c, "text", "text", "json")
	return c
}

func readIDTokenFile(name string) (string, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", usageErr("policy test: %v", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxIDTokenFile+1))
	if err != nil {
		return "", usageErr("policy test: reading %s: %v", name, err)
	}
	if len(b) > maxIDTokenFile {
		return "", usageErr("policy test: %s is larger than an ID token may be", name)
	}
	return strings.TrimSpace(string(b)), nil
}

// testPolicy decides each grant (the names given, else all) for the
// token's identity, with policy.Admit as the exchange does.
func testPolicy(p *policy.Policy, u *identity.Unverified, names []string, addr netip.Addr) *policyTestResult {
	res := &policyTestResult{Note: unverifiedNote, Iss: u.Issuer, Audience: u.Audience, Claims: u.Claims}
	if !u.Expiry.IsZero() {
		exp := u.Expiry.UTC()
		res.Expires = &exp
	}
	// The same issuer the server's identity.Verifier would pick.
	name, err := u.IssuerOf(authority.IssuerConfigs(p))
	if err != nil {
		res.IssuerProblem = fmt.Sprintf("%v: the server refuses this token (invalid_grant)", err)
	}
	res.Issuer = name
	if len(names) == 0 {
		for n := range p.Grants {
			names = append(names, n)
		}
		sort.Strings(names)
	}
	id := policy.Identity{Issuer: res.Issuer, Claims: u.Claims, Source: addr}
	for _, name := range names {
		tg := testedGrant{Grant: name}
		no := p.Admit(id, name)
		if no == nil {
			tg.Granted, tg.Allow = true, rulesOf(p.Grants[name])
			res.Grants = append(res.Grants, tg)
			continue
		}
		if no.Reason == policy.SourceNotAllowed && !addr.IsValid() {
			// Only the address is unknown: say which networks would do.
			tg.Granted, tg.Allow = true, rulesOf(p.Grants[name])
			for _, w := range p.Grants[name].Who {
				if w.Match(id.Issuer, id.Claims) {
					for _, c := range w.SourceCIDRs {
						tg.OnlyFrom = append(tg.OnlyFrom, c.String())
					}
				}
			}
			res.Grants = append(res.Grants, tg)
			continue
		}
		tg.Reason, tg.Why, tg.text = no.Reason.Code(), no.Error(), no.Reason.String()
		if g := p.Grants[name]; g != nil {
			tg.Who = g.Explain(id)
		}
		res.Grants = append(res.Grants, tg)
	}
	return res
}

func printPolicyTest(w io.Writer, r *policyTestResult) {
	// The token's claims are anyone's (its signature is not checked): an
	// ESC sequence in sub could erase the verdict below or draw its own.
	fmt.Fprintf(w, "note: %s\n", r.Note)
	fmt.Fprintf(w, "token: iss %s, sub %s, aud %s", policy.Shown(r.Iss), policy.Shown(r.Claims["sub"]), policy.Shown(strings.Join(r.Audience, " ")))
	if r.Expires != nil {
		fmt.Fprintf(w, ", expires %s", r.Expires.Format(time.RFC3339))
	}
	fmt.Fprintln(w)
	if r.IssuerProblem != "" {
		fmt.Fprintf(w, "issuer: %s\n", policy.Shown(r.IssuerProblem))
	} else {
		fmt.Fprintf(w, "issuer: %s\n", r.Issuer)
	}
	for _, g := range r.Grants {
		switch {
		case g.Granted && len(g.OnlyFrom) > 0:
			fmt.Fprintf(w, "%s: granted only from %s (give --source to decide)\n", g.Grant, strings.Join(g.OnlyFrom, ", "))
		case g.Granted:
			fmt.Fprintf(w, "%s: granted\n", g.Grant)
		default:
			fmt.Fprintf(w, "%s: refused: %s\n", policy.Shown(g.Grant), g.text)
			for i, m := range g.Who {
				if m == nil {
					fmt.Fprintf(w, "  who[%d]: matches\n", i)
					continue
				}
				fmt.Fprintf(w, "  %s\n", m)
			}
		}
		for i, tr := range g.Allow {
			fmt.Fprintf(w, "  allow[%d]: %s %s\n", i, policy.Shown(tr.text), policy.Shown(strings.Join(tr.Paths, " ")))
		}
	}
}
