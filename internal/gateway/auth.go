package gateway

import (
	"encoding/base64"
	"strings"

	"github.com/mayfly-sh/mayfly/internal/token"
)

// maxAuthHeader bounds an Authorization or Proxy-Authorization value.
const maxAuthHeader = 4 << 10

// tokenErr says why no token could be taken from a request's headers. It
// never contains a header value.
type tokenErr string

func (e tokenErr) Error() string { return string(e) }

const (
	errNoToken        = tokenErr("no job token in Authorization or Proxy-Authorization")
	errMalformedToken = tokenErr("credentials are not a mayfly job token")
	errAmbiguousToken = tokenErr("more than one job token in the request")
	errRepeatedHeader = tokenErr("repeated Authorization or Proxy-Authorization header")
	errBadScheme      = tokenErr("unsupported authorization scheme")
)

// extractToken finds the job token of a request: in Authorization or
// Proxy-Authorization, with the scheme Bearer, token or DPoP (the value is
// the token), or Basic (the token as user name or password; the other half
// is ignored, so "x:$MAYFLY_TOKEN" and "$MAYFLY_TOKEN:" both work). Scheme
// names are case-insensitive. A header that is present must hold a job
// token; two headers must hold the same one. It reports the scheme of the
// header the token came from ("bearer", "token", "dpop" or "basic").
func extractToken(get func(string) []string) (tok, scheme string, err error) {
	for _, name := range [...]string{"Authorization", "Proxy-Authorization"} {
		vals := get(name)
		if len(vals) == 0 {
			continue
		}
		if len(vals) > 1 {
			return "", "", errRepeatedHeader
		}
		t, s, err := parseAuth(vals[0])
		if err != nil {
			return "", "", err
		}
		if tok != "" && t != tok {
			return "", "", errAmbiguousToken
		}
		if tok == "" {
			tok, scheme = t, s
		}
	}
	if tok == "" {
		return "", "", errNoToken
	}
	return tok, scheme, nil
}

func parseAuth(v string) (tok, scheme string, err error) {
	if len(v) > maxAuthHeader {
		return "", "", errMalformedToken
	}
	v = strings.Trim(v, " \t")
	sch, rest, ok := strings.Cut(v, " ")
	if !ok {
		return "", "", errBadScheme
	}
	rest = strings.Trim(rest, " \t")
	switch { // scheme in lower case, without a copy of sch
	case strings.EqualFold(sch, "Bearer"):
		scheme = "bearer"
	case strings.EqualFold(sch, "token"):
		scheme = "token"
	case strings.EqualFold(sch, "DPoP"):
		scheme = "dpop"
	}
	switch {
	case scheme != "":
		if !isJobToken(rest) {
			return "", "", errMalformedToken
		}
		return rest, scheme, nil
	case strings.EqualFold(sch, "Basic"):
		raw, err := base64.StdEncoding.DecodeString(rest)
		if err != nil {
			// Some clients leave the padding out.
			raw, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(rest, "="))
			if err != nil {
				return "", "", errMalformedToken
			}
		}
		user, pass, _ := strings.Cut(string(raw), ":")
		u, p := isJobToken(user), isJobToken(pass)
		switch {
		case u && p && user != pass:
			return "", "", errAmbiguousToken
		case u:
			return user, "basic", nil
		case p:
			return pass, "basic", nil
		}
		return "", "", errMalformedToken
	}
	return "", "", errBadScheme
}

func isJobToken(s string) bool {
	k, err := token.Parse(s)
	return err == nil && k == token.Job
}
