package githubapp

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/mint"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// What GitHub answers goes into errors cut short: its "message" (at 200
// bytes) and the names it lists (at 100). A mayfly token or minted
// password quoted across the cut lost its checksum there, so redaction in
// the audit log and the log no longer saw a credential, yet its characters
// before the checksum give it whole. The cut now never splits one.
func TestAnswerCutKeepsNoCredential(t *testing.T) {
	h := newHarness(t)
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
		for _, tc := range []struct {
			name string
			// got is the error text of an answer quoting cred cut at in
			// of its characters.
			got func(t *testing.T, in int) string
		}{
			{"message", func(t *testing.T, in int) string {
				msg := strings.Repeat("e", 200-in) + cred + " is not a valid permission"
				api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(http.StatusUnprocessableEntity)
					json.NewEncoder(w).Encode(map[string]string{"message": msg})
				}))
				defer api.Close()
				pol, err := policy.Parse([]policy.File{{Name: "p.yaml", Data: []byte(strings.ReplaceAll(polText, "%URL%", api.URL))}}, nil)
				if err != nil {
					t.Fatal(err)
				}
				r := mint.Request{ID: "mnt_1", LeaseID: "lse_1", Upstream: pol.Upstreams["gh"], Grant: pol.Grants["release"], ExpiresAt: h.clk.Now().Add(10 * time.Minute)}
				p, err := h.src.Plan(ctx, r)
				if err != nil {
					t.Fatal(err)
				}
				_, err = h.src.Mint(ctx, r, p)
				var me *mint.Error
				if !errors.As(err, &me) {
					t.Fatalf("minted against an API that refused: %v", err)
				}
				return err.Error()
			}},
			{"a permission's name", func(t *testing.T, in int) string {
				a := tokenAnswer{Permissions: map[string]string{strings.Repeat("e", 100-in) + cred: "read"}}
				return a.wider(&policy.GitHubScope{Permissions: map[string]string{"contents": "read"}})
			}},
		} {
			// The cut falls after the credential's body: right after it,
			// or inside its checksum.
			for _, in := range []int{len(body), len(cred) - 3, len(cred) - 1} {
				if s := tc.got(t, in); s == "" {
					t.Errorf("%s: nothing said", tc.name)
				} else if i := strings.Index(s, body); i >= 0 {
					t.Errorf("%s cut %d characters into %s… holds it cut in its checksum: …%s…", tc.name, in, cred[:5], s[max(0, i-20):min(len(s), i+len(body)+10)])
				}
			}
		}
	}
}
