package identity

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/token"
)

// An untrusted value an error quotes (an ID token's iss) is cut at 100
// bytes: the error goes into the exchange's audit entry and the log. A
// mayfly token or minted password across the cut lost its checksum there,
// so redaction no longer saw a credential, yet its characters before the
// checksum give it whole. The cut now never splits one.
func TestQuotedValueCutKeepsNoCredential(t *testing.T) {
	job, err := token.New(token.Job)
	if err != nil {
		t.Fatal(err)
	}
	pw, err := token.NewPassword()
	if err != nil {
		t.Fatal(err)
	}
	v := NewVerifier(Options{})
	enc := func(x any) string {
		b, err := json.Marshal(x)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	for _, cred := range []string{job, pw} {
		body := cred[:len(cred)-token.ChecksumLen] // gives the whole credential
		for _, in := range []int{len(body), len(cred) - 3, len(cred) - 1} {
			iss := "https://" + strings.Repeat("e", 100-8-in) + cred + ".example"
			raw := enc(map[string]string{"alg": "RS256", "typ": "JWT"}) + "." + enc(map[string]any{"iss": iss, "sub": "x"}) + "." +
				base64.RawURLEncoding.EncodeToString([]byte("not a signature"))
			_, err := v.Verify(context.Background(), raw)
			if err == nil || CheckOf(err) != CheckIssuer {
				t.Fatalf("an untrusted issuer: %v", err)
			}
			if s := err.Error(); strings.Contains(s, body) {
				t.Errorf("cut %d characters into %s…: the error holds it cut in its checksum: %s", in, cred[:5], s)
			}
		}
	}
}
