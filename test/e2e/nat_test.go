package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/oneinfra/oneinfra/internal/testutil"
	"github.com/oneinfra/oneinfra/internal/testutil/containerd"
	"github.com/oneinfra/oneinfra/test/lab"
)

const testPrefix = "oilabt"

// TestWorkersBehindNAT: a lab of one public host and two workers (in this
// package, as every test that makes a lab, so that labs never overlap). Each
// worker (and a CNI pod on it) reaches the public host, which sees the
// worker's outer router; nothing reaches a worker from outside, not even
// with a route through its outer router; workers do not reach each other.
// Down leaves nothing.
func TestWorkersBehindNAT(t *testing.T) {
	if err := lab.Check(); err != nil {
		t.Fatal(err)
	}
	root, err := containerd.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	tarballs := containerd.BuildImages(t, "pause")
	_ = lab.Down(testPrefix)
	began := time.Now()
	l, err := lab.Up(context.Background(), lab.Spec{
		Prefix: testPrefix, RepoRoot: root, ImagesDir: filepath.Dir(tarballs["pause"]), Images: []string{"pause"},
		Hosts: []lab.HostSpec{{Name: "pub-1", Public: true}, {Name: "w-1", Worker: true}, {Name: "w-2", Worker: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var sandboxes []string // their CNI results, cached under /var/lib/cni, go too
	t.Cleanup(func() { checkDown(t, l, sandboxes) })
	t.Logf("lab up (1 public host, 2 workers, pause imported) in %.1fs", time.Since(began).Seconds())

	pub, workers := l.Hosts["pub-1"], []*lab.Host{l.Hosts["w-1"], l.Hosts["w-2"]}
	for n, w := range workers {
		if w.PublicIP != "" || w.PrivateIP != "" || w.WorkerIP != fmt.Sprintf("172.31.%d.2", n+1) || w.OutwardIP != fmt.Sprintf("10.214.0.%d", 101+n) || !w.Worker {
			t.Fatalf("%s: addresses private %q public %q worker %q outward %q", w.Name, w.PrivateIP, w.PublicIP, w.WorkerIP, w.OutwardIP)
		}
		for _, d := range []string{w.CNIConfDir, w.CNIStateDir, w.KubeletDir} {
			if fi, err := os.Stat(d); err != nil || !fi.IsDir() || !strings.HasPrefix(d, w.Dir+"/") {
				t.Fatalf("%s: directory %q of the host: %v", w.Name, d, err)
			}
		}
		for _, ns := range append([]string{w.Namespace}, w.Routers...) {
			out, err := exec.Command("nsenter", "--net=/run/netns/"+ns, "--", "cat", "/proc/sys/net/ipv4/ip_forward").Output()
			if err != nil || strings.TrimSpace(string(out)) != "1" {
				t.Fatalf("%s: ip_forward %q %v", ns, out, err)
			}
		}
	}
	if pub.PublicIP == "" {
		t.Fatal("pub-1 has no public address")
	}

	// The public host answers each connection with the address it came from.
	echo := listen(t, pub.InNetNS, pub.PublicIP+":0")
	for _, w := range workers {
		seen, err := dialEcho(w.InNetNS, echo)
		if err != nil {
			t.Fatalf("%s → public host %s: %v", w.Name, echo, err)
		}
		if seen != w.OutwardIP {
			t.Fatalf("%s → public host: seen from %s, want its outer router %s", w.Name, seen, w.OutwardIP)
		}
	}

	// Nothing dials in: not the public host, not the other worker, neither
	// at the worker's own address nor at its outer router's.
	wl := []string{listen(t, workers[0].InNetNS, ":0"), listen(t, workers[1].InNetNS, ":0")}
	port := func(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }
	var attempts []attempt
	for i, w := range workers {
		other := workers[1-i]
		attempts = append(attempts,
			attempt{"pub-1", w.Name + " (its address)", pub.InNetNS, net.JoinHostPort(w.WorkerIP, port(wl[i]))},
			attempt{"pub-1", w.Name + " (its outer router)", pub.InNetNS, net.JoinHostPort(w.OutwardIP, port(wl[i]))},
			attempt{other.Name, w.Name + " (its address)", other.InNetNS, net.JoinHostPort(w.WorkerIP, port(wl[i]))},
			attempt{other.Name, w.Name + " (its outer router)", other.InNetNS, net.JoinHostPort(w.OutwardIP, port(wl[i]))},
		)
	}
	mustFail(t, attempts...)

	// Even routed through the outer router, the inside stays closed: the
	// outer router forwards in only what answers a connection from inside.
	w := workers[0]
	inner := listen(t, func(f func() error) error { return lab.InNetNS("/run/netns/"+w.Routers[1], f) }, "172.30.1.2:0")
	for _, dst := range []string{"172.30.1.0/24", "172.31.1.0/24"} {
		run(t, "ip", "-n", pub.Namespace, "route", "add", dst, "via", w.OutwardIP)
	}
	mustFail(t,
		attempt{"pub-1", "w-1 routed through its outer router", pub.InNetNS, net.JoinHostPort(w.WorkerIP, port(wl[0]))},
		attempt{"pub-1", "w-1's inner router routed through the outer one", pub.InNetNS, inner})
	// The route itself is good: a hole in the outer router's firewall lets
	// the connection through to the inner router.
	run(t, "nsenter", "--net=/run/netns/"+w.Routers[0], "--", "iptables", "-w", "-I", "FORWARD", "1", "-i", "eth0", "-p", "tcp", "--dport", port(inner), "-j", "ACCEPT")
	if seen, err := dialEcho(pub.InNetNS, inner); err != nil || seen != pub.PublicIP {
		t.Fatalf("with a hole in the outer router's firewall, pub-1 → w-1's inner router: seen %q, %v", seen, err)
	}

	// CNI pods: each worker's containerd runs an ordinary pod with the
	// standard plugins and a configuration written after it started.
	began = time.Now()
	for n, w := range workers {
		podNetNS, podIP, id := runPod(t, w, n+1, n == 0)
		sandboxes = append(sandboxes, id)
		seen, err := dialEcho(func(f func() error) error { return lab.InNetNS(podNetNS, f) }, echo)
		if err != nil || seen != w.OutwardIP {
			t.Fatalf("%s: pod → public host: seen %q, %v; want %s", w.Name, seen, err, w.OutwardIP)
		}
		// The worker reaches its pod, and sees it with its own address.
		inPod := listen(t, func(f func() error) error { return lab.InNetNS(podNetNS, f) }, net.JoinHostPort(podIP, "0"))
		if seen, err := dialEcho(w.InNetNS, inPod); err != nil || net.ParseIP(seen) == nil || !strings.HasPrefix(seen, fmt.Sprintf("10.244.%d.", n+1)) {
			t.Fatalf("%s → its pod %s: seen %q, %v", w.Name, inPod, seen, err)
		}
	}
	t.Logf("CNI pods on both workers checked in %.1fs", time.Since(began).Seconds())
}

// listen accepts connections in a namespace: it answers each with the
// address it came from. It returns the address it listens on.
func listen(t *testing.T, in func(func() error) error, addr string) string {
	t.Helper()
	var ln net.Listener
	if err := in(func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			fmt.Fprintln(c, host)
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// dialEcho connects from a namespace to a listener and returns the address
// the listener saw.
func dialEcho(in func(func() error) error, addr string) (string, error) {
	var seen string
	err := in(func() error {
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		seen, err = bufio.NewReader(c).ReadString('\n')
		seen = strings.TrimSpace(seen)
		return err
	})
	return seen, err
}

// attempt is a connection from a namespace (in) that must not be made.
type attempt struct {
	from, to string
	in       func(func() error) error
	addr     string
}

// mustFail checks, all at once, that connections cannot be made.
func mustFail(t *testing.T, attempts ...attempt) {
	t.Helper()
	var wg sync.WaitGroup
	for _, a := range attempts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := a.in(func() error {
				c, err := net.DialTimeout("tcp", a.addr, 2*time.Second)
				if err == nil {
					c.Close()
				}
				return err
			})
			if err == nil {
				t.Errorf("%s connected to %s at %s", a.from, a.to, a.addr)
			}
		}()
	}
	wg.Wait()
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// runPod writes a bridge CNI configuration (pods 10.244.N.0/24) in the
// worker's CNIConfDir, runs a pod sandbox through CRI and returns its
// network namespace, address and ID. remove: the pod is stopped and
// removed afterwards (CNI DEL); otherwise it is left for Down.
func runPod(t *testing.T, w *lab.Host, n int, remove bool) (netns, ip, id string) {
	t.Helper()
	conf := fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": "lab",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.%d.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": %q}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}`, n, w.CNIStateDir)
	if err := os.WriteFile(filepath.Join(w.CNIConfDir, "10-lab.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(w.CRIEndpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	testutil.Eventually(t, 20*time.Second, w.Name+": CRI network ready", func() error {
		st, err := rt.Status(ctx, &runtimeapi.StatusRequest{})
		if err != nil {
			return err
		}
		for _, c := range st.GetStatus().GetConditions() {
			if c.Type == runtimeapi.NetworkReady && !c.Status {
				return fmt.Errorf("%s: %s", c.Reason, c.Message)
			}
		}
		return nil
	})
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: "net", Namespace: "lab", Uid: w.Name + "-net"},
		Hostname:     "net",
		LogDirectory: filepath.Join(w.KubeletDir, "pods", "net"),
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_POD}}},
	}
	began := time.Now()
	sb, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatalf("%s: RunPodSandbox: %v", w.Name, err)
	}
	st, err := rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sb.PodSandboxId, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: pod sandbox with a CNI network up in %.2fs", w.Name, time.Since(began).Seconds())
	ip = st.GetStatus().GetNetwork().GetIp()
	if !strings.HasPrefix(ip, fmt.Sprintf("10.244.%d.", n)) {
		t.Fatalf("%s: pod address %q, want one of 10.244.%d.0/24", w.Name, ip, n)
	}
	var info struct {
		RuntimeSpec struct {
			Linux struct{ Namespaces []struct{ Type, Path string } }
		}
	}
	if err := json.Unmarshal([]byte(st.GetInfo()["info"]), &info); err != nil {
		t.Fatalf("%s: pod sandbox info: %v", w.Name, err)
	}
	for _, ns := range info.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" {
			netns = ns.Path
		}
	}
	if netns == "" {
		t.Fatalf("%s: no network namespace in the pod's runtime spec: %s", w.Name, st.GetInfo()["info"])
	}
	// Pod namespaces are the host's, not the machine's /run/netns.
	if !strings.HasPrefix(netns, w.Dir+"/") {
		t.Errorf("%s: pod network namespace %s is outside the host's directory", w.Name, netns)
	}
	if remove {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			conn, err := grpc.NewClient(w.CRIEndpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			rt := runtimeapi.NewRuntimeServiceClient(conn)
			if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.PodSandboxId}); err != nil {
				t.Errorf("%s: StopPodSandbox: %v", w.Name, err)
			}
			if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.PodSandboxId}); err != nil {
				t.Errorf("%s: RemovePodSandbox: %v", w.Name, err)
			}
		})
	}
	return netns, ip, sb.PodSandboxId
}

// checkDown removes the lab and checks that nothing of it is left:
// namespaces (hosts, routers), links, mounts, files.
func checkDown(t *testing.T, l *lab.Lab, sandboxes []string) {
	began := time.Now()
	if err := l.Down(); err != nil {
		t.Errorf("lab down: %v", err)
	}
	t.Logf("lab down in %.1fs", time.Since(began).Seconds())
	netns, _ := exec.Command("ip", "netns", "list").Output()
	links, _ := exec.Command("ip", "-o", "link", "show").Output()
	if strings.Contains(string(netns)+string(links), testPrefix) {
		t.Errorf("lab namespaces or links left:\n%s%s", netns, links)
	}
	mounts, _ := os.ReadFile("/proc/mounts")
	if strings.Contains(string(mounts), lab.Dir(testPrefix)) {
		t.Errorf("lab mounts left:\n%s", mounts)
	}
	if _, err := os.Stat(lab.Dir(testPrefix)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lab directory left: %v", err)
	}
	for _, id := range sandboxes {
		if cached, _ := filepath.Glob("/var/lib/cni/results/*" + id + "*"); len(cached) > 0 {
			t.Errorf("CNI results of pod %s left: %v", id, cached)
		}
	}
}
