package pgrole

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/mint"
	"github.com/mayfly-sh/mayfly/internal/pgsql"
	"github.com/mayfly-sh/mayfly/internal/policy"
)

// SecretReader reads a stored secret's value (secret.Vault).
type SecretReader interface {
	Reveal(ctx context.Context, name string) ([]byte, int, error)
}

// Source is the mint.Source of postgres upstreams: one role per lease.
type Source struct {
	Roles   *Roles
	Secrets SecretReader
	// Policy returns the policy in force: revocation uses the statements
	// of the upstream as it is now when it is still there (a fixed
	// revocation statement applies to roles made before), else those
	// recorded when the role was made. The admin DSN secret is the one
	// that made the role (the policy's may now name another server). A
	// record's own values count only when its tag verifies
	// (mint.Record.Authenticated): see upstream.
	Policy func() *policy.Policy
	// Known reports which role names of an upstream a record stands for
	// (store.MintedNames); the sweep drops the others.
	Known func(ctx context.Context, upstream string, names []string) (map[string]bool, error)
	// Audit, when set, records the roles each sweep drops and returns once
	// the entry is durable (the server's audit log: Add, then Wait).
	Audit func(ctx context.Context, ev audit.Event) error
	// AuditFailed, when set, hears of a sweep's entry that could not be
	// written (a log line).
	AuditFailed func(upstream string, dropped int, err error)

	sweepMu sync.Mutex
}

// params is what a record keeps to revoke its role without the policy
// that made it (its upstream may be gone from the policy in force, or
// point at another server): the admin DSN secret, and the server it named
// (Server) so that a role missing from another server is not taken as
// gone. Records made before Server was kept have none.
type params struct {
	AdminDSNSecret string `json:"admin_dsn_secret"`
	Revocation     string `json:"revocation,omitempty"`
	Server         string `json:"server,omitempty"`
}

// refusal maps a failure to the exchange's answer: its status, a code
// naming the cause, and a description naming the upstream.
func refusal(err error) error {
	var pe *Error
	if !errors.As(err, &pe) {
		return err
	}
	status := 502
	switch pe.Cause {
	case Unreachable:
		status = 503
	case Misconfigured:
		status = 500
	}
	return mint.Errorf(status, string(pe.Cause), "upstream %s: %s: %v", pe.Upstream, pe.Op, pe.Err)
}

func (s *Source) adminDSN(ctx context.Context, upstream, secretName string) (string, error) {
	if secretName == "" {
		return "", mint.Errorf(500, string(Misconfigured), "upstream %s: no admin_dsn_secret", upstream)
	}
	v, _, err := s.Secrets.Reveal(ctx, secretName)
	if err != nil {
		// The vault's errors name the secret, never its value.
		return "", mint.Errorf(500, string(Misconfigured), "upstream %s: admin_dsn_secret %q cannot be read: %v", upstream, secretName, err)
	}
	if len(v) == 0 {
		return "", mint.Errorf(500, string(Misconfigured), "upstream %s: admin_dsn_secret %q is empty", upstream, secretName)
	}
	return string(v), nil
}

// Plan names the lease's role, and the server its admin DSN names, before
// anything is made.
func (s *Source) Plan(ctx context.Context, r mint.Request) (mint.Plan, error) {
	up := r.Upstream
	if up == nil || up.Postgres == nil {
		return mint.Plan{}, mint.Errorf(500, "server_error", "not a postgres upstream")
	}
	if r.LeaseID == "" {
		return mint.Plan{}, mint.Errorf(500, "server_error", "upstream %s: a role is made per lease, never shared", up.Name)
	}
	if err := pgsql.CheckTemplate(up.Postgres.Creation, true); err != nil {
		return mint.Plan{}, mint.Errorf(500, string(Misconfigured), "upstream %s: creation statements: %v", up.Name, err)
	}
	if err := pgsql.CheckTemplate(revocationOf(up.Postgres.Revocation), false); err != nil {
		return mint.Plan{}, mint.Errorf(500, string(Misconfigured), "upstream %s: revocation statements: %v", up.Name, err)
	}
	dsn, err := s.adminDSN(ctx, up.Name, up.Postgres.AdminDSNSecret)
	if err != nil {
		return mint.Plan{}, err
	}
	srv, err := serverOf(up.Name, dsn)
	if err != nil {
		return mint.Plan{}, refusal(err)
	}
	b, err := json.Marshal(params{AdminDSNSecret: up.Postgres.AdminDSNSecret, Revocation: up.Postgres.Revocation, Server: srv})
	if err != nil {
		return mint.Plan{}, err
	}
	return mint.Plan{Name: pgsql.RoleName(r.LeaseID, up.Name), Params: b}, nil
}

