package coordinator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/coordinator/health"
	"github.com/oneinfra/oneinfra/coordinator/state"
	"github.com/oneinfra/oneinfra/internal/gossip"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/testutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// healthServer bootstraps a server with short health thresholds and a
// gossip observer on loopback.
func healthServer(t *testing.T) (*Server, pb.OperatorClient) {
	t.Helper()
	cfg := testConfig(t, "s1", t.TempDir())
	cfg.Bootstrap = true
	cfg.Health = health.Rules{SuspectAfter: 2 * time.Second, DeadAfter: 4 * time.Second, GossipDeadAfter: time.Second}
	cfg.GossipAddr, cfg.GossipLocal = "127.0.0.1:0", true
	s := startServer(t, cfg)
	testutil.Eventually(t, 20*time.Second, "bootstrap", func() error { return s.ready() })
	return s, pb.NewOperatorClient(adminConn(t, cfg.DataDir, s.APIAddr()))
}

func hypervisorOf(s *Server, name string) *pb.Hypervisor { return s.State().Hypervisor(nil, name) }

func expectHealth(s *Server, name, want string) error {
	h := hypervisorOf(s, name)
	if got := h.GetStatus().GetHealth(); got != want {
		cond := resources.FindCondition(h.GetStatus().GetConditions(), health.ConditionHealthy)
		return fmt.Errorf("%s is %s (%v), want %s", name, got, cond, want)
	}
	return nil
}

// reporter reports for a hypervisor every period until stopped.
func reporter(t *testing.T, agent pb.AgentClient, name string, period time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if _, err := agent.ReportStatus(ctx, &pb.ReportStatusRequest{Hypervisor: name, Time: timestamppb.Now()}); err != nil && ctx.Err() == nil {
				t.Logf("%s reporting: %v", name, err)
			}
			sleep(ctx, period)
		}
	}()
	return func() { cancel(); wg.Wait() }
}

