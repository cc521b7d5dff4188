package auditlog

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	appends         prometheus.Counter
	appendErrors    prometheus.Counter
	conflicts       prometheus.Counter
	batchSize       prometheus.Histogram
	commitSecs      prometheus.Histogram
	seqSecs         prometheus.Histogram
	size            prometheus.Gauge
	checkpoints     prometheus.Counter
	cpErrors        prometheus.Counter
	treeErrors      prometheus.Counter
	pendingRejected prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		appends: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mayfly_audit_appends_total", Help: "Audit entries made durable."}),
		appendErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mayfly_audit_append_errors_total", Help: "Audit entries that could not be made durable."}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mayfly_audit_conflicts_total", Help: "Group commits retried because another writer appended first."}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "mayfly_audit_batch_size", Help: "Entries per group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11)}),
		commitSecs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "mayfly_audit_commit_seconds", Help: "Latency of one group commit.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		seqSecs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "mayfly_audit_sequence_seconds", Help: "Latency of one sequencing batch (shared store: this node is the sequencer).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		size: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mayfly_audit_log_entries", Help: "Entries in the audit log (its Merkle tree size) as this node last saw it."}),
		checkpoints: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mayfly_audit_checkpoints_total", Help: "Signed checkpoints published."}),
		cpErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mayfly_audit_checkpoint_errors_total", Help: "Checkpoints that could not be published."}),
		treeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mayfly_audit_tree_mismatches_total", Help: "Loads of the stored tree refused because it does not extend the latest signed checkpoint (history rewritten in the database)."}),
		pendingRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mayfly_audit_pending_rejected_total", Help: "Pending audit records refused (no valid MAC of a node of this cluster, or malformed): each is an audit.pending.rejected entry, never an entry of its own."}),
	}
	if reg != nil {
		m.appends = register(reg, m.appends)
		m.appendErrors = register(reg, m.appendErrors)
		m.conflicts = register(reg, m.conflicts)
		m.batchSize = register(reg, m.batchSize)
		m.commitSecs = register(reg, m.commitSecs)
		m.seqSecs = register(reg, m.seqSecs)
		m.size = register(reg, m.size)
		m.checkpoints = register(reg, m.checkpoints)
		m.cpErrors = register(reg, m.cpErrors)
		m.treeErrors = register(reg, m.treeErrors)
		m.pendingRejected = register(reg, m.pendingRejected)
	}
	return m
}

// register registers c, or returns the collector already registered under
// the same description (so two logs may share a registry).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if old, ok := are.ExistingCollector.(C); ok {
				return old
			}
		}
	}
	return c
}
