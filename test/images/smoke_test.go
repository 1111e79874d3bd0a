//go:build images

// Smoke test of every image of images.txt in a private containerd: the
// binaries start, haproxy finds its libraries, versions are the expected
// ones. It builds the images first (`make images`: minutes when cold), hence
// the build tag: go test -tags images ./test/images/ (or make images-smoke).
package images_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/agent/cri"
	"github.com/oneinfra/oneinfra/internal/testutil/containerd"
	"github.com/oneinfra/oneinfra/test/images"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func httpGet(url string) (string, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestImages(t *testing.T) {
	var keys []string
	for _, i := range images.All() {
		keys = append(keys, i.Key)
	}
	start := time.Now()
	containerd.BuildImages(t, keys...)
	t.Logf("images built (make) in %s", time.Since(start).Round(time.Millisecond))
	inst := containerd.Start(t)
	start = time.Now()
	inst.Import(t, keys...)
	t.Logf("%d images imported in %s", len(keys), time.Since(start).Round(time.Millisecond))

	ctx := context.Background()
	r, err := cri.Connect(ctx, inst.Endpoint(), cri.Options{LogDir: t.TempDir(), PullPolicy: cri.PullNever, RestartBackoff: time.Hour, StopTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	dir := t.TempDir()
	etcdPort, etcdPeer, appPort, haproxyPort := freePort(t), freePort(t), freePort(t), freePort(t)
	cfg := fmt.Sprintf(`global
  log stdout format raw local0
defaults
  mode http
  timeout connect 2s
  timeout client 10s
  timeout server 10s
frontend in
  bind 127.0.0.1:%d
  default_backend app
backend app
  server app 127.0.0.1:%d check
`, haproxyPort, appPort)
	if err := os.WriteFile(filepath.Join(dir, "haproxy.cfg"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	version := func(key, bin string) cri.Pod {
		return cri.Pod{Component: key, Containers: []cri.Container{{Name: "main", Image: images.Ref(key), Command: []string{bin, "--version"}}}}
	}
	pods := []cri.Pod{
		{Component: "etcd", Containers: []cri.Container{{
			Name: "etcd", Image: images.Ref("etcd"),
			Command: []string{"etcd", "--name=smoke", "--data-dir=/var/lib/etcd",
				fmt.Sprintf("--listen-client-urls=http://127.0.0.1:%d", etcdPort),
				fmt.Sprintf("--advertise-client-urls=http://127.0.0.1:%d", etcdPort),
				fmt.Sprintf("--listen-peer-urls=http://127.0.0.1:%d", etcdPeer),
				fmt.Sprintf("--initial-advertise-peer-urls=http://127.0.0.1:%d", etcdPeer),
				fmt.Sprintf("--initial-cluster=smoke=http://127.0.0.1:%d", etcdPeer)},
			Mounts: []cri.Mount{{HostPath: filepath.Join(dir, "etcd"), ContainerPath: "/var/lib/etcd"}},
		}}},
		{Component: "ingress", Containers: []cri.Container{
			{Name: "haproxy", Image: images.Ref("haproxy"), RunAsUser: new(int64),
				Mounts: []cri.Mount{{HostPath: filepath.Join(dir, "haproxy.cfg"), ContainerPath: "/usr/local/etc/haproxy/haproxy.cfg", ReadOnly: true}}},
			{Name: "app", Image: images.Ref("testapp"), Args: []string{"-http", fmt.Sprintf("127.0.0.1:%d", appPort)}},
		}},
		version("kube-apiserver", "kube-apiserver"),
		version("kube-controller-manager", "kube-controller-manager"),
		version("kube-scheduler", "kube-scheduler"),
	}
	start = time.Now()
	if _, err := r.Reconcile(ctx, "smoke", pods); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d pods started in %s", len(pods), time.Since(start).Round(time.Millisecond))

	want := map[string]string{
		"kube-apiserver":          "Kubernetes v1.37.2",
		"kube-controller-manager": "Kubernetes v1.37.2",
		"kube-scheduler":          "Kubernetes v1.37.2",
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := r.Reconcile(ctx, "smoke", pods)
		if err != nil {
			t.Fatal(err)
		}
		done := true
		var problems []string
		for _, s := range st {
			if w, ok := want[s.Component]; ok {
				c := s.Containers[0]
				if c.State != cri.ContainerExited || c.ExitCode != 0 || !strings.Contains(strings.Join(c.LogTail, "\n"), w) {
					done = false
					problems = append(problems, fmt.Sprintf("%s: %s exit %d log %q", s.Component, c.State, c.ExitCode, c.LogTail))
				}
				continue
			}
			if s.State != cri.PodRunning {
				done = false
				problems = append(problems, fmt.Sprintf("%s: %s %s", s.Component, s.State, s.Message))
			}
		}
		if done {
			etcd, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/health", etcdPort))
			if err != nil || !strings.Contains(etcd, `"health":"true"`) {
				done = false
				problems = append(problems, fmt.Sprintf("etcd /health: %q %v", etcd, err))
			}
			app, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/", haproxyPort))
			if err != nil || app != "ok\n" {
				done = false
				problems = append(problems, fmt.Sprintf("through haproxy: %q %v", app, err))
			}
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("images not working after 30s:\n%s", strings.Join(problems, "\n"))
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("all images work (%s since the pods were created)", time.Since(start).Round(time.Millisecond))
	if err := r.RemoveCluster(ctx, "smoke"); err != nil {
		t.Fatal(err)
	}
}
