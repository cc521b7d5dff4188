package scan

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/mayfly-sh/mayfly/internal/token"
)

// MaxLeakTokens caps the tokens taken from one leak report.
const MaxLeakTokens = 10000

// LeakReport is what a POST /v1/leaks body says: the checksum-valid mayfly
// tokens in it (job and admin, deduplicated, in order of appearance), the
// checksum-valid mfyp_ passwords of database roles mayfly minted, the
// GitHub ghs_ installation tokens of either form (mayfly may have minted
// them: SPEC section 9), and, for provider reports, where they were seen.
type LeakReport struct {
	Tokens []string
	// Passwords are minted database passwords (same cap, counted with
	// Tokens): their lease is revoked, which drops the role.
	Passwords []string
	// GitHubTokens are GitHub App installation tokens (ghs_: classic and
	// checksum-valid, or stateless; same cap): if mayfly minted one, its
	// lease is revoked, which deletes the token.
	GitHubTokens []string
	// Sessions are mfys_ admin session values (same cap): the session is
	// revoked.
	Sessions []string
	// Source and URL come from a GitHub alert ("source", "url") or a GitLab
	// report ("location" as URL); the first entry that has one wins.
	Source, URL string
	// Format is "text", "github" or "gitlab".
	Format string
	// Truncated is set when more than MaxLeakTokens tokens were present.
	Truncated bool
}

type leakEntry struct {
	Token    *string `json:"token"`
	Type     string  `json:"type"`
	URL      string  `json:"url"`
	Source   string  `json:"source"`
	Location string  `json:"location"`
}

// ParseLeakReport reads a leak report: any text, in which every
// checksum-valid mayfly token (and minted credential) is taken, wherever it
// sits, also base64-, hex- or percent-encoded as the scanner decodes it.
// A GitHub secret-scanning alert ([{"token","type","url","source"}])
// or a GitLab token-revocation report ([{"type","token","location"}]) is
// text too; its JSON only names the report's format, source and URL. So no
// body is refused for its shape: a JSON log or an array of strings that
// holds a token is still a leak. The caller bounds the body's size.
func ParseLeakReport(body []byte) *LeakReport {
	rep := &LeakReport{Format: "text"}
	seen := map[string]bool{}
	add := func(t string) {
		if seen[t] {
			return
		}
		if len(rep.Tokens)+len(rep.Passwords)+len(rep.GitHubTokens)+len(rep.Sessions) >= MaxLeakTokens {
			rep.Truncated = true
			return
		}
		seen[t] = true
		if token.ParsePassword(t) == nil {
			rep.Passwords = append(rep.Passwords, t)
			return
		}
		if strings.HasPrefix(t, "ghs_") {
			rep.GitHubTokens = append(rep.GitHubTokens, t)
			return
		}
		if strings.HasPrefix(t, "mfys_") {
			rep.Sessions = append(rep.Sessions, t)
			return
		}
		rep.Tokens = append(rep.Tokens, t)
	}
	// The scanner's engine with the revocable rules, decoding on: a token
	// that a log holds only encoded (curl -v's Basic header of x:<token>,
	// a Docker config's auth, a hex dump) is revoked as `mayfly scan
	// --revoke` of the same log would; terminal codes are looked through
	// (termcodes.go). In order of appearance.
	if e, err := leakEngine(); err == nil {
		ms := e.scan(body, 0, len(body), 0, "")
		slices.SortStableFunc(ms, func(a, b rawMatch) int { return a.pos - b.pos })
		for _, m := range ms {
			add(m.secret)
		}
	} else {
		// Unreachable (the rules are fixed); the raw forms still count.
		for _, m := range token.Find(body) {
			add(m.Token)
		}
	}
	trimmed := bytes.TrimSpace(body)
	var entries []leakEntry
	if len(trimmed) == 0 || trimmed[0] != '[' || json.Unmarshal(trimmed, &entries) != nil {
		return rep
	}
	github := false
	for _, e := range entries {
		if e.Token == nil {
			return rep // not an alert: text
		}
		github = github || e.URL != "" || e.Source != ""
	}
	for _, e := range entries {
		if rep.URL == "" {
			rep.URL = e.URL
			if rep.URL == "" {
				rep.URL = e.Location
			}
		}
		if rep.Source == "" {
			rep.Source = e.Source
		}
	}
	rep.Format = "gitlab"
	if github || len(entries) == 0 {
		rep.Format = "github"
	}
	return rep
}

