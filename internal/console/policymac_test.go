package console

import (
	"context"
	"strings"
	"testing"
	"time"
)

var testPolicyKey = []byte("console test policy key, 32 byte") // mayfly:allow test key

// A version planted in the database (no valid MAC) is never enforced; the
// history still lists it, for investigation, marked as not authenticated,
// and a diff that shows it says so. Genuine versions are not marked.
func TestPolicyHistoryMarksUnauthenticatedVersions(t *testing.T) {
	b := newTestBench(t)
	planted := strings.Replace(testPolicy, "http://127.0.0.1:2", "http://198.51.100.7", 1)
	if _, err := b.db.SQL().ExecContext(context.Background(), `INSERT INTO policy_versions (version, hash, source, applied_at, applied_by) VALUES (2, 'h', ?, ?, 'alice')`,
		[]byte(planted), time.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path, want string
		count      int
	}{
		{"/ui/policy", "not authenticated</strong>", 1},
		{"/ui/policy?a=1&b=2", "Version 2 is not authenticated", 1},
		{"/ui/policy?a=1&b=1", "is not authenticated", 0},
	}
	for _, tt := range tests {
		w := b.get(t, tt.path)
		if w.Code != 200 {
			t.Fatalf("%s: %d", tt.path, w.Code)
		}
		if n := strings.Count(w.Body.String(), tt.want); n != tt.count {
			t.Fatalf("%s: %q %d times, want %d:\n%s", tt.path, tt.want, n, tt.count, w.Body)
		}
	}
	if b.a.PolicyVersion() != 1 {
		t.Fatalf("version %d in force", b.a.PolicyVersion())
	}
}
