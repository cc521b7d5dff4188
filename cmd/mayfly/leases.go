package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mayfly-sh/mayfly/internal/apitype"
	"github.com/mayfly-sh/mayfly/internal/client"
)

// defaultLeaseLimit is how many leases `leases list` shows unless --limit
// says otherwise; more are never dropped without saying so.
const defaultLeaseLimit = 1000

func newLeasesCmd() *cobra.Command {
	leases := &cobra.Command{
		Use:   "leases",
		Short: "List and revoke job-token leases",
	}
	cf := addClientFlags(leases)

	var q client.LeaseQuery
	var limit int
	var listFmt *outputFormat
	list := &cobra.Command{
		Use:   "list [--active] [--grant G] [--issuer I] [--subject S] [--job J] [--limit N] [--cursor C]",
		Short: "List leases (never tokens), newest first",
		Long: "List leases, newest first, following the server's pages up to --limit (0: all). When more\n" +
			"leases match than were shown, a note on standard error says so and gives the cursor that\n" +
			"continues the listing (--cursor C); with --format json the cursor is next_cursor.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := listFmt.resolve(cmd)
			if err != nil {
				return err
			}
			if limit < 0 {
				return usageErr("leases list: --limit must be 0 (all) or more")
			}
			c, err := newAPIClient(cf, true)
			if err != nil {
				return err
			}
			out := apitype.LeaseList{Leases: []apitype.Lease{}}
			for {
				pq := q
				pq.Limit = apitype.MaxLeasePage
				if limit > 0 {
					pq.Limit = min(pq.Limit, limit-len(out.Leases))
				}
				page, err := c.ListLeases(cmd.Context(), pq)
				if err != nil {
					return clientErr(err)
				}
				out.Leases = append(out.Leases, page.Leases...)
				out.NextCursor = page.NextCursor
				if page.NextCursor == "" || (limit > 0 && len(out.Leases) >= limit) {
					break
				}
				if page.NextCursor == q.Cursor || len(page.Leases) == 0 {
					return usageErr("leases list: the server's cursor does not advance")
				}
				q.Cursor = page.NextCursor
			}
			if format == "json" {
				return printJSON(cmd.OutOrStdout(), out)
			}
			now := time.Now()
			rows := make([][]string, 0, len(out.Leases))
			for _, l := range out.Leases {
				rows = append(rows, []string{l.LeaseID, l.Issuer, l.Subject, l.Job, strings.Join(l.Grants, ","),
					shortTime(&l.IssuedAt), shortTime(&l.ExpiresAt), fmt.Sprint(l.Uses), l.Source, l.State(now)})
			}
			if err := table(cmd.OutOrStdout(), "LEASE\tISSUER\tSUBJECT\tJOB\tGRANTS\tISSUED\tEXPIRES\tUSES\tSOURCE\tSTATE", rows); err != nil {
				return err
			}
			if out.NextCursor != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "mayfly: leases list: showing the first %d leases; more match (--limit 0 shows all, --cursor %s continues)\n",
					len(out.Leases), client.OneLine(out.NextCursor, 512))
			}
			return nil
		},
	}
	list.Flags().BoolVar(&q.Active, "active", false, "only leases that are live (not revoked, not expired)")
	list.Flags().StringVar(&q.Grant, "grant", "", "only leases with this grant")
	list.Flags().StringVar(&q.Issuer, "issuer", "", "only leases from this issuer")
	list.Flags().StringVar(&q.Subject, "subject", "", "only leases for this subject")
	list.Flags().StringVar(&q.Job, "job", "", "only leases for this job (run) id")
	list.Flags().IntVar(&limit, "limit", defaultLeaseLimit, "show at most N leases (0: all)")
	list.Flags().StringVar(&q.Cursor, "cursor", "", "continue a listing where an earlier one stopped")
	listFmt = addFormatFlag(list, "text", "text", "json")

	var rq apitype.RevokeLeasesRequest
	var revokeFmt *outputFormat
	revoke := &cobra.Command{
		Use:   "revoke --lease-id ID | [--grant G] [--issuer I] [--subject S] [--job J]",
		Short: "Revoke one lease, or every live lease a filter selects",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := revokeFmt.resolve(cmd)
			if err != nil {
				return err
			}
			if err := checkRevokeRequest(rq); err != nil {
				return err
			}
			c, err := newAPIClient(cf, true)
			if err != nil {
				return err
			}
			out, err := c.RevokeLeases(cmd.Context(), rq)
			if err != nil {
				return clientErr(err)
			}
			if format == "json" {
				return printJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked %d lease(s)\n", out.Revoked)
			return nil
		},
	}
	revoke.Flags().StringVar(&rq.LeaseID, "lease-id", "", "the lease to revoke (lse_…)")
	revoke.Flags().StringVar(&rq.Grant, "grant", "", "revoke every live lease with this grant")
	revoke.Flags().StringVar(&rq.Issuer, "issuer", "", "revoke every live lease from this issuer")
	revoke.Flags().StringVar(&rq.Subject, "subject", "", "revoke every live lease for this subject")
	revoke.Flags().StringVar(&rq.Job, "job", "", "revoke every live lease of this job (run) id")
	revokeFmt = addFormatFlag(revoke, "text", "text", "json")
	leases.AddCommand(list, revoke)
	return leases
}

// checkRevokeRequest accepts a lease id alone, or a non-empty filter.
func checkRevokeRequest(r apitype.RevokeLeasesRequest) error {
	filter := r.Grant != "" || r.Issuer != "" || r.Subject != "" || r.Job != ""
	switch {
	case r.LeaseID != "" && filter:
		return usageErr("leases revoke: --lease-id cannot be combined with --grant, --issuer, --subject or --job")
	case r.LeaseID == "" && !filter:
		return usageErr("leases revoke: give --lease-id, or at least one of --grant, --issuer, --subject, --job")
	}
	return nil
}
