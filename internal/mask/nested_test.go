package mask

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
)

// A Kubernetes docker-registry secret holds a Docker config whose "auth" is
// base64 of user:password, the whole config base64 again: `kubectl create
// secret docker-registry regcred --docker-password=$TOKEN --dry-run=client
// -o yaml` prints the token base64-encoded twice. Decoding the log twice
// gives it back, as the scanner does (two levels deep); the masker must
// mask it too, whatever the user name and the JSON around it.
func TestDoubleBase64Masked(t *testing.T) {
	tok := "mfy_" + strings.Repeat("Ab3dE", 6) + "Zx09Qw" // mayfly:allow job-token shaped
	m := newTestMatcher(t, tok)
	for _, user := range []string{"x", "ci", "gitlab-ci-token", "_json_key"} {
		auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + tok))
		cfg, err := json.Marshal(map[string]any{"auths": map[string]any{"registry.example.com": map[string]string{
			"username": user, "password": "***", "auth": auth,
		}}})
		if err != nil {
			t.Fatal(err)
		}
		log := "apiVersion: v1\ndata:\n  .dockerconfigjson: " + base64.StdEncoding.EncodeToString(cfg) + "\nkind: Secret\n"
		if !twiceDecodedAuth(base64.StdEncoding.EncodeToString(cfg), tok) {
			t.Fatalf("precondition: the unmasked log does not give the token back")
		}
		out := m.MaskString(log)
		if twiceDecodedAuth(out[strings.Index(out, ": ")+2:strings.Index(out, "\nkind")], tok) {
			t.Errorf("user %q: decoding the masked log twice gives the token back: %s", user, out)
		}
		if !strings.Contains(out, "***") {
			t.Errorf("user %q: nothing masked: %s", user, out)
		}
	}
}

// twiceDecodedAuth reports whether some "auth" of the JSON that v decodes
// to (at any of its offsets, the masked runs dropped) holds the end of tok.
func twiceDecodedAuth(v, tok string) bool {
	v = strings.TrimRight(strings.ReplaceAll(v, "***", ""), "=")
	for off := 0; off < 4 && off < len(v); off++ {
		w := v[off:]
		dec, _ := base64.RawStdEncoding.DecodeString(w[:len(w)/4*4])
		for rest := string(dec); ; {
			i := strings.Index(rest, `"auth":"`)
			if i < 0 {
				break
			}
			rest = rest[i+8:]
			auth, _, _ := strings.Cut(rest, `"`)
			if raw, err := base64.StdEncoding.DecodeString(auth); err == nil && strings.Contains(string(raw), tok[len(tok)-12:]) {
				return true
			}
		}
	}
	return false
}
