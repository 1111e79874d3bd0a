//go:build images

// Smoke test of every image of images.txt in a private containerd: the
// binaries start, haproxy and iptables find their libraries, CoreDNS answers,
// testapp -get tells a reachable server from an unreachable one, versions are
// the expected ones. It builds the images first (`make images`: minutes when
// cold), hence the build tag: go test -tags images ./test/images/ (or make
// images-smoke).
package images_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/agent/cri"
	"github.com/oneinfra/oneinfra/internal/testutil/containerd"
	"github.com/oneinfra/oneinfra/test/images"
	"github.com/oneinfra/oneinfra/test/images/oci"
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

// lookup asks the DNS server at addr for the A records of name.
func lookup(addr, name string) ([]string, error) {
	r := net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return r.LookupHost(ctx, name)
}

// exitedWith reports what is wrong with a container that should have
// exited with code and logged want, "" when nothing.
func exitedWith(s cri.PodStatus, code int32, want string) string {
	c := s.Containers[0]
	if c.State != cri.ContainerExited || c.ExitCode != code || !strings.Contains(strings.Join(c.LogTail, "\n"), want) {
		return fmt.Sprintf("%s: %s exit %d log %q (want exit %d and %q)", s.Component, c.State, c.ExitCode, c.LogTail, code, want)
	}
	return ""
}

// waitPods reconciles pods until check finds no problem in their statuses.
func waitPods(t *testing.T, r *cri.Runtime, pods []cri.Pod, timeout time.Duration, check func([]cri.PodStatus) []string) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	for {
		st, err := r.Reconcile(ctx, "smoke", pods)
		if err != nil {
			t.Fatal(err)
		}
		problems := check(st)
		if len(problems) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("images not working after %s:\n%s", timeout, strings.Join(problems, "\n"))
		}
		time.Sleep(500 * time.Millisecond)
	}
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
	dnsPort, dnsHealthPort, closedPort := freePort(t), freePort(t), freePort(t)
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
	corefile := fmt.Sprintf(`.:%d {
    bind 127.0.0.1
    health 127.0.0.1:%d
    hosts {
        10.1.2.3 smoke.test
    }
}
`, dnsPort, dnsHealthPort)
	if err := os.WriteFile(filepath.Join(dir, "Corefile"), []byte(corefile), 0o644); err != nil {
		t.Fatal(err)
	}
	// Pods whose only container prints a version and exits 0; want says
	// what its log must hold.
	want := map[string]string{}
	version := func(component, key string, command ...string) cri.Pod {
		want[component] = "Kubernetes " + oci.Tag(images.Ref(key))
		return cri.Pod{Component: component, Containers: []cri.Container{{Name: "main", Image: images.Ref(key), Command: command}}}
	}
	iptablesPod := func(tool string) cri.Pod {
		p := version("kube-proxy-"+tool, "kube-proxy", tool, "--version")
		want[p.Component] = "(nf_tables)" // "iptables-save v1.8.9 (nf_tables)": the backend
		return p
	}
	corednsVersion := cri.Pod{Component: "coredns-version", Containers: []cri.Container{{Name: "main", Image: images.Ref("coredns"), Args: []string{"-version"}}}}
	want[corednsVersion.Component] = "CoreDNS-" + strings.TrimPrefix(oci.Tag(images.Ref("coredns")), "v")
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
		{Component: "coredns", Containers: []cri.Container{{
			Name: "coredns", Image: images.Ref("coredns"), Args: []string{"-conf", "/etc/coredns/Corefile"},
			Mounts: []cri.Mount{{HostPath: filepath.Join(dir, "Corefile"), ContainerPath: "/etc/coredns/Corefile", ReadOnly: true}},
		}}},
		version("kube-apiserver", "kube-apiserver", "kube-apiserver", "--version"),
		version("kube-controller-manager", "kube-controller-manager", "kube-controller-manager", "--version"),
		version("kube-scheduler", "kube-scheduler", "kube-scheduler", "--version"),
		version("kube-proxy", "kube-proxy", "kube-proxy", "--version"),
		iptablesPod("iptables"),
		iptablesPod("iptables-save"),
		iptablesPod("iptables-restore"),
		iptablesPod("ip6tables-save"),
		corednsVersion,
	}
	start = time.Now()
	if _, err := r.Reconcile(ctx, "smoke", pods); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d pods started in %s", len(pods), time.Since(start).Round(time.Millisecond))

	waitPods(t, r, pods, 30*time.Second, func(st []cri.PodStatus) []string {
		var problems []string
		for _, s := range st {
			if w, ok := want[s.Component]; ok {
				if p := exitedWith(s, 0, w); p != "" {
					problems = append(problems, p)
				}
				continue
			}
			if s.State != cri.PodRunning {
				problems = append(problems, fmt.Sprintf("%s: %s %s", s.Component, s.State, s.Message))
			}
		}
		if len(problems) > 0 {
			return problems
		}
		etcd, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/health", etcdPort))
		if err != nil || !strings.Contains(etcd, `"health":"true"`) {
			problems = append(problems, fmt.Sprintf("etcd /health: %q %v", etcd, err))
		}
		app, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/", haproxyPort))
		if err != nil || app != "ok\n" {
			problems = append(problems, fmt.Sprintf("through haproxy: %q %v", app, err))
		}
		dns, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/health", dnsHealthPort))
		if err != nil || dns != "OK" {
			problems = append(problems, fmt.Sprintf("coredns /health: %q %v", dns, err))
		}
		addrs, err := lookup(fmt.Sprintf("127.0.0.1:%d", dnsPort), "smoke.test.")
		if err != nil || !slices.Equal(addrs, []string{"10.1.2.3"}) {
			problems = append(problems, fmt.Sprintf("coredns smoke.test: %v %v", addrs, err))
		}
		return problems
	})
	t.Logf("all images work (%s since the pods were created)", time.Since(start).Round(time.Millisecond))

	// testapp -get, now that the app serves: 0 and the body from a server,
	// 1 and the error from a closed port.
	gets := []cri.Pod{
		{Component: "get-ok", Containers: []cri.Container{{Name: "main", Image: images.Ref("testapp"),
			Args: []string{"-get", fmt.Sprintf("http://127.0.0.1:%d/", appPort)}}}},
		{Component: "get-refused", Containers: []cri.Container{{Name: "main", Image: images.Ref("testapp"),
			Args: []string{"-get", fmt.Sprintf("http://127.0.0.1:%d/", closedPort), "-timeout", "2s"}}}},
	}
	waitPods(t, r, append(slices.Clone(pods), gets...), 30*time.Second, func(st []cri.PodStatus) []string {
		var problems []string
		for _, s := range st {
			var p string
			switch s.Component {
			case "get-ok":
				p = exitedWith(s, 0, "ok")
			case "get-refused":
				p = exitedWith(s, 1, "connection refused")
			}
			if p != "" {
				problems = append(problems, p)
			}
		}
		return problems
	})
	t.Log("testapp -get works")
	if err := r.RemoveCluster(ctx, "smoke"); err != nil {
		t.Fatal(err)
	}
}
