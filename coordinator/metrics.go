package coordinator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	"github.com/oneinfra/oneinfra/internal/observe"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// metrics are one server's Prometheus metrics, in a registry of its own so
// that several servers can live in one process (tests).
type metrics struct {
	registry     *prometheus.Registry
	applyLatency prometheus.Histogram
	forwarded    prometheus.Counter
	watchers     prometheus.Gauge
	// watchWakes counts the times a blocked watch woke to recompute its
	// hypervisor's assignments: each costs CPU, answered or not.
	watchWakes prometheus.Counter
	requests   *prometheus.CounterVec
	// healthTransitions counts the health changes this server committed
	// as leader.
	healthTransitions *prometheus.CounterVec
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		applyLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "oneinfra_coordinator_raft_apply_seconds", Help: "Time from a write's Raft apply to its commit on this leader.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "oneinfra_coordinator_forwarded_writes_total", Help: "Writes this server forwarded to the leader.",
		}),
		watchers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "oneinfra_coordinator_assignment_watchers", Help: "Agents blocked in WatchAssignments on this server.",
		}),
		watchWakes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "oneinfra_coordinator_assignment_watch_wakes_total", Help: "Times a blocked WatchAssignments woke to recompute its hypervisor's assignments.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "oneinfra_coordinator_grpc_requests_total", Help: "gRPC calls served, by method and status code.",
		}, []string{"method", "code"}),
		healthTransitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "oneinfra_coordinator_hypervisor_health_transitions_total", Help: "Hypervisor health changes this server committed as leader, by old and new health.",
		}, []string{"from", "to"}),
	}
	m.registry.MustRegister(m.applyLatency, m.forwarded, m.watchers, m.watchWakes, m.requests, m.healthTransitions,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&stateCollector{s: s})
	return m
}

func (m *metrics) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	m.requests.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
	return resp, err
}

var (
	descRaftState = prometheus.NewDesc("oneinfra_coordinator_raft_state",
		"1 for this server's current Raft state.", []string{"state"}, nil)
	descRaftIndex = prometheus.NewDesc("oneinfra_coordinator_raft_index",
		"Raft indexes of this server.", []string{"kind"}, nil)
	descLastContact = prometheus.NewDesc("oneinfra_coordinator_raft_last_contact_seconds",
		"Time since this follower last heard from the leader.", nil, nil)
	descClusters = prometheus.NewDesc("oneinfra_coordinator_clusters",
		"Clusters by phase.", []string{"phase"}, nil)
	descHypervisors = prometheus.NewDesc("oneinfra_coordinator_hypervisors",
		"Hypervisors by health and visibility.", []string{"health", "public"}, nil)
	descComponents = prometheus.NewDesc("oneinfra_coordinator_components",
		"Components by role and reported state.", []string{"role", "state"}, nil)
	descCertExpiry = prometheus.NewDesc("oneinfra_certificate_expiry_timestamp_seconds",
		"When each certificate the coordinator tracks expires, in Unix seconds, by holder and certificate.", []string{"owner", "certificate"}, nil)
)

// stateCollector reads Raft and the state store at scrape time.
type stateCollector struct{ s *Server }

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRaftState, descRaftIndex, descLastContact, descClusters, descHypervisors, descComponents, descCertExpiry} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	current := s.raft.State()
	for _, st := range []raft.RaftState{raft.Follower, raft.Candidate, raft.Leader, raft.Shutdown} {
		v := 0.0
		if st == current {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descRaftState, prometheus.GaugeValue, v, st.String())
	}
	ch <- prometheus.MustNewConstMetric(descRaftIndex, prometheus.GaugeValue, float64(s.raft.LastIndex()), "last")
	ch <- prometheus.MustNewConstMetric(descRaftIndex, prometheus.GaugeValue, float64(s.raft.AppliedIndex()), "applied")
	if current != raft.Leader {
		ch <- prometheus.MustNewConstMetric(descLastContact, prometheus.GaugeValue, time.Since(s.raft.LastContact()).Seconds())
	}
	store := s.State()
	phases := map[string]float64{}
	for _, cl := range store.Clusters(nil) {
		phases[cl.GetStatus().GetPhase()]++
	}
	for phase, n := range phases {
		ch <- prometheus.MustNewConstMetric(descClusters, prometheus.GaugeValue, n, phase)
	}
	type hvKey struct{ health, public string }
	hvs := map[hvKey]float64{}
	for _, h := range store.Hypervisors(nil) {
		hvs[hvKey{h.GetStatus().GetHealth(), fmt.Sprint(h.GetSpec().GetPublic())}]++
	}
	for k, n := range hvs {
		ch <- prometheus.MustNewConstMetric(descHypervisors, prometheus.GaugeValue, n, k.health, k.public)
	}
	type compKey struct{ role, state string }
	comps := map[compKey]float64{}
	for _, comp := range store.Components(nil) {
		comps[compKey{comp.GetSpec().GetRole(), comp.GetStatus().GetState()}]++
	}
	for k, n := range comps {
		ch <- prometheus.MustNewConstMetric(descComponents, prometheus.GaugeValue, n, k.role, k.state)
	}
	for _, c := range trackedCerts(store) {
		ch <- prometheus.MustNewConstMetric(descCertExpiry, prometheus.GaugeValue, float64(c.notAfter.Unix()), c.owner, c.name)
	}
}

// serveMetrics serves /metrics, /healthz and /readyz on --metrics-addr.
func (s *Server) serveMetrics() error {
	if s.cfg.MetricsAddr == "" {
		return nil
	}
	srv, err := observe.Serve(s.cfg.MetricsAddr, promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{}), s.ready, s.logger)
	if err != nil {
		return fmt.Errorf("--metrics-addr: %w", err)
	}
	s.http = srv
	return nil
}

// ready says whether this server can answer requests: it knows a leader
// and holds the bootstrapped state.
func (s *Server) ready() error {
	if _, id := s.raft.LeaderWithID(); id == "" {
		return errors.New("no raft leader known")
	}
	if s.State().Config(nil) == nil {
		return errors.New("state not bootstrapped yet")
	}
	return nil
}
