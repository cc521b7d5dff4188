package api

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/authority"
)

// revokingBody is a request body that arrives only after its admin token
// was revoked: its first read revokes the token, as an admin would while
// the body trickles in (the control plane allows a body 30 s to arrive).
type revokingBody struct {
	once   sync.Once
	revoke func()
	r      io.Reader
}

func (b *revokingBody) Read(p []byte) (int, error) {
	b.once.Do(b.revoke)
	return b.r.Read(p)
}

// A revoked admin token does nothing more, not even through a request it
// began before it was revoked whose body was still arriving: else whoever
// stole it keeps one such request open at all times and, once the token
// is revoked, finishes it to make another admin token.
func TestAdminRevokedWhileBodyArrives(t *testing.T) {
	tests := []struct {
		name, method, path, body string
		changed                  func(b *adminBench) bool
	}{
		{"create admin token", "POST", "/v1/admin/tokens", `{"name":"backdoor","role":"admin"}`, func(b *adminBench) bool {
			list, err := b.api.cfg.Admins.List(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			for _, tk := range list {
				if tk.Name == "backdoor" {
					return true
				}
			}
			return false
		}},
		{"put secret", "PUT", "/v1/secrets/gh", `{"value":"attacker-chosen"}`, func(b *adminBench) bool {
			b.vault.mu.Lock()
			defer b.vault.mu.Unlock()
			return b.vault.vals["gh"] != ""
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newAdminBench(t, nil)
			body := &revokingBody{r: strings.NewReader(tt.body), revoke: func() {
				if err := b.api.cfg.Admins.Revoke(context.Background(), "admin-bot", "test", netip.MustParseAddr("127.0.0.1")); err != nil {
					t.Errorf("revoke: %v", err)
				}
			}}
			r := httptest.NewRequest(tt.method, tt.path, body)
			r.RemoteAddr = "127.0.0.1:40000"
			r.Header.Set("Authorization", "Bearer "+b.tokens[authority.RoleAdmin])
			r.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			b.api.ServeHTTP(w, r)
			if w.Code != http.StatusUnauthorized {
				t.Errorf("status %d, want 401: %s", w.Code, w.Body)
			}
			if tt.changed(b) {
				t.Error("the revoked token's request changed state")
			}
			var denied bool
			for _, ev := range b.log.all() {
				if ev.Type == authority.TypeAdminDenied && ev.Reason == authority.DeniedBadToken && ev.Path == tt.path {
					denied = true
				}
				if ev.Type == audit.TypeAdminCreate && ev.Admin == "admin-bot" {
					t.Errorf("entry %+v: the revoked token made a token", ev)
				}
			}
			if !denied {
				t.Errorf("no admin.denied entry: %+v", b.log.all())
			}
		})
	}
}
