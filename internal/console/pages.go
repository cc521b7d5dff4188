package console

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/lease"
	"github.com/mayfly-sh/mayfly/internal/store"
)

// PageSize is the rows of one listing page.
const PageSize = 50

// maxFilter bounds a filter value from a query string.
const maxFilter = 512

func param(r *http.Request, name string) string {
	return cut(strings.TrimSpace(r.FormValue(name)))
}

// cut bounds a filter value, and a value the audit index keeps, to
// maxFilter bytes, without NULs (PostgreSQL refuses one in text, and the
// index stopped at an entry holding one): the same on both sides, so
// that an entry's own link finds it however long its value.
func cut(v string) string {
	if strings.IndexByte(v, 0) >= 0 {
		v = strings.ReplaceAll(v, "\x00", "")
	}
	if len(v) > maxFilter {
		// At a character's edge: a cut inside one is not UTF-8, which
		// PostgreSQL refuses with an error (gate let only UTF-8 through).
		v = strings.ToValidUTF8(v[:maxFilter], "")
	}
	return v
}

// ---- live leases

type leaseRow struct {
	ID, Issuer, Subject, Repository, Job, Source string
	Grants                                       []string
	IssuedAt, ExpiresAt                          time.Time
	Uses                                         int64
	DPoP, BindIP                                 bool
}

type grantCount struct {
	Grant string
	Live  int
}

type leasesPage struct {
	Grant, Issuer, Subject, Repository, Job string
	Rows                                    []leaseRow
	Next                                    string
	Grants                                  []grantCount
	Live                                    int
	CountedAt                               time.Time
}

func formatLeaseCursor(c lease.Cursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.IssuedAt.UnixNano(), 10) + "." + c.ID))
}

func parseLeaseCursor(s string) (lease.Cursor, bool) {
	if len(s) > 256 {
		return lease.Cursor{}, false
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return lease.Cursor{}, false
	}
	ns, id, ok := strings.Cut(string(b), ".")
	n, err := strconv.ParseInt(ns, 10, 64)
	if !ok || err != nil || n < 0 || id == "" || len(id) > 128 {
		return lease.Cursor{}, false
	}
	for _, r := range id {
		if !(r == '_' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return lease.Cursor{}, false
		}
	}
	return lease.Cursor{IssuedAt: time.Unix(0, n).UTC(), ID: id}, true
}

func (c *Console) leases(w http.ResponseWriter, r *http.Request, who Caller) {
	ctx, cancel := c.ctx(r)
	defer cancel()
	p := leasesPage{Grant: param(r, "grant"), Issuer: param(r, "issuer"), Subject: param(r, "subject"),
		Repository: param(r, "repository"), Job: param(r, "job")}
	var byGrant map[string]int
	p.Live, byGrant, p.CountedAt = c.counts()
	f := lease.Filter{Grant: p.Grant, Issuer: p.Issuer, Subject: p.Subject, Repository: p.Repository, Job: p.Job,
		LiveAt: c.cfg.Now(), Limit: PageSize + 1}
	if s := param(r, "cursor"); s != "" {
		cur, ok := parseLeaseCursor(s)
		if !ok {
			c.refuse(w, r, who, http.StatusBadRequest, "That page link is malformed: start from the first page.")
			return
		}
		f.After = &cur
	}
	ls, err := c.cfg.Leases.List(ctx, f)
	if err != nil {
		c.fail(w, r, who, err)
		return
	}
	if len(ls) > PageSize {
		ls = ls[:PageSize]
		last := ls[PageSize-1]
		p.Next = formatLeaseCursor(lease.Cursor{IssuedAt: last.IssuedAt, ID: last.ID})
	}
	for _, l := range ls {
		row := leaseRow{ID: l.ID, Issuer: l.Issuer, Subject: l.Subject, Job: l.Job, Source: l.Source, Grants: l.Grants,
			IssuedAt: l.IssuedAt, ExpiresAt: l.ExpiresAt, Uses: l.Uses, DPoP: l.JKT != "", BindIP: l.BindSource}
		row.Repository = l.Claims["repository"]
		if row.Repository == "" {
			row.Repository = l.Claims["project_path"]
		}
		if live, ok := c.cfg.Leases.Get(l.ID); ok {
			row.Uses = max(row.Uses, live.Uses())
		}
		p.Rows = append(p.Rows, row)
	}
	for g, n := range byGrant {
		if n > 0 {
			p.Grants = append(p.Grants, grantCount{g, n})
		}
	}
	slices.SortFunc(p.Grants, func(a, b grantCount) int { return strings.Compare(a.Grant, b.Grant) })
	c.render(w, r, http.StatusOK, "leases", who, "Live leases", p)
}

