// Package pgsql owns the SQL text mayfly writes for the PostgreSQL roles
// it mints (SPEC section 9): the roles' names, the rendering of a policy's
// creation and revocation templates with every value quoted for where it
// stands, and the SCRAM verifier sent in place of a password (a minted
// role's, or a rotated one's). It is a leaf, so that policy validation
// refuses what could not be rendered safely before any role is made.
//
// It does no I/O and never lets a value it was not built to quote reach
// SQL: names and passwords are checked against closed alphabets first,
// and an error never contains a value.
package pgsql

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mayfly-sh/mayfly/internal/token"
)

// Values fill a template's placeholders.
type Values struct {
	Name     string    // {{name}}: the role, an identifier
	Password string    // a minted mfyp_ password: {{password}} is its SCRAM verifier, a literal
	Expires  time.Time // {{expires}}: the lease's expiry, a timestamptz literal
}

// ErrTemplate wraps every reason a template cannot be rendered safely.
var ErrTemplate = errors.New("template")

// ExpiresFormat is how {{expires}} is written: RFC 3339 in UTC, which
// PostgreSQL reads as a timestamptz whatever the session's DateStyle.
const ExpiresFormat = "2006-01-02T15:04:05Z"

// Render fills tmpl's {{name}}, {{password}} and {{expires}} so that no
// value can change the statement's meaning: each placeholder is quoted for
// where it stands. Inside "…" it is escaped as an identifier, inside '…'
// (and E'…') as a string literal; standing bare it becomes a whole quoted
// identifier (name) or literal (password, expires). {{password}} is the
// SCRAM-SHA-256 verifier of v.Password, never the password itself: the
// statement text stays in pg_stat_activity (readable by monitoring roles)
// and may reach the server's log. A placeholder in a comment, or an
// unknown one, is refused. Inside a $$-quoted body (a DO block) nesting
// cannot be read reliably, so there values are written as they are —
// which is safe only because every value is of a closed alphabet with no
// quote or backslash: a role name of [a-z0-9_], a verifier (whose two '$'
// are followed by a digit and by base64 running into ':', so never a
// $tag$), an RFC 3339 time. The error never contains a value.
func Render(tmpl string, v Values) (string, error) {
	if !ValidName(v.Name) {
		return "", fmt.Errorf("%w: role name is not of the form mayfly_<hex>_<hex>", ErrTemplate)
	}
	if v.Password != "" && token.ParsePassword(v.Password) != nil {
		return "", fmt.Errorf("%w: password is not a minted mfyp_ password", ErrTemplate)
	}
	if strings.IndexByte(tmpl, 0) >= 0 {
		return "", fmt.Errorf("%w: NUL byte in statements", ErrTemplate)
	}
	values := map[string]string{
		"name":     v.Name,
		"password": "", // its verifier, made at the first {{password}}
		"expires":  v.Expires.UTC().Format(ExpiresFormat),
	}
	var b strings.Builder
	b.Grow(len(tmpl) + 64)
	const (
		normal = iota
		literal
		escLiteral // E'…': backslash escapes too
		ident
		lineComment
		blockComment
		dollar
	)
	state := normal
	depth := 0 // nesting of /* */
	tag := ""  // the $tag$ that ends a dollar-quoted body
	line := 1  // for errors
	i := 0
	for i < len(tmpl) {
		c := tmpl[i]
		if c == '\n' {
			line++
		}
		if strings.HasPrefix(tmpl[i:], "{{") {
			end := strings.Index(tmpl[i:], "}}")
			if end < 0 {
				return "", fmt.Errorf("%w: line %d: unclosed {{", ErrTemplate, line)
			}
			key := strings.TrimSpace(tmpl[i+2 : i+end])
			val, ok := values[key]
			if !ok {
				return "", fmt.Errorf("%w: line %d: unknown placeholder {{%s}} (known: {{name}}, {{password}}, {{expires}})", ErrTemplate, line, clip(key))
			}
			if key == "password" {
				if v.Password == "" {
					return "", fmt.Errorf("%w: line %d: {{password}} is not available here", ErrTemplate, line)
				}
				if val == "" {
					verifier, err := SCRAMVerifier(v.Password)
					if err != nil {
						return "", fmt.Errorf("%w: line %d: {{password}}: %w", ErrTemplate, line, err)
					}
					values["password"] = verifier
					val = verifier
				}
			}
			switch state {
			case normal:
				if key == "name" {
					b.WriteString(QuoteIdent(val))
				} else {
					b.WriteString(QuoteLiteral(val))
				}
			case ident:
				b.WriteString(strings.ReplaceAll(val, `"`, `""`))
			case literal:
				b.WriteString(strings.ReplaceAll(val, `'`, `''`))
			case escLiteral:
				b.WriteString(strings.ReplaceAll(strings.ReplaceAll(val, `\`, `\\`), `'`, `\'`))
			case dollar:
				b.WriteString(val) // closed alphabets, checked above
			default:
				return "", fmt.Errorf("%w: line %d: {{%s}} inside a comment", ErrTemplate, line, key)
			}
			i += end + 2
			continue
		}
		b.WriteByte(c)
		i++
		switch state {
		case normal:
			switch {
			case c == '\'':
				state = literal
				if i >= 2 && (tmpl[i-2] == 'E' || tmpl[i-2] == 'e') && (i < 3 || !isIdentChar(tmpl[i-3])) {
					state = escLiteral
				}
			case c == '"':
				state = ident
			case c == '-' && i < len(tmpl) && tmpl[i] == '-':
				state = lineComment
			case c == '/' && i < len(tmpl) && tmpl[i] == '*':
				b.WriteByte('*')
				i++
				state, depth = blockComment, 1
			case c == '$' && (i < 2 || !isIdentChar(tmpl[i-2])):
				if t, ok := dollarTag(tmpl[i-1:]); ok {
					b.WriteString(t[1:])
					i += len(t) - 1
					state, tag = dollar, t
				}
			}
		case literal:
			if c == '\'' {
				if i < len(tmpl) && tmpl[i] == '\'' {
					b.WriteByte('\'')
					i++
				} else {
					state = normal
				}
			}
		case escLiteral:
			switch {
			case c == '\\' && i < len(tmpl):
				b.WriteByte(tmpl[i])
				i++
			case c == '\'':
				if i < len(tmpl) && tmpl[i] == '\'' {
					b.WriteByte('\'')
					i++
				} else {
					state = normal
				}
			}
		case ident:
			if c == '"' {
				if i < len(tmpl) && tmpl[i] == '"' {
					b.WriteByte('"')
					i++
				} else {
					state = normal
				}
			}
		case lineComment:
			if c == '\n' {
				state = normal
			}
		case blockComment:
			switch {
			case c == '/' && i < len(tmpl) && tmpl[i] == '*':
				b.WriteByte('*')
				i++
				depth++
			case c == '*' && i < len(tmpl) && tmpl[i] == '/':
				b.WriteByte('/')
				i++
				if depth--; depth == 0 {
					state = normal
				}
			}
		case dollar:
			if c == '$' && strings.HasPrefix(tmpl[i-1:], tag) {
				b.WriteString(tag[1:])
				i += len(tag) - 1
				state = normal
			}
		}
	}
	switch state {
	case literal, escLiteral:
		return "", fmt.Errorf("%w: unterminated string literal", ErrTemplate)
	case ident:
		return "", fmt.Errorf("%w: unterminated quoted identifier", ErrTemplate)
	case blockComment:
		return "", fmt.Errorf("%w: unterminated comment", ErrTemplate)
	case dollar:
		return "", fmt.Errorf("%w: unterminated dollar-quoted string", ErrTemplate)
	}
	return b.String(), nil
}

// CheckTemplate reports whether tmpl renders with well-formed values: for
// policy validation, before any role is made.
func CheckTemplate(tmpl string, needPassword bool) error {
	v := Values{Name: "mayfly_000000000000000000000000_00000000", Expires: time.Unix(0, 0)}
	if needPassword {
		v.Password = token.PasswordPrefix + strings.Repeat("0", token.BodyLen) + token.Checksum(strings.Repeat("0", token.BodyLen))
	}
	_, err := Render(tmpl, v)
	return err
}

// dollarTag returns the $tag$ at the start of s, if one is there.
func dollarTag(s string) (string, bool) {
	for j := 1; j < len(s); j++ {
		c := s[j]
		if c == '$' {
			return s[:j+1], true
		}
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80 || j > 1 && c >= '0' && c <= '9') {
			return "", false
		}
	}
	return "", false
}

func isIdentChar(c byte) bool {
	return c == '_' || c == '$' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80
}

// QuoteIdent quotes s as a PostgreSQL identifier ("…", inner quotes doubled,
// NUL bytes dropped since PostgreSQL cannot hold them).
func QuoteIdent(s string) string {
	s = strings.ReplaceAll(s, "\x00", "")
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// QuoteLiteral quotes s as a PostgreSQL string literal. Backslashes are
// written in the E'…' form so the result means s whatever the server's
// standard_conforming_strings says.
func QuoteLiteral(s string) string {
	s = strings.ReplaceAll(s, "\x00", "")
	if strings.IndexByte(s, '\\') >= 0 {
		return `E'` + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), `'`, `\'`) + `'`
	}
	return `'` + strings.ReplaceAll(s, `'`, `''`) + `'`
}

func clip(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}
