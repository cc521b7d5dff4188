package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/apitype"
	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/auditlog"
	"github.com/mayfly-sh/mayfly/internal/authority"
	"github.com/mayfly-sh/mayfly/internal/failclosed"
	"github.com/mayfly-sh/mayfly/internal/store"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// entries is an audit log in memory that refuses the types in fail.
type entries struct {
	mu   sync.Mutex
	evs  []audit.Event
	fail map[string]bool
}

func (e *entries) Add(ctx context.Context, ev audit.Event) auditlog.Future {
	return auditlog.Answered(e.record(ctx, ev))
}

func (e *entries) record(_ context.Context, ev audit.Event) (int64, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.fail[ev.Type] {
		return 0, fmt.Errorf("%w: test", failclosed.ErrUnavailable)
	}
	e.evs = append(e.evs, ev)
	return int64(len(e.evs)), nil
}

// Size, Record and Settle take the entries of actions that write their own
// (admin tokens here): this log keeps them at once, none being rolled
// back in these tests.
func (e *entries) Size() int64 { return 0 }

func (e *entries) Record(ev audit.Event) ([]byte, error) {
	if _, err := e.record(context.Background(), ev); err != nil {
		return nil, err
	}
	return []byte("-\n{}"), nil
}

func (e *entries) Settle(context.Context, int64, *store.Note) error { return nil }

func (e *entries) all() []audit.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]audit.Event(nil), e.evs...)
}

// vault is the secret store in memory, both sides: the API's metadata
// view and the authority's writer.
type vault struct {
	mu   sync.Mutex
	vals map[string]string
}

// note makes n's records as the change's store transaction would: an
// error undoes the change.
func note(n *store.Note) error {
	if n == nil || n.Make == nil {
		return nil
	}
	if _, err := n.Make(store.Changes{}); err != nil {
		return fmt.Errorf("%w: %w", store.ErrNoteFailed, err)
	}
	return nil
}

func (v *vault) Put(_ context.Context, name string, value []byte, _ *store.RotationChange, n *store.Note) (int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := note(n); err != nil {
		return 0, err
	}
	v.vals[name] = string(value)
	return 1, nil
}
func (v *vault) Delete(_ context.Context, name string, n *store.Note) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.vals[name]; !ok {
		return ErrSecretNotFound
	}
	if err := note(n); err != nil {
		return err
	}
	delete(v.vals, name)
	return nil
}
func (v *vault) RotateMasterKey(_ context.Context, n *store.Note) (int, bool, error) {
	if err := note(n); err != nil {
		return 0, false, err
	}
	return 2, true, nil
}
func (v *vault) List(context.Context) ([]SecretMeta, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []SecretMeta
	for n := range v.vals {
		out = append(out, SecretMeta{Name: n, Version: 1})
	}
	return out, nil
}
func (v *vault) Meta(_ context.Context, name string) (SecretMeta, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.vals[name]; !ok {
		return SecretMeta{}, ErrSecretNotFound
	}
	return SecretMeta{Name: name, Version: 1}, nil
}

type adminBench struct {
	api    *API
	log    *entries
	vault  *vault
	tokens map[string]string // role → admin token
}

func newAdminBench(t *testing.T, clientCAs *x509.CertPool) *adminBench {
	t.Helper()
	db := storetest.SQLite(t).DB
	h, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	b := &adminBench{log: &entries{fail: map[string]bool{}}, vault: &vault{vals: map[string]string{"old": "x"}}, tokens: map[string]string{}}
	admins := authority.NewAdmins(db, h, b.log, nil)
	for _, role := range []string{authority.RoleAuditor, authority.RoleOperator, authority.RoleAdmin} {
		tok, _, err := admins.Create(context.Background(), role+"-bot", role, 0, "test", netip.MustParseAddr("127.0.0.1"))
		if err != nil {
			t.Fatal(err)
		}
		b.tokens[role] = tok
	}
	auth := authority.New(authority.Config{Audit: b.log, Secrets: b.vault})
	b.api, err = New(Config{Authority: auth, Admins: admins, Secrets: b.vault, AdminClientCAs: clientCAs,
		AdminCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *adminBench) do(method, path, from, tok, body string, withCert bool) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	r.RemoteAddr = from + ":40000"
	if tok != "" {
		r.Header.Set("Authorization", "Bearer "+tok)
	}
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	if withCert {
		r.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{}}}}
	}
	w := httptest.NewRecorder()
	b.api.ServeHTTP(w, r)
	return w
}