type revokePage struct {
	LeaseID, Grant string
	Count          int
	Done           bool
	Revoked        int
}

// revoke asks first (how many leases it would end), then revokes through
// the authority, which audits it.
func (c *Console) revoke(w http.ResponseWriter, r *http.Request, who Caller) {
	ctx, cancel := c.ctx(r)
	defer cancel()
	p := revokePage{LeaseID: param(r, "lease_id"), Grant: param(r, "grant")}
	if (p.LeaseID == "") == (p.Grant == "") {
		c.refuse(w, r, who, http.StatusBadRequest, "Name one lease or one grant to revoke.")
		return
	}
	// Counted in the store on a shared one: this node's view holds only
	// the leases it has met.
	if p.LeaseID != "" {
		ls, err := c.cfg.Leases.List(ctx, lease.Filter{ID: p.LeaseID, LiveAt: c.cfg.Now()})
		if err != nil {
			c.fail(w, r, who, err)
			return
		}
		p.Count = len(ls)
	} else {
		_, byGrant, err := c.cfg.Leases.Counts(ctx)
		if err != nil {
			c.fail(w, r, who, err)
			return
		}
		p.Count = byGrant[p.Grant]
	}
	if r.FormValue("confirm") != "yes" {
		c.render(w, r, http.StatusOK, "revoke", who, "Confirm revocation", p)
		return
	}
	f := lease.Filter{ID: p.LeaseID, Grant: p.Grant}
	n, err := c.cfg.Authority.RevokeLeases(ctx, f, who.Name, c.cfg.ClientAddr(r))
	if err != nil {
		c.fail(w, r, who, err)
		return
	}
	p.Done, p.Revoked = true, n
	c.render(w, r, http.StatusOK, "revoke", who, "Revoked", p)
}

// ---- audit log

type entryRow struct {
	*audit.Entry
	Leases []string // a leak report's revoked leases
}

type auditPage struct {
	Base                                   string
	Type, Lease, Subject, Upstream, Status string
	Rows                                   []entryRow
	Next                                   int64
	Scanned                                int
	Filtered                               bool
	LogSize, IndexSize                     int64
}

// statusRange reads the status filter: a code, or 2xx, 4xx, 5xx, or
// "refused" (400 and above).
func statusRange(s string) (lo, hi int, ok bool) {
	switch s {
	case "":
		return 0, 0, true
	case "2xx":
		return 200, 299, true
	case "4xx":
		return 400, 499, true
	case "5xx":
		return 500, 599, true
	case "refused":
		return 400, 599, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 100 || n > 599 {
		return 0, 0, false
	}
	return n, n, true
}

func (c *Console) findAudit(w http.ResponseWriter, r *http.Request, who Caller, q store.AuditQuery, p *auditPage) bool {
	ctx, cancel := c.ctx(r)
	defer cancel()
	if s := param(r, "before"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			c.refuse(w, r, who, http.StatusBadRequest, "That page link is malformed: start from the first page.")
			return false
		}
		q.Before = n
	}
	q.Limit = PageSize
	page, err := c.cfg.Store.FindAudit(ctx, q)
	if err != nil {
		c.fail(w, r, who, err)
		return false
	}
	p.Next, p.Scanned = page.Next, page.Scanned
	p.LogSize = c.cfg.Audit.Size()
	p.Filtered = q.Type != "" || q.Lease != "" || q.Subject != "" || q.Upstream != "" || q.StatusMin != 0
	if p.Filtered {
		if p.IndexSize, err = c.cfg.Store.AuditIndexSize(ctx); err != nil {
			c.fail(w, r, who, err)
			return false
		}
	}
	for i, data := range page.Entries {
		e, err := audit.ParseEntry(data)
		if err != nil {
			c.fail(w, r, who, fmt.Errorf("audit entry %d: %w", page.Indexes[i], err))
			return false
		}
		row := entryRow{Entry: e}
		if ids, ok := e.Detail["leases"].([]any); ok {
			for _, id := range ids {
				if s, ok := id.(string); ok {
					row.Leases = append(row.Leases, s)
				}
			}
		}
		p.Rows = append(p.Rows, row)
	}
	return true
}

