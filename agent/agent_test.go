package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/agent/cri"
	"github.com/oneinfra/oneinfra/agent/host"
	"github.com/oneinfra/oneinfra/coordinator"
	"github.com/oneinfra/oneinfra/internal/client"
	"github.com/oneinfra/oneinfra/internal/gossip"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/testutil"
	"github.com/oneinfra/oneinfra/internal/testutil/containerd"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"github.com/oneinfra/oneinfra/test/images"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// testDriver runs each component as one testapp pod and a file, so the
// agent core is tested against a real coordinator and a real containerd;
// the real roles are tested in their packages and in the lab.
type testDriver struct{ arg string }

func (d *testDriver) plan(_ context.Context, as *pb.Assignment, paths host.Paths) (*host.Plan, error) {
	return &host.Plan{
		Files: []host.File{{Path: paths.Config("hash"), Data: []byte(as.Hash), Mode: 0o600}},
		Dirs:  []string{paths.DataDir()},
		Pods: []cri.Pod{{Component: as.Component.Metadata.Name, Containers: []cri.Container{{
			Name: "app", Image: images.Ref("testapp"), Args: []string{"-print", d.arg},
		}}}},
	}, nil
}

func (d *testDriver) synced(_ context.Context, _ *pb.Assignment, _ host.Paths, _ bool, _ []cri.PodStatus, status *pb.ComponentStatus) {
	status.Conditions = append(status.Conditions, &pb.Condition{Type: "APIReachable", Status: "True"})
}

