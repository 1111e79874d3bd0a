package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/testutil"
	"github.com/oneinfra/oneinfra/test/lab"
)

// TestStaticStability: with all three coordinator servers stopped for a
// minute the cluster's API answers throughout and loses nothing; restarting an agent
// or a host's containerd restarts no pod; the agents resume when the
// coordinator is back.
func TestStaticStability(t *testing.T) {
	s := startSystem(t, []lab.HostSpec{{Name: "hv-1"}, {Name: "pub-1", Public: true}}, 3)
	if out, err := cli(s.config, "", "cluster", "create", "demo", "--wait", "--timeout", "5m"); err != nil {
		t.Fatalf("cluster create: %v\n%s", err, out)
	}
	kc := writeKubeconfig(t, s, "demo")
	if _, err := kubectl(kc, "create", "secret", "generic", "before", "--from-literal=k=v"); err != nil {
		t.Fatal(err)
	}
	before := containers(t, s)

	// Every coordinator server down for a minute: the API stays up.
	for _, srv := range s.servers {
		srv.stop(t, syscall.SIGTERM)
	}
	stopped := time.Now()
	var checks, failures int
	for time.Since(stopped) < time.Minute {
		checks++
		if _, err := kubectl(kc, "get", "--raw", "/readyz"); err != nil {
			failures++
			t.Errorf("API down while the coordinator is: %v", err)
		}
		if _, err := kubectl(kc, "create", "configmap", fmt.Sprintf("during-%d", checks), "--from-literal=k=v"); err != nil {
			failures++
			t.Errorf("write while the coordinator is down: %v", err)
		}
		time.Sleep(2 * time.Second)
	}
	t.Logf("coordinator down %.0fs: %d API checks (read and write), %d failed", time.Since(stopped).Seconds(), checks, failures)

	// An agent restarted while no coordinator answers keeps what it runs.
	restartAgent(t, s, "hv-1")
	// containerd restarted under its pods: they keep running, untouched.
	restartContainerd(t, s, "hv-1")
	time.Sleep(25 * time.Second) // more than two agent resyncs
	if after := containers(t, s); !slices.Equal(before, after) {
		t.Errorf("containers changed:\nbefore %v\nafter  %v", before, after)
	}

	// The coordinator is back: agents resume, the cluster is Ready, nothing lost.
	back := time.Now()
	for _, srv := range s.servers {
		srv.start(t, s.lab)
	}
	testutil.Eventually(t, 90*time.Second, "agents report again", func() error {
		out, err := cli(s.config, "", "get", "components")
		if err != nil {
			return err
		}
		if strings.Count(out, "Running") != 2 {
			return fmt.Errorf("components:\n%s", out)
		}
		cl, err := cli(s.config, "", "get", "clusters")
		if err != nil || !strings.Contains(cl, "Ready") {
			return fmt.Errorf("cluster: %v\n%s", err, cl)
		}
		return nil
	})
	t.Logf("coordinator servers restarted → agents reporting, cluster Ready: %.1fs", time.Since(back).Seconds())
	for _, name := range []string{"before", "during-1", fmt.Sprintf("during-%d", checks)} {
		kind := "configmap"
		if name == "before" {
			kind = "secret"
		}
		if _, err := kubectl(kc, "get", kind, name); err != nil {
			t.Errorf("%s %s lost: %v", kind, name, err)
		}
	}
	if after := containers(t, s); !slices.Equal(before, after) {
		t.Errorf("containers changed after the coordinator came back:\nbefore %v\nafter  %v", before, after)
	}
}

// writeKubeconfig writes a cluster's admin kubeconfig.
func writeKubeconfig(t *testing.T, s *system, cluster string) string {
	t.Helper()
	out, err := cli(s.config, "", "cluster", "kubeconfig", cluster)
	if err != nil {
		t.Fatal(err)
	}
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	return kc
}

