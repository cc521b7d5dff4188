package identity

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// decodeWithJSON is decodeClaims without flatClaims: what it must agree with.
func decodeWithJSON(payload []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil || claims == nil {
		return nil, err
	}
	if dec.More() {
		return nil, errTrailing
	}
	return claims, nil
}

var errTrailing = verr(CheckFormat, "trailing data")

// flatClaims decodes what it takes exactly as encoding/json does, takes
// the shape CI platforms' ID tokens have, and leaves everything else to
// encoding/json.
func TestFlatClaims(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		fast    bool // flatClaims decodes it itself
	}{
		{"github", `{"sub":"repo:acme/app:ref:refs/heads/main","aud":"https://mayfly.test","repository":"acme/app","repository_id":"123456789","run_attempt":"1","exp":1765000000,"iat":1764999700,"nbf":1764999640,"ref_protected":"false","jti":"6f0c"}`, true},
		{"white space", " \t\r\n{ \"a\" : \"b\" ,\n\"c\":1 } \n", true},
		{"empty object", `{}`, true},
		{"literals", `{"t":true,"f":false,"n":null}`, true},
		{"numbers", `{"a":0,"b":-1,"c":1.5,"d":1e9,"e":-0.25E-3,"f":4242.0000000000001,"g":12345678901234567890}`, true},
		{"repeated name keeps the last", `{"a":"1","a":"2"}`, true},
		{"non-ASCII", `{"workflow":"CI ✓ Grüße","ö":"x"}`, true},
		{"U+2028 and DEL", "{\"a\":\"x\u2028y\x7f\"}", true},
		{"escape", `{"a":"x\"y"}`, false},
		{"unicode escape", `{"a":"\u00e9"}`, false},
		{"escaped NUL", `{"a":"\u0000"}`, false},
		{"array", `{"aud":["a","b"]}`, false},
		{"nested object", `{"x":{"a":1}}`, false},
		{"invalid UTF-8", "{\"a\":\"\xff\"}", false},
		{"control character", "{\"a\":\"x\ty\"}", false},
		{"trailing data", `{"a":1}x`, false},
		{"trailing brace", `{"a":1}}`, false},
		{"two objects", `{"a":1}{"b":2}`, false},
		{"leading zero", `{"a":01}`, false},
		{"bare dot", `{"a":1.}`, false},
		{"plus sign", `{"a":+1}`, false},
		{"word run on", `{"a":truex}`, false},
		{"missing colon", `{"a" 1}`, false},
		{"trailing comma", `{"a":1,}`, false},
		{"unterminated", `{"a":"b`, false},
		{"not an object", `"a"`, false},
		{"null", `null`, false},
		{"empty", ``, false},
	}
	for _, tt := range tests {
		got, ok := flatClaims([]byte(tt.payload))
		if ok != tt.fast {
			t.Errorf("%s: flatClaims ok = %v, want %v", tt.name, ok, tt.fast)
		}
		want, err := decodeWithJSON([]byte(tt.payload))
		if ok && (err != nil || !reflect.DeepEqual(got, want)) {
			t.Errorf("%s: flatClaims = %#v, encoding/json = %#v (%v)", tt.name, got, want, err)
		}
	}
}

func FuzzFlatClaims(f *testing.F) {
	for _, s := range []string{`{"sub":"s","exp":1,"aud":"a","x":null,"t":true}`, `{"a":-0.5e+3}`, `{"a":"\u00e9"}`, `{"a":[1]}`,
		`{"a":1}}`, " {\"ö\" :\"✓\"} ", `{"a":"1","a":2}`, `{}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		got, ok := flatClaims(payload)
		if !ok {
			return
		}
		want, err := decodeWithJSON(payload)
		if err != nil {
			t.Fatalf("flatClaims took %q, encoding/json refuses it: %v", payload, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: flatClaims = %#v, encoding/json = %#v", payload, got, want)
		}
	})
}

func BenchmarkDecodeClaims(b *testing.B) {
	payload := []byte(`{"sub":"repo:acme/app:ref:refs/heads/main","repository":"acme/app","repository_id":"690912","repository_owner":"acme","repository_owner_id":"1342004","repository_visibility":"private","ref":"refs/heads/main","ref_type":"branch","ref_protected":"false","workflow":"CI","workflow_ref":"acme/app/.github/workflows/ci.yml@refs/heads/main","job_workflow_ref":"acme/app/.github/workflows/ci.yml@refs/heads/main","run_id":"1234","run_number":"234","run_attempt":"1","actor":"octocat","actor_id":"583231","event_name":"push","sha":"a94a8fe5ccb19ba61c4c0873d391e987982fbbd3","runner_environment":"github-hosted","iss":"https://token.actions.githubusercontent.com","aud":"https://mayfly.test","iat":1765000000,"nbf":1764999940,"exp":1765000300,"jti":"0f8e4b9c2d6a4e1f8b7c3d2e1f0a9b8c"}`)
	b.Run("encoding/json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			decodeWithJSON(payload)
		}
	})
	b.Run("decodeClaims", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			decodeClaims(payload)
		}
	})
}
