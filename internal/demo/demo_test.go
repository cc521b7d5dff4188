package demo

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestDemo(t *testing.T) {
	var out bytes.Buffer
	if err := Run(context.Background(), &out, t.TempDir()); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{"revoked lse_", "gateway → 401", "intact", "never the job token", "DELETE /installation/token confirmed", "credential.revoke"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), upstreamCredential) || strings.Contains(out.String(), "PRIVATE KEY") {
		t.Error("the demo printed the upstream credential")
	}
}
