package rotate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/mayfly-sh/mayfly/internal/secret"
)

// Limits of the settings a rotation may have.
const (
	MinEvery     = time.Minute
	MaxEvery     = 366 * 24 * time.Hour
	DefaultGrace = 5 * time.Minute
	MaxGrace     = 24 * time.Hour
	// MaxSpecSize bounds the JSON of one rotation's settings.
	MaxSpecSize = 4 << 10
	maxRoleLen  = 63 // PostgreSQL's NAMEDATALEN - 1
)

// ErrInvalid wraps every refusal of rotation settings (the API's 400).
var ErrInvalid = errors.New("invalid rotation")

// ErrNeedsAdmin wraps, besides ErrInvalid, the refusal of settings only the
// admin role may give (the API's 403): a postgres_password rotation with
// another secret's admin DSN changes a role's password with that DSN, and
// only an admin decides what an admin DSN is used for.
var ErrNeedsAdmin = errors.New("only the admin role may have a rotation use another secret as its admin DSN")

// Spec is a secret's rotation: how often, how long the replaced value
// stays usable, and how a new value is made. It is what the API takes
// (`"rotate":{…}`) and what the store keeps, as JSON; it never holds a
// value.
type Spec struct {
	Every Duration `json:"every"`
	// Grace is how long the replaced version stays usable; nil means
	// DefaultGrace, 0 none.
	Grace *Duration `json:"grace,omitempty"`
	Via   Via       `json:"via"`
}

// Via names the rotator: exactly one field is set.
type Via struct {
	PostgresPassword *PostgresPassword `json:"postgres_password,omitempty"`
	// Command names a rotator of the server's config file (`rotators:`),
	// never a program: no API caller chooses what the server runs.
	Command string `json:"command,omitempty"`
}

// PostgresPassword rotates the password of Role with ALTER ROLE, connected
// with the DSN stored in the secret AdminDSNSecret (which may be the
// rotated secret itself: a role may change its own password).
type PostgresPassword struct {
	AdminDSNSecret string `json:"admin_dsn_secret"`
	Role           string `json:"role"`
}

// GraceOrDefault is the grace period in force.
func (s Spec) GraceOrDefault() time.Duration {
	if s.Grace == nil {
		return DefaultGrace
	}
	return time.Duration(*s.Grace)
}

// Kind names the rotator for audit entries and listings: "command:NAME" or
// "postgres_password".
func (s Spec) Kind() string {
	if s.Via.Command != "" {
		return "command:" + s.Via.Command
	}
	return "postgres_password"
}

// Duration is a time.Duration written as Go writes one ("24h", "90m").
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration is a string such as \"24h\" or \"90m\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration (write it like \"24h\", \"90m\" or \"30s\")", truncate(s, 40))
	}
	*d = Duration(v)
	return nil
}

// Checks is what validation needs to know of the server and the caller:
// the rotators its config file defines, whether a secret exists, and
// whether the caller has the admin role.
type Checks struct {
	Rotators     []string
	SecretExists func(name string) bool
	Admin        bool
}

// ParseSpec reads and validates the rotation settings of secret name from
// JSON: unknown keys, bad or out-of-range durations, no or two rotators,
// a command rotator the config does not define, a bad role or an admin
// DSN secret that does not exist are refused with an error wrapping
// ErrInvalid that says which and why; another secret as admin DSN without
// c.Admin also wraps ErrNeedsAdmin.
func ParseSpec(name string, raw []byte, c Checks) (Spec, error) {
	var s Spec
	if len(raw) > MaxSpecSize {
		return s, fmt.Errorf("%w: rotate: larger than %d bytes", ErrInvalid, MaxSpecSize)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return s, fmt.Errorf("%w: rotate: %s", ErrInvalid, jsonReason(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return s, fmt.Errorf("%w: rotate: more than one JSON value", ErrInvalid)
	}
	if err := s.validate(name, c); err != nil {
		return Spec{}, fmt.Errorf("%w: rotate: %w", ErrInvalid, err)
	}
	return s, nil
}

func (s Spec) validate(name string, c Checks) error {
	every := time.Duration(s.Every)
	switch {
	case every == 0:
		return errors.New(`every is required (how often to rotate, e.g. "24h")`)
	case every < MinEvery || every > MaxEvery:
		return fmt.Errorf("every %v is out of range: want %v to %v", every, MinEvery, MaxEvery)
	}
	if g := s.GraceOrDefault(); g < 0 || g > MaxGrace || g >= every {
		return fmt.Errorf("grace %v is out of range: want 0 to %v and shorter than every (%v)", g, MaxGrace, every)
	}
	v := s.Via
	switch {
	case v.PostgresPassword == nil && v.Command == "":
		return errors.New(`via names no rotator: want {"command":"NAME"} or {"postgres_password":{…}}`)
	case v.PostgresPassword != nil && v.Command != "":
		return errors.New("via names two rotators: want exactly one of command and postgres_password")
	case v.Command != "":
		if !slices.Contains(c.Rotators, v.Command) {
			known := "none"
			if len(c.Rotators) > 0 {
				known = strings.Join(c.Rotators, ", ")
			}
			return fmt.Errorf("via.command: unknown rotator %q: only the server's config file defines rotators (rotators: {NAME: [program, args…]}); it defines: %s",
				truncate(v.Command, 64), known)
		}
	default:
		p := v.PostgresPassword
		if err := secret.ValidateName(p.AdminDSNSecret); err != nil {
			return fmt.Errorf("via.postgres_password.admin_dsn_secret: %w", err)
		}
		if p.AdminDSNSecret != name && !c.Admin {
			return fmt.Errorf("via.postgres_password.admin_dsn_secret: %w (a secret may rotate with its own DSN: admin_dsn_secret %q)", ErrNeedsAdmin, name)
		}
		if p.AdminDSNSecret != name && (c.SecretExists == nil || !c.SecretExists(p.AdminDSNSecret)) {
			return fmt.Errorf("via.postgres_password.admin_dsn_secret: unknown secret %q: store the admin DSN first", p.AdminDSNSecret)
		}
		if p.Role == "" || len(p.Role) > maxRoleLen || strings.ContainsRune(p.Role, 0) {
			return fmt.Errorf("via.postgres_password.role: want 1 to %d bytes, no NUL", maxRoleLen)
		}
	}
	return nil
}

// jsonReason says what was wrong with a JSON document in words, without
// echoing more of it than a key name.
func jsonReason(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("bad JSON at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("%s: want a %s", te.Field, te.Type)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "unknown key " + strings.TrimPrefix(err.Error(), "json: unknown field ")
	case errors.Is(err, io.EOF):
		return "empty"
	}
	return truncate(err.Error(), 200)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
