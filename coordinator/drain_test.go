package coordinator

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/testutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Draining moves a live hypervisor's replica make-before-break (the old
// one stays until its replacement runs), moves an ingress only where
// another public hypervisor can take it (else DrainBlocked, the cluster
// still Ready), and uncordon ends it.
func TestDrainHypervisor(t *testing.T) {
	ctx := context.Background()
	s, cfg := bootstrapOne(t, t.TempDir())
	op := pb.NewOperatorClient(adminConn(t, cfg.DataDir, s.APIAddr()))
	agents := map[string]*fakeAgent{}
	add := func(name string, i int, public, held bool) {
		spec := &pb.HypervisorSpec{Address: fmt.Sprintf("10.0.0.%d", i), PortRange: "30000-30099"}
		if public {
			spec.Public, spec.PublicAddress = true, fmt.Sprintf("203.0.113.%d", i)
		}
		agents[name] = runFakeAgent(t, s, registerHypervisorSpec(t, s, op, name, spec), name, held)
	}
	add("hv-a", 1, false, false)
	add("hv-b", 2, false, false)
	add("hv-c", 3, false, false)
	add("pub-1", 11, true, false)
	three := int32(3)
	if _, err := op.Apply(ctx, &pb.ApplyRequest{Resources: []*pb.Resource{{Source: "test", Kind: &pb.Resource_Cluster{Cluster: &pb.Cluster{
		Metadata: &pb.ObjectMeta{Name: "demo"}, Spec: &pb.ClusterSpec{ControlPlane: &pb.ControlPlaneSpec{Replicas: &three}},
	}}}}}); err != nil {
		t.Fatal(err)
	}
	ready := func() error {
		if c := s.State().Cluster(nil, "demo"); c.GetStatus().GetPhase() != resources.PhaseReady {
			return fmt.Errorf("phase %s", c.GetStatus().GetPhase())
		}
		return nil
	}
	testutil.Eventually(t, 15*time.Second, "Ready", ready)
	add("hv-d", 4, false, true) // the spare holds its components Pending
	add("pub-2", 12, true, false)
	drain := func(name string, unschedulable, drain bool) {
		t.Helper()
		if _, err := op.SetScheduling(ctx, &pb.SetSchedulingRequest{Name: name, Unschedulable: unschedulable, Drain: drain}); err != nil {
			t.Fatal(err)
		}
	}

	// Bad requests change nothing.
	if _, err := op.SetScheduling(ctx, &pb.SetSchedulingRequest{Name: "nope", Unschedulable: true, Drain: true}); status.Code(err) != codes.NotFound {
		t.Errorf("draining an unknown hypervisor: %v", err)
	}
	if _, err := op.SetScheduling(ctx, &pb.SetSchedulingRequest{Name: "hv-b", Drain: true}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("drain without unschedulable: %v", err)
	}

	cp, _ := componentsOf(s, "demo", resources.RoleControlPlane)
	old := cp["hv-b"]
	if next := s.State().Cluster(nil, "demo").GetStatus().GetNextReplicaIndex(); next != 3 {
		t.Errorf("next replica index %d after placing demo-cp-0..2, want 3", next)
	}
	drain("hv-b", true, true)
	var repl *pb.Component
	testutil.Eventually(t, 10*time.Second, "replacement placed on hv-d", func() error {
		live, deleting := componentsOf(s, "demo", resources.RoleControlPlane)
		if repl = live["hv-d"]; repl == nil || len(live) != 4 || len(deleting) != 0 {
			return fmt.Errorf("live on %v, %d deleting", hostsOf(live), len(deleting))
		}
		return nil
	})
	// Make before break: while the replacement is Pending the old replica
	// stays, and the cluster stays Ready.
	time.Sleep(time.Second)
	if live, deleting := componentsOf(s, "demo", resources.RoleControlPlane); live["hv-b"] == nil || len(deleting) != 0 {
		t.Fatalf("the old replica went before its replacement runs: live on %v, %d deleting", hostsOf(live), len(deleting))
	}
	if err := ready(); err != nil {
		t.Errorf("while draining: %v", err)
	}
	agents["hv-d"].held.Store(false)
	testutil.Eventually(t, 10*time.Second, "hv-b drained", func() error {
		if n := len(s.State().ComponentsOnHypervisor(nil, "hv-b")); n != 0 {
			return fmt.Errorf("%d components left on hv-b", n)
		}
		if live, _ := componentsOf(s, "demo", resources.RoleControlPlane); len(live) != 3 {
			return fmt.Errorf("live on %v", hostsOf(live))
		}
		return ready()
	})
	d, err := op.Describe(ctx, &pb.DescribeRequest{Name: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range [][2]string{
		{"Draining", "hypervisor hv-b is draining"},
		{"Replacing", fmt.Sprintf("replacing control-plane %s on hypervisor hv-b (draining) with %s on hypervisor hv-d", old.Metadata.Name, repl.Metadata.Name)},
		{"Removing", fmt.Sprintf("removing %s from hv-b (draining, its replacement runs)", old.Metadata.Name)},
	} {
		if !hasEvent(d.Events, want[0], want[1]) {
			t.Errorf("no %s event %q: %v", want[0], want[1], d.Events)
		}
	}

	// The ingress with nowhere to go stays, the cluster Ready, and an event
	// says why; once pub-2 is schedulable again it moves there.
	drain("pub-2", true, false)
	drain("pub-1", true, true)
	testutil.Eventually(t, 10*time.Second, "DrainBlocked", func() error {
		d, err := op.Describe(ctx, &pb.DescribeRequest{Name: "demo"})
		if err != nil || !hasEvent(d.Events, "DrainBlocked", "replacing ingress") {
			return fmt.Errorf("no DrainBlocked event: %v", err)
		}
		return nil
	})
	if ing, _ := componentsOf(s, "demo", resources.RoleIngress); ing["pub-1"] == nil {
		t.Errorf("ingress moved with nowhere to go: %v", hostsOf(ing))
	}
	if err := ready(); err != nil {
		t.Errorf("a blocked drain made the cluster not Ready: %v", err)
	}
	drain("pub-2", false, false)
	testutil.Eventually(t, 10*time.Second, "ingress on pub-2, pub-1 drained", func() error {
		ing, deleting := componentsOf(s, "demo", resources.RoleIngress)
		if ing["pub-2"] == nil || len(deleting) != 0 || len(s.State().ComponentsOnHypervisor(nil, "pub-1")) != 0 {
			return fmt.Errorf("ingress on %v, %d deleting", hostsOf(ing), len(deleting))
		}
		if ep := s.State().Cluster(nil, "demo").GetStatus().GetApiServerEndpoint(); !strings.HasPrefix(ep, "https://203.0.113.12:") {
			return fmt.Errorf("endpoint %s", ep)
		}
		return ready()
	})

	// describe: a cluster names the hypervisors it is on; a hypervisor
	// shows what is on it and the events that name it.
	d, err = op.Describe(ctx, &pb.DescribeRequest{Name: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	var on []string
	for _, h := range d.Hypervisors {
		on = append(on, h.Metadata.Name)
	}
	if strings.Join(on, ",") != "hv-a,hv-c,hv-d,pub-2" {
		t.Errorf("describe cluster: hypervisors %v", on)
	}
	d, err = op.Describe(ctx, &pb.DescribeRequest{Name: "hv-b", Kind: "hv"})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Components) != 0 || d.Hypervisors[0].Metadata.Name != "hv-b" || !hasEvent(d.Events, "Removing", old.Metadata.Name) {
		t.Errorf("describe hypervisor hv-b: %d components, events %v", len(d.Components), d.Events)
	}
	for _, e := range d.Events {
		if !strings.Contains(e.Message, "hv-b") {
			t.Errorf("describe hypervisor hv-b shows an event that does not name it: %s", e.Message)
		}
	}
	if _, err := op.Describe(ctx, &pb.DescribeRequest{Name: "hv-b", Kind: "components"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("describe components: %v", err)
	}

	// Uncordoned: schedulable, no longer draining; health kept throughout.
	drain("hv-b", false, false)
	h := s.State().Hypervisor(nil, "hv-b")
	if h.Spec.Unschedulable || h.Status.Draining || h.Status.Health != resources.HealthAlive {
		t.Errorf("hv-b after uncordon: unschedulable %v draining %v health %s", h.Spec.Unschedulable, h.Status.Draining, h.Status.Health)
	}
}

// TestIngressHandover: a drained replica goes only once the ingress has its
// replacement up, and leaves etcd only once no ingress on a live
// hypervisor has it up any more.
func TestIngressHandover(t *testing.T) {
	hvs := []*pb.Hypervisor{
		{Metadata: &pb.ObjectMeta{Name: "pub-1"}, Status: &pb.HypervisorStatus{Health: resources.HealthAlive}},
		{Metadata: &pb.ObjectMeta{Name: "pub-2"}, Status: &pb.HypervisorStatus{Health: resources.HealthDead}},
	}
	ingress := func(hv, state string, backends ...string) *pb.Component {
		return &pb.Component{
			Metadata: &pb.ObjectMeta{Name: "demo-ingress-" + hv},
			Spec:     &pb.ComponentSpec{Cluster: "demo", Role: resources.RoleIngress, Hypervisor: hv},
			Status:   &pb.ComponentStatus{State: state, Backends: backends},
		}
	}
	replica := func(name, state string) *pb.Component {
		return &pb.Component{
			Metadata: &pb.ObjectMeta{Name: name},
			Spec:     &pb.ComponentSpec{Cluster: "demo", Role: resources.RoleControlPlane, Hypervisor: "hv-1"},
			Status:   &pb.ComponentStatus{State: state},
		}
	}
	other := ingress("pub-1", vocab.StateRunning, "demo-cp-0")
	other.Spec.Cluster = "other"
	for _, tc := range []struct {
		what       string
		components []*pb.Component
		released   bool
	}{
		{"no ingress", nil, true},
		{"the ingress has it up", []*pb.Component{ingress("pub-1", vocab.StateRunning, "demo-cp-0", "demo-cp-1")}, false},
		{"the ingress dropped it", []*pb.Component{ingress("pub-1", vocab.StateRunning, "demo-cp-1")}, true},
		{"the ingress runs no haproxy", []*pb.Component{ingress("pub-1", "Pending")}, true},
		{"only an ingress on a dead hypervisor has it", []*pb.Component{ingress("pub-2", vocab.StateRunning, "demo-cp-0"), ingress("pub-1", vocab.StateRunning, "demo-cp-1")}, true},
		{"another cluster's ingress has that name", []*pb.Component{other}, true},
	} {
		if got := ingressReleased(liveIngresses(tc.components, "demo", hvs), "demo-cp-0"); got != tc.released {
			t.Errorf("%s: released %v, want %v", tc.what, got, tc.released)
		}
	}

	surge := []*pb.Component{replica("demo-cp-3", vocab.StateRunning)}
	for _, tc := range []struct {
		what      string
		stay      []*pb.Component
		ingresses []*pb.Component
		want      bool
	}{
		{"running, no ingress", surge, nil, true},
		{"running, the ingress has it down still", surge, []*pb.Component{ingress("pub-1", vocab.StateRunning, "demo-cp-0")}, false},
		{"running, the ingress has it up", surge, []*pb.Component{ingress("pub-1", vocab.StateRunning, "demo-cp-0", "demo-cp-3")}, true},
		{"running, the ingress is not running", surge, []*pb.Component{ingress("pub-1", "Pending")}, true},
		{"not running", []*pb.Component{replica("demo-cp-3", "Pending")}, []*pb.Component{ingress("pub-1", vocab.StateRunning, "demo-cp-3")}, false},
	} {
		if got := servingAll(tc.stay, tc.ingresses); got != tc.want {
			t.Errorf("%s: serving %v, want %v", tc.what, got, tc.want)
		}
	}
}
