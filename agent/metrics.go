package agent

import (
	"errors"
	"fmt"
	"time"

	"github.com/oneinfra/oneinfra/internal/observe"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// agentMetrics are the agent's Prometheus metrics.
type agentMetrics struct {
	registry     *prometheus.Registry
	syncs        prometheus.Counter
	syncSeconds  prometheus.Histogram
	watchErrors  prometheus.Counter
	reports      *prometheus.CounterVec
	components   *prometheus.GaugeVec
	lastSyncUnix prometheus.Gauge
}

func newAgentMetrics() *agentMetrics {
	m := &agentMetrics{
		registry: prometheus.NewRegistry(),
		syncs:    prometheus.NewCounter(prometheus.CounterOpts{Name: "oneinfra_agent_syncs_total", Help: "Reconciles of the host against the assignments."}),
		syncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "oneinfra_agent_sync_seconds", Help: "Time one reconcile took.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
		watchErrors:  prometheus.NewCounter(prometheus.CounterOpts{Name: "oneinfra_agent_watch_errors_total", Help: "Failed watches of the assignments."}),
		reports:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "oneinfra_agent_reports_total", Help: "Status reports sent, by result."}, []string{"result"}),
		components:   prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "oneinfra_agent_components", Help: "Components on this host by role and state."}, []string{"role", "state"}),
		lastSyncUnix: prometheus.NewGauge(prometheus.GaugeOpts{Name: "oneinfra_agent_last_sync_timestamp_seconds", Help: "When the last reconcile ended."}),
	}
	m.registry.MustRegister(m.syncs, m.syncSeconds, m.watchErrors, m.reports, m.components, m.lastSyncUnix,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ServeMetrics serves /metrics, /healthz and /readyz on --metrics-addr.
// Ready means a reconcile ended within three resync periods.
func (a *Agent) ServeMetrics() error {
	if a.cfg.MetricsAddr == "" {
		return nil
	}
	ready := func() error {
		if err := a.identityErr.Load(); err != nil {
			return *err
		}
		if last := a.lastSync.Load(); last == nil || time.Since(*last) > 3*a.cfg.Resync {
			return errors.New("no recent reconcile")
		}
		return nil
	}
	if _, err := observe.Serve(a.cfg.MetricsAddr, promhttp.HandlerFor(a.metrics.registry, promhttp.HandlerOpts{}), ready, a.logger); err != nil {
		return fmt.Errorf("--metrics-addr: %w", err)
	}
	return nil
}
