package cri_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/oneinfra/oneinfra/agent/cri"
	"github.com/oneinfra/oneinfra/internal/testutil/containerd"
	"github.com/oneinfra/oneinfra/test/images"
)

// These tests run a private containerd (root, containerd and runc needed:
// they fail, saying so, when missing).

type env struct {
	inst   *containerd.Instance
	raw    runtimeapi.RuntimeServiceClient
	logDir string
}

func setup(t *testing.T) *env {
	t.Helper()
	inst := containerd.Start(t)
	inst.Import(t, "pause", "testapp")
	conn, err := grpc.NewClient(inst.Endpoint(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &env{inst: inst, raw: runtimeapi.NewRuntimeServiceClient(conn), logDir: t.TempDir()}
}

func (e *env) runtime(t *testing.T, opts cri.Options) *cri.Runtime {
	t.Helper()
	if opts.LogDir == "" {
		opts.LogDir = e.logDir
	}
	if opts.StopTimeout == 0 {
		opts.StopTimeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := cri.Connect(ctx, e.inst.Endpoint(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func (e *env) sandboxes(t *testing.T, selector map[string]string) []*runtimeapi.PodSandbox {
	t.Helper()
	resp, err := e.raw.ListPodSandbox(context.Background(), &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{LabelSelector: selector}})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Items
}

func (e *env) containers(t *testing.T, sandboxID string) []*runtimeapi.Container {
	t.Helper()
	resp, err := e.raw.ListContainers(context.Background(), &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: sandboxID}})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Containers
}

func testapp(name string, args ...string) cri.Container {
	return cri.Container{Name: name, Image: images.Ref("testapp"), Args: args}
}

func reconcile(t *testing.T, r *cri.Runtime, cluster string, pods ...cri.Pod) []cri.PodStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := r.Reconcile(ctx, cluster, pods)
	if err != nil {
		t.Fatalf("reconcile %s: %v", cluster, err)
	}
	return st
}

func requireRunning(t *testing.T, st []cri.PodStatus) {
	t.Helper()
	for _, s := range st {
		if s.State != cri.PodRunning {
			t.Fatalf("pod %s/%s is %s (%s: %s), want Running", s.Component, s.Name, s.State, s.Reason, s.Message)
		}
	}
}

func TestContainerd(t *testing.T) {
	e := setup(t)

	controlPlane := func(arg string) []cri.Pod {
		return []cri.Pod{
			{Component: "cp-1", Name: "etcd", Containers: []cri.Container{testapp("etcd", "-print", "etcd "+arg)}},
			{Component: "cp-1", Name: "apiserver", Labels: map[string]string{"extra": "yes"}, Containers: []cri.Container{
				testapp("kube-apiserver", "-print", "apiserver"),
				testapp("kube-scheduler", "-print", "scheduler"),
			}},
		}
	}

	var firstIDs map[string]string // pod name -> sandbox ID
	t.Run("component appears as labelled pods", func(t *testing.T) {
		r := e.runtime(t, cri.Options{})
		start := time.Now()
		st := reconcile(t, r, "demo", controlPlane("v1")...)
		t.Logf("2 pods, 3 containers started in %s", time.Since(start).Round(time.Millisecond))
		requireRunning(t, st)
		firstIDs = map[string]string{}
		for _, s := range st {
			firstIDs[s.Name] = s.SandboxID
		}
		sbs := e.sandboxes(t, map[string]string{cri.LabelCluster: "demo"})
		if len(sbs) != 2 {
			t.Fatalf("%d sandboxes for cluster demo, want 2", len(sbs))
		}
		for _, sb := range sbs {
			if sb.State != runtimeapi.PodSandboxState_SANDBOX_READY {
				t.Errorf("sandbox %s is %s", sb.Id, sb.State)
			}
			if sb.Labels[cri.LabelComponent] != "cp-1" || sb.Labels[cri.LabelSpecHash] == "" || sb.Labels[cri.LabelPod] == "" {
				t.Errorf("sandbox %s labels %v", sb.Id, sb.Labels)
			}
			var want cri.Pod
			for _, p := range controlPlane("v1") {
				if p.Name == sb.Labels[cri.LabelPod] {
					want = p
				}
			}
			if sb.Labels[cri.LabelSpecHash] != cri.SpecHash(want) {
				t.Errorf("sandbox %s hash %s, want %s", sb.Id, sb.Labels[cri.LabelSpecHash], cri.SpecHash(want))
			}
			if sb.Labels[cri.LabelPod] == "apiserver" && sb.Labels["extra"] != "yes" {
				t.Errorf("extra label missing: %v", sb.Labels)
			}
			cs := e.containers(t, sb.Id)
			for _, c := range cs {
				if c.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
					t.Errorf("container %s is %s", c.Metadata.Name, c.State)
				}
			}
		}
		// Host network: the sandbox shares the host's network namespace.
		resp, err := e.raw.PodSandboxStatus(context.Background(), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sbs[0].Id})
		if err != nil {
			t.Fatal(err)
		}
		if m := resp.Status.GetLinux().GetNamespaces().GetOptions().GetNetwork(); m != runtimeapi.NamespaceMode_NODE {
			t.Errorf("network namespace mode %s, want NODE", m)
		}
	})

	t.Run("unchanged pod survives a new runtime", func(t *testing.T) {
		r := e.runtime(t, cri.Options{}) // a restarted agent
		before := e.sandboxes(t, map[string]string{cri.LabelCluster: "demo"})
		st := reconcile(t, r, "demo", controlPlane("v1")...)
		requireRunning(t, st)
		for _, s := range st {
			if s.SandboxID != firstIDs[s.Name] {
				t.Errorf("pod %s: sandbox %s, want the unchanged %s", s.Name, s.SandboxID, firstIDs[s.Name])
			}
			for _, c := range s.Containers {
				if c.RestartCount != 0 {
					t.Errorf("container %s restarted %d times", c.Name, c.RestartCount)
				}
			}
		}
		after := e.sandboxes(t, map[string]string{cri.LabelCluster: "demo"})
		if len(after) != len(before) {
			t.Errorf("%d sandboxes, had %d", len(after), len(before))
		}
		for _, sb := range after {
			for _, c := range e.containers(t, sb.Id) {
				if c.Metadata.Attempt != 0 {
					t.Errorf("container %s was restarted (attempt %d)", c.Metadata.Name, c.Metadata.Attempt)
				}
			}
		}
	})

	t.Run("changed spec replaces the pod", func(t *testing.T) {
		r := e.runtime(t, cri.Options{})
		st := reconcile(t, r, "demo", controlPlane("v2")...)
		requireRunning(t, st)
		byName := map[string]cri.PodStatus{}
		for _, s := range st {
			byName[s.Name] = s
		}
		if byName["etcd"].SandboxID == firstIDs["etcd"] {
			t.Errorf("etcd pod kept its sandbox though its spec changed")
		}
		if byName["apiserver"].SandboxID != firstIDs["apiserver"] {
			t.Errorf("apiserver pod replaced though its spec did not change")
		}
		if sbs := e.sandboxes(t, map[string]string{cri.LabelCluster: "demo", cri.LabelPod: "etcd"}); len(sbs) != 1 || sbs[0].Id != byName["etcd"].SandboxID {
			t.Errorf("etcd sandboxes after replacement: %v", sbs)
		}
	})

	t.Run("not ready sandbox is replaced", func(t *testing.T) {
		r := e.runtime(t, cri.Options{})
		st := reconcile(t, r, "demo", controlPlane("v2")...)
		old := st[0].SandboxID
		if _, err := e.raw.StopPodSandbox(context.Background(), &runtimeapi.StopPodSandboxRequest{PodSandboxId: old}); err != nil {
			t.Fatal(err)
		}
		st = reconcile(t, r, "demo", controlPlane("v2")...)
		requireRunning(t, st)
		if st[0].SandboxID == old {
			t.Fatalf("stopped sandbox kept")
		}
		if sbs := e.sandboxes(t, map[string]string{cri.LabelCluster: "demo"}); len(sbs) != 2 {
			t.Errorf("%d sandboxes, want 2 (the stopped one removed)", len(sbs))
		}
	})

	t.Run("pods without our labels are untouched", func(t *testing.T) {
		r := e.runtime(t, cri.Options{})
		// One with no labels, one with only our cluster label.
		var foreign []string
		for i, labels := range []map[string]string{nil, {cri.LabelCluster: "demo"}} {
			cfg := &runtimeapi.PodSandboxConfig{
				Metadata:     &runtimeapi.PodSandboxMetadata{Name: "foreign", Namespace: "other", Uid: "u" + string(rune('0'+i))},
				Labels:       labels,
				LogDirectory: t.TempDir(),
				Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
					NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}}},
			}
			resp, err := e.raw.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{Config: cfg})
			if err != nil {
				t.Fatal(err)
			}
			c, err := e.raw.CreateContainer(context.Background(), &runtimeapi.CreateContainerRequest{
				PodSandboxId: resp.PodSandboxId, SandboxConfig: cfg,
				Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "app"}, Image: &runtimeapi.ImageSpec{Image: images.Ref("testapp")}, LogPath: "app.log"},
			})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.raw.StartContainer(context.Background(), &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId}); err != nil {
				t.Fatal(err)
			}
			foreign = append(foreign, resp.PodSandboxId)
		}
		reconcile(t, r, "demo", controlPlane("v2")[:1]...)
		if err := r.RemoveComponent(context.Background(), "demo", "cp-1"); err != nil {
			t.Fatal(err)
		}
		clusters, err := r.Clusters(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(clusters) != 0 {
			t.Errorf("clusters after removal: %v", clusters)
		}
		for _, id := range foreign {
			resp, err := e.raw.PodSandboxStatus(context.Background(), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id})
			if err != nil {
				t.Fatalf("foreign sandbox %s: %v", id, err)
			}
			if resp.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY {
				t.Errorf("foreign sandbox %s is %s", id, resp.Status.State)
			}
			for _, c := range e.containers(t, id) {
				if c.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
					t.Errorf("foreign container %s is %s", c.Id, c.State)
				}
			}
			_, _ = e.raw.StopPodSandbox(context.Background(), &runtimeapi.StopPodSandboxRequest{PodSandboxId: id})
			_, _ = e.raw.RemovePodSandbox(context.Background(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id})
		}
	})

	t.Run("removal leaves no pod", func(t *testing.T) {
		r := e.runtime(t, cri.Options{})
		requireRunning(t, reconcile(t, r, "gone", controlPlane("v1")...))
		requireRunning(t, reconcile(t, r, "stays", controlPlane("v1")[:1]...))
		start := time.Now()
		if err := r.RemoveCluster(context.Background(), "gone"); err != nil {
			t.Fatal(err)
		}
		t.Logf("2 pods (3 containers) stopped and removed in %s", time.Since(start).Round(time.Millisecond))
		if sbs := e.sandboxes(t, map[string]string{cri.LabelCluster: "gone"}); len(sbs) != 0 {
			t.Errorf("%d sandboxes left", len(sbs))
		}
		resp, err := e.raw.ListContainers(context.Background(), &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{LabelSelector: map[string]string{cri.LabelCluster: "gone"}}})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Containers) != 0 {
			t.Errorf("%d containers left", len(resp.Containers))
		}
		if clusters, _ := r.Clusters(context.Background()); !slices.Equal(clusters, []string{"stays"}) {
			t.Errorf("clusters %v, want [stays]", clusters)
		}
		logs, _ := filepath.Glob(filepath.Join(e.logDir, "oneinfra-gone_*"))
		if len(logs) != 0 {
			t.Errorf("log directories left: %v", logs)
		}
		// A component removed from the desired list goes too.
		reconcile(t, r, "stays")
		if sbs := e.sandboxes(t, map[string]string{cri.LabelCluster: "stays"}); len(sbs) != 0 {
			t.Errorf("%d sandboxes left after reconciling to nothing", len(sbs))
		}
	})

	t.Run("exiting container is Failed with its last log line", func(t *testing.T) {
		r := e.runtime(t, cri.Options{RestartBackoff: 300 * time.Millisecond, MaxRestartBackoff: time.Second})
		pod := cri.Pod{Component: "crash", Containers: []cri.Container{
			testapp("app", "-print", "starting", "-stderr", "fatal: cannot open /etc/oneinfra/missing.conf", "-exit", "3", "-after", "200ms"),
			testapp("sidecar"),
		}}
		var st cri.PodStatus
		deadline := time.Now().Add(10 * time.Second)
		for {
			st = reconcile(t, r, "crash", pod)[0]
			if st.State == cri.PodFailed || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if st.State != cri.PodFailed || st.Reason != cri.ReasonCrashLoopBackOff {
			t.Fatalf("pod is %s (%s: %s), want Failed (CrashLoopBackOff)", st.State, st.Reason, st.Message)
		}
		app := st.Containers[0]
		if app.State != cri.ContainerExited || app.ExitCode != 3 {
			t.Errorf("app: %+v", app)
		}
		if !slices.Contains(app.LogTail, "fatal: cannot open /etc/oneinfra/missing.conf") || app.LogTail[len(app.LogTail)-1] != "testapp: exiting with code 3" {
			t.Errorf("log tail %q", app.LogTail)
		}
		if !strings.Contains(st.Message, "exited with code 3") || !strings.Contains(st.Message, "testapp: exiting with code 3") {
			t.Errorf("message %q", st.Message)
		}
		// The restart is due after the first back-off (200 ms from the
		// container's exit, as containerd timed it): RequeueAfter says when,
		// or is zero if it is due already (a loaded machine).
		if st.RequeueAfter < 0 || st.RequeueAfter > time.Second {
			t.Errorf("RequeueAfter %v for a restart due about 200ms after the exit", st.RequeueAfter)
		}
		t.Logf("status message: %s", st.Message)
		sandbox := st.SandboxID

		// Restarted in place after the back-off; exited instances collected.
		deadline = time.Now().Add(20 * time.Second)
		for st.Containers[0].RestartCount < 3 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			st = reconcile(t, r, "crash", pod)[0]
		}
		if st.Containers[0].RestartCount < 3 {
			t.Fatalf("restart count %d after 20s", st.Containers[0].RestartCount)
		}
		if st.SandboxID != sandbox {
			t.Errorf("sandbox replaced on a container restart")
		}
		if st.Containers[1].RestartCount != 0 || st.Containers[1].State != cri.ContainerRunning {
			t.Errorf("sidecar: %+v", st.Containers[1])
		}
		if lt := st.Containers[0].LastTermination; st.Containers[0].State == cri.ContainerRunning && (lt == nil || lt.ExitCode != 3) {
			t.Errorf("last termination %+v", lt)
		}
		n := 0
		for _, c := range e.containers(t, sandbox) {
			if c.Metadata.Name == "app" {
				n++
			}
		}
		if n > 2 {
			t.Errorf("%d instances of app kept, want at most 2", n)
		}
		if err := r.RemoveCluster(context.Background(), "crash"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("command not found is reported", func(t *testing.T) {
		r := e.runtime(t, cri.Options{})
		c := testapp("app")
		c.Command = []string{"/usr/bin/does-not-exist"}
		st, err := r.Reconcile(context.Background(), "nocmd", []cri.Pod{{Component: "x", Containers: []cri.Container{c}}})
		if err == nil {
			t.Errorf("no error")
		}
		if len(st) != 1 || st[0].State != cri.PodFailed || !strings.Contains(st[0].Message, "does-not-exist") {
			t.Errorf("status %+v", st)
		}
		t.Logf("status message: %s", st[0].Message)
		if err := r.RemoveCluster(context.Background(), "nocmd"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("missing image is a distinct error", func(t *testing.T) {
		r := e.runtime(t, cri.Options{PullTimeout: 20 * time.Second})
		good := cri.Pod{Component: "img", Containers: []cri.Container{testapp("app")}}
		start := time.Now()
		st := reconcile(t, r, "img", good)
		requireRunning(t, st)
		t.Logf("one pod with one container running in %s", time.Since(start).Round(time.Millisecond))
		running := st[0].SandboxID

		bad := good
		bad.Containers = []cri.Container{{Name: "app", Image: "oneinfra.invalid/missing:v1"}}
		start = time.Now()
		st, err := r.Reconcile(context.Background(), "img", []cri.Pod{bad})
		t.Logf("missing image reported after %s: %v", time.Since(start).Round(time.Millisecond), err)
		if !errors.Is(err, cri.ErrImageNotFound) {
			t.Fatalf("error %v, want ErrImageNotFound", err)
		}
		if st[0].State != cri.PodPending || st[0].Reason != cri.ReasonImageNotFound || !strings.Contains(st[0].Message, "oneinfra.invalid/missing:v1") {
			t.Errorf("status %+v", st[0])
		}
		// The running pod of the old spec is left alone.
		sbs := e.sandboxes(t, map[string]string{cri.LabelCluster: "img"})
		if len(sbs) != 1 || sbs[0].Id != running || sbs[0].State != runtimeapi.PodSandboxState_SANDBOX_READY {
			t.Errorf("old pod not kept: %v", sbs)
		}
		// Without pulling: at once.
		rn := e.runtime(t, cri.Options{PullPolicy: cri.PullNever})
		if err := rn.EnsureImage(context.Background(), "oneinfra.invalid/missing:v1"); !errors.Is(err, cri.ErrImageNotFound) {
			t.Errorf("EnsureImage: %v", err)
		}
		if err := rn.EnsureImage(context.Background(), images.Ref("testapp")); err != nil {
			t.Errorf("EnsureImage of a present image: %v", err)
		}
		if err := r.RemoveCluster(context.Background(), "img"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("invalid pods are refused", func(t *testing.T) {
		r := e.runtime(t, cri.Options{})
		for _, pods := range [][]cri.Pod{
			{{Component: "Bad_Name", Containers: []cri.Container{testapp("a")}}},
			{{Component: "a", Containers: nil}},
			{{Component: "a", Containers: []cri.Container{testapp("x"), testapp("x")}}},
			{{Component: "a", Containers: []cri.Container{testapp("x")}}, {Component: "a", Containers: []cri.Container{testapp("y")}}},
		} {
			if _, err := r.Reconcile(context.Background(), "inv", pods); !errors.Is(err, cri.ErrInvalidPod) {
				t.Errorf("%+v: error %v, want ErrInvalidPod", pods, err)
			}
		}
	})

	if entries, err := os.ReadDir(e.logDir); err == nil && len(entries) != 0 && !t.Failed() {
		var names []string
		for _, en := range entries {
			names = append(names, en.Name())
		}
		t.Errorf("log directories left after every pod was removed: %v", names)
	}
}
