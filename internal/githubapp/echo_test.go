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
)

// An API (a GitHub Enterprise front end, a debugging proxy) whose
// well-formed error answer quotes the Authorization it was sent in its
// "message": that message becomes the error's text, which is the
// exchange's answer to the job and its audit entry (minting: the App
// JWT) or minted.last_error, the audit entry and the log (revoking: the
// installation token, still alive since its deletion failed).
func TestEchoedCredentialKeptOutOfErrors(t *testing.T) {
	h := newHarness(t)
	for _, status := range []int{http.StatusBadRequest, http.StatusNotFound, http.StatusUnprocessableEntity, http.StatusForbidden} {
		api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			auth := r.Header.Get("Authorization")
			_, cred, _ := strings.Cut(auth, " ")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			// The credential first, bare: within message's clip.
			json.NewEncoder(w).Encode(map[string]string{"message": cred + " was refused (" + auth + ")"})
		}))
		t.Cleanup(api.Close)
		pol, err := policy.Parse([]policy.File{{Name: "p.yaml", Data: []byte(strings.ReplaceAll(polText, "%URL%", api.URL))}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(http.StatusText(status)+"/revoke", func(t *testing.T) {
			const ghs = "ghs_PLANTEDinstallationTOKEN0123456789ab"
			params, _ := json.Marshal(map[string]string{"api_url": api.URL})
			rec := mint.Record{Material: []byte(ghs), Authenticated: true}
			rec.Params = params
			err := h.src.Revoke(ctx, rec)
			if err == nil {
				t.Fatal("revoked against an API that refused")
			}
			if strings.Contains(err.Error(), ghs) {
				t.Errorf("the revocation error (minted.last_error, audit reason, log) holds the installation token: %s", err)
			}
		})
		t.Run(http.StatusText(status)+"/mint", func(t *testing.T) {
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
			// The JWT's first part is its header, the same in every
			// App JWT: what must not be there is the JWT's own part.
			if strings.Contains(err.Error(), "eyJ") && strings.Contains(err.Error(), ".eyJ") {
				t.Errorf("the mint error (the job's answer) quotes the App JWT: %s", err)
			}
		})
	}
}
