package authority

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// A leak report revokes each live job and admin token once, counts the
// rest, and writes no token into the audit log.
func TestLeak(t *testing.T) {
	ctx := context.Background()
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			h, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
			if err != nil {
				t.Fatal(err)
			}
			m := lease.New(b.DB, h, lease.Options{})
			rec := newRecorder(t, b.DB)
			admins := NewAdmins(b.DB, h, rec, nil)
			a := New(Config{Leases: m, Verifier: nopVerifier{}, Policies: b.DB, Audit: rec, AdminTokens: admins})
			issue := func() (string, string) {
				tok, l, err := m.Issue(ctx, lease.Request{Issuer: "ci", Subject: "s", Grants: []string{"deploy"}, TTL: time.Minute, MaxTTL: time.Hour})
				if err != nil {
					t.Fatal(err)
				}
				return tok, l.ID
			}
			live, liveID := issue()
			old, _ := issue()
			if _, _, err := m.RevokeToken(ctx, old, "t"); err != nil {
				t.Fatal(err)
			}
			adminTok, _, err := admins.Create(ctx, "ops", RoleOperator, 0, "root", netip.Addr{})
			if err != nil {
				t.Fatal(err)
			}
			unknownJob, _ := token.New(token.Job)
			unknownAdmin, _ := token.New(token.Admin)
			report := []string{live, live, old, unknownJob, adminTok, adminTok, unknownAdmin, "hello"}
			res, err := a.Leak(ctx, report, LeakOrigin{Source: "github", URL: "https://github.com/acme/app/blob/x"}, netip.MustParseAddr("192.0.2.1"))
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Revoked) != 1 || res.Revoked[0].LeaseID != liveID || res.Revoked[0].Hint != token.Hint(live) ||
				len(res.RevokedAdmin) != 1 || res.AlreadyRevoked != 1 || res.Unknown != 3 {
				t.Fatalf("result %+v", res)
			}
			if _, err := m.Lookup(ctx, live); err == nil {
				t.Fatal("live token survived the report")
			}
			if _, err := admins.Authenticate(ctx, adminTok); err == nil {
				t.Fatal("admin token survived the report")
			}
			// The same report again changes nothing.
			again, err := a.Leak(ctx, report, LeakOrigin{}, netip.Addr{})
			if err != nil || len(again.Revoked) != 0 || len(again.RevokedAdmin) != 0 || again.AlreadyRevoked != 2 || again.Unknown != 4 {
				t.Fatalf("second report %+v %v", again, err)
			}
			all, _ := json.Marshal(rec.all())
			for _, tok := range []string{live, old, unknownJob, adminTok, unknownAdmin} {
				if strings.Contains(string(all), tok) {
					t.Fatal("a whole token in the audit log")
				}
			}
		})
	}
}

// A leak report naming an admin session's value (mfys_, kept by `mayfly
// auth login` in the user's config dir) revokes that session as it does an
// admin token: otherwise a leaked session stays usable, with its role, for
// up to admin_session_ttl.
func TestLeakRevokesAdminSessions(t *testing.T) {
	ctx := context.Background()
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			h, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
			if err != nil {
				t.Fatal(err)
			}
			m := lease.New(b.DB, h, lease.Options{})
			rec := newRecorder(t, b.DB)
			now := time.Now()
			clock := func() time.Time { return now }
			sessions := NewSessions(b.DB, h, rec, clock, time.Hour)
			a := New(Config{Leases: m, Verifier: nopVerifier{}, Policies: b.DB, Audit: rec, Sessions: sessions})
			who := SignedIn{Name: "alice@example.com", Subject: "alice", Issuer: "https://idp.example", Role: RoleAdmin}
			value, row, err := sessions.Create(ctx, who, ViaCLI, netip.Addr{})
			if err != nil {
				t.Fatal(err)
			}
			ended, _, err := sessions.Create(ctx, who, ViaBrowser, netip.Addr{})
			if err != nil {
				t.Fatal(err)
			}
			endedRow, err := sessions.Authenticate(ctx, ended)
			if err != nil {
				t.Fatal(err)
			}
			if err := sessions.SignOut(ctx, endedRow, netip.Addr{}); err != nil {
				t.Fatal(err)
			}
			unknown := SessionPrefix + strings.Repeat("A", SessionLen-len(SessionPrefix))
			res, err := a.Leak(ctx, []string{value, value, ended, unknown}, LeakOrigin{}, netip.MustParseAddr("192.0.2.1"))
			if err != nil {
				t.Fatal(err)
			}
			if len(res.RevokedSessions) != 1 || res.RevokedSessions[0].ID != row.ID || res.Unknown != 2 {
				t.Fatalf("result %+v", res)
			}
			if _, err := sessions.Authenticate(ctx, value); err == nil {
				t.Fatal("the leaked session still authenticates")
			}
			var entry bool
			for _, ev := range rec.all() {
				if ev.Type == TypeSessionRevoke && ev.Reason == "leaked" && ev.Detail["session"] == row.ID {
					entry = true
				}
			}
			if !entry {
				t.Fatal("no admin.session.revoke entry for the leaked session")
			}
			again, err := a.Leak(ctx, []string{value}, LeakOrigin{}, netip.Addr{})
			if err != nil || len(again.RevokedSessions) != 0 || again.Unknown != 1 {
				t.Fatalf("second report %+v %v", again, err)
			}
			all, _ := json.Marshal(rec.all())
			for _, v := range []string{value, ended, unknown} {
				if strings.Contains(string(all), v) {
					t.Fatal("a whole session value in the audit log")
				}
			}
			// An expired session is not live: the report counts it unknown.
			old, _, err := sessions.Create(ctx, who, ViaCLI, netip.Addr{})
			if err != nil {
				t.Fatal(err)
			}
			now = now.Add(2 * time.Hour)
			res, err = a.Leak(ctx, []string{old}, LeakOrigin{}, netip.Addr{})
			if err != nil || len(res.RevokedSessions) != 0 || res.Unknown != 1 {
				t.Fatalf("expired session's report %+v %v", res, err)
			}
		})
	}
}

