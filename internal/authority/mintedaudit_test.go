package authority

import (
	"testing"

	"github.com/mayfly-sh/mayfly/internal/store/storetest"
)

// A job's credential's creation entry names whom it was made for: the
// lease and the identity holding it (issuer, subject, job, repository), so
// that a reviewer reading credential.mint alone sees who got a role or a
// GitHub token. It used to name the lease only, and before that nothing.
func TestMintedCredentialEntryNamesItsHolder(t *testing.T) {
	for _, b := range storetest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			mb := newMintBench(t, b)
			res, err := mb.exchange(t, "migrate")
			if err != nil {
				t.Fatal(err)
			}
			ev, ok := mb.rec.last("credential.mint")
			switch {
			case !ok:
				t.Fatal("no credential.mint entry")
			case ev.Lease != res.LeaseID, ev.Issuer != "ci", ev.Subject == "", ev.Job == "", ev.Repository != "acme/app",
				ev.Grant != "migrate", ev.Upstream != "db", ev.Status != 200:
				t.Fatalf("credential.mint entry %+v: want lease %s and the identity holding it", ev, res.LeaseID)
			}
		})
	}
}
