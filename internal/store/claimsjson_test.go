package store

import (
	"encoding/json"
	"strings"
	"testing"
)

// A lease's claims are stored as json.Marshal wrote them before
// claimsJSON: the same bytes, for every key and value.
func TestClaimsJSONIsMarshal(t *testing.T) {
	tests := []struct {
		name   string
		claims map[string]string
	}{
		{"nil", nil},
		{"empty", map[string]string{}},
		{"github", map[string]string{"sub": "repo:acme/app:ref:refs/heads/main", "repository": "acme/app", "repository_id": "123456789",
			"ref": "refs/heads/main", "run_id": "777", "workflow_ref": "acme/app/.github/workflows/ci.yml@refs/heads/main", "aud": `["a","b"]`}},
		{"sorted by bytes", map[string]string{"b": "1", "B": "2", "a": "3", "é": "4", "aa": "5", "": "6"}},
		{"quotes and backslashes", map[string]string{`k"\`: `v"\"\\`}},
		{"control characters", map[string]string{"c": "\x00\x01\b\f\n\r\t\x1f\x7f"}},
		{"html", map[string]string{"<k>": "a<b>&c"}},
		{"line separators", map[string]string{"s": "a\u2028b\u2029c\u2027"}},
		{"invalid utf-8", map[string]string{"\xff": "a\xc3(b\xe2\x82\xed\xa0\x80"}},
		{"multibyte", map[string]string{"日本": "Grüße, 🙂"}},
		{"long", map[string]string{"x": strings.Repeat("ab<\"", 1000)}},
	}
	for _, tt := range tests {
		want, err := json.Marshal(tt.claims)
		if err != nil {
			t.Fatal(err)
		}
		if got := claimsJSON(tt.claims); string(got) != string(want) {
			t.Errorf("%s: claimsJSON = %s, json.Marshal = %s", tt.name, got, want)
		}
	}
}

func FuzzClaimsJSON(f *testing.F) {
	f.Add("repository", "acme/app", "ref", "refs/heads/main")
	f.Add("<", "\u2028\xff\x00", "\"", "\\")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		claims := map[string]string{k1: v1, k2: v2}
		want, err := json.Marshal(claims)
		if err != nil {
			t.Fatal(err)
		}
		if got := claimsJSON(claims); string(got) != string(want) {
			t.Fatalf("claimsJSON = %q, json.Marshal = %q", got, want)
		}
	})
}

func BenchmarkClaimsJSON(b *testing.B) {
	claims := map[string]string{}
	for _, k := range []string{"sub", "repository", "repository_id", "repository_owner", "repository_owner_id", "repository_visibility",
		"ref", "ref_type", "ref_protected", "workflow", "workflow_ref", "job_workflow_ref", "run_id", "run_number", "run_attempt",
		"actor", "actor_id", "event_name", "sha", "head_ref", "base_ref", "runner_environment", "iss", "aud", "jti", "exp", "iat", "nbf"} {
		claims[k] = "acme/app/.github/workflows/ci.yml@refs/heads/" + k
	}
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			json.Marshal(claims)
		}
	})
	b.Run("claimsJSON", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			claimsJSON(claims)
		}
	})
}
