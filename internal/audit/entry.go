package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/mayfly-sh/mayfly/internal/token"
)

// Entry types written by mayfly. Callers may use others that match
// [a-z0-9._-]{1,64}.
const (
	TypeExchange    = "token.exchange"     // granted (status 200) and denied (status 4xx)
	TypeRenew       = "token.renew"        // a job token renewed
	TypeRevoke      = "token.revoke"       // a job token or lease revoked
	TypeLeak        = "leak.report"        // a leak report and what it revoked
	TypeGateway     = "gateway.request"    // one gateway request
	TypePolicy      = "policy.apply"       // a policy version applied
	TypeSecretWrite = "secret.write"       // a stored secret written (never its value)
	TypeKeyRotate   = "key.rotate"         // a master-key rotation
	TypeAdminCreate = "admin.token.create" // an admin token created
	TypeAdminDelete = "admin.token.delete" // an admin token deleted
	TypeServerStart = "server.start"       // a server came up
	// TypeCredentialMint records a minted upstream credential (SPEC
	// section 9) created for a lease or shared by a grant (status 200), or
	// a refused or failed creation (4xx/5xx), never its value.
	TypeCredentialMint = "credential.mint"
	// TypeCredentialRenew records a minted credential's expiry moved: with
	// its lease's renewal (status 200, or 5xx when the upstream refused),
	// or brought forward when a fresh shared one replaces it.
	TypeCredentialRenew = "credential.renew"
	// TypeCredentialRevoke records a minted upstream credential (SPEC
	// section 9) revoked upstream (status 200) or a failed attempt (5xx).
	TypeCredentialRevoke = "credential.revoke"
	// TypePendingRejected records a pending record the log refused to
	// make an entry of (not a node's, or malformed), named, not quoted.
	TypePendingRejected = "audit.pending.rejected"
	// TypePolicySeal records the upgrade's one-time sealing of the policy
	// versions stored before they were authenticated (their numbers).
	TypePolicySeal = "policy.seal"
)

// MaxEntrySize bounds one entry's encoded size.
const MaxEntrySize = 64 << 10

// Event is what callers record. The log assigns index and time. Empty
// fields are left out of the entry. No field may hold a token or secret
// value: whole mayfly tokens are replaced by their hint anyway.
type Event struct {
	Type          string         `json:"type"`
	Lease         string         `json:"lease,omitempty"`
	Issuer        string         `json:"issuer,omitempty"`
	Subject       string         `json:"subject,omitempty"`
	Job           string         `json:"job,omitempty"`
	Repository    string         `json:"repository,omitempty"`
	Grant         string         `json:"grant,omitempty"` // grant name(s), space separated like a scope
	Upstream      string         `json:"upstream,omitempty"`
	Method        string         `json:"method,omitempty"`
	Path          string         `json:"path,omitempty"`
	Status        int            `json:"status,omitempty"`
	Source        string         `json:"source,omitempty"` // client address
	BytesIn       int64          `json:"bytes_in,omitempty"`
	BytesOut      int64          `json:"bytes_out,omitempty"`
	DurationMS    int64          `json:"duration_ms,omitempty"`
	Reason        string         `json:"reason,omitempty"` // why denied / which check failed
	Check         string         `json:"check,omitempty"`
	Hint          string         `json:"hint,omitempty"` // token.Hint of a token concerned
	PolicyVersion string         `json:"policy_version,omitempty"`
	Secret        string         `json:"secret,omitempty"` // secret name, never its value
	SecretVersion int            `json:"secret_version,omitempty"`
	KeyVersion    int            `json:"key_version,omitempty"`
	Admin         string         `json:"admin,omitempty"` // admin token name acting or concerned
	Role          string         `json:"role,omitempty"`
	Count         int64          `json:"count,omitempty"`
	Detail        map[string]any `json:"detail,omitempty"`
}

// Entry is one parsed log entry.
type Entry struct {
	Index int64     `json:"index"`
	Time  time.Time `json:"time"`
	Event
}

