package authority

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// An admin who passes a credential where a name or session id belongs
// (mayfly admin revoke mfya_…, a session's cookie value for its id) gets a
// 404 that does not quote it back: the CLI prints the description on
// stderr, into a terminal's scrollback or a CI log.
func TestRevokeByNameNeverQuotesACredential(t *testing.T) {
	ctx := context.Background()
	db := storetest.SQLite(t).DB
	h, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder(t, db)
	admins := NewAdmins(db, h, rec, nil)
	sessions := NewSessions(db, h, rec, nil, time.Hour)
	adminTok, _, err := admins.Create(ctx, "ci-bot", RoleAdmin, 0, "test", netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	jobTok, err := token.New(token.Job)
	if err != nil {
		t.Fatal(err)
	}
	sess, _, err := sessions.Create(ctx, SignedIn{Name: "oidc:ops", Subject: "u1", Role: RoleOperator}, ViaCLI, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		value  string
		revoke func(string) error
	}{
		{"admin token by its token", adminTok, func(v string) error { return admins.Revoke(ctx, v, "root", netip.Addr{}) }},
		{"admin token by a job token", jobTok, func(v string) error { return admins.Revoke(ctx, v, "root", netip.Addr{}) }},
		{"admin token by a session value", sess, func(v string) error { return admins.Revoke(ctx, v, "root", netip.Addr{}) }},
		{"session by its value", sess, func(v string) error { return sessions.Revoke(ctx, v, "root", netip.Addr{}) }},
		{"session by an admin token", adminTok, func(v string) error { return sessions.Revoke(ctx, v, "root", netip.Addr{}) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.revoke(tt.value)
			var re *Error
			if !errors.As(err, &re) || re.Status != 404 {
				t.Fatalf("want a 404 refusal, got %v", err)
			}
			body := tt.value[len(tt.value)-20:]
			if strings.Contains(err.Error(), body) || strings.Contains(re.Description, body) {
				t.Fatalf("the refusal quotes the credential: %q", re.Description)
			}
		})
	}
	// Still live: nothing was revoked by a mistaken argument.
	if _, err := admins.Authenticate(ctx, adminTok); err != nil {
		t.Fatalf("admin token: %v", err)
	}
	if _, err := sessions.Authenticate(ctx, sess); err != nil {
		t.Fatalf("session: %v", err)
	}
}

// An admin token is never created under a credential's name: the name is
// kept in its row and in audit entries.
func TestAdminTokenNameIsNeverACredential(t *testing.T) {
	ctx := context.Background()
	db := storetest.SQLite(t).DB
	h, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	admins := NewAdmins(db, h, newRecorder(t, db), nil)
	jobTok, _ := token.New(token.Job)
	adminTok, _ := token.New(token.Admin)
	sess := SessionPrefix + strings.Repeat("Ab_-", 10) + "xyz"
	for _, tt := range []struct {
		name string
		ok   bool
	}{
		{"ci-bot", true},
		{"mfy_not-a-token", true},
		{jobTok, false},
		{adminTok, false},
		{sess, false},
	} {
		t.Run(tt.name[:min(len(tt.name), 8)], func(t *testing.T) {
			_, _, err := admins.Create(ctx, tt.name, RoleAuditor, 0, "root", netip.Addr{})
			if (err == nil) != tt.ok {
				t.Fatalf("create %q: %v, want ok=%v", tt.name, err, tt.ok)
			}
			if err != nil && strings.Contains(err.Error(), tt.name) {
				t.Fatalf("the refusal quotes the name: %v", err)
			}
		})
	}
}