// The control-plane gate: network, client certificate, token, role, each
// refusal naming its check and recorded as admin.denied before it is
// answered; a refusal that cannot be recorded is answered 503.
func TestAdminGate(t *testing.T) {
	const planted = "planted-secret-value-5c1e"
	unknown, _ := token.New(token.Admin)
	tests := []struct {
		name       string
		mtls       bool
		cert       bool
		method     string
		path       string
		from       string
		role       string // whose token; "" none
		tok        string // instead of a role's
		body       string
		failDenied bool
		status     int
		check      string
		reason     string // of the admin.denied entry; "" none
	}{
		{name: "allowed", method: "PUT", path: "/v1/secrets/gh", from: "127.0.0.1", role: authority.RoleOperator, body: `{"value":"` + planted + `"}`, status: 200},
		{name: "outside admin_cidrs", method: "GET", path: "/v1/secrets", from: "192.0.2.1", role: authority.RoleAdmin, status: 403, check: apitype.CheckNetwork, reason: authority.DeniedNetwork},
		{name: "no token", method: "GET", path: "/v1/secrets", from: "127.0.0.1", status: 401, check: apitype.CheckToken, reason: authority.DeniedNoToken},
		{name: "unknown token", method: "GET", path: "/v1/secrets", from: "127.0.0.1", tok: unknown, status: 401, check: apitype.CheckToken, reason: authority.DeniedBadToken},
		{name: "job token", method: "GET", path: "/v1/secrets", from: "127.0.0.1", tok: "mfy_000000000000000000000000000000000000", status: 401, check: apitype.CheckToken, reason: authority.DeniedBadToken},
		{name: "role too weak", method: "PUT", path: "/v1/secrets/gh", from: "127.0.0.1", role: authority.RoleAuditor, body: `{"value":"` + planted + `"}`, status: 403, check: apitype.CheckRole, reason: authority.DeniedRole},
		{name: "client certificate required", mtls: true, method: "GET", path: "/v1/secrets", from: "127.0.0.1", role: authority.RoleAdmin, status: 403, check: apitype.CheckClientCertificate, reason: authority.DeniedNoCert},
		{name: "client certificate given", mtls: true, cert: true, method: "GET", path: "/v1/secrets", from: "127.0.0.1", role: authority.RoleAuditor, status: 200},
		{name: "denial not recordable", method: "GET", path: "/v1/secrets", from: "127.0.0.1", failDenied: true, status: 503},
		{name: "role denial not recordable", method: "DELETE", path: "/v1/secrets/old", from: "127.0.0.1", role: authority.RoleOperator, failDenied: true, status: 503},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cas *x509.CertPool
			if tt.mtls {
				cas = x509.NewCertPool()
			}
			b := newAdminBench(t, cas)
			b.log.fail[authority.TypeAdminDenied] = tt.failDenied
			before := len(b.log.all())
			tok := tt.tok
			if tt.role != "" {
				tok = b.tokens[tt.role]
			}
			w := b.do(tt.method, tt.path, tt.from, tok, tt.body, tt.cert)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.status, w.Body)
			}
			if tt.check != "" {
				var e apitype.Error
				if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Check != tt.check {
					t.Errorf("body %s: check %q, want %q", w.Body, e.Check, tt.check)
				}
			}
			evs := b.log.all()[before:]
			var denied []audit.Event
			for _, ev := range evs {
				if ev.Type == authority.TypeAdminDenied {
					denied = append(denied, ev)
				}
			}
			switch {
			case tt.reason != "" && (len(denied) != 1 || denied[0].Reason != tt.reason || denied[0].Status != tt.status || denied[0].Path != tt.path):
				t.Errorf("admin.denied entries %+v, want one with reason %q", denied, tt.reason)
			case tt.reason == "" && len(denied) != 0:
				t.Errorf("unexpected admin.denied entries %+v", denied)
			}
			if tt.reason == authority.DeniedRole && (denied[0].Admin != "auditor-bot" || denied[0].Role != authority.RoleAuditor) {
				t.Errorf("role denial names %q/%q", denied[0].Admin, denied[0].Role)
			}
			if tt.status == 200 && tt.method == "PUT" {
				if b.vault.vals["gh"] != planted || len(evs) != 1 || evs[0].Type != audit.TypeSecretWrite || evs[0].Admin != "operator-bot" {
					t.Errorf("secret %q, entries %+v", b.vault.vals["gh"], evs)
				}
			}
			if tt.status != 200 && tt.method == "PUT" && b.vault.vals["gh"] != "" {
				t.Error("a refused write changed the secret")
			}
			if tt.method == "DELETE" && tt.status != 200 && b.vault.vals["old"] == "" {
				t.Error("a refused delete removed the secret")
			}
			all := fmt.Sprint(b.log.all()) + w.Body.String()
			for _, tk := range b.tokens {
				if strings.Contains(all, tk) {
					t.Fatal("an admin token is in an entry or a response")
				}
			}
			if strings.Contains(all, planted) {
				t.Fatal("the secret value is in an entry or a response")
			}
		})
	}
}