func revocationOf(s string) string {
	if s == "" {
		return DefaultRevocation
	}
	return s
}

// Mint makes the role and returns its DSN, name and password.
func (s *Source) Mint(ctx context.Context, r mint.Request, p mint.Plan) (mint.Minted, error) {
	up := r.Upstream
	dsn, err := s.adminDSN(ctx, up.Name, up.Postgres.AdminDSNSecret)
	if err != nil {
		return mint.Minted{}, err
	}
	var planned params
	if len(p.Params) > 0 {
		if err := json.Unmarshal(p.Params, &planned); err != nil {
			return mint.Minted{}, fmt.Errorf("pgrole: the plan of %s: %w", r.ID, err)
		}
	}
	u := Upstream{Name: up.Name, AdminDSN: dsn, Creation: up.Postgres.Creation, Revocation: up.Postgres.Revocation, MadeOn: planned.Server}
	c, err := s.Roles.Prepare(u, r.LeaseID, r.ExpiresAt)
	if err != nil {
		return mint.Minted{}, refusal(err)
	}
	if c.Name != p.Name {
		return mint.Minted{}, mint.Errorf(500, "server_error", "upstream %s: role name changed between plan and creation", up.Name)
	}
	if err := s.Roles.Create(ctx, u, c); err != nil {
		return mint.Minted{}, refusal(err)
	}
	return mint.Minted{
		Credential: mint.Credential{DSN: c.DSN(), Username: c.Name, Password: c.Password, ExpiresAt: c.Expires},
		Secret:     c.Password,
		ExpiresAt:  c.Expires,
	}, nil
}

// upstream rebuilds the Upstream a record's role lives on. A record whose
// fields are not authenticated (made before records were tagged, or
// planted by a database writer without the seal key) is acted on only as
// the policy in force says for its upstream: its own admin DSN secret and
// statements are never used, and without its upstream in the policy, or
// with a role name not of that upstream, it is refused (the worker logs,
// counts and audits the failure, and leaves the record).
func (s *Source) upstream(ctx context.Context, rec mint.Record) (Upstream, error) {
	var p params
	if len(rec.Params) > 0 {
		if err := json.Unmarshal(rec.Params, &p); err != nil {
			return Upstream{}, fmt.Errorf("pgrole: the record of %s: %w", rec.ID, err)
		}
	}
	var up *policy.Upstream
	if s.Policy != nil {
		if pol := s.Policy(); pol != nil {
			if u := pol.Upstreams[rec.Upstream]; u != nil && u.Postgres != nil {
				up = u
			}
		}
	}
	if !rec.Authenticated {
		if up == nil {
			return Upstream{}, mint.Errorf(500, string(Misconfigured), "upstream %s: the record of %s carries no valid tag and its upstream is not a postgres upstream of the policy: "+
				"not acted on (drop its role by hand, or put the upstream back in the policy)", rec.Upstream, rec.ID)
		}
		if !pgsql.OwnedBy(rec.ExternalName, rec.Upstream) {
			return Upstream{}, mint.Errorf(500, string(Misconfigured), "upstream %s: the record of %s carries no valid tag and names a role that is not of this upstream: not acted on", rec.Upstream, rec.ID)
		}
		// The server it names only ever makes revocation refuse (a role
		// missing elsewhere is not taken as gone): kept.
		p = params{AdminDSNSecret: up.Postgres.AdminDSNSecret, Revocation: up.Postgres.Revocation, Server: p.Server}
	} else if up != nil {
		p.Revocation = up.Postgres.Revocation
		if p.AdminDSNSecret == "" {
			p.AdminDSNSecret = up.Postgres.AdminDSNSecret
		}
	}
	dsn, err := s.adminDSN(ctx, rec.Upstream, p.AdminDSNSecret)
	if err != nil {
		return Upstream{}, err
	}
	return Upstream{Name: rec.Upstream, AdminDSN: dsn, Revocation: p.Revocation, MadeOn: p.Server}, nil
}

