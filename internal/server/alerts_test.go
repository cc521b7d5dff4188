package server

import (
	"context"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// A target's sink with no cursor of its own starts where the shared
// "sink:alerts" cursor of earlier versions stopped; one that has its own
// keeps it.
func TestAdoptAlertsCursor(t *testing.T) {
	tests := []struct {
		name        string
		shared, own int64 // 0: not set
		want        int64
	}{
		{"first start", 0, 0, 0},
		{"upgrade", 42, 0, 42},
		{"own cursor kept", 42, 50, 50},
		{"own cursor behind kept", 42, 7, 7},
	}
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := storetest.SQLite(t).DB
			for name, v := range map[string]int64{"sink:alerts": tt.shared, "sink:alerts:soc": tt.own} {
				if v != 0 {
					if err := st.SetAuditCursor(ctx, name, v); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := adoptAlertsCursor(ctx, st, []string{"alerts:soc"}); err != nil {
				t.Fatal(err)
			}
			if got, err := st.AuditCursor(ctx, "sink:alerts:soc"); err != nil || got != tt.want {
				t.Fatalf("cursor %d (%v), want %d", got, err, tt.want)
			}
		})
	}
}
