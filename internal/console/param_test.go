package console

import (
	"net/url"
	"strings"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// A filter longer than its bound is cut at a character's edge, never
// inside one: cut inside, it is no longer UTF-8, which PostgreSQL refuses
// with an error (a 500) where SQLite matches nothing. Both backends answer
// every page alike.
func TestFilterCutAtCharacter(t *testing.T) {
	long := strings.Repeat("a", maxFilter-1) + "é" // é is two bytes: the bound falls inside it
	for _, backend := range storetest.Backends(t) {
		t.Run(backend.Name, func(t *testing.T) {
			b := newBench(t, backend.DB, 3, 5)
			for _, name := range []string{"grant", "issuer", "subject", "repository", "job"} {
				path := "/ui/leases?" + url.Values{name: {long}}.Encode()
				if w := b.get(t, path); w.Code != 200 {
					t.Errorf("%s: status %d", name, w.Code)
				}
			}
			for _, name := range []string{"type", "lease", "subject", "upstream"} {
				path := "/ui/audit?" + url.Values{name: {long}}.Encode()
				if w := b.get(t, path); w.Code != 200 {
					t.Errorf("audit %s: status %d", name, w.Code)
				}
			}
		})
	}
}
