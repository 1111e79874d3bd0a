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
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/agent/cri"
	"github.com/oneinfra/oneinfra/agent/host"
	"github.com/oneinfra/oneinfra/internal/testutil"
	"github.com/oneinfra/oneinfra/internal/testutil/cluster"
	"github.com/oneinfra/oneinfra/internal/testutil/containerd"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
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
	// A new generation of certificates restarts the Kubernetes pod, not
	// etcd's (etcd reads its certificates on every connection).
	as[0].CertGeneration++
	renewed, err := Render(as[0], paths, boot)
	if err != nil {
		t.Fatal(err)
	}
	if cri.SpecHash(renewed.Pods[0]) != cri.SpecHash(plan.Pods[0]) || cri.SpecHash(renewed.Pods[1]) == cri.SpecHash(plan.Pods[1]) {
		t.Errorf("a new certificate generation changes pods %v, want only the control-plane one", [2]bool{
			cri.SpecHash(renewed.Pods[0]) != cri.SpecHash(plan.Pods[0]), cri.SpecHash(renewed.Pods[1]) != cri.SpecHash(plan.Pods[1])})
	}
	as[0].CertGeneration--
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
		kp := as[0].Certs[map[string]string{fileControllerKubecf: vocab.ControllerManagerCert, fileSchedulerKubecf: vocab.SchedulerCert}[file]]
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
	testutil.StartProcess(t, c.Name, cmd)
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
	pool, _ := tlsutil.CertPool(as.CaCerts[vocab.ClusterCA])
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
	boot, err := DecideBootstrap(ctx, as[0], paths, true)
	if err != nil || boot.State != "new" {
		t.Fatalf("bootstrap of a lone member: %v %v", boot, err)
	}
	began := time.Now()
	startPlan(t, bin, as[0], paths, boot, true)
	api := url("127.0.0.1", as[0].Component.Spec.Ports[vocab.PortAPIServer])
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
	admin := cluster.AdminCert(t, p)
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

// memberPaths are the paths of each member of as, under a directory of
// its own.
func memberPaths(t *testing.T, as []*pb.Assignment) func(int) host.Paths {
	root := t.TempDir()
	return func(i int) host.Paths {
		return host.Paths{Root: filepath.Join(root, fmt.Sprint(i)), Cluster: "demo", Component: as[i].Component.Metadata.Name}
	}
}

