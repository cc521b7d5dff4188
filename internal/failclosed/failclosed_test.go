package failclosed_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/mayfly-sh/mayfly/internal/failclosed"
)

// The wrapping the callers use keeps the value findable and the message
// naming what failed.
func TestWrapped(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("audit log %w: appending 3 entries: disk full", failclosed.ErrUnavailable), "audit log unavailable: appending 3 entries: disk full"},
		{fmt.Errorf("dpop: replay check %w: %v", failclosed.ErrUnavailable, errors.New("conn refused")), "dpop: replay check unavailable: conn refused"},
		{fmt.Errorf("renewing: %w", fmt.Errorf("revoking lease: %w: %w", failclosed.ErrUnavailable, errors.New("x"))), "renewing: revoking lease: unavailable: x"},
	} {
		if !errors.Is(tc.err, failclosed.ErrUnavailable) {
			t.Errorf("%v does not match ErrUnavailable", tc.err)
		}
		if tc.err.Error() != tc.want {
			t.Errorf("message %q, want %q", tc.err, tc.want)
		}
	}
	if errors.Is(errors.New("unavailable"), failclosed.ErrUnavailable) {
		t.Fatal("another error with the same text matches")
	}
}