// Writes of secrets and key rotations go through the authority: recorded
// with the change, and not done when they cannot be recorded. A delete
// that finds nothing changes nothing and records nothing (404 either way).
func TestSecretWritesAudited(t *testing.T) {
	tests := []struct {
		name   string
		method string
		path   string
		body   string
		typ    string
		status int
	}{
		{"put", "PUT", "/v1/secrets/new", `{"value":"v"}`, audit.TypeSecretWrite, 200},
		{"put, bad name", "PUT", "/v1/secrets/-bad", `{"value":"v"}`, "", 400},
		{"delete", "DELETE", "/v1/secrets/old", "", audit.TypeSecretWrite, 200},
		{"delete unknown", "DELETE", "/v1/secrets/nope", "", "", 404},
		{"rotate", "POST", "/v1/sys/rotate-master-key", "", audit.TypeKeyRotate, 200},
	}
	for _, tt := range tests {
		for _, fail := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/audit fails %v", tt.name, fail), func(t *testing.T) {
				b := newAdminBench(t, nil)
				if tt.typ != "" {
					b.log.fail[tt.typ] = fail
				}
				before := len(b.log.all())
				w := b.do(tt.method, tt.path, "127.0.0.1", b.tokens[authority.RoleAdmin], tt.body, false)
				want := tt.status
				if fail && tt.typ != "" {
					want = http.StatusServiceUnavailable
				}
				if w.Code != want {
					t.Fatalf("status %d, want %d: %s", w.Code, want, w.Body)
				}
				evs := b.log.all()[before:]
				recorded := len(evs) == 1 && evs[0].Type == tt.typ && evs[0].Admin == "admin-bot"
				if tt.typ != "" && recorded == fail {
					t.Errorf("entries %+v (audit failing: %v)", evs, fail)
				}
				if want == http.StatusServiceUnavailable {
					if _, ok := b.vault.vals["new"]; ok || b.vault.vals["old"] == "" {
						t.Error("an unrecorded write happened")
					}
				}
			})
		}
	}
}

// A credential passed as a secret's name (mayfly secret put "$TOKEN") is
// refused before anything is written: it would be kept in the secret's
// row and audit entry. The refusal does not quote it back.
func TestSecretNameIsNeverACredential(t *testing.T) {
	jobTok, err := token.New(token.Job)
	if err != nil {
		t.Fatal(err)
	}
	pw, err := token.NewPassword()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		secret string
		status int
	}{
		{"plain name", "deploy-key", 200},
		{"prefix only", "mfy_deploy", 200},
		{"job token", jobTok, 400},
		{"minted password", pw, 400},
		{"token inside", "x." + jobTok, 400},
		{"session value", authority.SessionPrefix + strings.Repeat("Ab-9", 10) + "xyz", 400},
		{"session value inside", "x." + authority.SessionPrefix + strings.Repeat("Ab-9", 10) + "xyz", 400},
		{"session prefix only", "x." + authority.SessionPrefix + "short", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newAdminBench(t, nil)
			before := len(b.log.all())
			w := b.do("PUT", "/v1/secrets/"+tt.secret, "127.0.0.1", b.tokens[authority.RoleAdmin], `{"value":"v"}`, false)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.status, w.Body)
			}
			if tt.status == 200 {
				return
			}
			if strings.Contains(w.Body.String(), tt.secret[len(tt.secret)-20:]) {
				t.Errorf("the refusal quotes the credential: %s", w.Body)
			}
			if _, ok := b.vault.vals[tt.secret]; ok {
				t.Error("stored under the credential's name")
			}
			if evs := b.log.all()[before:]; len(evs) != 0 {
				t.Errorf("entries %+v", evs)
			}
		})
	}
}
