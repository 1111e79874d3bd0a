package ingress

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/agent/cri"
	"github.com/oneinfra/oneinfra/agent/host"
	"github.com/oneinfra/oneinfra/internal/testutil"
	"github.com/oneinfra/oneinfra/internal/testutil/containerd"
	"github.com/oneinfra/oneinfra/test/images"
)

// TestIngressPod runs the rendered pod with the haproxy image (Debian's
// haproxy, built by `make images`) on a private containerd, the way the
// agent does: the master socket made in the container is reached from the
// host, a change of API servers keeps the pod (same sandbox) and is
// reloaded without dropping a connection. Needs root, containerd and runc
// (fails, saying so, without them).
func TestIngressPod(t *testing.T) {
	haproxyBinary(t) // the image is built from it
	start := time.Now()
	inst := containerd.Start(t)
	inst.Import(t, "pause", "haproxy")
	t.Logf("containerd started and images imported in %s", time.Since(start).Round(time.Millisecond))
	ctx := context.Background()
	r, err := cri.Connect(ctx, inst.Endpoint(), cri.Options{LogDir: t.TempDir(), PullPolicy: cri.PullNever, StopTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })

	p, certs := newPKI(t, "demo")
	a := startAPIServer(t, p, "demo-cp-0", "127.0.0.1")
	b := startAPIServer(t, p, "demo-cp-1", "127.0.0.1")
	port := freeLoopbackPort(t)
	paths := host.Paths{Root: t.TempDir(), Cluster: "demo", Component: certs.Component}
	as := assignment(p, certs, port, a.endpoint())
	as.Images[ContainerName] = images.Ref("haproxy")
	plan := writePlan(t, as, paths)

	reconcile := func() cri.PodStatus {
		t.Helper()
		st, err := r.Reconcile(ctx, "demo", plan.Pods)
		if err != nil {
			t.Fatal(err)
		}
		return st[0]
	}
	t.Cleanup(func() { _ = r.RemoveCluster(context.Background(), "demo") }) // when the test stops early
	start = time.Now()
	var first cri.PodStatus
	testutil.Eventually(t, 30*time.Second, "the ingress pod running and the API reachable through it", func() error {
		first = reconcile()
		if first.State != cri.PodRunning {
			return fmt.Errorf("pod %s: %s %s %v", first.Name, first.State, first.Message, first.Containers)
		}
		return Probe(ctx, as, "127.0.0.1")
	})
	t.Logf("pod running, API reachable through it %s after the first reconcile", time.Since(start).Round(time.Millisecond))

	c := newClient(t, p, port)
	long := c.dial()
	if got, err := long.who(); err != nil || got != "demo-cp-0" {
		t.Fatalf("long-lived connection: %q %v", got, err)
	}

	// Another API server: new files, same pod, a reload.
	as2 := assignment(p, certs, port, a.endpoint(), b.endpoint())
	as2.Images[ContainerName] = images.Ref("haproxy")
	plan = render(t, as2, paths)
	if changed, err := plan.WriteFiles(); err != nil || !changed {
		t.Fatalf("writing the new configuration: %v %v", changed, err)
	}
	if st := reconcile(); st.SandboxID != first.SandboxID || st.State != cri.PodRunning {
		t.Fatalf("a change of API servers replaced the pod: sandbox %s then %s (%s)", first.SandboxID, st.SandboxID, st.State)
	}
	stop := dialLoop(c)
	start = time.Now()
	if err := Reload(ctx, paths); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	n, failures := stop()
	t.Logf("reload through the container's master socket took %s; %d connections during it, %d refused", took.Round(time.Millisecond), n, len(failures))
	if len(failures) > 0 {
		t.Errorf("connections refused during the reload: %v", failures)
	}
	if got, err := long.who(); err != nil || got != "demo-cp-0" {
		t.Errorf("the long-lived connection after the reload: %q %v", got, err)
	}
	waitStates(t, paths, 10*time.Second, map[string]bool{"demo-cp-0": true, "demo-cp-1": true})
	if got := c.spread(t, 20); got["demo-cp-1"] == 0 {
		t.Errorf("the new API server gets no traffic: %v", got)
	}
	if st := reconcile(); st.SandboxID != first.SandboxID || st.Containers[0].RestartCount != 0 {
		t.Errorf("after the reload: sandbox %s (was %s), %d restarts", st.SandboxID, first.SandboxID, st.Containers[0].RestartCount)
	}
	long.tc.Close()

	if err := r.RemoveCluster(ctx, "demo"); err != nil {
		t.Fatalf("removing the pod: %v", err)
	}
	if err := Probe(ctx, as2, "127.0.0.1"); err == nil {
		t.Errorf("the API is still reachable after the pod was removed")
	}
}