// containers lists every host's running containers, "HOST/ID".
func containers(t *testing.T, s *system) []string {
	t.Helper()
	var all []string
	for name, h := range s.lab.Hosts {
		if h.Bare {
			continue
		}
		sock := strings.TrimPrefix(h.CRIEndpoint, "unix://")
		out, err := exec.Command("ctr", "-a", sock, "-n", "k8s.io", "tasks", "ls").Output()
		if err != nil {
			t.Fatalf("%s: ctr tasks ls: %v", name, err)
		}
		for _, line := range strings.Split(string(out), "\n")[1:] {
			if f := strings.Fields(line); len(f) == 3 && f[2] == "RUNNING" {
				all = append(all, name+"/"+f[0])
			}
		}
	}
	slices.Sort(all)
	return all
}

// restartAgent stops a host's agent with SIGTERM and starts it again.
func restartAgent(t *testing.T, s *system, host string) {
	t.Helper()
	pattern := "--name " + host + " "
	for _, p := range procsMatching("oneinfra-agent", pattern) {
		_ = syscall.Kill(p, syscall.SIGTERM)
	}
	testutil.Eventually(t, 20*time.Second, host+"'s agent stopped", func() error {
		if n := len(procsMatching("oneinfra-agent", pattern)); n > 0 {
			return fmt.Errorf("%d left", n)
		}
		return nil
	})
	if _, err := s.lab.Start(host, s.agentArgs[host], filepath.Join(s.lab.Hosts[host].Dir, "agent.log")); err != nil {
		t.Fatal(err)
	}
}

// restartContainerd stops a host's containerd daemon (not its shims, so
// containers keep running) and starts it again on the same state.
func restartContainerd(t *testing.T, s *system, host string) {
	t.Helper()
	h := s.lab.Hosts[host]
	dir := filepath.Dir(strings.TrimPrefix(h.CRIEndpoint, "unix://"))
	b, err := os.ReadFile(filepath.Join(dir, "containerd.pid"))
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	fmt.Sscan(string(b), &pid)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, host+"'s containerd stopped", func() error {
		if syscall.Kill(pid, 0) == nil {
			return fmt.Errorf("pid %d still running", pid)
		}
		return nil
	})
	root, _ := filepath.Abs(s.lab.Spec.RepoRoot)
	start := exec.Command(h.Enter()[0], append(h.Enter()[1:], filepath.Join(root, "test/containerd/start.sh"), dir)...)
	if out, err := start.CombinedOutput(); err != nil {
		t.Fatalf("restarting containerd: %v\n%s", err, out)
	}
}

