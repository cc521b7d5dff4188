package api

import (
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/apitype"
	"github.com/mayfly-sh/mayfly/internal/authority"
)

// encoding/json takes bodies that another reader of the same request (a
// proxy that checks it, a reviewer of a logged request) may take
// otherwise: of a key given twice it keeps the last, in any case ("ROLE"
// sets role), and it ignores what follows the first value. Read so,
// {"name":…,"role":"auditor","role":"admin"} made an admin token where
// the first reading sees an auditor's. Such bodies are 400
// invalid_request, nothing made.
func TestControlPlaneJSONIsStrict(t *testing.T) {
	b := newAdminBench(t, nil)
	tests := []struct {
		name, tokenName, body string
		want                  int
	}{
		{"plain", "n1", `{"name":"n1","role":"auditor"}`, 200},
		{"a newline after", "n2", "{\"name\":\"n2\",\"role\":\"auditor\"}\n", 200},
		{"role twice", "n3", `{"name":"n3","role":"auditor","role":"admin"}`, 400},
		{"role twice, in another case", "n4", `{"name":"n4","role":"auditor","ROLE":"admin"}`, 400},
		{"a second value", "n5", `{"name":"n5","role":"auditor"} {"name":"n5","role":"admin"}`, 400},
		{"text after", "n6", `{"name":"n6","role":"auditor"}x`, 400},
		{"a bracket after", "n7", `{"name":"n7","role":"auditor"}]`, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := b.do("POST", "/v1/admin/tokens", "127.0.0.1", b.tokens[authority.RoleAdmin], tt.body, false)
			if w.Code != tt.want {
				t.Fatalf("status %d, want %d", w.Code, tt.want) // a 200's body holds the token
			}
			if tt.want == 400 && !strings.Contains(w.Body.String(), `"invalid_request"`) {
				t.Fatalf("400 body %s", w.Body)
			}
			w = b.do("GET", "/v1/admin/tokens", "127.0.0.1", b.tokens[authority.RoleAdmin], "", false)
			var list apitype.AdminTokenList
			if err := json.Unmarshal(w.Body.Bytes(), &list); err != nil {
				t.Fatal(err)
			}
			made := false
			for _, tk := range list.Tokens {
				made = made || tk.Name == tt.tokenName
			}
			if made != (tt.want == 200) {
				t.Fatalf("token %q made = %v after a %d answer", tt.tokenName, made, tt.want)
			}
		})
	}
}

// checkStrictJSON over the shapes a body may take: keys are counted per
// object, nested or in arrays, in encoding/json's case folding (the Kelvin
// sign is a "k").
func TestCheckStrictJSON(t *testing.T) {
	tests := []struct {
		name, body string
		want       error
	}{
		{"object", `{"a":1,"b":"x"}`, nil},
		{"spaces around", " \n{\"a\":1}\n\t", nil},
		{"null", `null`, nil},
		{"same key in sibling objects", `{"a":{"k":1},"b":{"k":2},"c":[{"k":1},{"k":2}]}`, nil},
		{"same key nested and outside", `{"k":{"k":{"k":1}}}`, nil},
		{"values that are keys' names", `{"a":"a","b":["a","a"]}`, nil},
		{"empty containers", `{"a":{},"b":[],"c":[[],{}]}`, nil},
		{"twice", `{"a":1,"a":1}`, errJSONDuplicate},
		{"twice after a nested object", `{"a":{"b":1},"c":[1,{"d":2}],"a":2}`, errJSONDuplicate},
		{"twice in a nested object", `{"a":{"b":1,"b":2}}`, errJSONDuplicate},
		{"twice in an object in an array", `[{"b":1},{"b":1,"B":2}]`, errJSONDuplicate},
		{"Kelvin sign", "{\"k\":1,\"\u212a\":2}", errJSONDuplicate},
		{"a second value", `{"a":1}{"a":1}`, errJSONTrailing},
		{"a second scalar", `1 2`, errJSONTrailing},
		{"text after", `{"a":1} x`, errJSONTrailing},
		{"a brace after", `{"a":1}}`, errJSONTrailing},
		{"nothing", ``, io.ErrUnexpectedEOF},
		{"cut short", `{"a":[1`, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := checkStrictJSON([]byte(tt.body)); err != tt.want {
				t.Fatalf("checkStrictJSON(%s) = %v, want %v", tt.body, err, tt.want)
			}
		})
	}
}

// checkStrictJSON takes only valid JSON, and refuses a valid single value
// only for a key given twice.
func FuzzCheckStrictJSON(f *testing.F) {
	for _, s := range []string{`{"a":1,"b":[{"c":null}]}`, `{"a":1,"A":2}`, `{"a":1} 2`, `[1,{"k":{}}]`, `"x"`, `{"a":`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := checkStrictJSON(b)
		if err == nil && !json.Valid(b) {
			t.Fatalf("took invalid JSON %q", b)
		}
		if err != nil && err != errJSONDuplicate && json.Valid(b) {
			t.Fatalf("refused the valid JSON %q: %v", b, err)
		}
	})
}