func (d *testDriver) removing(context.Context, *pb.Assignment, host.Paths) error { return nil }

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestAgentAgainstCoordinatorAndContainerd(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Each hypervisor has its own containerd, as on real machines.
	runtimes := map[string]*containerd.Instance{}
	for _, name := range []string{"hv-1", "pub-1"} {
		runtimes[name] = containerd.Start(t)
		runtimes[name].Import(t, "pause", "testapp")
	}
	dir := t.TempDir()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	srv, err := coordinator.Start(ctx, coordinator.Config{ID: "s1", DataDir: filepath.Join(dir, "coord"), Bootstrap: true,
		APIAddr: freeAddr(t), RaftAddr: freeAddr(t), Advertise: "127.0.0.1", Logger: quiet,
		GossipAddr: "127.0.0.1:0", GossipLocal: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Kill)
	conf, err := client.Load(filepath.Join(dir, "coord", coordinator.AdminConfFile))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := client.Dial(conf.Members(), []byte(conf.CertificateAuthority), conf.KeyPair())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	op := pb.NewOperatorClient(conn)
	var tok *pb.CreateTokenResponse
	testutil.Eventually(t, 20*time.Second, "token", func() (err error) {
		tok, err = op.CreateToken(ctx, &pb.CreateTokenRequest{Kind: "hypervisor", Uses: 2})
		return err
	})
	testutil.Eventually(t, 20*time.Second, "coordinator gossip", func() error {
		if srv.GossipAddr() == "" {
			return fmt.Errorf("not started")
		}
		return nil
	})

	newAgent := func(name string, public bool) *Agent {
		cfg := Config{Name: name, Address: "127.0.0.1", Coordinators: []string{srv.APIAddr()}, Token: tok.Token, CAHash: tok.CaHash,
			Public: public, CRIEndpoint: runtimes[name].Endpoint(), DataDir: filepath.Join(dir, name), RootDir: filepath.Join(dir, name+"-root"),
			PortRange: "30000-30099", Resync: time.Second, Logger: quiet,
			GossipAddr: "127.0.0.1:0", GossipJoin: []string{srv.GossipAddr()}, GossipLocal: true}
		if public {
			cfg.PublicAddress, cfg.PortRange = "127.0.0.2", "31000-31099"
		}
		a, err := New(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		d := &testDriver{arg: "v1"}
		a.drivers = map[string]driver{resources.RoleControlPlane: d, resources.RoleIngress: d}
		return a
	}
	run := func(a *Agent) (stop func()) {
		actx, acancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); a.Run(actx) }()
		return func() { acancel(); <-done; a.Close() }
	}
	private, public := newAgent("hv-1", false), newAgent("pub-1", true)
	stopPrivate, stopPublic := run(private), run(public)
	defer func() { stopPublic() }()

	// The agents got the gossip key at registration and join the
	// coordinator's gossip.
	testutil.Eventually(t, 20*time.Second, "agents in the gossip", func() error {
		view := srv.GossipView()
		for _, m := range []string{"hv/hv-1", "hv/pub-1"} {
			if view[m].State != gossip.Alive {
				return fmt.Errorf("%s: %+v", m, view[m])
			}
		}
		return nil
	})

	if _, err := op.Apply(ctx, &pb.ApplyRequest{Resources: []*pb.Resource{{Kind: &pb.Resource_Cluster{Cluster: &pb.Cluster{
		Metadata: &pb.ObjectMeta{Name: "demo"}, Spec: &pb.ClusterSpec{}}}}}}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 60*time.Second, "cluster Ready from the agents' reports", func() error {
		d, err := op.Describe(ctx, &pb.DescribeRequest{Name: "demo"})
		if err != nil {
			return err
		}
		if d.Cluster.Status.Phase != resources.PhaseReady {
			return fmt.Errorf("phase %s: %v", d.Cluster.Status.Phase, d.Cluster.Status.Conditions)
		}
		return nil
	})
	sandboxes := func() map[string]string {
		out := readySandboxes(t, runtimes["hv-1"].Socket)
		for k, v := range readySandboxes(t, runtimes["pub-1"].Socket) {
			out[k] = v
		}
		return out
	}
	before := sandboxes()
	if len(before) != 2 {
		t.Fatalf("pods after placement: %v", before)
	}
	if fi, err := os.Stat(filepath.Join(dir, "hv-1-root/etc/oneinfra/clusters/demo/demo-cp-0/hash")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("component file: %v", err)
	}

	// A restarted agent restarts nothing unchanged.
	stopPrivate()
	private = newAgent("hv-1", false)
	stopPrivate = run(private)
	time.Sleep(3 * time.Second)
	if after := sandboxes(); after["demo-cp-0"] != before["demo-cp-0"] {
		t.Fatalf("restarting the agent replaced the pod: %v → %v", before, after)
	}

	// Deleting the cluster removes every pod and directory, then the cluster.
	if _, err := op.Delete(ctx, &pb.DeleteRequest{Kind: "clusters", Name: "demo"}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 60*time.Second, "cluster gone", func() error {
		if _, err := op.Describe(ctx, &pb.DescribeRequest{Name: "demo"}); err == nil {
			return fmt.Errorf("still there")
		}
		return nil
	})
	if left := sandboxes(); len(left) != 0 {
		t.Errorf("pods left after deletion: %v", left)
	}
	for _, d := range []string{"hv-1-root/etc/oneinfra/clusters/demo", "hv-1-root/var/lib/oneinfra/clusters/demo", "pub-1-root/etc/oneinfra/clusters/demo"} {
		if _, err := os.Stat(filepath.Join(dir, d)); !os.IsNotExist(err) {
			t.Errorf("%s left after deletion (%v)", d, err)
		}
	}

	// A snapshot restored from before a cluster existed orphans its
	// components: their pods stop, their files (etcd data) stay, until
	// each is deleted.
	saved, err := client.SaveSnapshot(ctx, op)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.Apply(ctx, &pb.ApplyRequest{Resources: []*pb.Resource{{Kind: &pb.Resource_Cluster{Cluster: &pb.Cluster{
		Metadata: &pb.ObjectMeta{Name: "later"}, Spec: &pb.ClusterSpec{}}}}}}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 60*time.Second, "later's pods", func() error {
		if got := sandboxes(); len(got) != 2 {
			return fmt.Errorf("pods %v", got)
		}
		return nil
	})
	if _, err := client.RestoreSnapshot(ctx, op, saved, nil); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "hv-1-root/var/lib/oneinfra/clusters/later/later-cp-0")
	testutil.Eventually(t, 30*time.Second, "orphans stopped", func() error {
		if left := sandboxes(); len(left) != 0 {
			return fmt.Errorf("pods left: %v", left)
		}
		resp, err := op.Get(ctx, &pb.GetRequest{Kind: "components"})
		if err != nil {
			return err
		}
		for _, c := range resp.Components {
			if !c.Spec.Orphaned || c.Status.GetState() != vocab.StateOrphaned || !strings.Contains(c.Status.GetMessage(), "stopped") {
				return fmt.Errorf("%s: %v", c.Metadata.Name, c.Status)
			}
		}
		return nil
	})
	if _, err := os.Stat(data); err != nil {
		t.Fatalf("an orphan's data dir is gone: %v", err)
	}
	for _, name := range []string{"later-cp-0", "later-ingress-0"} {
		if _, err := op.Delete(ctx, &pb.DeleteRequest{Kind: "components", Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 30*time.Second, "orphans deleted", func() error {
		resp, err := op.Get(ctx, &pb.GetRequest{Kind: "components"})
		if err != nil || len(resp.Components) > 0 {
			return fmt.Errorf("components left: %v %v", resp.GetComponents(), err)
		}
		return nil
	})
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Errorf("a deleted orphan's data dir is still there (%v)", err)
	}
	stopPrivate()
}

// readySandboxes lists the ready sandboxes of our pods by component,
// straight from containerd's CRI API.
func readySandboxes(t *testing.T, socket string) map[string]string {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := runtimeapi.NewRuntimeServiceClient(conn).ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{
		Filter: &runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}},
	})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, sb := range resp.Items {
		if c := sb.Labels[cri.LabelComponent]; c != "" {
			out[c] = sb.Id
		}
	}
	return out
}
