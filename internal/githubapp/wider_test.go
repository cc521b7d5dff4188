package githubapp

import (
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/policy"
)

// What an installation token answer says it may do is checked against the
// grant, deny by default: only what the grant names, plus metadata: read
// (which comes with every token), and an answer that does not say what
// it grants is refused too, since then nothing was checked.
func TestWiderThanScope(t *testing.T) {
	type repo = struct {
		Name string `json:"name"`
	}
	scope := &policy.GitHubScope{Repositories: []string{"app"}, Permissions: map[string]string{"contents": "write"}}
	noRepos := &policy.GitHubScope{Permissions: map[string]string{"contents": "read"}}
	for _, tc := range []struct {
		name  string
		scope *policy.GitHubScope
		a     tokenAnswer
		want  string // "" for within the scope
	}{
		{"as asked", scope, tokenAnswer{Permissions: map[string]string{"contents": "write", "metadata": "read"}, RepositorySelection: "selected", Repositories: []repo{{"app"}}}, ""},
		{"lower level", scope, tokenAnswer{Permissions: map[string]string{"contents": "read"}, RepositorySelection: "selected", Repositories: []repo{{"App"}}}, ""},
		{"all repositories, none named", noRepos, tokenAnswer{Permissions: map[string]string{"contents": "read", "metadata": "read"}, RepositorySelection: "all"}, ""},
		{"higher level", scope, tokenAnswer{Permissions: map[string]string{"contents": "admin"}, RepositorySelection: "selected", Repositories: []repo{{"app"}}}, "contents: admin"},
		{"permission not asked", scope, tokenAnswer{Permissions: map[string]string{"contents": "write", "issues": "read"}, RepositorySelection: "selected", Repositories: []repo{{"app"}}}, "issues: read"},
		{"metadata: write not asked", scope, tokenAnswer{Permissions: map[string]string{"contents": "write", "metadata": "write"}, RepositorySelection: "selected", Repositories: []repo{{"app"}}}, "metadata: write"},
		{"no permissions said", scope, tokenAnswer{RepositorySelection: "selected", Repositories: []repo{{"app"}}}, "permissions"},
		{"all repositories", scope, tokenAnswer{Permissions: map[string]string{"contents": "write"}, RepositorySelection: "all"}, "all of the installation's"},
		{"another repository", scope, tokenAnswer{Permissions: map[string]string{"contents": "write"}, RepositorySelection: "selected", Repositories: []repo{{"app"}, {"lib"}}}, "(lib)"},
		{"no repository selection said", scope, tokenAnswer{Permissions: map[string]string{"contents": "write"}}, "repositories"},
		{"selected, none listed", scope, tokenAnswer{Permissions: map[string]string{"contents": "write"}, RepositorySelection: "selected"}, "repositories"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.a.wider(tc.scope)
			if (got == "") != (tc.want == "") || !strings.Contains(got, tc.want) {
				t.Fatalf("wider = %q, want %q", got, tc.want)
			}
		})
	}
}
