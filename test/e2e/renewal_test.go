package e2e

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/test/lab"
	"k8s.io/client-go/tools/clientcmd"
)

// certValidity is the --cert-validity of TestWorkersBehindNATThroughRenewals:
// $ONEINFRA_CERT_VALIDITY, or 6m. A third of it must hold a rolling
// renewal of three replicas whose certificates fall due together (about
// 85s here).
func certValidity(t *testing.T) time.Duration {
	if v := os.Getenv("ONEINFRA_CERT_VALIDITY"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Minute {
			t.Fatalf("ONEINFRA_CERT_VALIDITY=%q: want a duration of a minute or more", v)
		}
		return d
	}
	return 6 * time.Minute
}

// TestWorkersBehindNATThroughRenewals: two workers, each behind two NAT
// routers that nothing can dial through, join a three-replica VPN cluster
// with real kubelets (a revoked token is refused); both nodes are Ready,
// run a pod each, answer kubectl logs and exec through the tunnel, and
// their pods reach each other by pod IP. The coordinator (three servers)
// issues certificates of a few minutes, and all this runs for two of their
// lifetimes: everything renews (the cluster's replicas twice, one at a
// time), the API answers /readyz through the ingress every 0.5s with no
// failure, the API servers' serving certificates change, the agents stay
// alive and the nodes Ready, logs, exec and pod-to-pod still work at the
// end, the CLI keeps working with the file it started with (renewing it),
// and /metrics shows the new expiries. Then the cluster's CAs are rotated
// with it Ready throughout (rotateClusterCA), and the coordinator's own
// (rotateCoordinatorCA). Last, removing a node removes its peer.
func TestWorkersBehindNATThroughRenewals(t *testing.T) {
	validity := certValidity(t)
	hosts := []lab.HostSpec{{Name: "hv-1"}, {Name: "hv-2"}, {Name: "hv-3"}, {Name: "pub-1", Public: true},
		{Name: "worker-1", Worker: true}, {Name: "worker-2", Worker: true}}
	s := startSystem(t, hosts, 3, "--cert-validity", validity.String())
	startedConfig := readFile(t, s.config)
	if out, err := cli(s.config, "", "cluster", "create", "renew", "--replicas", "3", "--vpn", "--wait", "--timeout", "5m"); err != nil {
		d, _ := cli(s.config, "", "describe", "cluster", "renew")
		t.Fatalf("cluster create: %v\n%s\n%s", err, out, d)
	}
	created := time.Now()
	kc := writeKubeconfig(t, s, "renew")
	token, hash := workerToken(t, s, "renew")
	refusedRevokedToken(t, s, "renew", hash)
	ips := joinWorkers(t, s, "renew", kc, token, hash)
	checkLogsExec(t, kc)
	checkPodToPod(t, kc, ips)
	checkAPIReachesPods(t, kc)
	addonsReady(t, kc)
	before, beforeKeys := servingCerts(t, kc)

	// Two lifetimes of the cluster's first certificates, probed
	// throughout. The CLI runs all along with the file it started with,
	// as an operator's would; kubeconfigs are fetched again (they live
	// no longer than the other certificates).
	p := probeAnonymously(t, "renew", kc)
	end := created.Add(2 * validity)
	t.Logf("probing until %s (two lifetimes of %s)", end.UTC().Format("15:04:05"), validity)
	// How long each replica's renewal took, and each round of all three,
	// as seen every few seconds.
	var each, rounds []time.Duration
	var began, roundBegan time.Time
	var gens map[string]int
	done := 0 // rounds done: the lowest generation
	kcAt := time.Now()
	for time.Now().Before(end) {
		out, err := cli(s.config, "", "describe", "cluster", "renew")
		if err != nil {
			t.Fatalf("describe with the CLI's first credentials file: %v\n%s", err, out)
		}
		var busy bool
		gens, busy = replicaCerts(out)
		switch {
		case busy && began.IsZero():
			began = time.Now()
			if roundBegan.IsZero() {
				roundBegan = began
			}
		case !busy && !began.IsZero():
			each = append(each, time.Since(began))
			began = time.Time{}
		}
		if low := lowest(gens); low > done && !roundBegan.IsZero() {
			done = low
			rounds = append(rounds, time.Since(roundBegan))
			roundBegan = time.Time{}
		}
		if hv, err := cli(s.config, "", "get", "hv"); err != nil || strings.Count(hv, "alive") != 4 {
			t.Errorf("hypervisors not all alive: %v\n%s", err, hv)
		}
		if time.Since(kcAt) > validity/3 {
			kc, kcAt = writeKubeconfig(t, s, "renew"), time.Now()
		}
		for _, node := range workerNodes {
			if err := nodeReady(kc, node); err != nil {
				t.Errorf("%v", err)
			}
		}
		time.Sleep(2 * time.Second)
	}
	n, failed := p.stop()
	t.Logf("%d probes through the ingress over %s, %d failed; rolling renewals of the three replicas took %v, each replica's %v (seen every 2s or so); generations %v",
		n, time.Since(created).Round(time.Second), len(failed), rounds, each, gens)
	if len(failed) > 0 {
		t.Errorf("%d of %d probes failed: %v", len(failed), n, failed)
	}
	// Every replica renewed twice.
	for i := range 3 {
		if name := fmt.Sprintf("renew-cp-%d", i); gens[name] < 2 {
			t.Errorf("%s at certificate generation %d, want 2 or more", name, gens[name])
		}
	}
	after, afterKeys := servingCerts(t, kc)
	if overlap(before, after) {
		t.Errorf("serving certificates seen before (%v) are still served (%v)", before, after)
	}
	if overlap(beforeKeys, afterKeys) {
		t.Errorf("serving keys seen before (%v) are still served (%v): a renewal kept its key", beforeKeys, afterKeys)
	}
	kc = writeKubeconfig(t, s, "renew")
	checkLogsExec(t, kc)
	checkPodToPod(t, kc, ips)
	checkAPIReachesPods(t, kc)

	// The CLI renewed the file it started with, and it still works.
	if readFile(t, s.config) == startedConfig {
		t.Error("the CLI's credentials file was never renewed")
	}
	// /metrics shows every holder's newest certificate outliving the
	// first ones.
	metrics := scrape(t, metricsAddr(t, s.servers[0].log))
	firstExpiry := created.Add(validity)
	for _, owner := range []string{"component/renew-cp-0", "component/renew-cp-2", "component/renew-ingress-0", "hypervisor/hv-1", "hypervisor/pub-1", "server/c2", "join-endpoint/pub-1", "worker/renew/w-1"} {
		exp, ok := metrics[owner]
		if !ok {
			t.Errorf("/metrics has no certificate of %s", owner)
			continue
		}
		if exp.Before(firstExpiry) {
			t.Errorf("/metrics: %s's certificate expires %s, before the first ones did (%s): not renewed", owner, exp, firstExpiry)
		}
	}
	rotateClusterCA(t, s, "renew", ips)
	rotateCoordinatorCA(t, s, "renew")
	removeNode(t, s, "renew")
}

