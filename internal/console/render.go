package console

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/mayfly-sh/mayfly/internal/authority"
	"github.com/mayfly-sh/mayfly/internal/policy"
)

var pageNames = []string{"error", "leases", "revoke", "audit", "entry", "leaks", "refused", "policy", "plan", "secrets", "health"}

func (c *Console) parse() error {
	funcs := template.FuncMap{
		"ts": func(t time.Time) string {
			if t.IsZero() {
				return "—"
			}
			return t.UTC().Format("2006-01-02 15:04:05Z")
		},
		"ago": func(t time.Time) string {
			if t.IsZero() {
				return "—"
			}
			return ago(c.cfg.Now().Sub(t))
		},
		"until": func(t time.Time) string {
			if t.IsZero() {
				return "—"
			}
			d := t.Sub(c.cfg.Now())
			if d < 0 {
				return "ended " + ago(-d) + " ago"
			}
			return "in " + ago(d)
		},
		"query": func(base string, kv ...any) string {
			q := url.Values{}
			for i := 0; i+1 < len(kv); i += 2 {
				if v := fmt.Sprint(kv[i+1]); v != "" && v != "0" {
					q.Set(fmt.Sprint(kv[i]), v)
				}
			}
			if len(q) == 0 {
				return base
			}
			return base + "?" + q.Encode()
		},
		"join":  strings.Join,
		"shown": shown,
		"prev":  func(v int64) int64 { return v - 1 },
	}
	for _, name := range pageNames {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html", path.Join("templates", name+".html"))
		if err != nil {
			return fmt.Errorf("console: parsing %s: %w", name, err)
		}
		c.pages[name] = t
	}
	return nil
}

// shown is text from outside (claims, paths, a leak report's fields, a
// policy's source) as a page shows it: each control or format character
// but a line break, CR or tab written as its Go escape ("\u202e")
// (policy.ShownText; plan lines are written so too). Raw, a bidi override reorders the rest
// of its line ("refs/heads/<RLO>niam" reads "refs/heads/main", a policy
// line reads as something it is not) and a zero-width one makes two
// values look alike. What a form sends back (a textarea, an input's
// value) keeps its text as it is.
func shown(v any) string {
	var s string
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		s = v
	default:
		s = fmt.Sprint(v)
	}
	return policy.ShownText(s)
}

func ago(d time.Duration) string {
	switch {
	case d < time.Minute:
		return strconv.Itoa(int(d/time.Second)) + "s"
	case d < time.Hour:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d/time.Hour)) + "h"
	default:
		return strconv.Itoa(int(d/(24*time.Hour))) + "d"
	}
}

// view is what the layout sees.
type view struct {
	Title   string
	Page    string
	Who     Caller
	CSRF    string
	Operate bool // the caller may revoke and plan
	Admin   bool // the caller may apply policy
	Data    any
}

// render writes page with data; a template that fails writes nothing of
// itself (the page is built in memory first).
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, page string, who Caller, title string, data any) {
	t := c.pages[page]
	v := view{Title: title, Page: page, Who: who, Data: data,
		Operate: authority.RoleRank(who.Role) >= authority.RoleRank(authority.RoleOperator),
		Admin:   authority.RoleRank(who.Role) >= authority.RoleRank(authority.RoleAdmin)}
	if who.Role != "" {
		v.CSRF = c.cfg.Auth.CSRFToken(r)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, v); err != nil {
		c.cfg.Logger.Error("console: rendering", "page", page, "err", err)
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(b.Bytes())
}
