package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/coordinator/pki"
	"github.com/oneinfra/oneinfra/internal/testutil"
	"github.com/oneinfra/oneinfra/internal/testutil/containerd"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"github.com/oneinfra/oneinfra/test/lab"
)

// controlPlaneHosts are three private hypervisors and a public one.
var controlPlaneHosts = []lab.HostSpec{{Name: "hv-1"}, {Name: "hv-2"}, {Name: "hv-3"}, {Name: "pub-1", Public: true}}

// system is a coordinator and agents on lab hosts.
type system struct {
	lab    *lab.Lab
	dir    string
	config string // admin.conf
	// What was started, to stop and start again in fault tests.
	servers   []*labServer
	agentArgs map[string][]string
}

// labServer is one coordinator server, in the lab's root namespace or on
// a bare host.
type labServer struct {
	id, api string
	host    string   // "" for the root namespace
	args    []string // serve's flags, without --bootstrap or --join
	cmd     *exec.Cmd
	log     string
}

// start runs the server with its flags and extra ones.
func (srv *labServer) start(t *testing.T, l *lab.Lab, extra ...string) {
	t.Helper()
	var err error
	if srv.cmd, err = l.Start(srv.host, append(slices.Clone(srv.args), extra...), srv.log); err != nil {
		t.Fatal(err)
	}
}

// stop signals the server and waits until it has exited.
func (srv *labServer) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	pid := srv.cmd.Process.Pid
	if err := syscall.Kill(pid, sig); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, srv.id+" exited", func() error {
		if syscall.Kill(pid, 0) == nil {
			return fmt.Errorf("pid %d still running", pid)
		}
		return nil
	})
}

// startSystem makes a lab of hosts, starts a coordinator of n servers and
// a hypervisor agent on each host that is neither a worker nor bare.
// Server cN runs on the bare host named cN if there is one, else in the
// root namespace.
func startSystem(t *testing.T, hosts []lab.HostSpec, n int, coordFlags ...string) *system {
	t.Helper()
	root, err := containerd.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	images := lab.Images
	tarballs := containerd.BuildImages(t, images...)
	lab.Down("oie2e")
	began := time.Now()
	l, err := lab.Up(context.Background(), lab.Spec{
		Prefix: "oie2e", RepoRoot: root, ImagesDir: filepath.Dir(tarballs["pause"]), Images: images, Hosts: hosts,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, lab.Dir("oie2e"))
		}
		if err := l.Down(); err != nil {
			t.Errorf("lab down: %v", err)
		}
		// Nothing of the lab is left behind.
		out, _ := exec.Command("ip", "netns", "list").Output()
		links, _ := exec.Command("ip", "-o", "link", "show").Output()
		if strings.Contains(string(out)+string(links), "oie2e") {
			t.Errorf("lab namespaces or links left:\n%s%s", out, links)
		}
		if _, err := os.Stat(lab.Dir("oie2e")); !os.IsNotExist(err) {
			t.Errorf("lab directory left: %v", err)
		}
	})
	t.Logf("lab up (%d hosts, %d images imported) in %.1fs", len(hosts), len(images), time.Since(began).Seconds())
	s := &system{lab: l, dir: lab.Dir("oie2e"), agentArgs: map[string][]string{}}
	var apis []string
	for i := range n {
		srv := &labServer{id: fmt.Sprintf("c%d", i+1)}
		ip, port := lab.CoordinatorIP, 7443+10*i
		if h := l.Hosts[srv.id]; h != nil && h.Bare {
			srv.host, ip, port = h.Name, h.PrivateIP, 7443
		}
		srv.api = fmt.Sprintf("%s:%d", ip, port)
		srv.args = append([]string{filepath.Join(binDir, "oneinfra-coord"), "serve", "--id", srv.id,
			"--data-dir", filepath.Join(s.dir, "coordinator", srv.id), "--api-addr", srv.api,
			"--raft-addr", fmt.Sprintf("%s:%d", ip, port+1), "--metrics-addr", "127.0.0.1:0"}, coordFlags...)
		srv.log = filepath.Join(s.dir, srv.id+".log")
		s.servers = append(s.servers, srv)
		apis = append(apis, srv.api)
	}
	s.servers[0].start(t, l, "--bootstrap")
	s.config = filepath.Join(s.dir, "coordinator", "c1", "admin.conf")
	testutil.Eventually(t, 30*time.Second, "coordinator", func() error { _, err := cli(s.config, "", "members"); return err })
	if n > 1 {
		out, err := cli(s.config, "", "token", "create", "--kind", "server", "--uses", fmt.Sprint(n-1))
		if err != nil {
			t.Fatal(err)
		}
		token := regexp.MustCompile(`token: (\S+)`).FindStringSubmatch(out)[1]
		hash := regexp.MustCompile(`ca-hash: (\S+)`).FindStringSubmatch(out)[1]
		for _, srv := range s.servers[1:] {
			srv.start(t, l, "--join", s.servers[0].api, "--token", token, "--ca-hash", hash)
		}
		testutil.Eventually(t, 60*time.Second, fmt.Sprintf("%d voters", n), func() error {
			out, err := cli(s.config, "", "members")
			if err != nil {
				return err
			}
			if v := strings.Count(out, "Voter"); v != n || strings.Contains(out, "unreachable") {
				return fmt.Errorf("members:\n%s", out)
			}
			return nil
		})
	}
	hypervisors := 0
	for _, h := range l.Hosts {
		if !h.Worker && !h.Bare {
			hypervisors++
		}
	}
	out, err := cli(s.config, "", "token", "create", "--kind", "hypervisor", "--uses", fmt.Sprint(hypervisors))
	if err != nil {
		t.Fatal(err)
	}
	token := regexp.MustCompile(`token: (\S+)`).FindStringSubmatch(out)[1]
	hash := regexp.MustCompile(`ca-hash: (\S+)`).FindStringSubmatch(out)[1]
	for name, h := range l.Hosts {
		if h.Worker || h.Bare {
			continue
		}
		args := []string{filepath.Join(binDir, "oneinfra-agent"), "hypervisor", "--name", name, "--address", h.PrivateIP,
			"--coordinator", strings.Join(apis, ","), "--token", token, "--ca-hash", hash,
			"--cri-endpoint", h.CRIEndpoint, "--data-dir", h.AgentDir, "--root-dir", h.RootDir, "--metrics-addr", "127.0.0.1:7481"}
		if h.PublicIP != "" {
			// Lab hosts share /var/run/wireguard: their devices need names
			// of their own.
			args = append(args, "--public", "--public-address", h.PublicIP, "--wireguard-prefix", publicPrefix(name))
		}
		s.agentArgs[name] = args
		if _, err := l.Start(name, args, filepath.Join(h.Dir, "agent.log")); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 60*time.Second, "hypervisors registered", func() error {
		out, err := cli(s.config, "", "get", "hv")
		if err != nil {
			return err
		}
		if n := strings.Count(out, "alive"); n != hypervisors {
			return fmt.Errorf("%d alive:\n%s", n, out)
		}
		return nil
	})
	return s
}