func (c *Console) auditList(w http.ResponseWriter, r *http.Request, who Caller) {
	p := auditPage{Base: "/ui/audit", Type: param(r, "type"), Lease: param(r, "lease"), Subject: param(r, "subject"),
		Upstream: param(r, "upstream"), Status: param(r, "status")}
	lo, hi, ok := statusRange(p.Status)
	if !ok {
		c.refuse(w, r, who, http.StatusBadRequest, "Status is a code (e.g. 403) or one of 2xx, 4xx, 5xx, refused.")
		return
	}
	q := store.AuditQuery{Type: p.Type, Lease: p.Lease, Subject: p.Subject, Upstream: p.Upstream, StatusMin: lo, StatusMax: hi}
	if c.findAudit(w, r, who, q, &p) {
		c.render(w, r, http.StatusOK, "audit", who, "Audit log", p)
	}
}

func (c *Console) leaks(w http.ResponseWriter, r *http.Request, who Caller) {
	p := auditPage{Base: "/ui/leaks"}
	if c.findAudit(w, r, who, store.AuditQuery{Type: audit.TypeLeak}, &p) {
		c.render(w, r, http.StatusOK, "leaks", who, "Leak reports", p)
	}
}

func (c *Console) refused(w http.ResponseWriter, r *http.Request, who Caller) {
	p := auditPage{Base: "/ui/refused"}
	if c.findAudit(w, r, who, store.AuditQuery{Type: audit.TypeExchange, StatusMin: 400, StatusMax: 599}, &p) {
		c.render(w, r, http.StatusOK, "refused", who, "Refused exchanges", p)
	}
}

// proofData is what static/verify.js checks: nothing in it is trusted by
// the page but the verifier key, which the reader compares with theirs.
type proofData struct {
	Index      int64    `json:"index"`
	Entry      string   `json:"entry"` // base64 of the exact bytes
	Proof      []string `json:"proof"`
	Checkpoint string   `json:"checkpoint"`
	Key        string   `json:"key"`
}

type entryPage struct {
	*audit.Entry
	Raw      string
	Proof    *proofData
	NotYet   bool // not yet covered by a signed checkpoint
	Size     int64
	Leases   []string
	Verifier string
}

