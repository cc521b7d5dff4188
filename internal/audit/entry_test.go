package audit

import (
	"testing"
	"time"
)

func TestOutcome(t *testing.T) {
	for _, tc := range []struct {
		name        string
		detail      map[string]any
		wantAborted bool
	}{
		{"finished", map[string]any{"decision": "allow", "rule": 0}, false},
		{"aborted", map[string]any{"decision": "allow", "rule": 0, "aborted": true}, true},
		{"no detail", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			whole := Event{Type: TypeGateway, Lease: "lse_3", Upstream: "api", Method: "GET", Path: "/v1/items/3", Status: 200, BytesOut: 3}
			whole.Detail = tc.detail
			o := Outcome(whole, "gateway.response", 41)
			if o.Type != "gateway.response" || o.Path != whole.Path || o.Status != whole.Status || o.Detail["request_index"] != int64(41) {
				t.Fatalf("outcome %+v", o)
			}
			if _, ok := o.Detail["decision"]; ok {
				t.Fatal("the decision's detail repeated in the outcome")
			}
			if got := o.Detail["aborted"] == true; got != tc.wantAborted {
				t.Fatalf("aborted = %v, want %v", got, tc.wantAborted)
			}
			if whole.Detail != nil && len(whole.Detail) != len(tc.detail) {
				t.Fatal("Outcome changed the whole event's detail")
			}
		})
	}
}

// AppendEntryAt writes what AppendEntry writes with FormatTime's string.
func TestAppendEntryAt(t *testing.T) {
	body := []byte(`{"type":"gateway.request","upstream":"api"}`)
	for _, tm := range []time.Time{
		time.Date(2026, 12, 7, 3, 4, 5, 0, time.UTC),
		time.Date(2026, 12, 7, 3, 4, 5, 120000000, time.UTC),
		time.Date(2026, 12, 7, 3, 4, 5, 123456789, time.FixedZone("x", 3600)),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
	} {
		want := AppendEntry([]byte("x"), 42, FormatTime(tm), body)
		if got := AppendEntryAt([]byte("x"), 42, tm, body); string(got) != string(want) {
			t.Errorf("AppendEntryAt(%v) = %s, want %s", tm, got, want)
		}
		if got := AppendTime(nil, tm); string(got) != FormatTime(tm) {
			t.Errorf("AppendTime(%v) = %s, want %s", tm, got, FormatTime(tm))
		}
	}
}
