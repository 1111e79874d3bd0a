package e2e

import (
	"fmt"
	"maps"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/testutil"
	"golang.zx2c4.com/wireguard/wgctrl"
)

// refusedRevokedToken checks that a worker joining with a revoked token is
// refused, with the reason, and keeps nothing.
func refusedRevokedToken(t *testing.T, s *system, cluster, hash string) {
	t.Helper()
	revoked, _ := workerToken(t, s, cluster)
	if _, err := cli(s.config, "", "token", "revoke", strings.SplitN(revoked, ".", 2)[0]); err != nil {
		t.Fatal(err)
	}
	w1 := s.lab.Hosts["worker-1"]
	badArgs := append(append([]string{"60"}, w1.Enter()...), filepath.Join(binDir, "oneinfra-agent"), "worker", "--join", s.lab.Hosts["pub-1"].PublicIP+":7445",
		"--token", revoked, "--ca-hash", hash, "--name", "w-bad", "--data-dir", filepath.Join(w1.Dir, "bad"), "--interface", "oi-bad")
	bad := exec.Command("timeout", badArgs...)
	if out, err := bad.CombinedOutput(); err == nil || !strings.Contains(string(out), "revoked") {
		t.Errorf("joining with a revoked token: %v\n%s", err, out)
	}
}

// checkPodToPod has each app pod reach the other by pod IP, across the
// two NATs.
func checkPodToPod(t *testing.T, kc string, ips map[string]string) {
	t.Helper()
	for from, to := range map[string]string{"app-1": "app-2", "app-2": "app-1"} {
		got, err := kubectl(kc, "exec", from, "--", "testapp", "-get", "http://"+ips[to]+":8080/")
		if err != nil || !strings.Contains(got, "ok") {
			t.Errorf("%s → %s (%s): %q %v", from, to, ips[to], got, err)
		}
	}
}

// checkAPIReachesPods: the API servers reach the pods on the workers
// behind NATs, through the VPN (their egress proxy at its endpoint), as
// webhooks, aggregated APIs and the pod proxy need.
func checkAPIReachesPods(t *testing.T, kc string) {
	t.Helper()
	for _, pod := range []string{"app-1", "app-2"} {
		got, err := kubectl(kc, "get", "--raw", "/api/v1/namespaces/default/pods/"+pod+":8080/proxy/")
		if err != nil || strings.TrimSpace(got) != "ok" {
			t.Errorf("the API server's proxy to pod %s: %q %v", pod, got, err)
		}
	}
}

// removeNode lists both peers with a handshake, then removes w-2: its
// peer leaves the endpoint's device and the list.
func removeNode(t *testing.T, s *system, cluster string) {
	t.Helper()
	testutil.Eventually(t, 60*time.Second, "both peers listed with a handshake", func() error {
		out, err := cli(s.config, "", "cluster", "peers", cluster)
		if err != nil || !strings.Contains(out, "w-1") || !strings.Contains(out, "w-2") || strings.Contains(out, "never") {
			return fmt.Errorf("cluster peers: %v\n%s", err, out)
		}
		return nil
	})
	if _, err := cli(s.config, "", "cluster", "remove-node", cluster, "w-2"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 60*time.Second, "w-2's peer removed from the endpoint", func() error {
		wg, err := wgctrl.New()
		if err != nil {
			return err
		}
		defer wg.Close()
		var peers int
		err = s.lab.Hosts["pub-1"].InNetNS(func() error {
			dev, err := wg.Device(publicPrefix("pub-1") + cluster)
			if err == nil {
				peers = len(dev.Peers)
			}
			return err
		})
		if err != nil || peers != 1 {
			return fmt.Errorf("endpoint has %d peers: %v", peers, err)
		}
		return nil
	})
	if out, _ := cli(s.config, "", "cluster", "peers", cluster); strings.Contains(out, "w-2") {
		t.Errorf("w-2 still listed:\n%s", out)
	}
}

// workerToken creates a worker token for a cluster.
func workerToken(t *testing.T, s *system, cluster string) (token, hash string) {
	t.Helper()
	out, err := cli(s.config, "", "token", "create", "--kind", "worker", "--cluster", cluster)
	if err != nil {
		t.Fatal(err)
	}
	return regexp.MustCompile(`token: (\S+)`).FindStringSubmatch(out)[1], regexp.MustCompile(`ca-hash: (\S+)`).FindStringSubmatch(out)[1]
}

// workerNodes are the nodes joinWorkers makes, by lab host.
var workerNodes = map[string]string{"worker-1": "w-1", "worker-2": "w-2"}