// dumpLogs keeps the lab's logs of a failed test (its processes' and its
// etcd members') under _output/e2e-logs/TEST/, and names them in the test's
// output, so that the failures stay what its output ends with.
func dumpLogs(t *testing.T, dir string) {
	root, _ := containerd.RepoRoot()
	keep := filepath.Join(root, "_output", "e2e-logs", t.Name())
	_ = os.RemoveAll(keep)
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	more, _ := filepath.Glob(filepath.Join(dir, "*", "*.log"))
	etcd, _ := filepath.Glob(filepath.Join(dir, "*", "root/var/log/oneinfra/pods/*/etcd/*.log"))
	var kept []string
	for _, f := range append(append(logs, more...), etcd...) {
		rel, _ := filepath.Rel(dir, f)
		dst := filepath.Join(keep, rel)
		b, err := os.ReadFile(f)
		if err == nil {
			err = os.MkdirAll(filepath.Dir(dst), 0o700)
		}
		if err == nil {
			err = os.WriteFile(dst, b, 0o600)
		}
		if err != nil {
			t.Logf("keeping %s: %v", f, err)
			continue
		}
		kept = append(kept, rel)
	}
	t.Logf("the lab's logs are kept in %s: %s", keep, strings.Join(kept, " "))
}

// kubectl runs the kubectl built with the images against a kubeconfig.
func kubectl(kubeconfig string, args ...string) (string, error) {
	root, _ := containerd.RepoRoot()
	cmd := exec.Command(filepath.Join(root, "_output/bin/kubectl"), append([]string{"--kubeconfig", kubeconfig, "--request-timeout=10s"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// TestClusterLifecycle: a three-replica cluster becomes Ready through its
// ingress, its etcd members started together, with keys made by its
// agents; a Secret written through it is read back and not stored in plain
// text; scaling to one and back keeps it; deletion leaves nothing.
func TestClusterLifecycle(t *testing.T) {
	baseline := handStartedAPI(t)
	s := startSystem(t, controlPlaneHosts, 1)
	began := time.Now()
	out, err := cli(s.config, "", "cluster", "create", "demo", "--replicas", "3", "--wait", "--timeout", "10m")
	if err != nil {
		d, _ := cli(s.config, "", "describe", "cluster", "demo")
		t.Fatalf("cluster create --wait: %v\n%s\n%s", err, out, d)
	}
	ready := time.Since(began)
	t.Logf("cluster create → Ready through the ingress (3 replicas): %.1fs; etcd + kube-apiserver started by hand: %.1fs; ratio %.1f×",
		ready.Seconds(), baseline.Seconds(), ready.Seconds()/baseline.Seconds())
	startedTogether(t, s, "demo", 3)

	kc := filepath.Join(t.TempDir(), "kubeconfig")
	out, err = cli(s.config, "", "cluster", "kubeconfig", "demo")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kc, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "https://"+s.lab.Hosts["pub-1"].PublicIP+":") {
		t.Fatalf("kubeconfig server is not the ingress:\n%s", out)
	}
	if _, err := kubectl(kc, "create", "secret", "generic", "s1", "--from-literal=k=plain-text-value"); err != nil {
		t.Fatal(err)
	}
	got, err := kubectl(kc, "get", "secret", "s1", "-o", "jsonpath={.data.k}")
	if err != nil || got != "cGxhaW4tdGV4dC12YWx1ZQ==" {
		t.Fatalf("reading the secret back: %q %v", got, err)
	}
	checkEncrypted(t, s, "s1")
	checkKeysMadeHere(t, s, "demo")

	scale := func(n int) {
		t.Helper()
		manifest := fmt.Sprintf("apiVersion: oneinfra.io/v1alpha1\nkind: Cluster\nmetadata: {name: demo}\nspec: {controlPlane: {replicas: %d}}\n", n)
		if _, err := cli(s.config, manifest, "apply", "-f", "-"); err != nil {
			t.Fatal(err)
		}
		began := time.Now()
		testutil.Eventually(t, 5*time.Minute, fmt.Sprintf("Ready with %d replicas", n), func() error {
			out, err := cli(s.config, "", "get", "components")
			if err != nil {
				return err
			}
			if c := strings.Count(out, "control-plane"); c != n || strings.Contains(out, "Removing") {
				return fmt.Errorf("%d control-plane components:\n%s", c, out)
			}
			cl, _ := cli(s.config, "", "get", "clusters")
			if !strings.Contains(cl, "Ready") {
				return fmt.Errorf("not Ready:\n%s", cl)
			}
			_, err = kubectl(kc, "get", "--raw", "/readyz")
			return err
		})
		t.Logf("scaled to %d in %.1fs", n, time.Since(began).Seconds())
		if got, err := kubectl(kc, "get", "secret", "s1", "-o", "jsonpath={.data.k}"); err != nil || got != "cGxhaW4tdGV4dC12YWx1ZQ==" {
			t.Fatalf("secret after scaling to %d: %q %v", n, got, err)
		}
	}
	scale(1)
	reportRSS(t, s)
	drainSingleReplica(t, s, kc)
	scale(3)

	if out, err := cli(s.config, "", "delete", "cluster", "demo", "--wait", "--timeout", "5m"); err != nil {
		t.Fatalf("delete: %v\n%s", err, out)
	}
	for name, h := range s.lab.Hosts {
		for _, d := range []string{"etc/oneinfra/clusters/demo", "var/lib/oneinfra/clusters/demo"} {
			if _, err := os.Stat(filepath.Join(h.RootDir, d)); !os.IsNotExist(err) {
				t.Errorf("%s: %s left after deletion", name, d)
			}
		}
		sock := strings.TrimPrefix(h.CRIEndpoint, "unix://")
		out, _ := exec.Command("ctr", "-a", sock, "-n", "k8s.io", "containers", "ls", "-q").Output()
		if strings.TrimSpace(string(out)) != "" {
			t.Errorf("%s: containers left after deletion:\n%s", name, out)
		}
	}
}

// drainSingleReplica drains the hypervisor of a one-replica cluster: the
// replica moves make-before-break (etcd goes from one member to two and
// back to one) and the data stays; uncordoned, the hypervisor takes work
// again.
func drainSingleReplica(t *testing.T, s *system, kc string) {
	t.Helper()
	var from string
	for _, c := range components(t, s) {
		if c.Spec.Role == "control-plane" {
			from = c.Spec.Hypervisor
		}
	}
	// The API answers through the ingress all along the drain: the old
	// replica goes only once its replacement's API server is ready.
	p := probe(t, "demo", kc)
	began := time.Now()
	out, err := cli(s.config, "", "hypervisor", "drain", from, "--wait", "--timeout", "5m")
	n, failed := p.stop()
	if err != nil || !strings.Contains(out, "drained") {
		d, _ := cli(s.config, "", "describe", "cluster", "demo")
		t.Fatalf("hypervisor drain %s: %v\n%s\n%s", from, err, out, d)
	}
	t.Logf("drained %s (the single replica moved, etcd 1 → 2 → 1 members) in %.1fs; API probes through the ingress meanwhile: %d, %d failed",
		from, time.Since(began).Seconds(), n, len(failed))
	// The old replica goes once the ingress has its replacement up, and
	// leaves etcd once the ingress has dropped it: no probe may fail.
	if len(failed) > 0 {
		t.Errorf("%d of %d API probes through the ingress failed during the drain", len(failed), n)
	}
	for _, c := range components(t, s) {
		if c.Spec.Hypervisor == from {
			t.Errorf("%s still on the drained %s", c.Metadata.Name, from)
		}
	}
	if got, err := kubectl(kc, "get", "secret", "s1", "-o", "jsonpath={.data.k}"); err != nil || got != "cGxhaW4tdGV4dC12YWx1ZQ==" {
		t.Fatalf("secret after the drain: %q %v", got, err)
	}
	if out, _ := cli(s.config, "", "get", "hv", from); !strings.Contains(out, "drained") {
		t.Errorf("get hv %s does not say drained:\n%s", from, out)
	}
	if d, _ := cli(s.config, "", "describe", "hypervisor", from); !strings.Contains(d, "Removing") || !strings.Contains(d, "Replacing") {
		t.Errorf("describe hypervisor %s does not tell the move:\n%s", from, d)
	}
	if _, err := cli(s.config, "", "hypervisor", "uncordon", from); err != nil {
		t.Fatal(err)
	}
}

// component is what the e2e tests read of `get components -o json`.
type component struct {
	Metadata struct{ Name string }
	Spec     struct {
		Cluster, Role, Hypervisor string
		Ports                     map[string]int
	}
}

func components(t *testing.T, s *system) []component {
	t.Helper()
	out, err := cli(s.config, "", "get", "components", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var list struct{ Items []component }
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Items) == 0 {
		var one component
		if err := json.Unmarshal([]byte(out), &one); err != nil {
			t.Fatalf("components: %v\n%s", err, out)
		}
		return []component{one}
	}
	return list.Items
}

// checkEncrypted reads a Secret straight from etcd with the API server's
// etcd client certificate: it must be secretbox ciphertext.
func checkEncrypted(t *testing.T, s *system, name string) {
	t.Helper()
	out, err := etcdctl(t, s, "demo", "get", "/registry/secrets/default/"+name, "--print-value-only")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "k8s:enc:secretbox:v1:key1:") || strings.Contains(out, "plain-text-value") {
		t.Fatalf("secret %s is not encrypted at rest: %q", name, out[:min(80, len(out))])
	}
}

// checkKeysMadeHere checks that every control-plane replica of a cluster
// runs with keys made on its own hypervisor: each key file its components
// read is one of its agent's key store (0600), whose public key its
// certificate has.
func checkKeysMadeHere(t *testing.T, s *system, cluster string) {
	t.Helper()
	for _, c := range components(t, s) {
		if c.Spec.Role != "control-plane" || c.Spec.Cluster != cluster {
			continue
		}
		h := s.lab.Hosts[c.Spec.Hypervisor]
		store := filepath.Join(h.RootDir, "var/lib/oneinfra/keys", cluster, c.Metadata.Name)
		for _, name := range pki.KeyNames(c.Spec.Role) {
			conf := filepath.Join(h.RootDir, "etc/oneinfra/clusters", cluster, c.Metadata.Name, name)
			kp := &pb.KeyPair{CertPem: []byte(readFile(t, conf+".crt")), KeyPem: []byte(readFile(t, conf+".key"))}
			cert, _, err := tlsutil.ParseKeyPair(kp)
			if err != nil {
				t.Fatalf("%s %s: %v", c.Metadata.Name, name, err)
			}
			stored := filepath.Join(store, tlsutil.PublicKeyHash(cert.RawSubjectPublicKeyInfo)+".key")
			info, err := os.Stat(stored)
			if err != nil || info.Mode().Perm() != 0o600 || readFile(t, stored) != string(kp.KeyPem) {
				t.Errorf("%s %s: its key is not one its agent made (%s): %v", c.Metadata.Name, name, stored, err)
			}
		}
	}
}

// etcdctl runs etcdctl against a cluster's etcd, through its first
// control-plane replica, with the API server's etcd client certificate.
func etcdctl(t *testing.T, s *system, cluster string, args ...string) (string, error) {
	t.Helper()
	root, _ := containerd.RepoRoot()
	for _, c := range components(t, s) {
		if c.Spec.Role != "control-plane" || c.Spec.Cluster != cluster {
			continue
		}
		h := s.lab.Hosts[c.Spec.Hypervisor]
		dir := filepath.Join(h.RootDir, "etc/oneinfra/clusters", cluster, c.Metadata.Name)
		cmd := exec.Command(filepath.Join(root, "_output/bin/etcdctl"), append([]string{
			"--endpoints", fmt.Sprintf("https://%s:%d", h.PrivateIP, c.Spec.Ports["etcd-client"]),
			"--cacert", filepath.Join(dir, "etcd-server-ca.crt"),
			"--cert", filepath.Join(dir, "apiserver-etcd-client.crt"), "--key", filepath.Join(dir, "apiserver-etcd-client.key")}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("etcdctl %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	t.Fatalf("no control-plane component of %s found", cluster)
	return "", nil
}

// reportRSS prints the memory of the one control-plane replica left.
func reportRSS(t *testing.T, s *system) {
	m := controlPlaneMemory(t, s, "demo")
	t.Logf("idle single-replica control plane RSS: %s", m)
}

// memory is what a control plane's processes hold resident, in KiB.
type memory struct {
	rss, files int64 // files: mapped files, mostly the executables' own pages
	parts      []string
}

func (m memory) String() string {
	return fmt.Sprintf("%d MiB (%s); %d MiB of it the binaries' mapped files", m.rss/1024, strings.Join(m.parts, ", "), m.files/1024)
}

// controlPlaneMemory is the resident memory of the control-plane
// processes of cluster, each one's as "exe N MiB".
func controlPlaneMemory(t *testing.T, s *system, cluster string) memory {
	var markers []string
	for _, c := range components(t, s) {
		if c.Spec.Role == "control-plane" && c.Spec.Cluster == cluster {
			markers = append(markers, filepath.Join("clusters", cluster, c.Metadata.Name))
		}
	}
	var m memory
	for _, p := range processes() {
		cmdline := strings.Join(p.args, " ")
		if !slices.ContainsFunc(markers, func(mk string) bool { return strings.Contains(cmdline, mk) }) || strings.Contains(cmdline, "containerd-shim") {
			continue
		}
		kb, err := testutil.RSSKiB(p.pid)
		files, ferr := testutil.StatusKiB(p.pid, "RssFile")
		if err != nil || ferr != nil {
			continue
		}
		m.parts = append(m.parts, fmt.Sprintf("%s %d MiB", filepath.Base(p.args[0]), kb/1024))
		m.rss += kb
		m.files += files
	}
	return m
}

// process is a process of this machine: its pid and command line.
type process struct {
	pid  string
	args []string
}

// processes lists the machine's processes (those that exit meanwhile
// left out).
func processes() []process {
	var out []process
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range cmdlines {
		b, err := os.ReadFile(f)
		if err != nil || len(b) == 0 {
			continue
		}
		out = append(out, process{pid: filepath.Base(filepath.Dir(f)), args: strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")})
	}
	return out
}

// etcdDecision is one agent's log line deciding how a replica's etcd
// starts.
var etcdDecision = regexp.MustCompile(`msg="decided how etcd starts" .*component=(\S+) state=(\S+) initialCluster="?([^" ]*)`)

// startedTogether checks that every control-plane replica of cluster
// started etcd with all the replicas as its initial cluster (etcd's
// static bootstrap), as its agent logged deciding, none joining as a
// learner.
func startedTogether(t *testing.T, s *system, cluster string, replicas int) {
	t.Helper()
	var decided []string
	for _, h := range s.lab.Hosts {
		b, _ := os.ReadFile(filepath.Join(h.Dir, "agent.log"))
		for _, m := range etcdDecision.FindAllStringSubmatch(string(b), -1) {
			if !strings.HasPrefix(m[1], cluster+"-cp-") {
				continue
			}
			decided = append(decided, m[1])
			if m[2] != "new" || strings.Count(m[3], "=https://") != replicas {
				t.Errorf("%s decided to start etcd as %s with initial cluster %s; want a new cluster of all %d replicas", m[1], m[2], m[3], replicas)
			}
		}
	}
	if len(decided) != replicas {
		t.Errorf("agents decided how etcd starts for %v; want %d replicas, each once", decided, replicas)
	}
}

// publicPrefix is the WireGuard device prefix of a lab's public host:
// "p1-" for pub-1.
func publicPrefix(host string) string { return "p" + strings.TrimPrefix(host, "pub-") + "-" }