func (c *Console) auditEntry(w http.ResponseWriter, r *http.Request, who Caller) {
	ctx, cancel := c.ctx(r)
	defer cancel()
	idx, err := strconv.ParseInt(r.PathValue("index"), 10, 64)
	if err != nil || idx < 0 {
		c.refuse(w, r, who, http.StatusNotFound, "No such entry.")
		return
	}
	data, err := c.cfg.Store.AuditEntry(ctx, idx)
	if errors.Is(err, fs.ErrNotExist) {
		c.refuse(w, r, who, http.StatusNotFound, "No such entry.")
		return
	}
	if err != nil {
		c.fail(w, r, who, err)
		return
	}
	e, err := audit.ParseEntry(data)
	if err != nil {
		c.fail(w, r, who, err)
		return
	}
	p := entryPage{Entry: e, Raw: string(data), Verifier: c.cfg.Audit.VerifierKey()}
	if ids, ok := e.Detail["leases"].([]any); ok {
		for _, id := range ids {
			if s, ok := id.(string); ok {
				p.Leases = append(p.Leases, s)
			}
		}
	}
	cp, err := c.cfg.Audit.Checkpoint(ctx)
	if err != nil {
		c.fail(w, r, who, err)
		return
	}
	size, _, err := audit.ParseCheckpoint(cp, p.Verifier)
	if err != nil {
		c.fail(w, r, who, err)
		return
	}
	p.Size = size
	if idx >= size {
		p.NotYet = true
	} else {
		proof, err := c.cfg.Audit.InclusionProof(ctx, idx, size)
		if err != nil {
			c.fail(w, r, who, err)
			return
		}
		pd := &proofData{Index: idx, Entry: base64.StdEncoding.EncodeToString(data), Checkpoint: string(cp), Key: p.Verifier,
			Proof: make([]string, len(proof))}
		for i, h := range proof {
			pd.Proof[i] = base64.StdEncoding.EncodeToString(h[:])
		}
		p.Proof = pd
	}
	c.render(w, r, http.StatusOK, "entry", who, fmt.Sprintf("Audit entry %d", idx), p)
}

// ---- secrets

type secretRow struct {
	Meta     SecretMeta
	Versions []store.SecretVersionMeta
}

func (c *Console) secrets(w http.ResponseWriter, r *http.Request, who Caller) {
	ctx, cancel := c.ctx(r)
	defer cancel()
	list, err := c.cfg.Secrets.List(ctx)
	if err != nil {
		c.fail(w, r, who, err)
		return
	}
	rows := make([]secretRow, 0, len(list))
	for _, m := range list {
		vs, err := c.cfg.Store.SecretVersions(ctx, m.Name)
		if err != nil {
			c.fail(w, r, who, err)
			return
		}
		rows = append(rows, secretRow{Meta: m, Versions: vs})
	}
	c.render(w, r, http.StatusOK, "secrets", who, "Secrets", rows)
}

// ---- health

type check struct {
	Name, State string
	OK          bool
}

type healthPage struct {
	Ready          bool
	Checks         []check
	LogSize        int64
	CheckpointSize int64
	CheckpointTime time.Time // the time of the newest entry it covers
	Uncovered      int64
	IndexSize      int64
	Live           int
	Node           string
	Nodes          []store.Node
}

func (c *Console) health(w http.ResponseWriter, r *http.Request, who Caller) {
	ctx, cancel := c.ctx(r)
	defer cancel()
	p := healthPage{Ready: true, LogSize: c.cfg.Audit.Size()}
	p.Live, _, _ = c.counts()
	if c.cfg.NodeID != nil {
		p.Node = c.cfg.NodeID()
	}
	add := func(name string, err error) {
		if err != nil {
			p.Ready = false
			p.Checks = append(p.Checks, check{name, "not writable", false})
			return
		}
		p.Checks = append(p.Checks, check{name, "ok", true})
	}
	add("store", c.cfg.Store.Ping(ctx))
	add("audit writes", c.cfg.Audit.Healthy())
	if cp, err := c.cfg.Audit.Checkpoint(ctx); err == nil {
		if size, _, err := audit.ParseCheckpoint(cp, c.cfg.Audit.VerifierKey()); err == nil {
			p.CheckpointSize = size
			p.Uncovered = max(p.LogSize-size, 0)
			if size > 0 {
				if data, err := c.cfg.Store.AuditEntry(ctx, size-1); err == nil {
					if e, err := audit.ParseEntry(data); err == nil {
						p.CheckpointTime = e.Time
					}
				}
			}
		}
	}
	var err error
	if p.IndexSize, err = c.cfg.Store.AuditIndexSize(ctx); err != nil {
		c.fail(w, r, who, err)
		return
	}
	if p.Nodes, err = c.cfg.Store.Nodes(ctx, c.cfg.Now().Add(-10*time.Minute)); err != nil {
		c.fail(w, r, who, err)
		return
	}
	status := http.StatusOK
	c.render(w, r, status, "health", who, "Health", p)
}
