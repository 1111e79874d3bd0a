package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/client"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/testutil"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"
)

// registerHypervisor registers a hypervisor as its agent would and returns
// an Agent client with the certificate it got.
func registerHypervisor(t *testing.T, s *Server, op pb.OperatorClient, name string, public bool) pb.AgentClient {
	return registerHypervisorAs(t, s, op, name, public)
}

func registerHypervisorB(b *testing.B, s *Server, op pb.OperatorClient, name string) pb.AgentClient {
	return registerHypervisorAs(b, s, op, name, false)
}

func registerHypervisorAs(t testing.TB, s *Server, op pb.OperatorClient, name string, public bool) pb.AgentClient {
	t.Helper()
	spec := &pb.HypervisorSpec{Address: "10.0.0." + fmt.Sprint(len(name)), PortRange: "30000-30099", Public: public}
	if public {
		spec.PublicAddress = "203.0.113.5"
	}
	return registerHypervisorSpec(t, s, op, name, spec)
}

func registerHypervisorSpec(t testing.TB, s *Server, op pb.OperatorClient, name string, spec *pb.HypervisorSpec) pb.AgentClient {
	t.Helper()
	ctx := context.Background()
	tok, err := op.CreateToken(ctx, &pb.CreateTokenRequest{Kind: TokenHypervisor})
	if err != nil {
		t.Fatal(err)
	}
	key, keyPEM, err := tlsutil.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := tlsutil.CreateCSR(key, name, nil)
	if err != nil {
		t.Fatal(err)
	}
	boot, err := client.DialTLS([]string{s.APIAddr()}, tlsutil.PinnedClientConfig(tok.CaHash, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer boot.Close()
	resp, err := pb.NewBootstrapClient(boot).RegisterHypervisor(ctx, &pb.RegisterHypervisorRequest{Token: tok.Token, Name: name, Spec: spec, CsrPem: csr})
	if err != nil {
		t.Fatalf("registering %s: %v", name, err)
	}
	conn, err := client.Dial(client.NewMembers(resp.Servers, nil), resp.CaPem, &pb.KeyPair{CertPem: resp.CertPem, KeyPem: keyPEM})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewAgentClient(conn)
}

func code(err error) codes.Code { return status.Code(err) }

func TestPlacementAndAgentFlow(t *testing.T) {
	ctx := context.Background()
	s, cfg := bootstrapOne(t, t.TempDir())
	op := pb.NewOperatorClient(adminConn(t, cfg.DataDir, s.APIAddr()))

	// With no hypervisor the cluster stays Pending and says why.
	if _, err := op.Apply(ctx, &pb.ApplyRequest{Resources: []*pb.Resource{clusterResource("demo")}}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "Pending with a reason", func() error {
		d, err := op.Describe(ctx, &pb.DescribeRequest{Name: "demo"})
		if err != nil {
			return err
		}
		cond := resources.FindCondition(d.Cluster.Status.GetConditions(), CondScheduled)
		if d.Cluster.Status.Phase != resources.PhasePending || cond == nil || cond.Reason != "NoPrivateHypervisor" ||
			!strings.Contains(cond.Message, "no schedulable private hypervisor") {
			return fmt.Errorf("status %v", d.Cluster.Status)
		}
		return nil
	})
	if _, err := op.Kubeconfig(ctx, &pb.KubeconfigRequest{Name: "demo"}); code(err) != codes.FailedPrecondition {
		t.Errorf("kubeconfig without an ingress: %v", err)
	}

	// Hypervisors arrive: the cluster is placed and provisioned.
	agents := map[string]pb.AgentClient{}
	for _, n := range []string{"hv-a", "hv-b", "hv-c"} {
		agents[n] = registerHypervisor(t, s, op, n, false)
	}
	agents["pub"] = registerHypervisor(t, s, op, "pub", true)
	if _, err := op.Apply(ctx, &pb.ApplyRequest{Resources: []*pb.Resource{{Kind: &pb.Resource_Cluster{Cluster: &pb.Cluster{
		Metadata: &pb.ObjectMeta{Name: "demo"}, Spec: &pb.ClusterSpec{ControlPlane: &pb.ControlPlaneSpec{Replicas: ptr(int32(3))}}}}}}}); err != nil {
		t.Fatal(err)
	}
	var comps []*pb.Component
	testutil.Eventually(t, 10*time.Second, "placed", func() error {
		d, err := op.Describe(ctx, &pb.DescribeRequest{Name: "demo"})
		if err != nil {
			return err
		}
		comps = d.Components
		if len(comps) != 4 || d.Cluster.Status.Phase != resources.PhaseProvisioning || d.Cluster.Status.ApiServerEndpoint != "https://203.0.113.5:30000" {
			return fmt.Errorf("%d components, status %v", len(comps), d.Cluster.Status)
		}
		return nil
	})
	hvs := map[string]bool{}
	for _, c := range comps {
		if c.Spec.Role == resources.RoleControlPlane {
			hvs[c.Spec.Hypervisor] = true
		}
	}
	if len(hvs) != 3 {
		t.Errorf("control plane on %d distinct hypervisors, want 3", len(hvs))
	}

	// Each agent watches and fetches only its own assignments.
	watch, err := agents["hv-a"].WatchAssignments(ctx, &pb.WatchAssignmentsRequest{Hypervisor: "hv-a", WaitMs: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(watch.Assignments) != 1 {
		t.Fatalf("hv-a has %d assignments", len(watch.Assignments))
	}
	got, err := agents["hv-a"].GetAssignments(ctx, &pb.GetAssignmentsRequest{Hypervisor: "hv-a"})
	if err != nil {
		t.Fatal(err)
	}
	as := got.Assignments[0]
	if as.Hash != watch.Assignments[0].Hash || len(as.EtcdPeers) != 3 || len(as.Certs) == 0 || len(as.EncryptionKey) != 32 || as.Images["kube-apiserver"] != "registry.k8s.io/kube-apiserver:v1.37.2" {
		t.Errorf("assignment: hash %s/%s, %d peers, %d certs, key %d bytes, images %v", as.Hash, watch.Assignments[0].Hash, len(as.EtcdPeers), len(as.Certs), len(as.EncryptionKey), as.Images)
	}
	if _, err := agents["hv-a"].GetAssignments(ctx, &pb.GetAssignmentsRequest{Hypervisor: "hv-b"}); code(err) != codes.PermissionDenied {
		t.Errorf("hv-a reading hv-b's assignments: %v", err)
	}
	if _, err := op.Get(ctx, &pb.GetRequest{Kind: "hv"}); err != nil {
		t.Fatal(err)
	}

	// A blocked watch wakes on a change: scaling to 1 removes replicas.
	woke := make(chan *pb.WatchAssignmentsResponse, 1)
	go func() {
		for _, a := range []string{"hv-a", "hv-b", "hv-c"} {
			r, err := agents[a].WatchAssignments(ctx, &pb.WatchAssignmentsRequest{Hypervisor: a, MinIndex: watch.Index, WaitMs: 20000})
			if err == nil && r.Index > watch.Index {
				woke <- r
				return
			}
		}
		woke <- nil
	}()
	time.Sleep(100 * time.Millisecond)
	if _, err := op.Apply(ctx, &pb.ApplyRequest{Resources: []*pb.Resource{{Kind: &pb.Resource_Cluster{Cluster: &pb.Cluster{
		Metadata: &pb.ObjectMeta{Name: "demo"}, Spec: &pb.ClusterSpec{ControlPlane: &pb.ControlPlaneSpec{Replicas: ptr(int32(1))}}}}}}}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-woke:
		if r == nil {
			t.Fatal("watch did not report a newer index")
		}
	case <-time.After(15 * time.Second):
		t.Fatal("blocked watch not woken by a change")
	}

	// Agents report: removed replicas go, running ones make the cluster
	// Ready once the ingress reports the API reachable.
	testutil.Eventually(t, 10*time.Second, "reports", func() error {
		d, err := op.Describe(ctx, &pb.DescribeRequest{Name: "demo"})
		if err != nil {
			return err
		}
		for _, c := range d.Components {
			req := &pb.ReportStatusRequest{Hypervisor: c.Spec.Hypervisor, Time: timestamppb.Now()}
			if c.Metadata.DeletionTimestamp != nil {
				req.Removed = []string{c.Metadata.Name}
			} else {
				st := &pb.ComponentStatus{State: vocab.StateRunning}
				if c.Spec.Role == resources.RoleIngress {
					st.Conditions = []*pb.Condition{{Type: vocab.CondAPIReachable, Status: "True", Message: "readyz ok"}}
				}
				req.Components = []*pb.ComponentReport{{Component: c.Metadata.Name, Status: st}}
			}
			if _, err := agents[c.Spec.Hypervisor].ReportStatus(ctx, req); err != nil {
				return err
			}
		}
		if len(d.Components) != 2 || d.Cluster.Status.Phase != resources.PhaseReady {
			return fmt.Errorf("%d components, phase %s", len(d.Components), d.Cluster.Status.Phase)
		}
		return nil
	})
	// An agent tells what it did to its own components as events; one
	// naming another hypervisor's component is not recorded, and a
	// malformed one is refused with the field.
	d, err := op.Describe(ctx, &pb.DescribeRequest{Name: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	var mine, theirs *pb.Component
	for _, c := range d.Components {
		if c.Spec.Role == resources.RoleControlPlane {
			mine = c
		} else {
			theirs = c
		}
	}
	reporter := agents[mine.Spec.Hypervisor]
	report := func(events ...*pb.AgentEvent) error {
		_, err := reporter.ReportStatus(ctx, &pb.ReportStatusRequest{Hypervisor: mine.Spec.Hypervisor, Events: events,
			Components: []*pb.ComponentReport{{Component: mine.Metadata.Name, Status: &pb.ComponentStatus{State: vocab.StateRunning}}}})
		return err
	}
	if err := report(&pb.AgentEvent{Component: mine.Metadata.Name, Type: "Warning", Reason: "EtcdRejoining", Message: "set aside"},
		&pb.AgentEvent{Component: theirs.Metadata.Name, Type: "Warning", Reason: "Forged", Message: "not mine"}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []*pb.AgentEvent{
		{Component: mine.Metadata.Name, Type: "Alert", Reason: "X", Message: "m"},
		{Component: mine.Metadata.Name, Type: "Normal", Reason: "two words", Message: "m"},
		{Component: mine.Metadata.Name, Type: "Normal", Reason: "Long", Message: strings.Repeat("m", 2000)},
	} {
		if err := report(bad); code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "events[0]") {
			t.Errorf("event %v: %v, want InvalidArgument naming events[0]", bad, err)
		}
	}
	d, err = op.Describe(ctx, &pb.DescribeRequest{Name: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	if !hasEvent(d.Events, "EtcdRejoining", mine.Metadata.Name+": set aside") {
		t.Errorf("the agent's event is not recorded: %v", d.Events)
	}
	for _, e := range d.Events {
		if e.Reason == "Forged" || e.Reason == "X" || e.Reason == "Long" {
			t.Errorf("recorded %v", e)
		}
	}

	if _, err := op.Kubeconfig(ctx, &pb.KubeconfigRequest{Name: "demo"}); code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "csr_pem") {
		t.Errorf("a kubeconfig without a certificate request: %v, want InvalidArgument naming csr_pem", err)
	}
	kc, err := client.AdminKubeconfig(ctx, op, "demo", 0)
	if err != nil {
		t.Fatal(err)
	}
	var parsed map[string]any
	if err := yaml.Unmarshal(kc, &parsed); err != nil || !bytes.Contains(kc, []byte("https://203.0.113.5:30000")) {
		t.Errorf("kubeconfig: %v\n%s", err, kc)
	}

	// A hypervisor with components cannot be deleted; a cluster deletion
	// waits for its agents, then removes everything.
	if _, err := op.Delete(ctx, &pb.DeleteRequest{Kind: "hypervisors", Name: "pub"}); code(err) != codes.FailedPrecondition {
		t.Errorf("deleting a busy hypervisor: %v", err)
	}
	del, err := op.Delete(ctx, &pb.DeleteRequest{Kind: "clusters", Name: "demo"})
	if err != nil || del.Deleted {
		t.Fatalf("delete: %v, %v", del, err)
	}
	d, err = op.Describe(ctx, &pb.DescribeRequest{Name: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range d.Components {
		if _, err := agents[c.Spec.Hypervisor].ReportStatus(ctx, &pb.ReportStatusRequest{Hypervisor: c.Spec.Hypervisor, Removed: []string{c.Metadata.Name}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := op.Describe(ctx, &pb.DescribeRequest{Name: "demo"}); code(err) != codes.NotFound {
		t.Errorf("cluster after its last component went: %v", err)
	}
	if h, err := op.Get(ctx, &pb.GetRequest{Kind: "hv", Name: "hv-a"}); err != nil || len(h.Hypervisors[0].Status.AllocatedPorts) != 0 {
		t.Errorf("ports still allocated after deletion: %v %v", h, err)
	}
}

func ptr[T any](v T) *T { return &v }

func TestApplyChecks(t *testing.T) {
	ctx := context.Background()
	s, cfg := bootstrapOne(t, t.TempDir())
	op := pb.NewOperatorClient(adminConn(t, cfg.DataDir, s.APIAddr()))
	vpn := func(name, cidr string) *pb.Resource {
		return &pb.Resource{Source: name + ".yaml document 1", Kind: &pb.Resource_Cluster{Cluster: &pb.Cluster{
			Metadata: &pb.ObjectMeta{Name: name}, Spec: &pb.ClusterSpec{Vpn: &pb.VPNSpec{Enabled: true, Cidr: cidr}}}}}
	}
	if _, err := op.Apply(ctx, &pb.ApplyRequest{Resources: []*pb.Resource{vpn("a", "10.50.0.0/24")}}); err != nil {
		t.Fatal(err)
	}
	before, _ := op.Get(ctx, &pb.GetRequest{Kind: "clusters"})
	cases := []struct {
		name string
		req  *pb.ApplyRequest
		code codes.Code
		text string
	}{
		{"overlapping VPN", &pb.ApplyRequest{Resources: []*pb.Resource{vpn("b", "10.50.0.128/25")}}, codes.InvalidArgument, "overlap"},
		{"overlap within the request", &pb.ApplyRequest{Resources: []*pb.Resource{vpn("c", "10.60.0.0/24"), vpn("d", "10.60.0.0/24")}}, codes.InvalidArgument, "overlap"},
		{"immutable VPN", &pb.ApplyRequest{Resources: []*pb.Resource{vpn("a", "10.51.0.0/24")}}, codes.InvalidArgument, "a.yaml document 1: Cluster \"a\": spec.vpn.cidr: cannot change"},
		{"create only", &pb.ApplyRequest{CreateOnly: true, Resources: []*pb.Resource{vpn("a", "10.50.0.0/24")}}, codes.FailedPrecondition, "already exists"},
		{"bad replicas", &pb.ApplyRequest{Resources: []*pb.Resource{{Source: "x document 2", Kind: &pb.Resource_Cluster{Cluster: &pb.Cluster{
			Metadata: &pb.ObjectMeta{Name: "e"}, Spec: &pb.ClusterSpec{ControlPlane: &pb.ControlPlaneSpec{Replicas: ptr(int32(9))}}}}}}}, codes.InvalidArgument, "x document 2: Cluster \"e\": spec.controlPlane.replicas"},
		{"unregistered hypervisor", &pb.ApplyRequest{Resources: []*pb.Resource{{Kind: &pb.Resource_Hypervisor{Hypervisor: testHypervisor("ghost", false)}}}}, codes.InvalidArgument, "not registered"},
		{"duplicate", &pb.ApplyRequest{Resources: []*pb.Resource{vpn("f", ""), vpn("f", "")}}, codes.InvalidArgument, "appears twice"},
	}
	for _, tc := range cases {
		_, err := op.Apply(ctx, tc.req)
		if code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.text) {
			t.Errorf("%s: got %v, want %s containing %q", tc.name, err, tc.code, tc.text)
		}
	}
	after, _ := op.Get(ctx, &pb.GetRequest{Kind: "clusters"})
	if len(after.Clusters) != len(before.Clusters) {
		t.Errorf("refused applies changed the state: %d clusters, was %d", len(after.Clusters), len(before.Clusters))
	}
	// The pool gives a block that overlaps no other cluster.
	if _, err := op.Apply(ctx, &pb.ApplyRequest{Resources: []*pb.Resource{vpn("g", "")}}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "VPN block", func() error {
		g, err := op.Get(ctx, &pb.GetRequest{Kind: "clusters", Name: "g"})
		if err != nil || g.Clusters[0].Spec.Vpn.Cidr == "" {
			return fmt.Errorf("no VPN CIDR yet (%v)", err)
		}
		return nil
	})
}

func TestTokens(t *testing.T) {
	ctx := context.Background()
	s, cfg := bootstrapOne(t, t.TempDir())
	op := pb.NewOperatorClient(adminConn(t, cfg.DataDir, s.APIAddr()))
	if _, err := op.CreateToken(ctx, &pb.CreateTokenRequest{Kind: TokenWorker}); code(err) != codes.InvalidArgument {
		t.Errorf("worker token without a cluster: %v", err)
	}
	tok, err := op.CreateToken(ctx, &pb.CreateTokenRequest{Kind: TokenHypervisor})
	if err != nil {
		t.Fatal(err)
	}
	list, err := op.ListTokens(ctx, &pb.ListTokensRequest{})
	if err != nil || len(list.Tokens) != 1 || len(list.Tokens[0].SecretHash) != 0 {
		t.Fatalf("list: %v %v", list, err)
	}
	if stored := s.State().Token(nil, tok.Info.Id); stored == nil || bytes.Contains(stored.SecretHash, []byte(tok.Token)) || len(stored.SecretHash) != 32 {
		t.Errorf("the token is not stored hashed: %v", stored)
	}
	boot, err := client.DialTLS([]string{s.APIAddr()}, tlsutil.PinnedClientConfig(tok.CaHash, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer boot.Close()
	bc := pb.NewBootstrapClient(boot)
	key, _, _ := tlsutil.GenerateKey()
	csr, _ := tlsutil.CreateCSR(key, "x", nil)
	register := func(token string) error {
		_, err := bc.RegisterHypervisor(ctx, &pb.RegisterHypervisorRequest{Token: token, Name: "hv-1", CsrPem: csr, Spec: &pb.HypervisorSpec{Address: "10.0.0.1"}})
		return err
	}
	if err := register(tok.Token[:7] + "0000000000000000"); code(err) != codes.PermissionDenied {
		t.Errorf("wrong secret: %v", err)
	}
	if _, err := bc.JoinServer(ctx, &pb.JoinServerRequest{Token: tok.Token, Id: "s9", RaftAddress: "127.0.0.1:1", CsrPem: csr}); code(err) != codes.PermissionDenied ||
		!strings.Contains(err.Error(), "not a server token") {
		t.Errorf("hypervisor token used to join a server: %v", err)
	}
	if _, err := op.RevokeToken(ctx, &pb.RevokeTokenRequest{Id: tok.Info.Id}); err != nil {
		t.Fatal(err)
	}
	if err := register(tok.Token); code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("revoked token: %v", err)
	}
	short, err := op.CreateToken(ctx, &pb.CreateTokenRequest{Kind: TokenHypervisor, TtlSeconds: 1})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	if err := register(short.Token); code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired token: %v", err)
	}
	// A wrong CA hash is refused by the client before any token is sent.
	wrong, err := client.DialTLS([]string{s.APIAddr()}, tlsutil.PinnedClientConfig("sha256:"+strings.Repeat("0", 64), ""))
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, err := pb.NewBootstrapClient(wrong).RegisterHypervisor(cctx, &pb.RegisterHypervisorRequest{Token: tok.Token}); err == nil {
		t.Error("a server whose CA does not match the pinned hash was trusted")
	}
	// Calls without a certificate, or with the wrong role, are refused.
	if _, err := pb.NewOperatorClient(boot).Get(ctx, &pb.GetRequest{Kind: "clusters"}); code(err) != codes.Unauthenticated {
		t.Errorf("operator call without a certificate: %v", err)
	}
}

// TestSnapshotSaveRestore: a restore brings back the snapshot's clusters
// and wakes blocked watches; the hypervisor registered since stays, and
// the component placed since of a cluster the snapshot lacks is orphaned:
// its agent is told to stop it and keep its files, and only it may be
// deleted alone.
func TestSnapshotSaveRestore(t *testing.T) {
	ctx := context.Background()
	s, cfg := bootstrapOne(t, t.TempDir())
	op := pb.NewOperatorClient(adminConn(t, cfg.DataDir, s.APIAddr()))
	if err := createCluster(ctx, op, "kept"); err != nil {
		t.Fatal(err)
	}
	saved := saveSnapshot(t, op)
	if err := createCluster(ctx, op, "later"); err != nil {
		t.Fatal(err)
	}
	agent := registerHypervisor(t, s, op, "hv-1", false)
	testutil.Eventually(t, 10*time.Second, "later placed", func() error {
		if s.State().Component(nil, "later-cp-0") == nil {
			return errors.New("not yet")
		}
		return nil
	})
	w, err := agent.WatchAssignments(ctx, &pb.WatchAssignmentsRequest{Hypervisor: "hv-1", WaitMs: 10})
	if err != nil {
		t.Fatal(err)
	}
	// A watcher blocked at the current index is woken by the restore.
	woke := make(chan error, 1)
	go func() {
		_, err := agent.WatchAssignments(ctx, &pb.WatchAssignmentsRequest{Hypervisor: "hv-1", MinIndex: w.Index, WaitMs: 30000})
		woke <- err
	}()
	time.Sleep(200 * time.Millisecond)
	if err := restoreSnapshot(op, saved, false); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	select {
	case err := <-woke:
		if err != nil || time.Since(start) > 10*time.Second {
			t.Errorf("watch woke after %s: %v", time.Since(start), err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("restore did not wake a blocked watch")
	}
	got, err := op.Get(ctx, &pb.GetRequest{Kind: "clusters"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Clusters) != 1 || got.Clusters[0].Metadata.Name != "kept" {
		t.Errorf("after restore: %v", got.Clusters)
	}
	if err := createCluster(ctx, op, "after-restore"); err != nil {
		t.Errorf("writing after a restore: %v", err)
	}

	orphan := getAssignment(t, agent, "hv-1", "later-cp-0")
	if orphan == nil || !orphan.Orphaned || orphan.ClusterSpec != nil || len(orphan.Certs) > 0 {
		t.Fatalf("the component of a cluster the snapshot lacks: %v, want an orphaned assignment without its cluster", orphan)
	}
	if comp := s.State().Component(nil, "later-cp-0"); comp.Status.GetState() != vocab.StateOrphaned {
		t.Errorf("get components shows it %q, want %s", comp.Status.GetState(), vocab.StateOrphaned)
	}
	testutil.Eventually(t, 10*time.Second, "kept placed again", func() error {
		for _, comp := range s.State().ComponentsOfCluster(nil, "kept") {
			if _, err := op.Delete(ctx, &pb.DeleteRequest{Kind: "components", Name: comp.Metadata.Name}); code(err) != codes.InvalidArgument {
				t.Fatalf("deleting %s of a cluster alone: %v, want InvalidArgument", comp.Metadata.Name, err)
			}
			return nil
		}
		return errors.New("no component yet")
	})
	if _, err := op.Delete(ctx, &pb.DeleteRequest{Kind: "components", Name: "later-cp-0"}); err != nil {
		t.Fatalf("deleting the orphaned component: %v", err)
	}
	if as := getAssignment(t, agent, "hv-1", "later-cp-0"); as == nil || !as.Deleting {
		t.Fatalf("the deleted orphan's assignment: %v, want it deleting", as)
	}
	if _, err := agent.ReportStatus(ctx, &pb.ReportStatusRequest{Hypervisor: "hv-1", Removed: []string{"later-cp-0"}}); err != nil {
		t.Fatal(err)
	}
	if s.State().Component(nil, "later-cp-0") != nil {
		t.Error("the orphan its agent removed is still listed")
	}
}

// getAssignment is the hypervisor's assignment of component, or nil.
func getAssignment(t *testing.T, agent pb.AgentClient, hypervisor, component string) *pb.Assignment {
	t.Helper()
	resp, err := agent.GetAssignments(context.Background(), &pb.GetAssignmentsRequest{Hypervisor: hypervisor, Components: []string{component}})
	if err != nil {
		t.Fatal(err)
	}
	for _, as := range resp.Assignments {
		if as.Component.Metadata.Name == component {
			return as
		}
	}
	return nil
}

// TestCertsFollowIngress checks that API servers placed before any public
// hypervisor get certificates naming the ingress once it is placed.
func TestCertsFollowIngress(t *testing.T) {
	ctx := context.Background()
	s, cfg := bootstrapOne(t, t.TempDir())
	op := pb.NewOperatorClient(adminConn(t, cfg.DataDir, s.APIAddr()))
	hv := registerHypervisor(t, s, op, "hv-a", false)
	if err := createCluster(ctx, op, "demo"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "control plane placed, with certificates", func() error {
		if as := getAssignment(t, hv, "hv-a", "demo-cp-0"); as != nil {
			if err := giveKeys(ctx, t, hv, "hv-a", as); err != nil {
				return err
			}
		}
		if len(s.State().ComponentCerts(nil, "demo-cp-0").GetCerts()) == 0 {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	if certNames(s.State().ComponentCerts(nil, "demo-cp-0"), "apiserver", "203.0.113.5") {
		t.Fatal("certificate names an ingress that does not exist yet")
	}
	registerHypervisor(t, s, op, "pub", true)
	testutil.Eventually(t, 10*time.Second, "certificate re-issued for the ingress", func() error {
		if !certNames(s.State().ComponentCerts(nil, "demo-cp-0"), "apiserver", "203.0.113.5") {
			return fmt.Errorf("apiserver certificate lacks the ingress address")
		}
		return nil
	})
}