// TestEtcdMembership grows a member to three (learners promoted) and
// shrinks it back to two, keeping the data.
func TestEtcdMembership(t *testing.T) {
	bin := binDir(t)
	_, as := testCluster(t, 3)
	ctx := context.Background()
	paths := memberPaths(t, as)
	if _, err := DecideBootstrap(ctx, as[1], paths(1), true); err == nil {
		t.Fatal("a member that is not the first started a cluster of its own")
	}
	boot, err := DecideBootstrap(ctx, as[0], paths(0), true)
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
			boot, err = DecideBootstrap(ctx, as[i], paths(i), true)
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

// TestEtcdStaticBootstrap starts the three members placed together all at
// once, each with the three as its initial cluster: none waits for another
// or joins as a learner, and all three vote. A decision made again after a
// repair, or by a member whose peer URL moved since it was placed, is
// never the static one, nor a cluster of its own.
func TestEtcdStaticBootstrap(t *testing.T) {
	bin := binDir(t)
	_, as := testCluster(t, 3)
	ctx := context.Background()
	paths := memberPaths(t, as)
	var want []string
	for _, a := range as {
		a.Component.Spec.EtcdInitialCluster = slices.Clone(a.EtcdPeers)
		want = append(want, a.Component.Metadata.Name+"="+peerURL(a, a.Component.Metadata.Name))
	}
	sort.Strings(want)
	// Never alone, not even the first by name: the others form the
	// cluster without it.
	if _, err := DecideBootstrap(ctx, as[0], paths(0), false); !errors.Is(err, host.ErrWaiting) {
		t.Fatalf("a member deciding again after a repair, no member running: %v, want it to wait for the others", err)
	}
	moved := onPeerPortOf(as[0], as[1])
	if _, err := DecideBootstrap(ctx, moved, paths(0), true); !errors.Is(err, host.ErrWaiting) {
		t.Fatalf("a member whose peer URL moved since it was placed: %v, want it to wait for the others", err)
	}
	began := time.Now()
	for i, a := range as {
		boot, err := DecideBootstrap(ctx, a, paths(i), true)
		if err != nil || boot.State != "new" || boot.InitialCluster != strings.Join(want, ",") {
			t.Fatalf("member %d, placed with the others, no member running: %+v %v, want a new cluster of %v", i, boot, err, want)
		}
		startEtcd(t, bin, a, paths(i), boot)
	}
	for i, a := range as {
		testutil.Eventually(t, 60*time.Second, "voting member", func() error { return PromoteLearners(ctx, a, paths(i)) })
	}
	t.Logf("three members voting %.1fs after they started together", time.Since(began).Seconds())
	cli, err := etcdClient(as[0], clientEndpoints(as[0], "", false))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	list, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range list.Members {
		if m.IsLearner || len(m.ClientURLs) == 0 {
			t.Errorf("member %s: learner %v, client URLs %v; want a started voter", m.Name, m.IsLearner, m.ClientURLs)
		}
	}
	if got := memberNames(t, as[0]); len(got) != 3 {
		t.Fatalf("members %v, want the three placed together", got)
	}
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("a write to the new cluster: %v", err)
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
	port := prev.Component.Spec.Ports[vocab.PortEtcdPeer]
	c.Component.Spec.Ports[vocab.PortEtcdPeer] = port
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

// viewed returns a copy of as with the coordinator's view of the etcd
// membership: every replica ever placed has an index below floor, and
// members are the replicas (of all) that are or may become members.
func viewed(as *pb.Assignment, all []*pb.Assignment, floor int, members ...string) *pb.Assignment {
	c := proto.Clone(as).(*pb.Assignment)
	c.ReplicaFloor = uint32(floor)
	c.EtcdMembers = nil
	for _, o := range all {
		if slices.Contains(members, o.Component.Metadata.Name) {
			addr := o.EtcdPeers[0].Address // the tests' members share one address
			c.EtcdMembers = append(c.EtcdMembers, &pb.Endpoint{Name: o.Component.Metadata.Name, Address: addr, Port: o.Component.Spec.Ports[vocab.PortEtcdPeer]})
		}
	}
	return c
}

// startMember decides how the member of as starts (waiting while it must),
// starts its etcd and waits until it votes.
func startMember(t *testing.T, bin string, as *pb.Assignment, paths host.Paths) *exec.Cmd {
	t.Helper()
	ctx := context.Background()
	var boot EtcdBootstrap
	testutil.Eventually(t, 30*time.Second, "bootstrap decision of "+as.Component.Metadata.Name, func() (err error) {
		boot, err = DecideBootstrap(ctx, as, paths, true)
		return err
	})
	proc := startEtcd(t, bin, as, paths, boot)
	testutil.Eventually(t, 60*time.Second, "voting member "+as.Component.Metadata.Name, func() error { return PromoteLearners(ctx, as, paths) })
	return proc
}

func startEtcd(t *testing.T, bin string, as *pb.Assignment, paths host.Paths, boot EtcdBootstrap) *exec.Cmd {
	t.Helper()
	plan, err := Render(as, paths, boot)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plan.WriteFiles(); err != nil {
		t.Fatal(err)
	}
	return start(t, bin, plan.Pods[0].Containers[0])
}

func memberNames(t *testing.T, as *pb.Assignment) []string {
	t.Helper()
	cli, err := etcdClient(as, clientEndpoints(as, "", false))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range list.Members {
		names = append(names, m.Name)
	}
	sort.Strings(names)
	return names
}

// TestRemoveGone: only a member that the coordinator's view says is gone
// is ever removed, whoever asks and whatever answers. A survivor removes
// the member of a replica moved off a dead hypervisor; a replica holding
// a view older than a member (the drain's surge replica, which a stale
// view does not list) never removes it, even when it does not answer;
// the replacement joins once the gone member has left, on its freed port.
func TestRemoveGone(t *testing.T) {
	bin := binDir(t)
	_, all := testCluster(t, 5)
	name := func(i int) string { return all[i].Component.Metadata.Name }
	ctx := context.Background()
	root := t.TempDir()
	paths := func(i int) host.Paths {
		return host.Paths{Root: filepath.Join(root, fmt.Sprint(i)), Cluster: "demo", Component: name(i)}
	}
	// Three replicas, 0 to 2, placed at once.
	first := []string{name(0), name(1), name(2)}
	as := make([]*pb.Assignment, 3)
	procs := make([]*exec.Cmd, 3)
	for i := range 3 {
		as[i] = viewed(without(without(all[i], name(3)), name(4)), all, 3, first...)
		procs[i] = startMember(t, bin, as[i], paths(i))
	}
	cli, err := etcdClient(as[0], clientEndpoints(as[0], "", false)[:2])
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, "before", "kept"); err != nil {
		t.Fatal(err)
	}
	if removed, err := RemoveGone(ctx, as[0], paths(0)); err != nil || len(removed) != 0 {
		t.Fatalf("with every member in the view: removed %v, %v", removed, err)
	}
	// A view from before replica 2 was placed (floor 2): replica 2 is
	// newer than the view, so it stays, even once its process is gone.
	stale := viewed(without(as[0], name(2)), all, 2, name(0), name(1))
	procs[2].Process.Kill()
	procs[2].Wait()
	if removed, err := RemoveGone(ctx, stale, paths(0)); err != nil || len(removed) != 0 {
		t.Fatalf("a member newer than the view was removed: %v, %v", removed, err)
	}
	if got := memberNames(t, as[0]); !slices.Equal(got, first) {
		t.Fatalf("members after a stale view: %v", got)
	}

	// Replica 2's hypervisor is dead: the coordinator places replica 3
	// and marks 2 for removal (it is not a member in the view any more).
	survivors := []*pb.Assignment{
		viewed(without(as[0], name(2)), all, 4, name(0), name(1), name(3)),
		viewed(without(as[1], name(2)), all, 4, name(0), name(1), name(3)),
	}
	// Replica 3, on the host port replica 2 had once 2 is forgotten (ports
	// are reused), waits while 2 is listed: an initial cluster naming it
	// would not start once it is gone.
	replacement := viewed(onPeerPortOf(without(all[3], name(2)), as[2]), all, 4, name(0), name(1), name(3))
	if _, err := DecideBootstrap(ctx, replacement, paths(3), true); !errors.Is(err, host.ErrWaiting) || !strings.Contains(err.Error(), name(2)) {
		t.Fatalf("a replacement joining while %s is a member: %v", name(2), err)
	}
	began := time.Now()
	var removed []string
	testutil.Eventually(t, 30*time.Second, "gone member removed", func() (err error) {
		removed, err = RemoveGone(ctx, survivors[0], paths(0))
		return err
	})
	t.Logf("removed %v in %v", removed, time.Since(began))
	if !slices.Equal(removed, []string{name(2)}) {
		t.Fatalf("removed %v, want [%s]", removed, name(2))
	}
	if removed, err := RemoveGone(ctx, survivors[1], paths(1)); err != nil || len(removed) != 0 {
		t.Errorf("second survivor: removed %v, %v", removed, err)
	}
	if _, err := cli.Put(ctx, "after", "written"); err != nil {
		t.Fatalf("writing after the removal: %v", err)
	}
	var boot EtcdBootstrap
	testutil.Eventually(t, 30*time.Second, "replacement joins", func() (err error) {
		boot, err = DecideBootstrap(ctx, replacement, paths(3), true)
		return err
	})
	reused := name(3) + "=" + peerURL(as[2], name(2))
	if boot.State != "existing" || strings.Contains(boot.InitialCluster, name(2)+"=") || !strings.Contains(boot.InitialCluster, reused) {
		t.Fatalf("replacement bootstrap: %+v, want %s in the initial cluster", boot, reused)
	}
	// Its learner, not started yet (no name), is no one's to remove.
	if removed, err := RemoveGone(ctx, survivors[0], paths(0)); err != nil || len(removed) != 0 {
		t.Errorf("an unstarted learner was removed: %v %v", removed, err)
	}

	// Replica 3 is removed before its etcd ever starts (its hypervisor
	// died too), and replica 4 placed: 3's learner would keep every other
	// learner out, so 4's join takes it out, then joins.
	later := viewed(without(without(all[4], name(2)), name(3)), all, 5, name(0), name(1), name(4))
	var joined EtcdBootstrap
	testutil.Eventually(t, 30*time.Second, "joining past a stale learner", func() (err error) {
		joined, err = DecideBootstrap(ctx, later, paths(4), true)
		return err
	})
	startEtcd(t, bin, later, paths(4), joined)
	testutil.Eventually(t, 60*time.Second, "voting member "+name(4), func() error { return PromoteLearners(ctx, later, paths(4)) })
	if got, want := memberNames(t, as[0]), []string{name(0), name(1), name(4)}; !slices.Equal(got, want) {
		t.Fatalf("members: %v, want %v", got, want)
	}
	for k, v := range map[string]string{"before": "kept", "after": "written"} {
		got, err := cli.Get(ctx, k)
		if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != v {
			t.Errorf("reading %s: %v %v", k, got, err)
		}
	}
}

// TestRepair: a member removed from its cluster while it ran (as a drain
// once removed its own surge replica) is found by Diagnose, its data set
// aside, and it joins again; a member whose decision went stale before
// its first start (the membership changed) is decided again; a healthy
// member needs nothing.
func TestRepair(t *testing.T) {
	bin := binDir(t)
	_, as := testCluster(t, 4)
	name := func(i int) string { return as[i].Component.Metadata.Name }
	ctx := context.Background()
	root := t.TempDir()
	paths := func(i int) host.Paths {
		return host.Paths{Root: filepath.Join(root, fmt.Sprint(i)), Cluster: "demo", Component: name(i)}
	}
	three := make([]*pb.Assignment, 3)
	procs := make([]*exec.Cmd, 3)
	for i := range 3 {
		three[i] = viewed(without(as[i], name(3)), as, 3, name(0), name(1), name(2))
		procs[i] = startMember(t, bin, three[i], paths(i))
	}
	if fix, why := Diagnose(ctx, three[2], paths(2), true); fix != NoRepair {
		t.Fatalf("a healthy member: %v %s", fix, why)
	}
	cli, err := etcdClient(three[0], clientEndpoints(three[0], "", false)[:2])
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	// Member 2 is taken out of etcd by mistake; its etcd stops.
	list, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range list.Members {
		if m.Name == name(2) {
			testutil.Eventually(t, 30*time.Second, "removing "+name(2), func() error { _, err := cli.MemberRemove(ctx, m.ID); return err })
		}
	}
	procs[2].Process.Kill()
	procs[2].Wait()
	fix, why := Diagnose(ctx, three[2], paths(2), false)
	if fix != Rejoin || !strings.Contains(why, name(2)) {
		t.Fatalf("a removed member: %v %q, want Rejoin", fix, why)
	}
	if err := SetAsideData(paths(2)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(paths(2).DataDir(), "etcd-removed", "member", "wal")); err != nil {
		t.Fatalf("the removed member's data was not set aside: %v", err)
	}
	startMember(t, bin, three[2], paths(2))
	only := proto.Clone(three[2]).(*pb.Assignment)
	only.EtcdClients = []*pb.Endpoint{only.EtcdClients[2]}
	c2, err := etcdClient(only, clientEndpoints(only, "", false))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	testutil.Eventually(t, 30*time.Second, "data on the rejoined member", func() error {
		got, err := c2.Get(ctx, "k")
		if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "v" {
			return fmt.Errorf("%v %v", got, err)
		}
		return nil
	})

	// Member 3 decides to join, but member 1 leaves before 3 first starts:
	// the initial cluster it decided names a member etcd no longer has,
	// so its etcd fails; Diagnose has it decide again.
	joiner := viewed(as[3], as, 4, name(0), name(1), name(2), name(3))
	var stale EtcdBootstrap
	testutil.Eventually(t, 30*time.Second, "decision of "+name(3), func() (err error) {
		stale, err = DecideBootstrap(ctx, joiner, paths(3), true)
		return err
	})
	testutil.Eventually(t, 30*time.Second, "removing "+name(1), func() error { return RemoveMember(ctx, three[1], paths(1)) })
	procs[1].Process.Kill()
	procs[1].Wait()
	if fix, _ := Diagnose(ctx, joiner, paths(3), false); fix != NoRepair {
		t.Fatalf("a member not failing yet: %v", fix)
	}
	bad := startEtcd(t, bin, joiner, paths(3), stale)
	done := make(chan error, 1)
	go func() { done <- bad.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("etcd started with an initial cluster naming a removed member: %s", stale.InitialCluster)
	}
	joiner = viewed(without(joiner, name(1)), as, 4, name(0), name(2), name(3))
	fix, why = Diagnose(ctx, joiner, paths(3), true)
	if fix != Redecide {
		t.Fatalf("a member failing on a stale decision: %v %q, want Redecide", fix, why)
	}
	boot, err := DecideBootstrap(ctx, joiner, paths(3), true)
	if err != nil || strings.Contains(boot.InitialCluster, name(1)+"=") {
		t.Fatalf("decided again: %+v %v", boot, err)
	}
	startEtcd(t, bin, joiner, paths(3), boot)
	testutil.Eventually(t, 60*time.Second, "voting member "+name(3), func() error { return PromoteLearners(ctx, joiner, paths(3)) })
	if got, want := memberNames(t, three[0]), []string{name(0), name(2), name(3)}; !slices.Equal(got, want) {
		t.Fatalf("members: %v, want %v", got, want)
	}
}
