package job

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"unicode"
)

// FuzzReadError: any server error body gives one printable line.
func FuzzReadError(f *testing.F) {
	f.Add(`{"error":"invalid_grant","error_description":"expired"}`)
	f.Add(`{"error":"x\n\u001b[31m","error_description":"` + strings.Repeat("a", 400) + `"}`)
	f.Add(`<html>`)
	f.Fuzz(func(t *testing.T, body string) {
		e := ReadError(&http.Response{StatusCode: 400, Body: io.NopCloser(strings.NewReader(body))})
		s := e.Error()
		for _, r := range s {
			if unicode.IsControl(r) {
				t.Fatalf("control character in %q", s)
			}
		}
		if len([]rune(e.Description)) > 301 || len([]rune(e.Code)) > 65 {
			t.Fatalf("not bounded: %d/%d", len(e.Code), len(e.Description))
		}
	})
}

// FuzzCleanIDToken: accepted tokens are trimmed compact JWS shapes.
func FuzzCleanIDToken(f *testing.F) {
	f.Add(" a.b.c\n")
	f.Add("a.b")
	f.Fuzz(func(t *testing.T, s string) {
		out, err := cleanIDToken(s)
		if err != nil {
			return
		}
		if strings.Count(out, ".") != 2 || strings.ContainsAny(out, " \n\r\t") || len(out) > MaxIDTokenSize {
			t.Fatalf("accepted %q", out)
		}
	})
}
