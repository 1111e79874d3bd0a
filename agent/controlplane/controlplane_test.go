package controlplane

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/agent/cri"
	"github.com/oneinfra/oneinfra/agent/host"
	"github.com/oneinfra/oneinfra/coordinator/pki"
	"github.com/oneinfra/oneinfra/internal/testutil"
	"github.com/oneinfra/oneinfra/internal/testutil/cluster"
	"github.com/oneinfra/oneinfra/internal/testutil/containerd"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/proto"
)

func testCluster(t *testing.T, n int) (*pb.ClusterPKI, []*pb.Assignment) {
	return cluster.Assignments(t, n, cluster.HostIP(t))
}

func TestRender(t *testing.T) {
	_, as := testCluster(t, 1)
	paths := host.Paths{Root: "/r", Cluster: "demo", Component: "demo-cp-0"}
	boot := EtcdBootstrap{State: "new", InitialCluster: "demo-cp-0=https://127.0.0.1:1"}
	plan, err := Render(as[0], paths, boot)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := Render(as[0], paths, boot)
	for i := range plan.Pods {
		if cri.SpecHash(plan.Pods[i]) != cri.SpecHash(again.Pods[i]) {
			t.Error("rendering twice gives another pod")
		}
	}
	files := map[string]host.File{}
	for _, f := range plan.Files {
		files[filepath.Base(f.Path)] = f
		if strings.HasSuffix(f.Path, ".key") && f.Mode != 0o600 {
			t.Errorf("%s has mode %o", f.Path, f.Mode)
		}
		if !strings.HasPrefix(f.Path, "/r/etc/oneinfra/clusters/demo/demo-cp-0/") {
			t.Errorf("file outside the component's dir: %s", f.Path)
		}
	}
	for _, name := range []string{fileEncryption, fileControllerKubecf, fileSchedulerKubecf, fileSAKey} {
		if files[name].Mode != 0o600 {
			t.Errorf("%s: mode %o, want 0600", name, files[name].Mode)
		}
	}
	if !bytes.Contains(files[fileEncryption].Data, []byte("secretbox")) || !bytes.Contains(files[fileAuthentication].Data, []byte("/readyz")) {
		t.Error("encryption or authentication configuration missing")
	}
	args := strings.Join(plan.Pods[1].Containers[0].Command, " ")
	for _, want := range []string{"--authorization-mode=Node,RBAC", "--authentication-config=", "--encryption-provider-config="} {
		if !strings.Contains(args, want) {
			t.Errorf("kube-apiserver lacks %s", want)
		}
	}
	if strings.Contains(args, "--anonymous-auth") {
		t.Error("kube-apiserver sets --anonymous-auth next to its authentication config")
	}
	for file, user := range map[string]string{fileControllerKubecf: "system:kube-controller-manager", fileSchedulerKubecf: "system:kube-scheduler"} {
		kp := as[0].Certs[map[string]string{fileControllerKubecf: pki.ControllerManagerCert, fileSchedulerKubecf: pki.SchedulerCert}[file]]
		cert, _ := tlsutil.ParseCertPEM(kp.CertPem)
		if cert.Subject.CommonName != user || len(cert.Subject.Organization) != 0 || !bytes.Contains(files[file].Data, []byte("127.0.0.1")) {
			t.Errorf("%s: identity %v", file, cert.Subject)
		}
	}
}

func binDir(t *testing.T) string {
	dir := os.Getenv("ONEINFRA_BIN_DIR")
	if dir == "" {
		root, err := containerd.RepoRoot()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(root, "_output/bin")
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			t.Fatalf("%s is missing from %s: run `make images`", b, dir)
		}
	}
	return dir
}

// start runs one of the plan's containers directly on the host.
func start(t *testing.T, bin string, c cri.Container) *exec.Cmd {
	cmd := exec.Command(filepath.Join(bin, c.Command[0]), c.Command[1:]...)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			out := logs.String()
			t.Logf("%s log (tail):\n%s", c.Name, out[max(0, len(out)-200000):])
		}
	})
	return cmd
}

func startPlan(t *testing.T, bin string, as *pb.Assignment, paths host.Paths, boot EtcdBootstrap, all bool) *host.Plan {
	plan, err := Render(as, paths, boot)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plan.WriteFiles(); err != nil {
		t.Fatal(err)
	}
	start(t, bin, plan.Pods[0].Containers[0])
	if all {
		for _, c := range plan.Pods[1].Containers {
			start(t, bin, c)
		}
	}
	return plan
}

