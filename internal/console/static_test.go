package console

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// /ui/static/ serves its files and nothing else: a directory, with or
// without its trailing slash, is 404 rather than an index of the files,
// signed in or not.
func TestStaticServesFilesOnly(t *testing.T) {
	b := newTestBench(t)
	b.auth.who = Caller{}
	tests := []struct {
		method, path string
		status       int
		want         string // in the body, for a 200
	}{
		{"GET", "/ui/static/verify.js", 200, "verifyInclusion"},
		{"HEAD", "/ui/static/style.css", 200, ""},
		{"GET", "/ui/static/", 404, ""},
		{"HEAD", "/ui/static/", 404, ""},
		{"GET", "/ui/static", 404, ""},
		{"HEAD", "/ui/static", 404, ""},
		{"GET", "/ui/static//", 404, ""},
		{"GET", "/ui/static/.", 404, ""},
		{"GET", "/ui/static/./", 404, ""},
		{"GET", "/ui/static/index.html", 404, ""},
		{"GET", "/ui/static/nope.js", 404, ""},
		{"GET", "/ui/static/verify.js/", 404, ""},
		{"GET", "/ui/static/../templates/layout.html", 404, ""},
		{"GET", "/ui/static/%2e%2e/templates/layout.html", 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			w := httptest.NewRecorder()
			r := httptest.NewRequest(tt.method, "/", nil)
			r.URL.Path, r.URL.RawPath = tt.path, ""
			if strings.Contains(tt.path, "%") {
				r = httptest.NewRequest(tt.method, tt.path, nil)
			}
			b.c.ServeHTTP(w, r)
			body := w.Body.String()
			// The mux sends an unclean path to its clean form: what counts
			// is the answer there.
			for hops := 0; w.Code == http.StatusMovedPermanently || w.Code == http.StatusTemporaryRedirect; hops++ {
				loc := w.Header().Get("Location")
				if hops == 3 || !strings.HasPrefix(loc, "/ui/") || loc == tt.path {
					t.Fatalf("redirect %d to %q", w.Code, loc)
				}
				if strings.Contains(body, "<pre>") {
					t.Errorf("redirect lists files: %.200s", body)
				}
				w = httptest.NewRecorder()
				b.c.ServeHTTP(w, httptest.NewRequest(tt.method, loc, nil))
				body = w.Body.String()
			}
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d (Location %q): %.200s", w.Code, tt.status, w.Header().Get("Location"), body)
			}
			if tt.status == http.StatusOK && !strings.Contains(body, tt.want) {
				t.Errorf("body lacks %q", tt.want)
			}
			for _, f := range []string{"verify.js", "style.css", "audit.js"} {
				if tt.status != http.StatusOK && strings.Contains(body, f) {
					t.Errorf("answer names %s: %.200s", f, body)
				}
			}
			if got := w.Header().Get("Content-Security-Policy"); got != CSP {
				t.Errorf("CSP = %q", got)
			}
		})
	}
}