// joinWorkers starts a worker agent on worker-1 and worker-2 that joins
// cluster through pub-1's join endpoint, waits for nodes w-1 and w-2 to be
// Ready (timing each), and runs a pod app-N on node w-N; it returns the
// pods' IPs.
func joinWorkers(t *testing.T, s *system, cluster, kc, token, hash string) map[string]string {
	t.Helper()
	root := s.lab.Spec.RepoRoot
	join := s.lab.Hosts["pub-1"].PublicIP + ":7445"
	started := map[string]time.Time{}
	for _, name := range slices.Sorted(maps.Keys(workerNodes)) {
		h, node := s.lab.Hosts[name], workerNodes[name]
		args := []string{filepath.Join(binDir, "oneinfra-agent"), "worker", "--join", join, "--token", token, "--ca-hash", hash,
			"--name", node, "--cri-endpoint", h.CRIEndpoint, "--data-dir", filepath.Join(h.Dir, "worker"),
			"--kubelet-command", filepath.Join(root, "_output/bin/kubelet"), "--kubelet-root-dir", h.KubeletDir,
			"--cgroup-root", "/oie2e-" + node, "--cni-conf-dir", h.CNIConfDir, "--interface", "oi-" + node}
		started[node] = time.Now()
		if _, err := s.lab.Start(name, args, filepath.Join(h.Dir, "worker.log")); err != nil {
			t.Fatal(err)
		}
	}
	for _, node := range []string{"w-1", "w-2"} {
		testutil.Eventually(t, 5*time.Minute, node+" Ready", func() error { return nodeReady(kc, node) })
		t.Logf("oneinfra-agent worker start → node %s Ready (behind two NATs): %.1fs", node, time.Since(started[node]).Seconds())
	}
	for i, node := range []string{"w-1", "w-2"} {
		pod := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: app-%d}
spec:
  nodeName: %s
  containers:
  - name: app
    image: test.oneinfra.io/testapp:v1
    imagePullPolicy: Never
    args: ["-print", "hello from %s", "-http", ":8080"]
`, i+1, node, node)
		cmd := exec.Command(filepath.Join(root, "_output/bin/kubectl"), "--kubeconfig", kc, "apply", "-f", "-")
		cmd.Stdin = strings.NewReader(pod)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("creating a pod on %s: %v\n%s", node, err, out)
		}
	}
	if out, err := kubectl(kc, "wait", "--for=condition=Ready", "pod/app-1", "pod/app-2", "--timeout=180s"); err != nil {
		pods, _ := kubectl(kc, "get", "pods", "-A", "-o", "wide")
		desc, _ := kubectl(kc, "describe", "pods")
		t.Fatalf("pods not Ready: %v\n%s\n%s\n%s", err, out, pods, desc)
	}
	ips := map[string]string{}
	for _, pod := range []string{"app-1", "app-2"} {
		ips[pod], _ = kubectl(kc, "get", "pod", pod, "-o", "jsonpath={.status.podIP}")
	}
	return ips
}

// nodeReady says why a node is not Ready with its VPN address, or nil.
func nodeReady(kc, node string) error {
	out, err := kubectl(kc, "get", "node", node, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status} {.status.addresses[?(@.type=="InternalIP")].address}`)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(out, "True 10.200.") {
		return fmt.Errorf("node %s: %q", node, out)
	}
	return nil
}

// checkLogsExec reads the logs of app-1 and app-2 and runs a command in
// each, through the API and the tunnel to their kubelets.
func checkLogsExec(t *testing.T, kc string) {
	t.Helper()
	for i, node := range []string{"w-1", "w-2"} {
		pod := fmt.Sprintf("app-%d", i+1)
		// A node answers through its serving certificate, which its
		// kubelet asks for once it has joined (serverTLSBootstrap) and a
		// control-plane agent approves within its resync.
		testutil.Eventually(t, time.Minute, "kubectl logs and exec on "+node, func() error {
			logs, err := kubectl(kc, "logs", pod)
			if err != nil || !strings.Contains(logs, "hello from "+node) {
				return fmt.Errorf("kubectl logs %s: %q %v", pod, logs, err)
			}
			got, err := kubectl(kc, "exec", pod, "--", "testapp", "-print", "exec on "+node, "-exit", "0")
			if err != nil || !strings.Contains(got, "exec on "+node) {
				return fmt.Errorf("kubectl exec %s: %q %v", pod, got, err)
			}
			return nil
		})
	}
}

// addonsReady waits for kube-proxy on both nodes and for CoreDNS, which
// reaches the API through the kubernetes service, whose endpoint is the
// ingress through the tunnel.
func addonsReady(t *testing.T, kc string) {
	t.Helper()
	testutil.Eventually(t, 2*time.Minute, "kube-proxy on both nodes", func() error {
		out, err := kubectl(kc, "-n", "kube-system", "get", "daemonset", "kube-proxy", "-o", "jsonpath={.status.numberReady}")
		if err != nil || out != "2" {
			return fmt.Errorf("kube-proxy ready on %q nodes: %v", out, err)
		}
		return nil
	})
	testutil.Eventually(t, 3*time.Minute, "CoreDNS ready", func() error {
		out, err := kubectl(kc, "-n", "kube-system", "get", "deployment", "coredns", "-o", "jsonpath={.status.readyReplicas}")
		if err != nil || out != "1" {
			pods, _ := kubectl(kc, "-n", "kube-system", "get", "pods", "-o", "wide")
			return fmt.Errorf("coredns ready replicas %q: %v\n%s", out, err, pods)
		}
		return nil
	})
}
