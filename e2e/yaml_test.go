package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// yamlSnippet is one piece of YAML a user may copy: a fenced block of a
// document, a file, or an example in a template's comments.
type yamlSnippet struct {
	where string
	text  string
}

// docSnippets returns the ```yaml blocks of a Markdown file, named by line.
func docSnippets(t *testing.T, path string) []yamlSnippet {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []yamlSnippet
	lines := strings.Split(string(b), "\n")
	for i := 0; i < len(lines); i++ {
		if l := strings.TrimSpace(lines[i]); l != "```yaml" && l != "```yml" {
			continue
		}
		start := i + 1
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
		}
		out = append(out, yamlSnippet{fmt.Sprintf("%s:%d", path, start+1), strings.Join(lines[start:i], "\n")})
	}
	return out
}

// commentSnippets returns the examples in a YAML file's comments: runs of
// "#   " lines whose first is a key ("#   include:", "#   deploy:").
func commentSnippets(path, text string) []yamlSnippet {
	var out []yamlSnippet
	key := regexp.MustCompile(`^#   [A-Za-z_.-]+:( |$)`)
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		if !key.MatchString(lines[i]) {
			continue
		}
		start := i
		var run []string
		for ; i < len(lines) && strings.HasPrefix(lines[i], "#   "); i++ {
			run = append(run, strings.TrimPrefix(lines[i], "#"))
		}
		out = append(out, yamlSnippet{fmt.Sprintf("%s:%d (comment)", path, start+1), strings.Join(run, "\n")})
	}
	return out
}

// checkScripts reports script items GitLab would not take as commands:
// an unquoted "Authorization: Bearer …" makes the item a mapping.
func checkScripts(n *yaml.Node, where string) []string {
	var bad []string
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if (k.Value == "script" || k.Value == "before_script" || k.Value == "after_script") && v.Kind == yaml.SequenceNode {
				for _, item := range v.Content {
					if item.Kind == yaml.MappingNode {
						bad = append(bad, fmt.Sprintf("%s: line %d: a %s item is a mapping, not a command (quote it or use a block scalar)", where, item.Line, k.Value))
					}
				}
			}
		}
	}
	for _, c := range n.Content {
		bad = append(bad, checkScripts(c, where)...)
	}
	return bad
}

// Every YAML snippet in the docs, the templates and the repository's YAML
// files parses, and no GitLab script item is a mapping.
func TestYAMLSnippetsParse(t *testing.T) {
	var snippets []yamlSnippet
	docs, _ := filepath.Glob("../docs/*.md")
	for _, d := range append(docs, "../README.md", "../DEVELOPERS.md", "../bench/PERFORMANCE.md") {
		snippets = append(snippets, docSnippets(t, d)...)
	}
	files := []string{"../action.yml", "../.goreleaser.yaml", "../.pre-commit-hooks.yaml"}
	for _, pat := range []string{"../templates/*.yml", "../contrib/*/*.yml", "../contrib/*/*.yaml"} {
		m, _ := filepath.Glob(pat)
		files = append(files, m...)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// A component's documents: spec, then the jobs with $[[ inputs.x ]]
		// (which is YAML already: it sits inside strings and block scalars).
		for i, doc := range strings.Split(string(b), "\n---\n") {
			snippets = append(snippets, yamlSnippet{fmt.Sprintf("%s (document %d)", f, i+1), doc})
		}
		snippets = append(snippets, commentSnippets(f, string(b))...)
	}
	if len(snippets) < 15 {
		t.Fatalf("only %d snippets found", len(snippets))
	}
	for _, s := range snippets {
		var n yaml.Node
		if err := yaml.Unmarshal([]byte(s.text), &n); err != nil {
			t.Errorf("%s: not YAML: %v\n%s", s.where, err, s.text)
			continue
		}
		for _, b := range checkScripts(&n, s.where) {
			t.Error(b)
		}
	}
	// The component is one: a spec with inputs, then jobs.
	if _, err := os.Stat("../templates/mayfly.yml"); err != nil {
		t.Fatal("no GitLab CI/CD component at templates/mayfly.yml")
	}
	loadGitLabComponent(t, nil)
}

// The checker itself finds the mistake it is for.
func TestCheckScriptsFindsMappings(t *testing.T) {
	for _, tt := range []struct {
		yaml string
		bad  int
	}{
		{"job:\n  script:\n    - curl -H \"Authorization: Bearer $T\" https://x\n", -1}, // not YAML at all
		{"job:\n  script:\n    - curl -H Authorization: Bearer\n", 1},
		{"job:\n  script:\n    - 'curl -H \"Authorization: Bearer $T\"'\n    - >-\n      curl -H \"Authorization: Bearer $T\"\n", 0},
		{"job:\n  before_script: [!reference [.mayfly, before_script], echo hi]\n", 0},
	} {
		var n yaml.Node
		err := yaml.Unmarshal([]byte(tt.yaml), &n)
		if tt.bad < 0 {
			if err == nil && len(checkScripts(&n, "t")) == 0 {
				t.Errorf("%q accepted", tt.yaml)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tt.yaml, err)
		}
		if got := len(checkScripts(&n, "t")); got != tt.bad {
			t.Errorf("%q: %d problems, want %d", tt.yaml, got, tt.bad)
		}
	}
}