// Renew moves the role's VALID UNTIL to the lease's new expiry.
func (s *Source) Renew(ctx context.Context, rec mint.Record, expires time.Time) error {
	u, err := s.upstream(ctx, rec)
	if err != nil {
		return err
	}
	return refusal(s.Roles.Renew(ctx, u, rec.ExternalName, expires))
}

// Revoke ends the role: no login, sessions terminated, revocation run.
func (s *Source) Revoke(ctx context.Context, rec mint.Record) error {
	if rec.ExternalName == "" {
		return nil // never named, never made
	}
	u, err := s.upstream(ctx, rec)
	if err != nil {
		return err
	}
	return refusal(s.Roles.Revoke(ctx, u, rec.ExternalName))
}

// Sweep drops, on every postgres upstream of the policy in force, the
// roles of mayfly's form that no record stands for: what a lost record (a
// restored store) or anything else left. A role whose record is pending
// is left to the mint worker, which revokes it once the record is stale.
func (s *Source) Sweep(ctx context.Context) (int, error) {
	s.sweepMu.Lock()
	defer s.sweepMu.Unlock()
	if s.Policy == nil || s.Known == nil {
		return 0, nil
	}
	pol := s.Policy()
	if pol == nil {
		return 0, nil
	}
	dropped := 0
	var errs []error
	for _, up := range pol.Upstreams {
		if up.Postgres == nil {
			continue
		}
		dsn, err := s.adminDSN(ctx, up.Name, up.Postgres.AdminDSNSecret)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		u := Upstream{Name: up.Name, AdminDSN: dsn, Revocation: up.Postgres.Revocation}
		names, err := s.Roles.Sweep(ctx, u, func(ctx context.Context, names []string) (map[string]bool, error) {
			return s.Known(ctx, up.Name, names)
		})
		dropped += len(names)
		if err != nil {
			errs = append(errs, err)
		}
		s.auditSwept(ctx, up.Name, names, err)
	}
	return dropped, errors.Join(errs...)
}

// maxSweptNames bounds the role names one sweep entry lists (an entry is
// at most audit.MaxEntrySize); count says how many there were.
const maxSweptNames = 200

// auditSwept records the roles a sweep of upstream dropped: destroyed
// credentials that no record (and so no revocation entry) stood for. The
// roles are gone already and an orphan is never kept alive for want of an
// entry; a failure to write it is returned to the sweep's report.
func (s *Source) auditSwept(ctx context.Context, upstream string, names []string, cause error) {
	if s.Audit == nil || len(names) == 0 {
		return
	}
	shown := names[:min(len(names), maxSweptNames)]
	ev := audit.Event{Type: audit.TypeCredentialRevoke, Upstream: upstream, Status: 200, Reason: "swept: no record knows it",
		Count: int64(len(names)), Detail: map[string]any{"kind": policy.KindPostgres, "names": shown}}
	if cause != nil {
		ev.Detail["error"] = cause.Error() // cleaned of passwords and the admin DSN (classify)
	}
	if err := s.Audit(context.WithoutCancel(ctx), ev); err != nil && s.AuditFailed != nil {
		s.AuditFailed(upstream, len(names), err)
	}
}

// RunSweeps sweeps at once and then every interval until ctx ends,
// reporting each outcome to report (a log line, a metric).
func (s *Source) RunSweeps(ctx context.Context, interval time.Duration, report func(dropped int, err error)) {
	if interval <= 0 {
		interval = 5 * time.Minute
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		n, err := s.Sweep(ctx)
		if ctx.Err() != nil {
			return
		}
		if report != nil {
			report(n, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
