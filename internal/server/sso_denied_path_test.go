package server

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/authority"
	"github.com/mayfly-sh/mayfly/internal/devissuer/devissuertest"
)

// A session's value passed where its id belongs (mayfly auth sessions
// revoke <value>: the mistake Sessions.Revoke already guards against) in a
// request the control plane refuses is recorded, path and all, in an
// admin.denied entry. The audit log is read by every auditor (and the
// console shows it), so the entry must not hold the live value: an auditor
// would take the operator's session, and its role, from it.
func TestSessionValueInARefusedPathNotAudited(t *testing.T) {
	h := newSSOHarness(t, nil)
	h.iss.SetUser(devissuertest.User("ops@example.com", devissuertest.GroupOperators))
	sess := h.cliSession()
	if !authority.LooksLikeSession(sess) {
		t.Fatalf("not a session value: %d characters", len(sess))
	}
	tests := []struct {
		name, method, path string
		hdr                map[string]string
		status             int
	}{
		{"operator revoking by its own value", "DELETE", "/v1/admin/sessions/" + sess, map[string]string{"Authorization": "Bearer " + sess}, http.StatusForbidden},
		{"no credential", "DELETE", "/v1/admin/sessions/" + sess, nil, http.StatusUnauthorized},
		{"in a longer path", "GET", "/v1/secrets/x" + sess + "y", nil, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(h.auditEntries(authority.TypeAdminDenied))
			if st, body := h.call(nil, tt.method, tt.path, "", tt.hdr); st != tt.status {
				t.Fatalf("status %d, want %d: %s", st, tt.status, body)
			}
			es := h.auditEntries(authority.TypeAdminDenied)
			if len(es) != before+1 {
				t.Fatalf("%d admin.denied entries, want %d", len(es), before+1)
			}
			b, _ := json.Marshal(es[len(es)-1])
			if strings.Contains(string(b), sess[len(authority.SessionPrefix):]) {
				t.Errorf("the entry holds the session's value: %s", strings.ReplaceAll(string(b), sess, "<the session>"))
			}
			if !strings.Contains(string(b), sess[:len(authority.SessionPrefix)+4]+"…") {
				t.Errorf("the entry does not name the session by its hint: %s", strings.ReplaceAll(string(b), sess, "<the session>"))
			}
		})
	}
}
