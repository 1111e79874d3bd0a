package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/agent/controlplane"
	"github.com/oneinfra/oneinfra/agent/host"
	"github.com/oneinfra/oneinfra/internal/testutil"
	"github.com/oneinfra/oneinfra/internal/testutil/cluster"
	"github.com/oneinfra/oneinfra/internal/testutil/containerd"
)

// handStartedAPI starts etcd and kube-apiserver from the same binaries
// directly on the host, with the flags the agent would give them, and
// returns how long /readyz took to answer ok: the baseline a cluster's
// time to Ready is compared with.
func handStartedAPI(t *testing.T) time.Duration {
	t.Helper()
	root, err := containerd.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	_, as := cluster.Assignments(t, 1, cluster.HostIP(t))
	paths := host.Paths{Root: t.TempDir(), Cluster: "demo", Component: "demo-cp-0"}
	boot, err := controlplane.DecideBootstrap(context.Background(), as[0], paths, true)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := controlplane.Render(as[0], paths, boot)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plan.WriteFiles(); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	for _, c := range []struct{ pod, container int }{{0, 0}, {1, 0}} { // etcd, kube-apiserver
		argv := plan.Pods[c.pod].Containers[c.container].Command
		cmd := exec.Command(filepath.Join(root, "_output/bin", argv[0]), argv[1:]...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
	}
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	url := fmt.Sprintf("https://127.0.0.1:%d/readyz", as[0].Component.Spec.Ports["apiserver"])
	testutil.Eventually(t, 90*time.Second, "hand-started API server", func() error {
		resp, err := hc.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s", resp.Status)
		}
		return nil
	})
	return time.Since(began)
}