// procsMatching lists processes whose command line has every fragment.
func procsMatching(fragments ...string) []int {
	var pids []int
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range cmdlines {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		match := true
		for _, frag := range fragments {
			match = match && strings.Contains(cmd, frag)
		}
		if match && !strings.Contains(cmd, "nsenter") {
			var pid int
			fmt.Sscan(strings.TrimSuffix(strings.TrimPrefix(f, "/proc/"), "/cmdline"), &pid)
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestPrivateHypervisorCut: a private hypervisor with a control-plane
// replica is cut off the network. It is detected dead, its replica is
// replaced on the spare (etcd membership too), the cluster is Ready again
// with what was written before the cut; reconnected, the host holds no
// stale pod of the cluster.
func TestPrivateHypervisorCut(t *testing.T) {
	hosts := []lab.HostSpec{{Name: "hv-1"}, {Name: "hv-2"}, {Name: "hv-3"}, {Name: "hv-4"}, {Name: "pub-1", Public: true}}
	s := startSystem(t, hosts, 1, "--suspect-after", "40s", "--dead-after", "60s")
	if out, err := cli(s.config, "", "cluster", "create", "demo", "--replicas", "3", "--wait", "--timeout", "8m"); err != nil {
		t.Fatalf("cluster create: %v\n%s", err, out)
	}
	kc := writeKubeconfig(t, s, "demo")
	if _, err := kubectl(kc, "create", "secret", "generic", "before-cut", "--from-literal=k=v"); err != nil {
		t.Fatal(err)
	}
	var cut string
	for _, c := range components(t, s) {
		if c.Spec.Role == "control-plane" {
			cut = c.Spec.Hypervisor
			break
		}
	}
	if err := s.lab.Cut(cut); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	testutil.Eventually(t, 3*time.Minute, cut+" dead", func() error {
		out, err := cli(s.config, "", "get", "hypervisor", cut)
		if err != nil || !strings.Contains(out, "dead") {
			return fmt.Errorf("%v\n%s", err, out)
		}
		return nil
	})
	detected := time.Since(began)
	testutil.Eventually(t, 6*time.Minute, "Ready again without "+cut, func() error {
		cps := 0
		for _, c := range components(t, s) {
			if c.Spec.Role == "control-plane" {
				if c.Spec.Hypervisor == cut {
					d, _ := cli(s.config, "", "describe", "cluster", "demo")
					return fmt.Errorf("a replica is still on %s:\n%s", cut, d)
				}
				cps++
			}
		}
		out, err := cli(s.config, "", "get", "clusters")
		if err != nil || cps != 3 || !strings.Contains(out, "Ready") {
			d, _ := cli(s.config, "", "describe", "cluster", "demo")
			return fmt.Errorf("%d replicas:\n%s", cps, d)
		}
		_, err = kubectl(kc, "get", "secret", "before-cut")
		return err
	})
	t.Logf("%s cut off: detected dead in %.1fs (suspect after 40s, dead after 60s without a report); Ready again on the spare %.1fs after the cut",
		cut, detected.Seconds(), time.Since(began).Seconds())
	if _, err := kubectl(kc, "create", "secret", "generic", "after-cut", "--from-literal=k=v"); err != nil {
		t.Errorf("writing after the replacement: %v", err)
	}
	if d, _ := cli(s.config, "", "describe", "cluster", "demo"); !strings.Contains(d, "Moved") || !strings.Contains(d, cut) {
		t.Errorf("describe does not tell the move:\n%s", d)
	}

	// Back on the network: alive again, and no stale pod of the cluster.
	if err := s.lab.Reconnect(cut); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 2*time.Minute, cut+" alive with no stale pod", func() error {
		out, err := cli(s.config, "", "get", "hypervisor", cut)
		if err != nil || !strings.Contains(out, "alive") {
			return fmt.Errorf("%v\n%s", err, out)
		}
		for _, c := range containers(t, s) {
			if strings.HasPrefix(c, cut+"/") {
				return fmt.Errorf("%s still runs %s", cut, c)
			}
		}
		return nil
	})
}

// TestPublicHypervisorLost: the public hypervisor running a VPN cluster's
// ingress is cut off. The ingress moves to the other public hypervisor,
// the worker follows its endpoint (its --join is gone: it asks another
// public hypervisor), and its node and pod answer again through the new
// tunnel.
func TestPublicHypervisorLost(t *testing.T) {
	hosts := []lab.HostSpec{{Name: "hv-1"}, {Name: "pub-1", Public: true}, {Name: "pub-2", Public: true}, {Name: "worker-1", Worker: true}}
	s := startSystem(t, hosts, 1, "--suspect-after", "40s", "--dead-after", "60s")
	if out, err := cli(s.config, "", "cluster", "create", "edge", "--vpn", "--wait", "--timeout", "5m"); err != nil {
		t.Fatalf("cluster create: %v\n%s", err, out)
	}
	ingressHost := func() (string, string) {
		for _, c := range components(t, s) {
			if c.Spec.Role == "ingress" {
				return c.Metadata.Name, c.Spec.Hypervisor
			}
		}
		return "", ""
	}
	oldIngress, lost := ingressHost()
	kc := writeKubeconfig(t, s, "edge")
	token, hash := workerToken(t, s, "edge")
	h := s.lab.Hosts["worker-1"]
	root := s.lab.Spec.RepoRoot
	if _, err := s.lab.Start("worker-1", []string{filepath.Join(binDir, "oneinfra-agent"), "worker",
		"--join", s.lab.Hosts[lost].PublicIP + ":7445", "--token", token, "--ca-hash", hash, "--name", "w-1",
		"--cri-endpoint", h.CRIEndpoint, "--data-dir", filepath.Join(h.Dir, "worker"),
		"--kubelet-command", filepath.Join(root, "_output/bin/kubelet"), "--kubelet-root-dir", h.KubeletDir,
		"--cgroup-root", "/oie2e-w-1", "--cni-conf-dir", h.CNIConfDir, "--interface", "oi-w-1"}, filepath.Join(h.Dir, "worker.log")); err != nil {
		t.Fatal(err)
	}
	pod := "apiVersion: v1\nkind: Pod\nmetadata: {name: app}\nspec:\n  nodeName: w-1\n  containers:\n  - {name: app, image: test.oneinfra.io/testapp:v1, imagePullPolicy: Never, args: [-http, ':8080']}\n"
	testutil.Eventually(t, 4*time.Minute, "node w-1 Ready and its pod running", func() error {
		cmd := exec.Command(filepath.Join(root, "_output/bin/kubectl"), "--kubeconfig", kc, "apply", "-f", "-")
		cmd.Stdin = strings.NewReader(pod)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		_, err := kubectl(kc, "wait", "--for=condition=Ready", "pod/app", "--timeout=5s")
		return err
	})

	if err := s.lab.Cut(lost); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	var moved string
	testutil.Eventually(t, 4*time.Minute, "ingress moved off "+lost, func() error {
		name, on := ingressHost()
		cl, err := cli(s.config, "", "get", "clusters")
		if name == oldIngress || on == lost || err != nil || !strings.Contains(cl, "Ready") {
			return fmt.Errorf("ingress %s on %s:\n%s", name, on, cl)
		}
		moved = on
		return nil
	})
	t.Logf("%s (ingress) cut off: ingress moved to %s and the cluster Ready again %.1fs after the cut", lost, moved, time.Since(began).Seconds())
	kc = writeKubeconfig(t, s, "edge") // the API endpoint moved with the ingress
	if !strings.Contains(readFile(t, kc), s.lab.Hosts[moved].PublicIP) {
		t.Fatalf("kubeconfig does not name %s's address", moved)
	}
	testutil.Eventually(t, 4*time.Minute, "the worker follows: exec through the new tunnel", func() error {
		out, err := kubectl(kc, "exec", "app", "--", "testapp", "-print", "through "+moved, "-exit", "0")
		if err != nil || !strings.Contains(out, "through "+moved) {
			return fmt.Errorf("%q %v", out, err)
		}
		ready, err := kubectl(kc, "get", "node", "w-1", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if err != nil || ready != "True" {
			return fmt.Errorf("node w-1 Ready=%q %v", ready, err)
		}
		return nil
	})
	t.Logf("worker w-1 reached through the new endpoint (exec works, node Ready) %.1fs after the cut", time.Since(began).Seconds())
	if out, _ := cli(s.config, "", "describe", "cluster", "edge"); !strings.Contains(out, "Moved") {
		t.Errorf("describe does not tell the move:\n%s", out)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestLeaderKilledDuringCreate: with three coordinator servers, the
// leader is killed (-9) while a cluster is being created. Another server
// takes over and the create finishes with nobody touching it (the
// operator's --wait rides over the failover); the cluster runs with the
// certificates it was given before the kill, an older cluster's data is
// all there, and the killed server, restarted, catches up.
func TestLeaderKilledDuringCreate(t *testing.T) {
	s := startSystem(t, controlPlaneHosts, 3)
	if out, err := cli(s.config, "", "cluster", "create", "first", "--wait", "--timeout", "5m"); err != nil {
		t.Fatalf("cluster create first: %v\n%s", err, out)
	}
	kcFirst := writeKubeconfig(t, s, "first")
	if _, err := kubectl(kcFirst, "create", "secret", "generic", "before-kill", "--from-literal=k=v"); err != nil {
		t.Fatal(err)
	}

	create := exec.Command(filepath.Join(binDir, "oneinfra-coord"), "--config", s.config,
		"cluster", "create", "demo", "--replicas", "3", "--wait", "--timeout", "8m")
	var createOut bytes.Buffer
	create.Stdout, create.Stderr = &createOut, &createOut
	if err := create.Start(); err != nil {
		t.Fatal(err)
	}
	created := make(chan error, 1)
	go func() { created <- create.Wait() }()
	t.Cleanup(func() { create.Process.Kill() })

	// The middle of the create: placed, its certificates issued, not Ready.
	var kc string
	testutil.Eventually(t, time.Minute, "demo placed and not yet Ready", func() error {
		cps := 0
		for _, c := range components(t, s) {
			if strings.HasPrefix(c.Metadata.Name, "demo-") && c.Spec.Role == "control-plane" {
				cps++
			}
		}
		if cps != 3 {
			return fmt.Errorf("%d replicas placed", cps)
		}
		out, err := cli(s.config, "", "cluster", "kubeconfig", "demo")
		if err != nil {
			return err
		}
		kc = filepath.Join(t.TempDir(), "kubeconfig")
		return os.WriteFile(kc, []byte(out), 0o600)
	})
	if out, _ := cli(s.config, "", "get", "cluster", "demo"); strings.Contains(out, "Ready") {
		t.Fatalf("demo was Ready before the leader could be killed:\n%s", out)
	}
	old := leader(s.config)
	var killed *labServer
	for _, srv := range s.servers {
		if srv.id == old {
			killed = srv
		}
	}
	if killed == nil {
		t.Fatalf("no leader among the servers (%q)", old)
	}
	killed.stop(t, syscall.SIGKILL)
	began := time.Now()
	testutil.Eventually(t, time.Minute, "a new leader", func() error {
		if l := leader(s.config); l == "" || l == old {
			return fmt.Errorf("leader %q", l)
		}
		return nil
	})
	elected := time.Since(began)
	select {
	case err := <-created:
		if err != nil || !strings.Contains(createOut.String(), "cluster/demo Ready") {
			d, _ := cli(s.config, "", "describe", "cluster", "demo")
			t.Fatalf("cluster create --wait across the failover: %v\n%s\n%s", err, createOut.String(), d)
		}
	case <-time.After(8 * time.Minute):
		t.Fatalf("cluster create --wait still waiting:\n%s", createOut.String())
	}
	t.Logf("leader %s killed mid-create: new leader %s in %.1fs; demo Ready %.1fs after the kill, with no retry by the operator",
		old, leader(s.config), elected.Seconds(), time.Since(began).Seconds())

	// The kubeconfig taken before the kill works: same CA, same admin.
	if _, err := kubectl(kc, "create", "secret", "generic", "after-kill", "--from-literal=k=v"); err != nil {
		t.Fatalf("the kubeconfig issued before the kill: %v", err)
	}
	if _, err := kubectl(kcFirst, "get", "secret", "before-kill"); err != nil {
		t.Errorf("the first cluster lost its secret: %v", err)
	}
	if out, _ := cli(s.config, "", "get", "clusters"); strings.Count(out, "Ready") != 2 {
		t.Errorf("both clusters should be Ready:\n%s", out)
	}

	// The killed server comes back from its data dir and catches up.
	killed.start(t, s.lab)
	testutil.Eventually(t, time.Minute, killed.id+" caught up", func() error {
		out, err := cli(onlyServer(t, s.config, killed.api), "", "--stale", "get", "clusters")
		if err != nil {
			return err
		}
		if strings.Count(out, "Ready") != 2 {
			return fmt.Errorf("%s has:\n%s", killed.id, out)
		}
		return nil
	})
}

// TestCoordinatorPartition: one of three coordinator servers is cut off
// from the other two, though not from the agents. It decides nothing (it
// has no leader) and stops serving, so the agents report through the
// majority: no hypervisor goes suspect or dead, nothing moves, writes go
// on; healed, the server catches up.
func TestCoordinatorPartition(t *testing.T) {
	hosts := []lab.HostSpec{{Name: "hv-1"}, {Name: "hv-2"}, {Name: "pub-1", Public: true}, {Name: "c3", Bare: true}}
	s := startSystem(t, hosts, 3, "--suspect-after", "40s", "--dead-after", "60s")
	c3 := s.servers[2]
	// c3 as seen from its own side of the partition.
	inC3 := func(args ...string) (string, error) {
		conf := onlyServer(t, s.config, c3.api)
		cmd := exec.Command("nsenter", append([]string{"--net=/run/netns/" + s.lab.Hosts["c3"].Namespace, "--",
			filepath.Join(binDir, "oneinfra-coord"), "--config", conf, "--stale"}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := cli(s.config, "", "cluster", "create", "demo", "--wait", "--timeout", "5m"); err != nil {
		t.Fatalf("cluster create: %v\n%s", err, out)
	}
	if out, err := inC3("members"); err != nil || !strings.Contains(out, "*") {
		t.Fatalf("c3 before the partition: %v\n%s", err, out)
	}
	placed := func() []string {
		var out []string
		for _, c := range components(t, s) {
			out = append(out, c.Metadata.Name+"@"+c.Spec.Hypervisor)
		}
		slices.Sort(out)
		return out
	}
	before := placed()

	partition := func(op string) {
		t.Helper()
		for _, rule := range [][]string{{"INPUT", "-s"}, {"OUTPUT", "-d"}} {
			args := append(s.lab.Hosts["c3"].Enter(), "iptables", op, rule[0], rule[1], lab.CoordinatorIP, "-j", "DROP")
			if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %v: %s", args, err, out)
			}
		}
	}
	partition("-I")
	began := time.Now()
	testutil.Eventually(t, 30*time.Second, "c3 without a leader", func() error {
		out, err := inC3("members")
		if err != nil || strings.Contains(out, "*") {
			return fmt.Errorf("c3 still sees a leader: %v\n%s", err, out)
		}
		return nil
	})
	t.Logf("c3 partitioned: it knows no leader %.1fs after the cut", time.Since(began).Seconds())
	if _, err := cli(s.config, "", "token", "create", "--kind", "hypervisor", "--ttl", "1h"); err != nil {
		t.Fatalf("a write during the partition: %v", err)
	}
	// Longer than --dead-after: every hypervisor stays alive and keeps
	// reporting through the majority.
	checks := 0
	for time.Since(began) < 75*time.Second {
		out, err := cli(s.config, "", "get", "hv", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var list struct {
			Items []struct {
				Metadata struct{ Name string }
				Status   struct {
					Health   string
					LastSeen time.Time
				}
			}
		}
		if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Items) != 3 {
			t.Fatalf("get hv: %v\n%s", err, out)
		}
		for _, h := range list.Items {
			if h.Status.Health != "alive" || time.Since(h.Status.LastSeen) > 40*time.Second {
				t.Errorf("%s during the partition: %s, last seen %s ago", h.Metadata.Name, h.Status.Health, time.Since(h.Status.LastSeen).Round(time.Second))
			}
		}
		checks++
		time.Sleep(5 * time.Second)
	}
	t.Logf("partition held %.0fs (dead-after 60s): %d checks, every hypervisor alive and reporting", time.Since(began).Seconds(), checks)
	if after := placed(); !slices.Equal(before, after) {
		t.Errorf("components moved during the partition:\nbefore %v\nafter  %v", before, after)
	}

	partition("-D")
	healed := time.Now()
	want, err := cli(s.config, "", "token", "list")
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, time.Minute, "c3 caught up", func() error {
		out, err := inC3("token", "list")
		if err != nil || strings.Count(out, "hypervisor") != strings.Count(want, "hypervisor") {
			return fmt.Errorf("c3 has: %v\n%s", err, out)
		}
		return nil
	})
	t.Logf("healed: c3 caught up %.1fs later", time.Since(healed).Seconds())
}