// A leak report's source and URL are the reporter's words, kept in the
// report's audit entry: no credential the report names may be kept there
// whole, nor cut short by the entry's 512-byte clip (the audit log
// replaces whole tokens by their hints, but a token cut in its checksum is
// no longer one, and its first 34 characters give it whole: the checksum
// is computed from them). A session value (mfys_) is no token to the audit
// log's redaction at all.
func TestLeakOriginKeepsNoCredential(t *testing.T) {
	ctx := context.Background()
	b := storetest.Backends(t)[0]
	h, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	m := lease.New(b.DB, h, lease.Options{})
	rec := newRecorder(t, b.DB)
	sessions := NewSessions(b.DB, h, rec, time.Now, time.Hour)
	a := New(Config{Leases: m, Verifier: nopVerifier{}, Policies: b.DB, Audit: rec, Sessions: sessions})
	job := func() string {
		tok, _, err := m.Issue(ctx, lease.Request{Issuer: "ci", Subject: "s", Grants: []string{"deploy"}, TTL: time.Minute, MaxTTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	session := func() string {
		v, _, err := sessions.Create(ctx, SignedIn{Name: "alice@example.com", Subject: "alice", Issuer: "https://idp.example", Role: RoleAdmin}, ViaCLI, netip.Addr{})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	// cut places cred so that the 512-byte clip keeps its first keep
	// characters.
	cut := func(cred string, keep int) string {
		return "https://example.com/" + strings.Repeat("a", 512-len("https://example.com/")-keep-1) + "/" + cred + "/rest"
	}
	tests := []struct {
		name string
		cred func() string
		// origin builds the report's origin around the credential.
		origin func(cred string) LeakOrigin
		secret func(cred string) string // what must not reach the entry
	}{
		{"job token whole in the url", job, func(c string) LeakOrigin { return LeakOrigin{URL: "https://example.com/?t=" + c} }, jobBody},
		{"job token cut in its checksum by the url's clip", job, func(c string) LeakOrigin { return LeakOrigin{URL: cut(c, 35)} }, jobBody},
		{"job token cut after its body by the url's clip", job, func(c string) LeakOrigin { return LeakOrigin{URL: cut(c, 34)} }, jobBody},
		{"job token cut by the source's clip", job, func(c string) LeakOrigin { return LeakOrigin{Source: cut(c, 39)} }, jobBody},
		{"session value whole in the url", session, func(c string) LeakOrigin { return LeakOrigin{URL: "https://example.com/" + c} }, func(c string) string { return c }},
		{"session value in the source", session, func(c string) LeakOrigin { return LeakOrigin{Source: "log " + c} }, func(c string) string { return c }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cred := tt.cred()
			res, err := a.Leak(ctx, []string{cred}, tt.origin(cred), netip.MustParseAddr("192.0.2.1"))
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Revoked)+len(res.RevokedSessions) != 1 {
				t.Fatalf("result %+v", res)
			}
			var entry bool
			for _, ev := range rec.all() {
				all, _ := json.Marshal(ev)
				if strings.Contains(string(all), tt.secret(cred)) {
					t.Fatalf("the audit log holds the credential: %s", all)
				}
				entry = entry || ev.Type == "leak.report" && (ev.Detail["url"] != "" || ev.Detail["report_source"] != "")
			}
			if !entry {
				t.Fatal("the report's origin was not recorded")
			}
		})
	}
}

// jobBody is what gives a job token away: its random body (the checksum
// follows from it).
func jobBody(tok string) string {
	return tok[len(token.JobPrefix) : len(token.JobPrefix)+token.BodyLen]
}
