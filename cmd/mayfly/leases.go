package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

type leaseInfo struct {
	LeaseID   string   `json:"lease_id"`
	Issuer    string   `json:"issuer"`
	Subject   string   `json:"subject"`
	Job       string   `json:"job"`
	Grants    []string `json:"grants"`
	IssuedAt  string   `json:"issued_at"`
	ExpiresAt string   `json:"expires_at"`
	Source    string   `json:"source"`
	Uses      int64    `json:"uses"`
	RevokedAt string   `json:"revoked_at,omitempty"`
}

// state is "revoked", "expired" or "live" at now.
func (l leaseInfo) state(now time.Time) string {
	if l.RevokedAt != "" {
		return "revoked"
	}
	if exp, err := time.Parse(time.RFC3339Nano, l.ExpiresAt); err == nil && !now.Before(exp) {
		return "expired"
	}
	return "live"
}

func newLeasesCmd() *cobra.Command {
	leases := &cobra.Command{
		Use:   "leases",
		Short: "List and revoke job-token leases",
	}
	cf := addClientFlags(leases)

	var active, asJSON bool
	var grant, issuer, subject, jobID string
	list := &cobra.Command{
		Use:   "list [--active] [--grant G] [--issuer I] [--subject S] [--job J]",
		Short: "List leases (never tokens)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newAPIClient(cf, true)
			if err != nil {
				return err
			}
			q := url.Values{}
			if active {
				q.Set("active", "true")
			}
			for k, v := range map[string]string{"grant": grant, "issuer": issuer, "subject": subject, "job": jobID} {
				if v != "" {
					q.Set(k, v)
				}
			}
			path := "/v1/leases"
			if len(q) > 0 {
				path += "?" + q.Encode()
			}
			var raw json.RawMessage
			if err := c.getJSON(cmd.Context(), "leases list", path, &raw); err != nil {
				return err
			}
			if asJSON {
				// The server's answer as it is: claims, bindings and any
				// field this CLI does not know yet included.
				return printJSON(cmd.OutOrStdout(), raw)
			}
			var out struct {
				Leases []leaseInfo `json:"leases"`
			}
			if err := json.Unmarshal(raw, &out); err != nil {
				return usageErr("leases list: unexpected response from the server: %v", err)
			}
			now := time.Now()
			rows := make([][]string, 0, len(out.Leases))
			for _, l := range out.Leases {
				rows = append(rows, []string{l.LeaseID, l.Issuer, l.Subject, l.Job, strings.Join(l.Grants, ","),
					shortTime(l.IssuedAt), shortTime(l.ExpiresAt), fmt.Sprint(l.Uses), l.Source, l.state(now)})
			}
			return table(cmd.OutOrStdout(), "LEASE\tISSUER\tSUBJECT\tJOB\tGRANTS\tISSUED\tEXPIRES\tUSES\tSOURCE\tSTATE", rows)
		},
	}
	list.Flags().BoolVar(&active, "active", false, "only leases that are live (not revoked, not expired)")
	list.Flags().StringVar(&grant, "grant", "", "only leases with this grant")
	list.Flags().StringVar(&issuer, "issuer", "", "only leases from this issuer")
	list.Flags().StringVar(&subject, "subject", "", "only leases for this subject")
	list.Flags().StringVar(&jobID, "job", "", "only leases for this job (run) id")
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	var leaseID, rGrant, rIssuer, rSubject, rJob string
	revoke := &cobra.Command{
		Use:   "revoke --lease-id ID | [--grant G] [--issuer I] [--subject S] [--job J]",
		Short: "Revoke one lease, or every live lease a filter selects",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := revokeBody(leaseID, map[string]string{"grant": rGrant, "issuer": rIssuer, "subject": rSubject, "job": rJob})
			if err != nil {
				return err
			}
			c, err := newAPIClient(cf, true)
			if err != nil {
				return err
			}
			var out struct {
				Revoked int64 `json:"revoked"`
			}
			if err := c.sendJSON(cmd.Context(), "leases revoke", http.MethodPost, "/v1/leases/revoke", body, &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked %d lease(s)\n", out.Revoked)
			return nil
		},
	}
	revoke.Flags().StringVar(&leaseID, "lease-id", "", "the lease to revoke (lse_…)")
	revoke.Flags().StringVar(&rGrant, "grant", "", "revoke every live lease with this grant")
	revoke.Flags().StringVar(&rIssuer, "issuer", "", "revoke every live lease from this issuer")
	revoke.Flags().StringVar(&rSubject, "subject", "", "revoke every live lease for this subject")
	revoke.Flags().StringVar(&rJob, "job", "", "revoke every live lease of this job (run) id")
	leases.AddCommand(list, revoke)
	return leases
}

// revokeBody builds POST /v1/leases/revoke's body: a lease id alone, or a
// non-empty filter.
func revokeBody(leaseID string, filter map[string]string) (map[string]string, error) {
	body := map[string]string{}
	for k, v := range filter {
		if v != "" {
			body[k] = v
		}
	}
	if leaseID != "" {
		if len(body) > 0 {
			return nil, usageErr("leases revoke: --lease-id cannot be combined with --grant, --issuer, --subject or --job")
		}
		return map[string]string{"lease_id": leaseID}, nil
	}
	if len(body) == 0 {
		return nil, usageErr("leases revoke: give --lease-id, or at least one of --grant, --issuer, --subject, --job")
	}
	return body, nil
}
