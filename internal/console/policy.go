package console

import (
	"errors"
	"io/fs"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/mayfly-sh/mayfly/internal/authority"
	"github.com/mayfly-sh/mayfly/internal/policy"
	"github.com/mayfly-sh/mayfly/internal/store"
)

// maxPolicy bounds a policy pasted into the plan form, as the API bounds
// one it is sent (1 MiB).
const maxPolicy = 1 << 20

// maxForm bounds a form: a policy URL-encoded at its largest (three bytes
// a byte) and the other fields.
const maxForm = 3*maxPolicy + 64<<10

type policyPage struct {
	Version  int64
	Hash     string
	Source   string
	Versions []versionRow
	A, B     int64
	Diff     []diffLine
	Changed  bool
	// Unauthentic are the compared versions whose MAC does not verify.
	Unauthentic []int64
}

// versionRow is a stored version as listed (no source), with whether its
// MAC verifies: one that does not was planted or edited in the database,
// is never enforced, and is shown marked so (its fields are whatever the
// database says).
type versionRow struct {
	store.PolicyVersion
	Authentic bool
}

func (c *Console) policy(w http.ResponseWriter, r *http.Request, who Caller) {
	ctx, cancel := c.ctx(r)
	defer cancel()
	cur := c.cfg.Authority.Policy()
	p := policyPage{Version: c.cfg.Authority.PolicyVersion(), Hash: cur.Hash, Source: string(cur.Source)}
	err := c.cfg.Store.EachPolicyVersion(ctx, 200, func(pv store.PolicyVersion) error {
		ok := c.cfg.Authority.PolicyAuthentic(pv)
		pv.Source, pv.MAC = nil, nil
		p.Versions = append(p.Versions, versionRow{PolicyVersion: pv, Authentic: ok})
		return nil
	})
	if err != nil {
		c.fail(w, r, who, err)
		return
	}
	as, bs := param(r, "a"), param(r, "b")
	if as != "" || bs != "" {
		a, err1 := strconv.ParseInt(as, 10, 64)
		b, err2 := strconv.ParseInt(bs, 10, 64)
		if err1 != nil || err2 != nil {
			c.refuse(w, r, who, http.StatusBadRequest, "Pick two versions to compare.")
			return
		}
		va, err := c.cfg.Store.PolicyVersionAt(ctx, a)
		if err == nil {
			var vb store.PolicyVersion
			vb, err = c.cfg.Store.PolicyVersionAt(ctx, b)
			if err == nil {
				p.A, p.B = a, b
				for _, pv := range []store.PolicyVersion{va, vb} {
					if !c.cfg.Authority.PolicyAuthentic(pv) && !slices.Contains(p.Unauthentic, pv.Version) {
						p.Unauthentic = append(p.Unauthentic, pv.Version)
					}
				}
				p.Diff = lineDiff(string(va.Source), string(vb.Source))
				p.Changed = changed(p.Diff)
			}
		}
		if errors.Is(err, fs.ErrNotExist) {
			c.refuse(w, r, who, http.StatusNotFound, "No such policy version.")
			return
		}
		if err != nil {
			c.fail(w, r, who, err)
			return
		}
	}
	c.render(w, r, http.StatusOK, "policy", who, "Policy", p)
}

type planPage struct {
	Source   string
	Base     int64 // the version in force when planned
	Invalid  string
	Changes  []string
	Revokes  []authority.GrantRevocation
	Revoking int
	Diff     []diffLine
	Applied  *authority.ApplyResult
}

// plan reads the pasted policy and reports what applying it would do.
func (c *Console) plan(w http.ResponseWriter, r *http.Request) (planPage, []policy.File, bool) {
	// A browser sends a textarea's line breaks as CRLF: read as sent, every
	// line would differ from the stored source's, and the diff would show
	// the whole file replaced, hiding the lines a change does touch.
	src := strings.ReplaceAll(r.FormValue("policy"), "\r\n", "\n")
	p := planPage{Source: src}
	if len(src) > maxPolicy {
		p.Invalid = "the policy is larger than 1 MiB"
		return p, nil, false
	}
	ctx, cancel := c.ctx(r)
	defer cancel()
	// Planned against the latest version, which this node may not have
	// followed yet.
	if err := c.cfg.Authority.SyncPolicy(ctx); err != nil {
		p.Invalid = "the policy in force cannot be read right now; try again"
		return p, nil, false
	}
	p.Base = c.cfg.Authority.PolicyVersion()
	files := []policy.File{{Name: "policy.yaml", Data: []byte(src)}}
	np, err := c.cfg.Authority.ParsePolicy(ctx, files)
	if err != nil {
		p.Invalid = err.Error()
		return p, nil, false
	}
	for _, ch := range policy.Plan(c.cfg.Authority.Policy(), np) {
		p.Changes = append(p.Changes, ch.String())
	}
	if p.Revokes, err = c.cfg.Authority.Revocations(ctx, np); err != nil {
		// Without the counts an apply could revoke tokens unannounced.
		p.Invalid = "the live tokens cannot be counted right now; try again"
		return p, nil, false
	}
	for _, rv := range p.Revokes {
		p.Revoking += rv.Leases
	}
	p.Diff = lineDiff(string(c.cfg.Authority.Policy().Source), src)
	return p, files, true
}

func (c *Console) policyPlan(w http.ResponseWriter, r *http.Request, who Caller) {
	p, _, ok := c.plan(w, r)
	status := http.StatusOK
	if !ok {
		status = http.StatusBadRequest
	}
	c.render(w, r, status, "plan", who, "Policy plan", p)
}

// policyApply applies a planned policy: only if the version in force is
// still the one it was planned against, and, when it revokes live tokens,
// only if the form confirms that.
func (c *Console) policyApply(w http.ResponseWriter, r *http.Request, who Caller) {
	p, files, ok := c.plan(w, r)
	if !ok {
		c.render(w, r, http.StatusBadRequest, "plan", who, "Policy plan", p)
		return
	}
	base, err := strconv.ParseInt(r.FormValue("base"), 10, 64)
	if err != nil || base != p.Base {
		c.refuse(w, r, who, http.StatusConflict, "The policy in force changed since this plan was made: plan again.")
		return
	}
	allow := r.FormValue("allow_revoke") == "yes"
	if p.Revoking > 0 && !allow {
		c.refuse(w, r, who, http.StatusConflict, "Nothing applied: this policy revokes "+strconv.Itoa(p.Revoking)+" live token(s); confirm that on the plan page.")
		return
	}
	ctx, cancel := c.ctx(r)
	defer cancel()
	// Checked again with the apply: another may have come in since, and
	// a token of a removed grant may have been issued since it was counted.
	res, err := c.cfg.Authority.ApplyPolicyConfirmed(ctx, files, who.Name, base, allow)
	if nc := (*authority.RevocationNotConfirmed)(nil); errors.As(err, &nc) {
		n := 0
		for _, rv := range nc.Revokes {
			n += rv.Leases
		}
		c.refuse(w, r, who, http.StatusConflict, "Nothing applied: this policy revokes "+strconv.Itoa(n)+" live token(s) issued since the plan; plan again and confirm that.")
		return
	}
	if err != nil {
		c.fail(w, r, who, err)
		return
	}
	p.Applied = res
	c.render(w, r, http.StatusOK, "plan", who, "Policy applied", p)
}
