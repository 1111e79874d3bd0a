package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
)

// rotateClusterCA runs `cluster rotate-ca --wait` on a cluster with its two
// workers joined, and checks that it is Ready throughout: /readyz through
// the ingress every 0.5s (trusting the CAs of a kubeconfig fetched as the
// rotation begins, the old and the new ones) with no failure, both nodes
// Ready whenever looked at (with a kubeconfig fetched then). At the end
// the API serves certificates of the new CA alone, kubeconfigs carry it
// alone, a kubeconfig of before is refused, and logs, exec and pod-to-pod
// work (the kubelets' certificates are of the new signing CA).
func rotateClusterCA(t *testing.T, s *system, cluster string, ips map[string]string) {
	oldKC := writeKubeconfig(t, s, cluster)
	start := time.Now()
	var p *prober
	out, looks := whileCLI(s, func() {
		d, err := cli(s.config, "", "describe", "cluster", cluster)
		if err != nil {
			t.Errorf("describe during the rotation: %v", err)
			return
		}
		if p == nil && strings.Contains(d, "stage 1/3") {
			p = probeAnonymously(t, cluster, writeKubeconfig(t, s, cluster))
		}
		kc := writeKubeconfig(t, s, cluster)
		for _, node := range workerNodes {
			if err := nodeReady(kc, node); err != nil {
				t.Errorf("during the rotation (%s in): %v", time.Since(start).Round(time.Second), err)
			}
		}
	}, "cluster", "rotate-ca", cluster, "--wait", "--timeout", "12m")
	took := time.Since(start)
	if !strings.Contains(out, "CA rotation done") {
		d, _ := cli(s.config, "", "describe", "cluster", cluster)
		t.Fatalf("rotate-ca --wait: %s\n%s", out, d)
	}
	if p == nil {
		t.Fatal("describe never showed stage 1 of the rotation")
	}
	n, failed := p.stop()
	t.Logf("CA rotation took %s; %d probes through the ingress, %d failed; nodes Ready at %d looks\n%s", took.Round(time.Second), n, len(failed), looks, out)
	if len(failed) > 0 {
		t.Errorf("%d of %d probes failed during the CA rotation: %v", len(failed), n, failed)
	}
	kc := writeKubeconfig(t, s, cluster)
	if ca := kubeconfigCA(t, kc); bytes.Count(ca, []byte("BEGIN CERTIFICATE")) != 1 || bytes.Equal(ca, kubeconfigCA(t, oldKC)) {
		t.Errorf("the kubeconfig after the rotation trusts %d certificates, the same as before: %v", bytes.Count(ca, []byte("BEGIN CERTIFICATE")), bytes.Equal(ca, kubeconfigCA(t, oldKC)))
	}
	servingCerts(t, kc) // verified against the new CA alone
	if out, err := kubectl(oldKC, "get", "nodes"); err == nil {
		t.Errorf("a kubeconfig of before the rotation still works:\n%s", out)
	}
	for _, node := range workerNodes {
		if err := nodeReady(kc, node); err != nil {
			t.Error(err)
		}
	}
	checkLogsExec(t, kc)
	checkPodToPod(t, kc, ips)
	checkAPIReachesPods(t, kc)
	addonsReady(t, kc)
}

// kubeconfigCA is the cluster CA data of a kubeconfig.
func kubeconfigCA(t *testing.T, kc string) []byte {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(kc)
	if err != nil {
		t.Fatal(err)
	}
	cl := cfg.Clusters[cfg.Contexts[cfg.CurrentContext].Cluster]
	if cl == nil {
		t.Fatalf("%s names no cluster", kc)
	}
	return cl.CertificateAuthorityData
}

// rotateCoordinatorCA runs `rotate-ca --wait` (the coordinator's own CA)
// with the operator's credentials file, and checks that no one is locked
// out: /readyz through the ingress every 0.5s with no failure, every
// hypervisor alive and both nodes Ready whenever looked at. At the end the
// file trusts the new CA alone (the CLI rewrote it), a copy of it from
// before is refused, join tokens pin the new CA, the agents still report
// and logs and exec work.
func rotateCoordinatorCA(t *testing.T, s *system, cluster string) {
	before := filepath.Join(t.TempDir(), "before.conf")
	if err := os.WriteFile(before, []byte(readFile(t, s.config)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, oldHash := workerToken(t, s, cluster)
	kc := writeKubeconfig(t, s, cluster)
	p := probeAnonymously(t, cluster, kc)
	start, kcAt := time.Now(), time.Now()
	out, looks := whileCLI(s, func() {
		if time.Since(kcAt) > time.Minute { // it lives no longer than the other certificates
			kc, kcAt = writeKubeconfig(t, s, cluster), time.Now()
		}
		if hv, err := cli(s.config, "", "get", "hv"); err != nil || strings.Count(hv, "alive") != 4 {
			t.Errorf("during the coordinator CA rotation (%s in), hypervisors not all alive: %v\n%s", time.Since(start).Round(time.Second), err, hv)
		}
		for _, node := range workerNodes {
			if err := nodeReady(kc, node); err != nil {
				t.Errorf("during the coordinator CA rotation (%s in): %v", time.Since(start).Round(time.Second), err)
			}
		}
	}, "rotate-ca", "--wait", "--timeout", "10m")
	took := time.Since(start)
	n, failed := p.stop()
	if !strings.Contains(out, "coordinator CA rotation done") {
		t.Fatalf("rotate-ca --wait: %s", out)
	}
	t.Logf("coordinator CA rotation took %s; %d probes through the ingress, %d failed; hypervisors alive and nodes Ready at %d looks\n%s", took.Round(time.Second), n, len(failed), looks, out)
	if len(failed) > 0 {
		t.Errorf("%d of %d probes failed during the coordinator CA rotation: %v", len(failed), n, failed)
	}
	if cas := strings.Count(readFile(t, s.config), "BEGIN CERTIFICATE"); cas != 2 { // the new CA and the file's certificate
		t.Errorf("the credentials file holds %d certificates after the rotation, want the new CA and its own", cas)
	}
	if out, err := cli(before, "", "get", "hv"); err == nil {
		t.Errorf("a credentials file of before the coordinator CA rotation still works:\n%s", out)
	}
	if _, hash := workerToken(t, s, cluster); hash == oldHash {
		t.Errorf("join tokens still pin the old coordinator CA %s", hash)
	}
	// Agents report with their new certificates: a hypervisor is alive
	// only while it reports.
	time.Sleep(35 * time.Second)
	kc = writeKubeconfig(t, s, cluster)
	if hv, err := cli(s.config, "", "get", "hv"); err != nil || strings.Count(hv, "alive") != 4 {
		t.Errorf("after the coordinator CA rotation, hypervisors not all alive: %v\n%s", err, hv)
	}
	for _, node := range workerNodes {
		if err := nodeReady(kc, node); err != nil {
			t.Error(err)
		}
	}
	checkLogsExec(t, kc)
}

// whileCLI runs the CLI with args (with the system's credentials) and
// calls look every 3s until it ends; it returns its output, an error's
// message included, and how many looks it took.
func whileCLI(s *system, look func(), args ...string) (string, int) {
	result := make(chan string, 1)
	go func() {
		out, err := cli(s.config, "", args...)
		if err != nil {
			out += err.Error()
		}
		result <- out
	}()
	for looks := 0; ; looks++ {
		select {
		case out := <-result:
			return out, looks
		case <-time.After(3 * time.Second):
		}
		look()
	}
}
