package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/apitype"
)

// `mayfly policy show` on a server no policy was applied to yet (started
// without --policy) printed nothing but "policy version 0"; it says so and
// how to apply one.
func TestPolicyShowWithoutAPolicySaysSo(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(apitype.HeaderPolicyVersion, "0")
		w.Header().Set("Content-Type", "application/yaml")
	}))
	t.Cleanup(srv.Close)
	adminEnv(t, srv.URL)
	out, errOut, code := runCLI(t, "", "policy", "show")
	if code != exitOK || out != "" || !strings.Contains(errOut, "no policy") || !strings.Contains(errOut, "mayfly policy apply") {
		t.Errorf("exit %d, stdout %q, stderr %q; want exit 0, nothing on stdout, and on stderr that no policy is applied and how to apply one", code, out, errOut)
	}
}
