package main

import (
	"strings"
	"testing"
)

// audit prove --size must be the signed checkpoint's size: a negative one
// was taken for "not given", and the entry proven against whatever
// checkpoint the server served, as if the user had asked for that.
func TestAuditProveSizeFlag(t *testing.T) {
	servedLog(t, 5)
	for _, tc := range []struct {
		size   string
		code   int
		stderr string
	}{
		{"5", 0, ""},
		{"4", 2, "has size 5, not 4"},
		{"-1", 2, "--size"},
		{"-5", 2, "--size"},
	} {
		t.Run(tc.size, func(t *testing.T) {
			out, errOut, code := runCLI(t, "", "audit", "prove", "--index", "1", "--size", tc.size)
			if code != tc.code || !strings.Contains(errOut, tc.stderr) {
				t.Errorf("audit prove --size %s: exit %d, stdout %q, stderr %q; want exit %d, stderr with %q", tc.size, code, out, errOut, tc.code, tc.stderr)
			}
		})
	}
}
