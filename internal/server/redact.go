package server

import (
	"context"
	"log/slog"
	"strings"

	"github.com/mayfly-sh/mayfly/internal/token"
)

// redactHandler keeps tokens and secret values out of log lines whatever a
// caller passes: every checksum-valid mayfly token in a message or string
// attribute becomes its hint, and attributes whose key names a credential
// are dropped to "[redacted]".
type redactHandler struct{ next slog.Handler }

func newRedactHandler(next slog.Handler) slog.Handler { return redactHandler{next: next} }

func (h redactHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h redactHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, redactString(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redactAttr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h redactHandler) WithAttrs(as []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(as))
	for i, a := range as {
		red[i] = redactAttr(a)
	}
	return redactHandler{next: h.next.WithAttrs(red)}
}

func (h redactHandler) WithGroup(name string) slog.Handler {
	return redactHandler{next: h.next.WithGroup(name)}
}

func sensitiveKey(k string) bool {
	k = strings.ToLower(k)
	for _, s := range []string{"token", "secret", "password", "passwd", "authorization", "credential", "value", "key", "dsn", "cookie"} {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}

func redactAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	if sensitiveKey(a.Key) && v.Kind() != slog.KindGroup {
		return slog.String(a.Key, "[redacted]")
	}
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, redactString(v.String()))
	case slog.KindGroup:
		as := v.Group()
		red := make([]any, len(as))
		for i, g := range as {
			red[i] = redactAttr(g)
		}
		return slog.Group(a.Key, red...)
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			return slog.String(a.Key, redactString(err.Error()))
		}
		return slog.String(a.Key, redactString(v.String()))
	}
	return slog.Attr{Key: a.Key, Value: v}
}

func redactString(s string) string {
	if !strings.Contains(s, "mfy") {
		return s
	}
	return string(token.Redact([]byte(s)))
}