func TestHypervisorHealthFromReports(t *testing.T) {
	ctx := context.Background()
	s, op := healthServer(t)
	hvA := registerHypervisor(t, s, op, "hv-a", false)
	pub := registerHypervisor(t, s, op, "pub", true)
	stopPub := reporter(t, pub, "pub", 300*time.Millisecond)
	defer stopPub()

	// The key agents registered before gossip existed fetch.
	gc, err := hvA.GetGossipConfig(ctx, &pb.GetGossipConfigRequest{Hypervisor: "hv-a"})
	if err != nil || len(gc.Key) != gossip.KeySize {
		t.Fatalf("gossip config: %v, %d-byte key", err, len(gc.GetKey()))
	}
	if _, err := hvA.GetGossipConfig(ctx, &pb.GetGossipConfigRequest{Hypervisor: "pub"}); err == nil {
		t.Error("hv-a got pub's gossip configuration")
	}

	if err := createCluster(ctx, op, "demo"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "placed", func() error {
		d, err := op.Describe(ctx, &pb.DescribeRequest{Name: "demo"})
		if err != nil {
			return err
		}
		if len(d.Components) != 2 {
			return fmt.Errorf("%d components", len(d.Components))
		}
		return nil
	})
	if err := expectHealth(s, "hv-a", resources.HealthAlive); err != nil {
		t.Fatal(err)
	}

	// hv-a never reports after registering: suspect after ~2 s, dead
	// after ~4 s; pub, which reports, stays alive all along.
	start := time.Now()
	var suspectAt, deadAt time.Time
	testutil.Eventually(t, 15*time.Second, "hv-a dead", func() error {
		if err := expectHealth(s, "pub", resources.HealthAlive); err != nil {
			t.Fatal(err)
		}
		switch hypervisorOf(s, "hv-a").GetStatus().GetHealth() {
		case resources.HealthSuspect:
			if suspectAt.IsZero() {
				suspectAt = time.Now()
			}
		case resources.HealthDead:
			deadAt = time.Now()
			return nil
		}
		return fmt.Errorf("hv-a is %s", hypervisorOf(s, "hv-a").GetStatus().GetHealth())
	})
	if suspectAt.IsZero() {
		t.Error("hv-a went dead without being suspect first")
	}
	t.Logf("suspect after %v, dead after %v", suspectAt.Sub(start), deadAt.Sub(start))
	h := hypervisorOf(s, "hv-a")
	cond := resources.FindCondition(h.Status.Conditions, health.ConditionHealthy)
	if cond == nil || cond.Status != "False" || cond.Reason != health.ReasonNotReporting ||
		!strings.Contains(cond.Message, "last report") || cond.LastTransitionTime == nil {
		t.Errorf("Healthy condition of a dead hypervisor: %v", cond)
	}
	deadSince := cond.GetLastTransitionTime().AsTime()
	d, err := op.Describe(ctx, &pb.DescribeRequest{Name: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	if !hasEvent(d.Events, "HypervisorDead", "hypervisor hv-a is dead: ") || !hasEvent(d.Events, "HypervisorSuspect", "hypervisor hv-a is suspect: ") {
		t.Errorf("cluster events lack hv-a's transitions: %v", d.Events)
	}
	if hasEvent(d.Events, "HypervisorDead", "hypervisor pub") {
		t.Errorf("pub reported dead: %v", d.Events)
	}
	get, err := op.Get(ctx, &pb.GetRequest{Kind: "hypervisors"})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range get.Hypervisors {
		want := map[string]string{"hv-a": resources.HealthDead, "pub": resources.HealthAlive}[h.Metadata.Name]
		if h.Status.Health != want {
			t.Errorf("get hypervisors: %s is %s, want %s", h.Metadata.Name, h.Status.Health, want)
		}
	}

	// Dead stays dead while the silence lasts...
	time.Sleep(time.Second)
	if err := expectHealth(s, "hv-a", resources.HealthDead); err != nil {
		t.Fatal(err)
	}
	// ...and one report brings it back.
	if _, err := hvA.ReportStatus(ctx, &pb.ReportStatusRequest{Hypervisor: "hv-a", Time: timestamppb.Now()}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "hv-a alive", func() error { return expectHealth(s, "hv-a", resources.HealthAlive) })
	cond = resources.FindCondition(hypervisorOf(s, "hv-a").Status.Conditions, health.ConditionHealthy)
	if cond.Status != "True" || cond.Reason != health.ReasonReporting || !cond.LastTransitionTime.AsTime().After(deadSince) {
		t.Errorf("Healthy condition after a report: %v", cond)
	}
	d, err = op.Describe(ctx, &pb.DescribeRequest{Name: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	if !hasEvent(d.Events, "HypervisorAlive", "hypervisor hv-a is alive: ") {
		t.Errorf("no event of hv-a's return: %v", d.Events)
	}
}

// Gossip is advice: a member that gossip finds dead while its agent still
// reports is suspect, never dead.
func TestHypervisorHealthGossipAdvice(t *testing.T) {
	ctx := context.Background()
	s, op := healthServer(t)
	agent := registerHypervisor(t, s, op, "hv-g", false)
	stop := reporter(t, agent, "hv-g", 300*time.Millisecond)
	defer stop()
	testutil.Eventually(t, 10*time.Second, "server gossip", func() error {
		if s.GossipAddr() == "" {
			return fmt.Errorf("no gossip yet")
		}
		return nil
	})
	gc, err := agent.GetGossipConfig(ctx, &pb.GetGossipConfigRequest{Hypervisor: "hv-g"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := gossip.Start(gossip.Config{
		Name: gossip.HypervisorMember("hv-g"), Addr: "127.0.0.1:0", Join: []string{s.GossipAddr()},
		Key: gc.Key, Local: true, RejoinInterval: 200 * time.Millisecond, Logger: s.logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Kill()
	testutil.Eventually(t, 10*time.Second, "the server sees hv-g", func() error {
		if o, ok := s.gossip.Load().Observe(gossip.HypervisorMember("hv-g")); !ok || o.State != gossip.Alive {
			return fmt.Errorf("hv-g: %+v", o)
		}
		return nil
	})
	_ = m.Kill() // the gossip dies; the reports go on
	testutil.Eventually(t, 20*time.Second, "hv-g suspect", func() error { return expectHealth(s, "hv-g", resources.HealthSuspect) })
	cond := resources.FindCondition(hypervisorOf(s, "hv-g").Status.Conditions, health.ConditionHealthy)
	if cond.Reason != health.ReasonGossipDead || !strings.Contains(cond.Message, "gossip reports it dead since") {
		t.Errorf("condition %v", cond)
	}
	// Well past DeadAfter, it is still only suspect.
	time.Sleep(5 * time.Second)
	if err := expectHealth(s, "hv-g", resources.HealthSuspect); err != nil {
		t.Fatal(err)
	}
}

func hasEvent(events []*pb.Event, reason, msg string) bool {
	for _, e := range events {
		if e.Reason == reason && strings.Contains(e.Message, msg) {
			return true
		}
	}
	return false
}

func TestFSMSetHealthAndGossipKey(t *testing.T) {
	a := newTestFSM(t)
	populate(a)
	st := a.fsm.State()
	seen := timestamppb.New(testNow)
	a.mustApply(ReportStatusType, &pb.ReportStatusCommand{Hypervisor: "hv-1", Time: seen})
	dead := &pb.SetHealthCommand{Hypervisor: "hv-1", Health: resources.HealthDead, LastSeen: seen,
		Condition: &pb.Condition{Type: health.ConditionHealthy, Status: "False", Reason: health.ReasonNotReporting, LastTransitionTime: timestamppb.New(testNow.Add(3 * time.Minute))},
		Events:    []*pb.Event{{Cluster: "demo", Type: "Warning", Reason: "HypervisorDead", Message: "hypervisor hv-1 is dead: x"}}}

	// A report committed after the decision makes it stale.
	a.mustApply(ReportStatusType, &pb.ReportStatusCommand{Hypervisor: "hv-1", Time: timestamppb.New(testNow.Add(time.Minute))})
	if err := a.apply(SetHealthType, dead); !errors.Is(err, ErrStaleHealth) {
		t.Fatalf("a stale decision: %v", err)
	}
	if h := st.Hypervisor(nil, "hv-1"); h.Status.Health != resources.HealthAlive {
		t.Fatalf("stale decision applied: %v", h.Status)
	}
	dead.LastSeen = timestamppb.New(testNow.Add(time.Minute))
	a.mustApply(SetHealthType, dead)
	h := a.fsm.State().Hypervisor(nil, "hv-1")
	cond := resources.FindCondition(h.Status.Conditions, health.ConditionHealthy)
	if h.Status.Health != resources.HealthDead || cond == nil || cond.Status != "False" || !cond.LastTransitionTime.AsTime().Equal(testNow.Add(3*time.Minute)) {
		t.Errorf("after SetHealth: %v", h.Status)
	}
	if !hasEvent(a.fsm.State().Events(nil, "demo"), "HypervisorDead", "hv-1 is dead") {
		t.Error("no event")
	}
	if err := a.apply(SetHealthType, &pb.SetHealthCommand{Hypervisor: "nope", Health: resources.HealthDead}); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("unknown hypervisor: %v", err)
	}

	// The gossip key is set once.
	a.mustApply(SetGossipKeyType, &pb.SetGossipKeyCommand{Key: []byte("first")})
	a.mustApply(SetGossipKeyType, &pb.SetGossipKeyCommand{Key: []byte("second")})
	if k := a.fsm.State().Config(nil).GetGossipKey(); string(k) != "first" {
		t.Errorf("gossip key %q", k)
	}
}
