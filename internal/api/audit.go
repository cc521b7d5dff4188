package api

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/mayfly-sh/mayfly/internal/audit"
	"github.com/mayfly-sh/mayfly/internal/auditlog"
)

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func (a *API) auditCheckpoint(w http.ResponseWriter, r *http.Request, c caller) {
	cp, err := a.cfg.Audit.Checkpoint(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write(cp)
}

func (a *API) auditKey(w http.ResponseWriter, r *http.Request, c caller) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte(a.cfg.Audit.VerifierKey() + "\n"))
}

func (a *API) auditEntries(w http.ResponseWriter, r *http.Request, c caller) {
	start, ok1 := queryInt(r, "start", 0)
	limit, ok2 := queryInt(r, "limit", 1000)
	if !ok1 || !ok2 || limit == 0 {
		writeError(w, 400, "invalid_request", "start and limit must be non-negative integers, limit > 0")
		return
	}
	limit = min(limit, auditlog.MaxPageSize)
	es, err := a.cfg.Audit.Entries(r.Context(), start, int(limit))
	if err != nil {
		a.auditErr(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	for _, e := range es {
		w.Write(e)
		w.Write([]byte{'\n'})
	}
}

func (a *API) auditErr(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, audit.ErrRange) {
		writeError(w, 400, "invalid_request", "index or size out of range")
		return
	}
	a.fail(w, r, err)
}

func (a *API) auditInclusion(w http.ResponseWriter, r *http.Request, c caller) {
	index, ok1 := queryInt(r, "index", -1)
	size, ok2 := queryInt(r, "size", a.cfg.Audit.Size())
	if !ok1 || !ok2 || r.URL.Query().Get("index") == "" {
		writeError(w, 400, "invalid_request", "index (and size) must be non-negative integers")
		return
	}
	p, err := a.cfg.Audit.InclusionProof(r.Context(), index, size)
	if err != nil {
		a.auditErr(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(audit.MarshalProof(p))
}

func (a *API) auditConsistency(w http.ResponseWriter, r *http.Request, c caller) {
	old, ok1 := queryInt(r, "old", -1)
	nw, ok2 := queryInt(r, "new", a.cfg.Audit.Size())
	if !ok1 || !ok2 || r.URL.Query().Get("old") == "" {
		writeError(w, 400, "invalid_request", "old (and new) must be non-negative integers")
		return
	}
	p, err := a.cfg.Audit.ConsistencyProof(r.Context(), old, nw)
	if err != nil {
		a.auditErr(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(audit.MarshalProof(p))
}
