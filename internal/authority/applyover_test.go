package authority

import (
	"context"
	"errors"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/policy"
)

// Two plans of one version cannot both be applied: the second, made
// against the version the first replaced, is refused and changes nothing.
func TestApplyPolicyOver(t *testing.T) {
	ctx := context.Background()
	b := newBench(t)
	base := b.a.PolicyVersion()
	withoutDeploy := []policy.File{{Name: "p.yaml", Data: []byte(withoutGrant(t, b, "deploy"))}}
	withoutRead := []policy.File{{Name: "p.yaml", Data: []byte(withoutGrant(t, b, "read"))}}
	tests := []struct {
		name   string
		files  []policy.File
		base   int64
		status int // 0: applied
		want   int64
	}{
		{"first plan of the version in force", withoutDeploy, base, 0, base + 1},
		{"second plan of that version", withoutRead, base, 409, base + 1},
		{"a plan of a version not yet applied", withoutRead, base + 2, 409, base + 1},
		{"replanned against the new version", withoutRead, base + 1, 0, base + 2},
		{"any version", withoutDeploy, -1, 0, base + 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := b.a.ApplyPolicyOver(ctx, tt.files, "alice", tt.base)
			var re *Error
			switch {
			case tt.status == 0 && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.status != 0 && (!errors.As(err, &re) || re.Status != tt.status):
				t.Fatalf("err = %v, want a %d refusal", err, tt.status)
			}
			if v := b.a.PolicyVersion(); v != tt.want {
				t.Fatalf("version %d in force, want %d", v, tt.want)
			}
		})
	}
}
