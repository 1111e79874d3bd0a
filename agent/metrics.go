package agent

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

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
	ln, err := net.Listen("tcp", a.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("--metrics-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.metrics.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		last := a.lastSync.Load()
		if last == nil || time.Since(*last) > 3*a.cfg.Resync {
			http.Error(w, "no recent reconcile", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.logger.Error("metrics server stopped", "err", err)
		}
	}()
	return nil
}
