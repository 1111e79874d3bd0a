package coordinator

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	memdb "github.com/hashicorp/go-memdb"
	"github.com/oneinfra/oneinfra/coordinator/health"
	"github.com/oneinfra/oneinfra/coordinator/state"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/testutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// fakeAgent stands for a hypervisor's agent: it reads its assignments and
// reports them Running with their certificates (Pending while held; an
// ingress with every assigned API server up), and removed once deleting (a control-plane replica once
// the ingress has released it). It fails the test when an assignment's
// etcd view calls gone a replica that still exists.
type fakeAgent struct {
	t        *testing.T
	s        *Server
	name     string
	held     atomic.Bool // report components Pending
	stopped  atomic.Bool // silent: the hypervisor is gone
	withhold atomic.Bool // give no keys for the next certificates
}

func runFakeAgent(t *testing.T, s *Server, agent pb.AgentClient, name string, held bool) *fakeAgent {
	f := &fakeAgent{t: t, s: s, name: name}
	f.held.Store(held)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if !f.stopped.Load() {
				if err := f.report(ctx, agent); err != nil && ctx.Err() == nil {
					t.Logf("%s: %v", name, err)
				}
			}
			sleep(ctx, 200*time.Millisecond)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return f
}

func (f *fakeAgent) report(ctx context.Context, agent pb.AgentClient) error {
	resp, err := agent.GetAssignments(ctx, &pb.GetAssignmentsRequest{Hypervisor: f.name})
	if err != nil {
		return err
	}
	req := &pb.ReportStatusRequest{Hypervisor: f.name, Time: timestamppb.Now()}
	for _, as := range resp.Assignments {
		if err := checkEtcdView(f.s.State(), as); err != nil {
			f.t.Errorf("%s: %v", f.name, err)
		}
		name := as.Component.Metadata.Name
		if !f.withhold.Load() {
			if err := giveKeys(ctx, f.t, agent, f.name, as); err != nil {
				return err
			}
		}
		switch {
		case !as.Deleting && !certsIssued(as):
			req.Components = append(req.Components, &pb.ComponentReport{Component: name, Status: &pb.ComponentStatus{State: vocab.StatePending, Message: "waiting for certificates"}})
		case as.Deleting && as.Component.Spec.Role == resources.RoleControlPlane && len(as.ApiServers) > 0 && !as.IngressReleased:
			req.Components = append(req.Components, &pb.ComponentReport{Component: name, Status: &pb.ComponentStatus{State: "Removing", Message: "waiting for the ingress"}})
		case as.Deleting:
			req.Removed = append(req.Removed, name)
		case f.held.Load():
			req.Components = append(req.Components, &pb.ComponentReport{Component: name, Status: &pb.ComponentStatus{State: vocab.StatePending, Message: "held"}})
		default:
			st := &pb.ComponentStatus{State: vocab.StateRunning, CertGeneration: as.CertGeneration, TrustGeneration: as.TrustGeneration}
			if as.Component.Spec.Role == resources.RoleIngress {
				st.Conditions = []*pb.Condition{{Type: vocab.CondAPIReachable, Status: "True", Message: "the API answers"}}
				for _, api := range as.ApiServers {
					st.Backends = append(st.Backends, api.Name)
				}
			}
			req.Components = append(req.Components, &pb.ComponentReport{Component: name, Status: st})
		}
	}
	_, err = agent.ReportStatus(ctx, req)
	return err
}

// checkEtcdView checks, after the fact, the etcd view of a control-plane
// assignment: every replica it calls gone (placed before the view, not
// among its members) is gone or being removed in st, which is at least as
// new as the view. A replica that exists is never gone.
func checkEtcdView(st *state.Store, as *pb.Assignment) error {
	if as.Component.Spec.Role != resources.RoleControlPlane {
		return nil
	}
	cluster := as.Component.Spec.Cluster
	for i := range int(as.ReplicaFloor) {
		name := resources.ComponentName(cluster, resources.RoleControlPlane, i)
		if slices.ContainsFunc(as.EtcdMembers, func(e *pb.Endpoint) bool { return e.Name == name }) {
			continue
		}
		if c := st.Component(nil, name); c != nil && c.Metadata.DeletionTimestamp == nil {
			return fmt.Errorf("the etcd view of %s calls %s gone, but it exists (on %s)", as.Component.Metadata.Name, name, c.Spec.Hypervisor)
		}
	}
	if as.ReplicaFloor == 0 {
		return fmt.Errorf("the etcd view of %s has no replica floor", as.Component.Metadata.Name)
	}
	return nil
}