// probeAnonymously probes GET /readyz through the ingress every 0.5s,
// verifying the API server against the cluster CA of kc but presenting no
// client certificate (/readyz is open to anonymous requests): the probes
// outlive any client certificate, and test the serving ones.
func probeAnonymously(t *testing.T, cluster, kc string) *prober {
	t.Helper()
	url, conf := apiTLS(t, kc)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: conf, DisableKeepAlives: true}}
	return probeWith(t, cluster, func() error {
		resp, err := client.Get(url + "/readyz")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %s: %s", resp.Status, body)
		}
		return nil
	})
}

// apiTLS is the API server URL of kc and a TLS configuration that
// verifies it as kubectl does, without a client certificate.
func apiTLS(t *testing.T, kc string) (string, *tls.Config) {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(kc)
	if err != nil {
		t.Fatal(err)
	}
	cluster := cfg.Clusters[cfg.Contexts[cfg.CurrentContext].Cluster]
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(cluster.CertificateAuthorityData) {
		t.Fatalf("%s has no cluster CA", kc)
	}
	return cluster.Server, &tls.Config{RootCAs: pool}
}

// servingCerts dials the API through the ingress a few times, verifying
// it as kubectl does, and returns the serials of the serving certificates
// seen (the ingress balances over the replicas) and their public keys.
func servingCerts(t *testing.T, kc string) (serials, keys map[string]bool) {
	t.Helper()
	url, conf := apiTLS(t, kc)
	addr := strings.TrimPrefix(url, "https://")
	conf.ServerName = addr[:strings.LastIndex(addr, ":")]
	serials, keys = map[string]bool{}, map[string]bool{}
	for range 12 {
		conn, err := tls.Dial("tcp", addr, conf)
		if err != nil {
			t.Fatalf("dialing the API at %s: %v", addr, err)
		}
		cert := conn.ConnectionState().PeerCertificates[0]
		serials[cert.SerialNumber.Text(16)] = true
		keys[tlsutil.PublicKeyHash(cert.RawSubjectPublicKeyInfo)] = true
		conn.Close()
	}
	return serials, keys
}

func overlap(a, b map[string]bool) bool {
	for k := range a {
		if b[k] {
			return true
		}
	}
	return false
}

// replicaCerts reads the Certificates table of a describe cluster: each
// control-plane replica's certificate generation, and whether any of them
// is renewing.
func replicaCerts(describe string) (map[string]int, bool) {
	gens := map[string]int{}
	busy := false
	re := regexp.MustCompile(`(?m)^\s+(\S+-cp-\d+)\s+(\d+)\s+\S+\s+\S+\s+(.*)$`)
	for _, m := range re.FindAllStringSubmatch(describe, -1) {
		gens[m[1]], _ = strconv.Atoi(m[2])
		busy = busy || strings.HasPrefix(m[3], "restarting") || strings.HasPrefix(m[3], "new certificates")
	}
	return gens, busy
}

// lowest is the lowest generation of gens.
func lowest(gens map[string]int) int {
	low := -1
	for _, g := range gens {
		if low < 0 || g < low {
			low = g
		}
	}
	return low
}

// metricsAddr is the /metrics address a server logged.
func metricsAddr(t *testing.T, log string) string {
	t.Helper()
	m := regexp.MustCompile(`serving /metrics.* addr=(\S+)`).FindStringSubmatch(readFile(t, log))
	if m == nil {
		t.Fatalf("%s says nowhere where it serves /metrics", log)
	}
	return m[1]
}

// scrape reads oneinfra_certificate_expiry_timestamp_seconds from a
// /metrics: the latest expiry of each owner.
func scrape(t *testing.T, addr string) map[string]time.Time {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	re := regexp.MustCompile(`^oneinfra_certificate_expiry_timestamp_seconds\{certificate="[^"]*",owner="([^"]*)"\} (\S+)$`)
	out := map[string]time.Time{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	for sc.Scan() {
		m := re.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			t.Fatalf("%s: %v", sc.Text(), err)
		}
		if at := time.Unix(int64(v), 0); at.After(out[m[1]]) {
			out[m[1]] = at
		}
	}
	if len(out) == 0 {
		t.Fatalf("no oneinfra_certificate_expiry_timestamp_seconds in /metrics of %s", addr)
	}
	return out
}