func validType(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// EncodeEvent returns the event's compact JSON object, starting with
// `{"type":`, with any whole mayfly token replaced by its hint: the body of
// an entry (AppendEntry). It writes over dst's array when the object fits
// (dst's contents are not kept). It fails for an invalid type or an event
// too large for an entry.
func EncodeEvent(dst []byte, ev *Event) ([]byte, error) {
	if !validType(ev.Type) {
		return nil, fmt.Errorf("audit: invalid event type %q", ev.Type)
	}
	b, err := appendEvent(dst[:0], ev)
	if err != nil {
		return nil, fmt.Errorf("audit: encoding %s event: %w", ev.Type, err)
	}
	b = token.Redact(b)
	if len(b)+80 > MaxEntrySize {
		return nil, fmt.Errorf("audit: %s event of %d bytes exceeds %d", ev.Type, len(b), MaxEntrySize)
	}
	return b, nil
}

// appendEvent appends ev as json.Marshal would write it, byte for byte
// (FuzzAppendEvent checks), without reflection: the gateway encodes two
// events per request.
func appendEvent(b []byte, ev *Event) ([]byte, error) {
	b = append(b, `{"type":`...)
	b = AppendJSONString(b, ev.Type)
	str := func(key, v string) {
		if v != "" {
			b = append(b, ',', '"')
			b = append(b, key...)
			b = append(b, '"', ':')
			b = AppendJSONString(b, v)
		}
	}
	num := func(key string, v int64) {
		if v != 0 {
			b = append(b, ',', '"')
			b = append(b, key...)
			b = append(b, '"', ':')
			b = strconv.AppendInt(b, v, 10)
		}
	}
	str("lease", ev.Lease)
	str("issuer", ev.Issuer)
	str("subject", ev.Subject)
	str("job", ev.Job)
	str("repository", ev.Repository)
	str("grant", ev.Grant)
	str("upstream", ev.Upstream)
	str("method", ev.Method)
	str("path", ev.Path)
	num("status", int64(ev.Status))
	str("source", ev.Source)
	num("bytes_in", ev.BytesIn)
	num("bytes_out", ev.BytesOut)
	num("duration_ms", ev.DurationMS)
	str("reason", ev.Reason)
	str("check", ev.Check)
	str("hint", ev.Hint)
	str("policy_version", ev.PolicyVersion)
	str("secret", ev.Secret)
	num("secret_version", int64(ev.SecretVersion))
	num("key_version", int64(ev.KeyVersion))
	str("admin", ev.Admin)
	str("role", ev.Role)
	num("count", ev.Count)
	if len(ev.Detail) > 0 {
		b = append(b, `,"detail":`...)
		if nb, ok := appendFlatDetail(b, ev.Detail); ok {
			b = nb
		} else {
			d, err := json.Marshal(ev.Detail)
			if err != nil {
				return nil, err
			}
			b = append(b, d...)
		}
	}
	return append(b, '}'), nil
}

// appendFlatDetail appends a detail of at most 8 string, bool and integer
// values as json.Marshal would (keys sorted), without reflection: the
// gateway writes such a detail on every request. It reports false, having
// appended nothing, for any other detail.
func appendFlatDetail(b []byte, d map[string]any) ([]byte, bool) {
	if len(d) > 8 {
		return b, false
	}
	var keys [8]string
	n := 0
	for k, v := range d {
		switch v.(type) {
		case string, bool, int, int64:
		default:
			return b, false
		}
		keys[n] = k
		n++
	}
	ks := keys[:n]
	slices.Sort(ks)
	for i, k := range ks {
		if i == 0 {
			b = append(b, '{')
		} else {
			b = append(b, ',')
		}
		b = AppendJSONString(b, k)
		b = append(b, ':')
		switch v := d[k].(type) {
		case string:
			b = AppendJSONString(b, v)
		case bool:
			b = strconv.AppendBool(b, v)
		case int:
			b = strconv.AppendInt(b, int64(v), 10)
		case int64:
			b = strconv.AppendInt(b, v, 10)
		}
	}
	return append(b, '}'), true
}

// AppendJSONString appends s as a JSON string byte for byte as
// json.Marshal does: the common case (a string needing no escape: refs,
// names, URLs) directly, anything else through json.Marshal itself. The
// store encodes a lease's claims with it too.
func AppendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			// Valid UTF-8 passes as it is (a token hint's "…"), but for
			// the two line separators json.Marshal escapes.
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 || r == '\u2028' || r == '\u2029' {
				q, _ := json.Marshal(s) // a string always encodes
				return append(b, q...)
			}
			i += size
			continue
		}
		if c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
		i++
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// timeLayout is RFC 3339 with nanoseconds, always written in UTC.
const timeLayout = time.RFC3339Nano