// componentsOf lists a cluster's components by role: live ones by
// hypervisor, and the names of those being deleted.
func componentsOf(s *Server, cluster, role string) (live map[string]*pb.Component, deleting []*pb.Component) {
	live = map[string]*pb.Component{}
	for _, c := range s.State().ComponentsOfCluster(nil, cluster) {
		if c.Spec.Role != role {
			continue
		}
		if c.Metadata.DeletionTimestamp != nil {
			deleting = append(deleting, c)
		} else {
			live[c.Spec.Hypervisor] = c
		}
	}
	return live, deleting
}

func hostsOf(m map[string]*pb.Component) []string {
	var out []string
	for h := range m {
		out = append(out, h)
	}
	slices.Sort(out)
	return out
}

// A dead hypervisor's control-plane replica and ingress are placed
// elsewhere, and the old ones forgotten once their replacements run.
func TestRescheduleOffDeadHypervisors(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t, "s1", t.TempDir())
	cfg.Bootstrap = true
	cfg.Health = health.Rules{SuspectAfter: time.Second, DeadAfter: 2 * time.Second, GossipDeadAfter: time.Second}
	s := startServer(t, cfg)
	testutil.Eventually(t, 20*time.Second, "bootstrap", func() error { return s.ready() })
	op := pb.NewOperatorClient(adminConn(t, cfg.DataDir, s.APIAddr()))

	private := func(i int) *pb.HypervisorSpec {
		return &pb.HypervisorSpec{Address: fmt.Sprintf("10.0.0.%d", i), PortRange: "30000-30099"}
	}
	public := func(i int) *pb.HypervisorSpec {
		return &pb.HypervisorSpec{Address: fmt.Sprintf("10.0.1.%d", i), PortRange: "30000-30099", Public: true, PublicAddress: fmt.Sprintf("203.0.113.%d", i)}
	}
	agents := map[string]*fakeAgent{}
	add := func(name string, spec *pb.HypervisorSpec, held bool) {
		agents[name] = runFakeAgent(t, s, registerHypervisorSpec(t, s, op, name, spec), name, held)
	}
	add("hv-a", private(1), false)
	add("hv-b", private(2), false)
	add("hv-c", private(3), false)
	add("pub-1", public(1), false)

	three := int32(3)
	_, err := op.Apply(ctx, &pb.ApplyRequest{Resources: []*pb.Resource{{Source: "test", Kind: &pb.Resource_Cluster{Cluster: &pb.Cluster{
		Metadata: &pb.ObjectMeta{Name: "demo"}, Spec: &pb.ClusterSpec{ControlPlane: &pb.ControlPlaneSpec{Replicas: &three}},
	}}}}})
	if err != nil {
		t.Fatal(err)
	}
	allRunning := func() error {
		for _, c := range s.State().ComponentsOfCluster(nil, "demo") {
			if c.Metadata.DeletionTimestamp != nil || c.GetStatus().GetState() != vocab.StateRunning {
				return fmt.Errorf("%s on %s: %v deleting=%v", c.Metadata.Name, c.Spec.Hypervisor, c.GetStatus().GetState(), c.Metadata.DeletionTimestamp != nil)
			}
		}
		return nil
	}
	testutil.Eventually(t, 15*time.Second, "placed and running", func() error {
		cp, _ := componentsOf(s, "demo", resources.RoleControlPlane)
		ing, _ := componentsOf(s, "demo", resources.RoleIngress)
		if got := hostsOf(cp); !slices.Equal(got, []string{"hv-a", "hv-b", "hv-c"}) {
			return fmt.Errorf("control plane on %v", got)
		}
		if got := hostsOf(ing); !slices.Equal(got, []string{"pub-1"}) {
			return fmt.Errorf("ingress on %v", got)
		}
		if c := s.State().Cluster(nil, "demo"); c.Status.Phase != resources.PhaseReady {
			return fmt.Errorf("phase %s", c.Status.Phase)
		}
		return allRunning()
	})
	// Placed together, the three start etcd together: each lists all
	// three as its initial cluster, by their hosts' addresses.
	first, _ := componentsOf(s, "demo", resources.RoleControlPlane)
	var initial []string
	for i, hv := range []string{"hv-a", "hv-b", "hv-c"} {
		c := first[hv]
		initial = append(initial, fmt.Sprintf("%s=%s:%d", c.Metadata.Name, private(i+1).Address, c.Spec.Ports[vocab.PortEtcdPeer]))
	}
	slices.Sort(initial)
	for hv, c := range first {
		var got []string
		for _, e := range c.Spec.EtcdInitialCluster {
			got = append(got, fmt.Sprintf("%s=%s:%d", e.Name, e.Address, e.Port))
		}
		slices.Sort(got)
		if !slices.Equal(got, initial) {
			t.Errorf("the initial etcd cluster of the replica on %s: %v, want %v", hv, got, initial)
		}
	}
	// The spares come now, so the first placement could not use them. The
	// private spare holds its components Pending until released.
	add("hv-d", private(4), true)
	add("pub-2", public(2), false)
	cp, _ := componentsOf(s, "demo", resources.RoleControlPlane)
	old := cp["hv-b"]

	// hv-b goes silent: dead, then its replica is replaced on hv-d.
	began := time.Now()
	agents["hv-b"].stopped.Store(true)
	testutil.Eventually(t, 15*time.Second, "hv-b dead", func() error { return expectHealth(s, "hv-b", resources.HealthDead) })
	deadAt := time.Now()
	var repl *pb.Component
	testutil.Eventually(t, 10*time.Second, "replacement on hv-d", func() error {
		live, deleting := componentsOf(s, "demo", resources.RoleControlPlane)
		if repl = live["hv-d"]; repl == nil || len(deleting) != 1 || deleting[0].Metadata.Name != old.Metadata.Name {
			return fmt.Errorf("live on %v, %d deleting", hostsOf(live), len(deleting))
		}
		return nil
	})
	t.Logf("hv-b dead %v after it went silent; replacement placed %v later", deadAt.Sub(began), time.Since(deadAt))
	if got := repl.Spec.EtcdInitialCluster; len(got) != 0 {
		t.Errorf("the replacement has an initial etcd cluster %v: it must join as a learner", got)
	}
	// While the replacement is not Running the old one is kept (its ports
	// too), and no second replacement starts.
	time.Sleep(time.Second)
	live, deleting := componentsOf(s, "demo", resources.RoleControlPlane)
	if len(deleting) != 1 || len(live) != 3 || s.State().Component(nil, old.Metadata.Name) == nil {
		t.Fatalf("before the replacement runs: live on %v, %d deleting", hostsOf(live), len(deleting))
	}
	// The survivors' etcd view: the old replica is gone (they remove its
	// member), the replacement is a member.
	views, err := s.assignments(s.State(), nil, "hv-a", nil)
	if err != nil || len(views) != 1 {
		t.Fatalf("hv-a's assignments: %v %v", views, err)
	}
	members := map[string]bool{}
	for _, e := range views[0].EtcdMembers {
		members[e.Name] = true
	}
	if members[old.Metadata.Name] || !members[repl.Metadata.Name] || len(members) != 3 || views[0].ReplicaFloor != 4 {
		t.Errorf("hv-a's etcd view: members %v, floor %d; want %s gone, %s a member, floor 4", members, views[0].ReplicaFloor, old.Metadata.Name, repl.Metadata.Name)
	}
	d, err := op.Describe(ctx, &pb.DescribeRequest{Name: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	if !hasEvent(d.Events, "Replacing", fmt.Sprintf("replacing control-plane %s on hypervisor hv-b (dead) with %s on hypervisor hv-d", old.Metadata.Name, repl.Metadata.Name)) {
		t.Errorf("no Replacing event: %v", d.Events)
	}
	if d.Cluster.Status.Phase != resources.PhaseDegraded {
		t.Errorf("phase while replacing: %s", d.Cluster.Status.Phase)
	}
	// The replacement runs: the old replica is forgotten without hv-b.
	agents["hv-d"].held.Store(false)
	testutil.Eventually(t, 10*time.Second, "old replica forgotten", func() error {
		if s.State().Component(nil, old.Metadata.Name) != nil {
			return fmt.Errorf("%s still there", old.Metadata.Name)
		}
		return nil
	})
	if n := len(s.State().ComponentsOnHypervisor(nil, "hv-b")); n != 0 {
		t.Errorf("hv-b still has %d components", n)
	}
	d, _ = op.Describe(ctx, &pb.DescribeRequest{Name: "demo"})
	if !hasEvent(d.Events, "Moved", fmt.Sprintf("%s moved off hypervisor hv-b (dead)", old.Metadata.Name)) ||
		!hasEvent(d.Events, "Moved", "now on hv-a, hv-c, hv-d") {
		t.Errorf("no Moved event: %v", d.Events)
	}

	// pub-1, with the ingress, goes silent: a new ingress on pub-2.
	ing, _ := componentsOf(s, "demo", resources.RoleIngress)
	oldIng := ing["pub-1"]
	oldEndpoint := d.Cluster.Status.ApiServerEndpoint
	if !strings.Contains(oldEndpoint, "203.0.113.1:") {
		t.Fatalf("endpoint before: %s", oldEndpoint)
	}
	agents["pub-1"].stopped.Store(true)
	testutil.Eventually(t, 20*time.Second, "ingress moved and old one forgotten", func() error {
		ing, deleting := componentsOf(s, "demo", resources.RoleIngress)
		if ing["pub-2"] == nil || len(ing) != 1 {
			return fmt.Errorf("ingress on %v", hostsOf(ing))
		}
		if len(deleting) != 0 || s.State().Component(nil, oldIng.Metadata.Name) != nil {
			return fmt.Errorf("%s not forgotten", oldIng.Metadata.Name)
		}
		return allRunning()
	})
	d, _ = op.Describe(ctx, &pb.DescribeRequest{Name: "demo"})
	newIng, _ := componentsOf(s, "demo", resources.RoleIngress)
	if ep := d.Cluster.Status.ApiServerEndpoint; !strings.HasPrefix(ep, "https://203.0.113.2:") || ep == oldEndpoint {
		t.Errorf("apiServerEndpoint %s, was %s", ep, oldEndpoint)
	}
	if !hasEvent(d.Events, "Replacing", fmt.Sprintf("replacing ingress %s on hypervisor pub-1 (dead) with %s on hypervisor pub-2", oldIng.Metadata.Name, newIng["pub-2"].Metadata.Name)) ||
		!hasEvent(d.Events, "Moved", "now on pub-2") {
		t.Errorf("no ingress Replacing/Moved events: %v", d.Events)
	}
	live, _ = componentsOf(s, "demo", resources.RoleControlPlane)
	for _, c := range live {
		if !certNames(s.State().ComponentCerts(nil, c.Metadata.Name), vocab.APIServerCert, "203.0.113.2") {
			t.Errorf("API server certificate of %s does not name the new ingress's address", c.Metadata.Name)
		}
	}
	// The control-plane agents route through the new ingress's host... and
	// the ingress's agent gets the cluster; pub-1 has nothing left.
	if n := len(s.State().ComponentsOnHypervisor(nil, "pub-1")); n != 0 {
		t.Errorf("pub-1 still has %d components", n)
	}
	testutil.Eventually(t, 10*time.Second, "ready again", func() error {
		if c := s.State().Cluster(nil, "demo"); c.Status.Phase != resources.PhaseReady {
			return fmt.Errorf("phase %s: %v", c.Status.Phase, c.Status.Conditions)
		}
		return nil
	})
}

// The replacement rules, through planCluster and the FSM: no replacement
// without a quorum of Running replicas outside dead hypervisors, one at a
// time, forgotten once all replacements run, and the FSM forgets only on a
// hypervisor still dead.
// placementFixture drives a cluster's placement decisions through an FSM
// as the leader would, with hypervisors that report and die on demand.
type placementFixture struct {
	t    *testing.T
	a    *fsmApplier
	st   *state.Store
	s    *Server
	now  time.Time
	seen map[string]*timestamppb.Timestamp
}

// newPlacementFixture registers the private hypervisors and one public
// one, and a cluster demo of replicas.
func newPlacementFixture(t *testing.T, s *Server, replicas int32, private ...string) *placementFixture {
	a := newTestFSM(t)
	c, p := testCluster(t, "demo")
	c.Spec.ControlPlane.Replicas = &replicas
	a.mustApply(InitType, &pb.InitCommand{Config: &pb.CoordinatorConfig{VpnPool: DefaultVPNPool, ClusterId: "x"}, Server: &pb.Server{Id: "s1"}})
	a.mustApply(ApplyResourcesType, &pb.ApplyResourcesCommand{Clusters: []*pb.Cluster{c}, Pki: []*pb.ClusterPKI{p}})
	for _, h := range private {
		a.mustApply(RegisterHypervisorType, &pb.RegisterHypervisorCommand{Hypervisor: testHypervisor(h, false)})
	}
	a.mustApply(RegisterHypervisorType, &pb.RegisterHypervisorCommand{Hypervisor: testHypervisor("pub", true)})
	return &placementFixture{t: t, a: a, st: a.fsm.State(), s: s, now: testNow, seen: map[string]*timestamppb.Timestamp{}}
}

// plan decides and applies what the cluster needs now.
func (f *placementFixture) plan() *pb.PlaceCommand {
	f.t.Helper()
	f.now = f.now.Add(time.Second)
	cmd, err := f.s.planCluster(f.st, f.st.Cluster(nil, "demo"), f.st.Hypervisors(nil), f.st.Components(nil), f.now)
	if err != nil {
		f.t.Fatal(err)
	}
	if cmd != nil {
		f.a.mustApply(PlaceType, cmd)
	}
	return cmd
}

// report is a hypervisor's report: its components in state, with status
// set by each if given.
func (f *placementFixture) report(hv string, state string, each ...func(*pb.ComponentStatus)) {
	f.now = f.now.Add(time.Second)
	f.seen[hv] = timestamppb.New(f.now)
	cmd := &pb.ReportStatusCommand{Hypervisor: hv, Time: f.seen[hv]}
	for _, comp := range f.st.ComponentsOnHypervisor(nil, hv) {
		st := &pb.ComponentStatus{State: state}
		for _, fn := range each {
			fn(st)
		}
		cmd.Components = append(cmd.Components, &pb.Component{Metadata: &pb.ObjectMeta{Name: comp.Metadata.Name}, Status: st})
	}
	f.a.mustApply(ReportStatusType, cmd)
}

func (f *placementFixture) setHealth(hv, health string) {
	f.a.mustApply(SetHealthType, &pb.SetHealthCommand{Hypervisor: hv, Health: health, LastSeen: f.seen[hv]})
}

func (f *placementFixture) cordon(hv string, on bool) {
	h := proto.Clone(f.st.Hypervisor(nil, hv)).(*pb.Hypervisor)
	h.Spec.Unschedulable = on
	f.a.mustApply(ApplyResourcesType, &pb.ApplyResourcesCommand{Hypervisors: []*pb.Hypervisor{h}})
}

// expect checks the hypervisors of demo's live and deleting replicas.
func (f *placementFixture) expect(step string, live, deleting []string) {
	f.t.Helper()
	l, d := componentsOfStore(f.st, resources.RoleControlPlane)
	if !slices.Equal(l, live) || !slices.Equal(d, deleting) {
		f.t.Fatalf("%s: live on %v, deleting on %v; want %v and %v", step, l, d, live, deleting)
	}
}

func TestReplaceRulesQuorumAndOneAtATime(t *testing.T) {
	f := newPlacementFixture(t, &Server{}, 5, "hv-a", "hv-b", "hv-c", "hv-d", "hv-e", "hv-f", "hv-g")
	a, st, plan, report, setHealth, cordon, expect := f.a, f.st, f.plan, f.report, f.setHealth, f.cordon, f.expect
	now := &f.now
	// hv-f and hv-g are the spares: cordoned for the first placement.
	cordon("hv-f", true)
	cordon("hv-g", true)
	plan()
	for _, h := range []string{"hv-a", "hv-b", "hv-c", "hv-d", "hv-e", "pub", "hv-f", "hv-g"} {
		report(h, vocab.StateRunning)
	}
	cordon("hv-f", false)
	cordon("hv-g", false)
	plan()
	expect("placed", []string{"hv-a", "hv-b", "hv-c", "hv-d", "hv-e"}, nil)

	// Three of five dead: no quorum left to take a member out; nothing is
	// replaced, and the cluster is told why, once.
	setHealth("hv-b", resources.HealthDead)
	setHealth("hv-c", resources.HealthDead)
	setHealth("hv-d", resources.HealthDead)
	plan()
	plan()
	expect("no quorum", []string{"hv-a", "hv-b", "hv-c", "hv-d", "hv-e"}, nil)
	n := 0
	for _, e := range st.Events(nil, "demo") {
		if e.Reason == "NotReplacing" {
			n++
			if !strings.Contains(e.Message, "2 of 5 control-plane replicas run outside dead hypervisors, etcd needs 3") {
				t.Errorf("NotReplacing: %s", e.Message)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d NotReplacing events, want 1", n)
	}

	// hv-d returns: a quorum again. hv-b's replica is replaced, and hv-c's
	// waits while that replacement is not Running.
	report("hv-d", vocab.StateRunning)
	setHealth("hv-d", resources.HealthAlive)
	plan()
	expect("first replacement", []string{"hv-a", "hv-c", "hv-d", "hv-e", "hv-f"}, []string{"hv-b"})
	report("hv-f", vocab.StatePending)
	plan()
	expect("one at a time", []string{"hv-a", "hv-c", "hv-d", "hv-e", "hv-f"}, []string{"hv-b"})

	// The replacement runs: hv-c's replica is replaced next; hv-b's is
	// kept until the control plane is whole again.
	report("hv-f", vocab.StateRunning)
	plan()
	expect("second replacement", []string{"hv-a", "hv-d", "hv-e", "hv-f", "hv-g"}, []string{"hv-b", "hv-c"})

	// A forget decided while hv-c was dead is refused once it is alive.
	_, del := componentsByHost(st)
	report("hv-c", vocab.StateRunning)
	setHealth("hv-c", resources.HealthAlive)
	a.mustApply(PlaceType, &pb.PlaceCommand{Cluster: "demo", Forget: []string{del["hv-c"]}, Time: timestamppb.New(*now)})
	if st.Component(nil, del["hv-c"]) == nil {
		t.Fatal("a component of an alive hypervisor was forgotten")
	}
	setHealth("hv-c", resources.HealthDead)

	// Both replacements run: both old replicas are forgotten.
	report("hv-g", vocab.StateRunning)
	plan()
	expect("forgotten", []string{"hv-a", "hv-d", "hv-e", "hv-f", "hv-g"}, nil)
	moved := 0
	for _, e := range st.Events(nil, "demo") {
		if e.Reason == "Moved" && strings.Contains(e.Message, "now on hv-a, hv-d, hv-e, hv-f, hv-g") {
			moved++
		}
	}
	if moved != 2 {
		t.Errorf("%d Moved events, want 2", moved)
	}
}

// componentsOfStore lists the hypervisors of demo's live and deleting
// components of role, sorted.
func componentsOfStore(st interface {
	ComponentsOfCluster(memdb.WatchSet, string) []*pb.Component
}, role string) (live, deleting []string) {
	for _, c := range st.ComponentsOfCluster(nil, "demo") {
		if c.Spec.Role != role {
			continue
		}
		if c.Metadata.DeletionTimestamp != nil {
			deleting = append(deleting, c.Spec.Hypervisor)
		} else {
			live = append(live, c.Spec.Hypervisor)
		}
	}
	slices.Sort(live)
	slices.Sort(deleting)
	return live, deleting
}

// componentsByHost maps hypervisors to demo's live and deleting
// control-plane component names.
func componentsByHost(st interface {
	ComponentsOfCluster(memdb.WatchSet, string) []*pb.Component
}) (live, deleting map[string]string) {
	live, deleting = map[string]string{}, map[string]string{}
	for _, c := range st.ComponentsOfCluster(nil, "demo") {
		if c.Spec.Role != resources.RoleControlPlane {
			continue
		}
		if c.Metadata.DeletionTimestamp != nil {
			deleting[c.Spec.Hypervisor] = c.Metadata.Name
		} else {
			live[c.Spec.Hypervisor] = c.Metadata.Name
		}
	}
	return live, deleting
}

// TestRebuildFromBackup: every replica's hypervisor dead and no backup:
// the cluster waits, saying so. With a backup: one replica is placed on a
// live hypervisor and restored from the newest backup, the dead ones go,
// nothing more is placed while it restores; once it runs on the backup's
// data the restore is done and the others are placed, to join it.
func TestRebuildFromBackup(t *testing.T) {
	f := newPlacementFixture(t, &Server{cfg: Config{BackupTarget: "file:///backups"}}, 3, "hv-a", "hv-b", "hv-c", "hv-d", "hv-e")
	f.cordon("hv-d", true)
	f.cordon("hv-e", true)
	f.plan()
	for _, h := range []string{"hv-a", "hv-b", "hv-c", "pub"} {
		f.report(h, vocab.StateRunning)
	}
	f.cordon("hv-d", false)
	f.cordon("hv-e", false)
	f.plan()
	f.expect("placed", []string{"hv-a", "hv-b", "hv-c"}, nil)
	for _, h := range []string{"hv-a", "hv-b", "hv-c"} {
		f.setHealth(h, resources.HealthDead)
	}
	f.plan()
	f.expect("no backup", []string{"hv-a", "hv-b", "hv-c"}, nil)
	if !slices.ContainsFunc(f.st.Events(nil, "demo"), func(e *pb.Event) bool {
		return e.Reason == "NotReplacing" && strings.Contains(e.Message, "no backup to rebuild from")
	}) {
		t.Error("the cluster does not say it has no backup to rebuild from")
	}

	taken := timestamppb.New(f.now.Add(-time.Hour))
	f.a.mustApply(BackupType, &pb.BackupCommand{Backup: &pb.Backup{Cluster: "demo", Id: "b1", State: BackupDone, Requested: taken, Finished: taken, Revision: 7}})
	f.plan()
	f.expect("rebuilding", []string{"hv-d"}, []string{"hv-a", "hv-b", "hv-c"})
	r := f.st.Cluster(nil, "demo").GetStatus().GetRestore()
	if r.GetState() != RestoreRestoring || r.Backup != "b1" || r.Reason != "rebuild" || r.Generation != 1 {
		t.Fatalf("restore: %v", r)
	}
	if !slices.ContainsFunc(f.st.Events(nil, "demo"), func(e *pb.Event) bool {
		return e.Reason == "Rebuilding" && strings.Contains(e.Message, "from backup b1, taken 1h0m") && strings.Contains(e.Message, "lost")
	}) {
		t.Error("no Rebuilding event naming the backup, its age and what is lost")
	}
	f.report("hv-d", vocab.StatePending)
	f.plan()
	f.expect("nothing more while restoring", []string{"hv-d"}, []string{"hv-a", "hv-b", "hv-c"})

	f.report("hv-d", vocab.StateRunning, func(st *pb.ComponentStatus) { st.RestoreGeneration = 1 })
	f.plan()
	if r := f.st.Cluster(nil, "demo").GetStatus().GetRestore(); r.GetState() != RestoreDone {
		t.Fatalf("restore once the replica runs on its data: %v", r)
	}
	f.plan()
	f.expect("the others join", []string{"hv-d", "hv-d", "hv-e"}, []string{"hv-a", "hv-b", "hv-c"})
}

// TestStartTogetherNeedsThree: only a set that forms its quorum without
// one member starts etcd together; one or two replicas take the learner
// path, where the first runs alone.
func TestStartTogetherNeedsThree(t *testing.T) {
	var hvs []*pb.Hypervisor
	var comps []*pb.Component
	for i := range 3 {
		hv := fmt.Sprintf("hv-%d", i)
		hvs = append(hvs, &pb.Hypervisor{Metadata: &pb.ObjectMeta{Name: hv}, Spec: &pb.HypervisorSpec{Address: fmt.Sprintf("10.0.0.%d", i+1)}})
		comps = append(comps, &pb.Component{Metadata: &pb.ObjectMeta{Name: fmt.Sprintf("demo-cp-%d", i)},
			Spec: &pb.ComponentSpec{Hypervisor: hv, Ports: map[string]uint32{vocab.PortEtcdPeer: uint32(30002 + i)}}})
	}
	startTogether(comps[:2], hvs)
	for _, c := range comps[:2] {
		if len(c.Spec.EtcdInitialCluster) != 0 {
			t.Errorf("%s of two placed together has an initial cluster %v", c.Metadata.Name, c.Spec.EtcdInitialCluster)
		}
	}
	startTogether(comps, hvs)
	for _, c := range comps {
		got := c.Spec.EtcdInitialCluster
		if len(got) != 3 || got[2].Name != "demo-cp-2" || got[2].Address != "10.0.0.3" || got[2].Port != 30004 {
			t.Errorf("%s of three placed together: initial cluster %v", c.Metadata.Name, got)
		}
	}
}
