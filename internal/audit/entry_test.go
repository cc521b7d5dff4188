package audit

import "testing"

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