// leakEngine is the engine of the rules whose secrets a leak report
// revokes: mayfly's tokens, admin sessions and minted passwords, and ghs_
// installation tokens. Built once, immutable.
var leakEngine = sync.OnceValues(func() (*engine, error) {
	rules := []*rule{{id: RuleMayflyJob}, {id: RuleMayflyAdmin}, {id: RuleMayflyPassword}}
	for _, r := range builtinRules() {
		if r.id == RuleGitHubAppToken || r.id == RuleMayflySession {
			rules = append(rules, r)
		}
	}
	return newEngine(rules, true)
})

// maxGHSLen bounds a stateless installation token (GitHub's are about 520
// characters, varying with what the JWT holds).
const maxGHSLen = 8 << 10

// ghsAt reads a GitHub App installation token at b[start:], which begins
// with "ghs_", and returns where it ends. Two forms exist: the classic one
// ("ghs_" + 30 base62 + their base62 CRC-32: 40 characters, verified by its
// checksum) and the stateless one GitHub mints since its 2026 rollout
// ("ghs_" + the App's id + "_" + a JWT signed by GitHub, about 520
// characters; no one outside GitHub can check its signature, so it is read
// by its shape: digits, then a JWT whose header and payload are JSON
// objects). The caller checks what stands before start; the stateless form
// is also refused after a base64url character or a dot, as jwtMatch
// refuses a JWT there: it would be the middle of a longer run. That keeps
// reading linear: no candidate is read inside the run of one before it
// (text of "ghs_1_" repeated cost 8 KiB of reading a candidate).
func ghsAt(b []byte, start int) (end int, verified, ok bool) {
	body := start + len("ghs_")
	n := 0
	for body+n < len(b) && n <= 36 && isB62(b[body+n]) {
		n++
	}
	if n == 36 && (body+n == len(b) || !isB62(b[body+n])) {
		if good, _ := crc62(b[start : body+n]); good {
			return body + n, true, true
		}
	}
	// Stateless: digits (the App's id), "_", a JWT.
	if start > 0 && (setB62U[b[start-1]] || b[start-1] == '.') && !afterEscape(b, start) {
		return 0, false, false
	}
	d := 0
	for body+d < len(b) && d <= 20 && b[body+d] >= '0' && b[body+d] <= '9' {
		d++
	}
	if d == 0 || d > 20 || body+d >= len(b) || b[body+d] != '_' {
		return 0, false, false
	}
	js := body + d + 1
	var dots [2]int
	nd, i := 0, js
	for limit := min(len(b), start+maxGHSLen+1); i < limit; i++ {
		c := b[i]
		if c == '.' {
			if nd == 2 {
				break // a third dot ends the token (say, a sentence's)
			}
			dots[nd] = i
			nd++
			continue
		}
		if !setB62U[c] {
			break
		}
	}
	if nd != 2 || i-start > maxGHSLen || !jwtParts(b[js:dots[0]], b[dots[0]+1:dots[1]], b[dots[1]+1:i]) {
		return 0, false, false
	}
	return i, false, true
}

func isB62(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z'
}

// VerifyGitHubSignature checks a GitHub secret-scanning alert: signatureB64
// (the Github-Public-Key-Signature header) must be a base64 ASN.1 ECDSA
// signature over SHA-256 of body by the key keyID (the
// Github-Public-Key-Identifier header) names in keys.
func VerifyGitHubSignature(body []byte, keyID, signatureB64 string, keys map[string]*ecdsa.PublicKey) error {
	key, ok := keys[keyID]
	if !ok || key == nil {
		return errors.New("scan: github signature: unknown key identifier")
	}
	sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(signatureB64))
	if err != nil {
		return errors.New("scan: github signature: not base64")
	}
	h := sha256.Sum256(body)
	if !ecdsa.VerifyASN1(key, h[:], sig) {
		return errors.New("scan: github signature: does not verify")
	}
	return nil
}

// ParseGitHubPublicKey reads one key of GitHub's secret-scanning key list
// (GET /meta/public_keys/secret_scanning: its "key", PEM) as
// VerifyGitHubSignature takes it.
func ParseGitHubPublicKey(pemKey string) (*ecdsa.PublicKey, error) {
	blk, _ := pem.Decode([]byte(pemKey))
	if blk == nil {
		return nil, errors.New("github public key: not PEM")
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("github public key: %w", err)
	}
	ek, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return nil, errors.New("github public key: not an ECDSA key")
	}
	return ek, nil
}