// FormatTime returns t as an entry's time: RFC 3339 with nanoseconds, in
// UTC.
func FormatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// AppendTime appends FormatTime(t) to dst.
func AppendTime(dst []byte, t time.Time) []byte { return t.UTC().AppendFormat(dst, timeLayout) }

// AppendEntryAt is AppendEntry with the time not yet formatted: the same
// bytes as AppendEntry(dst, index, FormatTime(t), body), without the time's
// string.
func AppendEntryAt(dst []byte, index int64, t time.Time, body []byte) []byte {
	dst = append(dst, `{"index":`...)
	dst = strconv.AppendInt(dst, index, 10)
	dst = append(dst, `,"time":"`...)
	dst = AppendTime(dst, t)
	dst = append(dst, `",`...)
	dst = append(dst, body[1:]...)
	return dst
}

// AppendEntry appends to dst the entry with index, time ts (FormatTime) and
// body, an object from EncodeEvent: `{"index":N,"time":"…",` and the
// body's fields.
func AppendEntry(dst []byte, index int64, ts string, body []byte) []byte {
	dst = append(dst, `{"index":`...)
	dst = strconv.AppendInt(dst, index, 10)
	dst = append(dst, `,"time":"`...)
	dst = append(dst, ts...)
	dst = append(dst, `",`...)
	dst = append(dst, body[1:]...)
	return dst
}

// EntryIndex reads the index of an entry written by AppendEntry without
// parsing it: the entry must start exactly with `{"index":N,`. It returns
// -1 if it does not.
func EntryIndex(b []byte) int64 {
	const p = `{"index":`
	if len(b) < len(p)+2 || string(b[:len(p)]) != p {
		return -1
	}
	var n int64
	i := len(p)
	start := i
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		if i-start >= 18 {
			return -1
		}
		n = n*10 + int64(b[i]-'0')
	}
	if i == start || i >= len(b) || b[i] != ',' || (b[start] == '0' && i-start > 1) {
		return -1
	}
	return n
}

// ParseEntry parses one entry line (without its newline). It requires a
// JSON object with a non-negative index, an RFC 3339 UTC time and a valid
// type.
func ParseEntry(line []byte) (*Entry, error) {
	if len(line) > MaxEntrySize {
		return nil, fmt.Errorf("audit: entry of %d bytes exceeds %d", len(line), MaxEntrySize)
	}
	var aux struct {
		Index *int64  `json:"index"`
		Time  *string `json:"time"`
		Event
	}
	if err := json.Unmarshal(line, &aux); err != nil {
		return nil, fmt.Errorf("audit: parsing entry: %w", err)
	}
	if aux.Index == nil || *aux.Index < 0 {
		return nil, errors.New("audit: entry has no valid index")
	}
	if aux.Time == nil {
		return nil, errors.New("audit: entry has no time")
	}
	t, err := time.Parse(time.RFC3339Nano, *aux.Time)
	if err != nil || t.Location() != time.UTC || len(*aux.Time) == 0 || (*aux.Time)[len(*aux.Time)-1] != 'Z' {
		return nil, fmt.Errorf("audit: entry time %q is not RFC 3339 UTC", *aux.Time)
	}
	if !validType(aux.Type) {
		return nil, fmt.Errorf("audit: entry type %q is invalid", aux.Type)
	}
	return &Entry{Index: *aux.Index, Time: t, Event: aux.Event}, nil
}

// Outcome is the entry that records a request's outcome beside its
// decision's entry at index decision: whole's fields, of type typ, with
// detail request_index (and aborted when whole's detail says so).
func Outcome(whole Event, typ string, decision int64) Event {
	ev := whole
	ev.Type = typ
	ev.Detail = map[string]any{"request_index": decision}
	if whole.Detail["aborted"] == true {
		ev.Detail["aborted"] = true
	}
	return ev
}
