package api

import (
	"encoding/json"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/authority"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/store/storetest"
	"github.com/mayfly-sh/mayfly/internal/token"
)

// A token this node does not hold (another node issued it) whose lease
// cannot be read is answered 503 on renewal and introspection: neither
// "invalid token" nor "inactive", which a job or an operator would act on.
func TestTokenLookupStoreDown(t *testing.T) {
	b := newAdminBench(t, nil)
	h, err := token.NewHasher([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	leases := lease.New(storetest.LeaseReadsDown{DB: storetest.SQLite(t).DB}, h, lease.Options{})
	auth := authority.New(authority.Config{Audit: b.log, Secrets: b.vault, Leases: leases})
	b.api, err = New(Config{Authority: auth, Admins: b.api.cfg.Admins, Secrets: b.vault, Leases: leases,
		AdminCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := token.New(token.Job)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, bearer, ctype, body string
	}{
		{"renewal", "/v1/token/renew", tok, "", ""},
		{"introspection", "/v1/introspect", b.tokens[authority.RoleOperator], "application/x-www-form-urlencoded", "token=" + tok},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", tt.path, strings.NewReader(tt.body))
			r.RemoteAddr = "127.0.0.1:40000"
			r.Header.Set("Authorization", "Bearer "+tt.bearer)
			if tt.ctype != "" {
				r.Header.Set("Content-Type", tt.ctype)
			}
			w := httptest.NewRecorder()
			b.api.ServeHTTP(w, r)
			var out struct {
				Error string `json:"error"`
			}
			json.Unmarshal(w.Body.Bytes(), &out)
			if w.Code != 503 || out.Error != "temporarily_unavailable" {
				t.Fatalf("%s = %d %s, want 503 temporarily_unavailable", tt.path, w.Code, w.Body)
			}
			if strings.Contains(w.Body.String(), tok) {
				t.Fatalf("the token is in the answer: %s", w.Body)
			}
		})
	}
}
