package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"strings"
	"testing"
)

// A signed leak report revokes its tokens whatever its signature says:
// holding a token is enough to kill it (SPEC section 4), so a signature
// that does not verify (GitHub rotated its key and github_leak_keys has
// not caught up, a proxy re-encoded the body) must not keep a leaked token
// alive. What the signature said is recorded in the report's audit entry.
func TestSignedLeakReportRevokesWhateverItsSignature(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rotated, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	h := newHarness(t, Config{GitHubLeakKeys: map[string]string{
		"kid1": string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
	}})
	sign := func(k *ecdsa.PrivateKey, body string) string {
		sum := sha256.Sum256([]byte(body))
		sig, err := ecdsa.SignASN1(rand.Reader, k, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		return base64.StdEncoding.EncodeToString(sig)
	}
	tests := []struct {
		name, kid string
		sig       func(body string) string
		want      string // the audit entry's detail.signature
	}{
		{"verified", "kid1", func(b string) string { return sign(key, b) }, "verified"},
		{"key rotated by GitHub", "kid2", func(b string) string { return sign(rotated, b) }, "invalid"},
		{"body changed on the way", "kid1", func(b string) string { return sign(key, b+"\n") }, "invalid"},
		{"signature not base64", "kid1", func(string) string { return "%%%" }, "invalid"},
		{"unsigned", "", func(string) string { return "" }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := h.do("POST", "/v1/token", "", form, exchangeForm(h.issuer.mint(t, nil), "read"), 200)["access_token"].(string)
			body := `[{"token":"` + tok + `","type":"mayfly_job_token","url":"https://github.com/acme/app/blob/x/f#L1","source":"content"}]`
			req, _ := http.NewRequest("POST", h.http.URL+"/v1/leaks", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			if tt.kid != "" {
				req.Header.Set("Github-Public-Key-Identifier", tt.kid)
				req.Header.Set("Github-Public-Key-Signature", tt.sig(body))
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			if in := h.do("POST", "/v1/introspect", h.admin, form, "token="+tok, 200); in["active"] != false {
				t.Fatal("the leaked token is still live")
			}
			var last map[string]any
			for _, line := range strings.Split(strings.TrimSpace(h.rawEntries(t)), "\n") {
				var e map[string]any
				if json.Unmarshal([]byte(line), &e) == nil && e["type"] == "leak.report" {
					last = e
				}
			}
			detail, _ := last["detail"].(map[string]any)
			if got, _ := detail["signature"].(string); got != tt.want {
				t.Fatalf("leak entry's signature %q, want %q: %v", got, tt.want, last)
			}
		})
	}
}