func httpsClient(t *testing.T, as *pb.Assignment, client *pb.KeyPair) *http.Client {
	pool, _ := tlsutil.CertPool(as.CaCerts[pki.ClusterCA])
	conf := &tls.Config{RootCAs: pool}
	if client != nil {
		cert, err := tls.X509KeyPair(client.CertPem, client.KeyPem)
		if err != nil {
			t.Fatal(err)
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: conf}}
}

// TestControlPlaneBinaries runs the rendered etcd, kube-apiserver,
// kube-controller-manager and kube-scheduler as host processes.
func TestControlPlaneBinaries(t *testing.T) {
	bin := binDir(t)
	p, as := testCluster(t, 1)
	paths := host.Paths{Root: t.TempDir(), Cluster: "demo", Component: "demo-cp-0"}
	ctx := context.Background()
	boot, err := DecideBootstrap(ctx, as[0], paths)
	if err != nil || boot.State != "new" {
		t.Fatalf("bootstrap of a lone member: %v %v", boot, err)
	}
	began := time.Now()
	startPlan(t, bin, as[0], paths, boot, true)
	api := url("127.0.0.1", as[0].Component.Spec.Ports[portAPIServer])
	anon := httpsClient(t, as[0], nil)
	get := func(c *http.Client, path string) (int, string) {
		resp, err := c.Get(api + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	testutil.Eventually(t, 90*time.Second, "/readyz", func() error {
		if code, body := get(anon, "/readyz"); code != 200 {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	})
	t.Logf("etcd + control plane ready %.1fs after start", time.Since(began).Seconds())
	if code, _ := get(anon, "/api/v1/namespaces"); code != 401 && code != 403 {
		t.Errorf("anonymous list of namespaces: %d", code)
	}
	admin, err := pki.AdminKubeconfigCert(p, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	adminc := httpsClient(t, as[0], admin)
	secret := `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s1"},"stringData":{"k":"plain-text-value"}}`
	resp, err := adminc.Post(api+"/api/v1/namespaces/default/secrets", "application/json", strings.NewReader(secret))
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("creating a secret: %v %v", resp, err)
	}
	resp.Body.Close()
	cli, err := etcdClient(as[0], clientEndpoints(as[0], "", false))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	got, err := cli.Get(ctx, "/registry/secrets/default/s1")
	if err != nil || len(got.Kvs) != 1 {
		t.Fatalf("reading the secret from etcd: %v %v", got, err)
	}
	if v := got.Kvs[0].Value; !bytes.HasPrefix(v, []byte("k8s:enc:secretbox:v1:key1:")) || bytes.Contains(v, []byte("plain-text-value")) {
		t.Errorf("the secret is not encrypted at rest: %q", v[:min(60, len(v))])
	}
	// The controller-manager and the scheduler, with their own identities,
	// take their leader leases.
	testutil.Eventually(t, 60*time.Second, "controller-manager and scheduler leases", func() error {
		for _, lease := range []string{"kube-controller-manager", "kube-scheduler"} {
			if code, body := get(adminc, "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/"+lease); code != 200 {
				return fmt.Errorf("lease %s: %d %s", lease, code, body[:min(100, len(body))])
			}
		}
		return nil
	})
}

// TestEtcdMembership grows a member to three (learners promoted) and
// shrinks it back to two, keeping the data.
func TestEtcdMembership(t *testing.T) {
	bin := binDir(t)
	_, as := testCluster(t, 3)
	ctx := context.Background()
	root := t.TempDir()
	paths := func(i int) host.Paths {
		return host.Paths{Root: filepath.Join(root, fmt.Sprint(i)), Cluster: "demo", Component: as[i].Component.Metadata.Name}
	}
	if _, err := DecideBootstrap(ctx, as[1], paths(1)); err == nil {
		t.Fatal("a member that is not the first started a cluster of its own")
	}
	boot, err := DecideBootstrap(ctx, as[0], paths(0))
	if err != nil {
		t.Fatal(err)
	}
	startPlan(t, bin, as[0], paths(0), boot, false)
	cli, err := etcdClient(as[0], clientEndpoints(as[0], "", false)[:1])
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	testutil.Eventually(t, 30*time.Second, "first member", func() error {
		_, err := cli.Put(ctx, "before", "kept")
		return err
	})
	for i := 1; i < 3; i++ {
		var boot EtcdBootstrap
		testutil.Eventually(t, 30*time.Second, "joining as a learner", func() (err error) {
			boot, err = DecideBootstrap(ctx, as[i], paths(i))
			return err
		})
		if boot.State != "existing" || !strings.Contains(boot.InitialCluster, as[i].Component.Metadata.Name+"=") {
			t.Fatalf("member %d bootstrap: %+v", i, boot)
		}
		startPlan(t, bin, as[i], paths(i), boot, false)
		testutil.Eventually(t, 60*time.Second, "promotion", func() error { return PromoteLearners(ctx, as[i], paths(i)) })
	}
	list, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	voters := 0
	for _, m := range list.Members {
		if !m.IsLearner {
			voters++
		}
	}
	if voters != 3 {
		t.Fatalf("%d voters, want 3: %v", voters, list.Members)
	}
	// etcd refuses to remove a voter until the others are known healthy;
	// the agent retries on its next sync, the test likewise.
	testutil.Eventually(t, 30*time.Second, "member removal", func() error { return RemoveMember(ctx, as[2], paths(2)) })
	list, err = cli.MemberList(ctx)
	if err != nil || len(list.Members) != 2 {
		t.Fatalf("after removal: %v %v", list, err)
	}
	got, err := cli.Get(ctx, "before")
	if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "kept" {
		t.Fatalf("data after membership changes: %v %v", got, err)
	}
}

func TestOldestPeer(t *testing.T) {
	peers := []*pb.Endpoint{{Name: "demo-cp-10"}, {Name: "demo-cp-9"}, {Name: "demo-cp-11"}}
	if got := oldestPeer(peers); got != "demo-cp-9" {
		t.Errorf("oldest of demo-cp-10, -9, -11: %s, want demo-cp-9", got)
	}
}

// without returns a copy of as whose etcd peers and clients lack name, as
// the coordinator assigns once that replica is marked for removal.
func without(as *pb.Assignment, name string) *pb.Assignment {
	c := proto.Clone(as).(*pb.Assignment)
	c.EtcdPeers = slices.DeleteFunc(c.EtcdPeers, func(e *pb.Endpoint) bool { return e.Name == name })
	c.EtcdClients = slices.DeleteFunc(c.EtcdClients, func(e *pb.Endpoint) bool { return e.Name == name })
	return c
}

// onPeerPortOf returns a copy of as whose own etcd peer URL is the one
// prev's replica had: the scheduler hands a freed host port to the next
// replica on that hypervisor.
func onPeerPortOf(as, prev *pb.Assignment) *pb.Assignment {
	c := proto.Clone(as).(*pb.Assignment)
	port := prev.Component.Spec.Ports[portEtcdPeer]
	c.Component.Spec.Ports[portEtcdPeer] = port
	for _, p := range c.EtcdPeers {
		if p.Name == c.Component.Metadata.Name {
			p.Port = port
		}
	}
	return c
}

// peerURL is the etcd peer URL as assigns to the replica name.
func peerURL(as *pb.Assignment, name string) string {
	for _, p := range as.EtcdPeers {
		if p.Name == name {
			return url(p.Address, p.Port)
		}
	}
	return ""
}

// TestRemoveStrangers: a member whose process is gone (its hypervisor is
// dead) and that the coordinator dropped from the peers is removed by a
// survivor; the cluster goes on with the other two, and its replacement
// joins only once the dead member is gone.
func TestRemoveStrangers(t *testing.T) {
	bin := binDir(t)
	_, all := testCluster(t, 4)
	spare := all[3].Component.Metadata.Name
	as := []*pb.Assignment{without(all[0], spare), without(all[1], spare), without(all[2], spare)}
	ctx := context.Background()
	root := t.TempDir()
	paths := func(i int) host.Paths {
		return host.Paths{Root: filepath.Join(root, fmt.Sprint(i)), Cluster: "demo", Component: all[i].Component.Metadata.Name}
	}
	procs := make([]*exec.Cmd, 3)
	for i := range 3 {
		var boot EtcdBootstrap
		testutil.Eventually(t, 30*time.Second, "bootstrap decision", func() (err error) {
			boot, err = DecideBootstrap(ctx, as[i], paths(i))
			return err
		})
		plan, err := Render(as[i], paths(i), boot)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := plan.WriteFiles(); err != nil {
			t.Fatal(err)
		}
		procs[i] = start(t, bin, plan.Pods[0].Containers[0])
		testutil.Eventually(t, 60*time.Second, "voting member", func() error { return PromoteLearners(ctx, as[i], paths(i)) })
	}
	// With every member among the peers, nobody is a stranger; and a
	// member missing from an assignment that predates it is left alone
	// while it answers.
	if removed, err := RemoveStrangers(ctx, as[0], paths(0)); err != nil || len(removed) != 0 {
		t.Fatalf("with all peers assigned: removed %v, %v", removed, err)
	}
	if removed, err := RemoveStrangers(ctx, without(as[0], as[1].Component.Metadata.Name), paths(0)); err != nil || len(removed) != 0 {
		t.Fatalf("a live member missing from a stale assignment: removed %v, %v", removed, err)
	}
	cli, err := etcdClient(as[0], clientEndpoints(as[0], "", false)[:2])
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, "before", "kept"); err != nil {
		t.Fatal(err)
	}

	// The third member's host dies.
	gone := as[2].Component.Metadata.Name
	procs[2].Process.Kill()
	procs[2].Wait()
	survivors := []*pb.Assignment{without(as[0], gone), without(as[1], gone)}
	// Its replacement, placed on the freed host port (ports are reused),
	// waits while the dead member is listed: an initial cluster naming it
	// would keep etcd from ever starting.
	replacement := onPeerPortOf(without(all[3], gone), as[2])
	if _, err := DecideBootstrap(ctx, replacement, paths(3)); !errors.Is(err, host.ErrWaiting) || !strings.Contains(err.Error(), gone) {
		t.Fatalf("a replacement joining while %s is a member: %v", gone, err)
	}
	began := time.Now()
	var removed []string
	testutil.Eventually(t, 30*time.Second, "stranger removed", func() (err error) {
		removed, err = RemoveStrangers(ctx, survivors[0], paths(0))
		return err
	})
	t.Logf("removed %v in %v", removed, time.Since(began))
	if !slices.Equal(removed, []string{gone}) {
		t.Fatalf("removed %v, want [%s]", removed, gone)
	}
	list, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Members) != 2 {
		t.Fatalf("members after removal: %v", list.Members)
	}
	for _, m := range list.Members {
		if m.Name == gone || m.IsLearner {
			t.Errorf("member %s (learner %v) after removal", m.Name, m.IsLearner)
		}
	}
	// The other survivor finds nothing left to do, and never removes
	// itself nor a peer.
	if removed, err := RemoveStrangers(ctx, survivors[1], paths(1)); err != nil || len(removed) != 0 {
		t.Errorf("second survivor: removed %v, %v", removed, err)
	}
	// The cluster keeps working: it writes and reads through a quorum of
	// two, and a replacement could join it.
	if _, err := cli.Put(ctx, "after", "written"); err != nil {
		t.Fatalf("writing after the removal: %v", err)
	}
	for k, v := range map[string]string{"before": "kept", "after": "written"} {
		got, err := cli.Get(ctx, k)
		if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != v {
			t.Errorf("reading %s: %v %v", k, got, err)
		}
	}
	// Now the replacement joins as a learner, with the members etcd has,
	// under its own name at the dead member's old peer URL.
	boot, err := DecideBootstrap(ctx, replacement, paths(3))
	reused := spare + "=" + peerURL(as[2], gone)
	if err != nil || boot.State != "existing" || strings.Contains(boot.InitialCluster, gone+"=") || !strings.Contains(boot.InitialCluster, reused) {
		t.Fatalf("replacement bootstrap: %+v %v, want %s in the initial cluster", boot, err, reused)
	}
	// A member that is a learner does not remove anyone: only voters act;
	// and a learner not started yet (no name) is no stranger.
	if removed, err := RemoveStrangers(ctx, survivors[0], paths(0)); err != nil || len(removed) != 0 {
		t.Errorf("an unstarted learner (no name yet) was taken for a stranger: %v %v", removed, err)
	}
}
