package dpop

import (
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/token"
)

// A value a refusal quotes (the request's method) is cut at 100 bytes: the
// refusal goes into an audit entry and the log. A mayfly token or minted
// password across the cut lost its checksum there, so redaction no longer
// saw a credential, yet its characters before the checksum give it whole.
// The cut now never splits one.
func TestQuotedValueCutKeepsNoCredential(t *testing.T) {
	clk := newClock()
	v := NewVerifier(Options{Now: clk.Now})
	key := ecKey()
	proof := craft(t, key, stdHeader(t, key), stdClaims(clk, testToken))
	job, err := token.New(token.Job)
	if err != nil {
		t.Fatal(err)
	}
	pw, err := token.NewPassword()
	if err != nil {
		t.Fatal(err)
	}
	for _, cred := range []string{job, pw} {
		body := cred[:len(cred)-token.ChecksumLen] // gives the whole credential
		for _, in := range []int{len(body), len(cred) - 3, len(cred) - 1} {
			method := strings.Repeat("E", 100-in) + cred
			_, err := v.Verify(proof, method, testURL, testToken, thumb(t, &key.PublicKey))
			if CheckOf(err) != CheckMethod {
				t.Fatalf("a proof for another method: %v", err)
			}
			if s := err.Error(); strings.Contains(s, body) {
				t.Errorf("cut %d characters into %s…: the refusal holds it cut in its checksum: %s", in, cred[:5], s)
			}
		}
	}
}
