package scan

import (
	"strings"
	"testing"
)

// A Stripe test-mode key reads and writes the test account: its customers,
// their (test) cards, webhooks, the account's settings. gitleaks reports
// sk_/rk_ keys of every mode; a placeholder of one repeated letter is none.
func TestStripeKeyModes(t *testing.T) {
	g := newGen(61)
	tests := []struct {
		name, text string
		want       bool
	}{
		{"live secret", "STRIPE_KEY=sk_live_" + g.str(abcB62, 24), true},
		{"live restricted", "STRIPE_KEY=rk_live_" + g.str(abcB62, 99), true},
		{"test secret", "STRIPE_KEY=sk_test_" + g.str(abcB62, 24), true},
		{"test restricted", "STRIPE_KEY=rk_test_" + g.str(abcB62, 99), true},
		{"test secret, long", "stripe.api_key = 'sk_test_" + g.str(abcB62, 99) + "'", true},
		{"prod secret", "STRIPE_KEY=sk_prod_" + g.str(abcB62, 24), true},
		{"test placeholder", "STRIPE_KEY=sk_test_" + strings.Repeat("x", 24), false},
		{"test, too short", "STRIPE_KEY=sk_test_" + g.str(abcB62, 12), false},
		{"publishable", "STRIPE_PK=pk_test_" + g.str(abcB62, 24), false},
	}
	s := newScanner(t, Options{Enable: []string{"stripe-secret-key"}})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := s.ScanBytes("app.env", []byte(tt.text+"\n"))
			if got := len(fs) == 1; got != tt.want || len(fs) > 1 {
				t.Fatalf("%d findings, want a finding: %v", len(fs), tt.want)
			}
		})
	}
}
