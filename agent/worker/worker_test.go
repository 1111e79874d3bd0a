package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/tlsutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func endpointKey(t *testing.T) string {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey().String()
}

func testConfig(t *testing.T, join string) Config {
	t.Helper()
	dir := t.TempDir()
	c, err := Config{Join: join, Name: "w1", DataDir: filepath.Join(dir, "data"), KubeletRootDir: filepath.Join(dir, "kubelet-root"),
		CgroupRoot: "/oneinfra/w1", CNIConfDir: filepath.Join(dir, "cni"), Logger: testLogger(t),
		JoinBackoff: 10 * time.Millisecond, JoinMaxBackoff: 50 * time.Millisecond}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestKubeletConfigAndFlags(t *testing.T) {
	ca, _ := newTestCA(t)
	c := testConfig(t, "192.0.2.1:7445")
	wc := testWorkerConfig(t, ca, endpointKey(t), "192.0.2.1:51820")
	b, err := renderKubeletConfig(c, wc)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := yaml.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"apiVersion":               "kubelet.config.k8s.io/v1beta1",
		"kind":                     "KubeletConfiguration",
		"cgroupRoot":               "/oneinfra/w1",
		"cgroupDriver":             "cgroupfs",
		"failCgroupV1":             false,
		"failSwapOn":               false,
		"rotateCertificates":       true,
		"clusterDomain":            "cluster.local",
		"resolvConf":               "/etc/resolv.conf",
		"containerRuntimeEndpoint": DefaultCRIEndpoint,
		"podLogsDir":               filepath.Join(c.KubeletRootDir, "pod-logs"),
	}
	for k, v := range want {
		if fmt.Sprint(got[k]) != fmt.Sprint(v) {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if _, ok := got["failCgroupV1"]; !ok {
		t.Error("failCgroupV1 is not set (the kubelet defaults it to true)")
	}
	if fmt.Sprint(got["clusterDNS"]) != "[10.97.0.10]" {
		t.Errorf("clusterDNS = %v", got["clusterDNS"])
	}
	if _, ok := got["staticPodPath"]; ok {
		t.Error("staticPodPath is set")
	}
	auth := got["authentication"].(map[string]any)
	if p := auth["x509"].(map[string]any)["clientCAFile"]; p != c.path(kubeletClientCA) {
		t.Errorf("clientCAFile = %v", p)
	}
	if auth["webhook"].(map[string]any)["enabled"] != true || auth["anonymous"].(map[string]any)["enabled"] != false {
		t.Errorf("authentication = %v", auth)
	}
	if m := got["authorization"].(map[string]any)["mode"]; m != "Webhook" {
		t.Errorf("authorization mode = %v", m)
	}
	if e := got["evictionHard"].(map[string]any); e["nodefs.available"] != "1%" || e["imagefs.available"] != "1%" || e["memory.available"] != "50Mi" {
		t.Errorf("evictionHard = %v", e)
	}

	flags, err := kubeletFlags(c, wc)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{
		"--node-ip=10.201.0.2", "--hostname-override=w1", "--root-dir=" + c.KubeletRootDir,
		"--config=" + c.path("kubelet/config.yaml"), "--bootstrap-kubeconfig=" + c.path("kubelet/bootstrap-kubeconfig"),
		"--kubeconfig=" + c.path("kubelet/kubeconfig"), "--cert-dir=" + c.path("kubelet/pki"),
	} {
		if !slices.Contains(flags, f) {
			t.Errorf("kubelet flags %q lack %s", flags, f)
		}
	}
}

func TestBootstrapKubeconfig(t *testing.T) {
	ca, _ := newTestCA(t)
	wc := testWorkerConfig(t, ca, endpointKey(t), "192.0.2.1:51820")
	b, err := renderBootstrapKubeconfig(wc)
	if err != nil {
		t.Fatal(err)
	}
	var kc struct {
		Clusters []struct {
			Name    string
			Cluster struct {
				Server string
				CA     []byte `json:"certificate-authority-data"`
			}
		}
		Users []struct {
			Name string
			User struct{ Token string }
		}
		CurrentContext string `json:"current-context"`
	}
	if err := yaml.Unmarshal(b, &kc); err != nil {
		t.Fatal(err)
	}
	if len(kc.Clusters) != 1 || kc.Clusters[0].Cluster.Server != "https://10.201.0.1:6443" || !bytes.Equal(kc.Clusters[0].Cluster.CA, ca.CertPem) {
		t.Errorf("clusters: %+v", kc.Clusters)
	}
	if len(kc.Users) != 1 || kc.Users[0].Name != "kubelet-bootstrap" || kc.Users[0].User.Token != wc.BootstrapToken {
		t.Errorf("users: %+v", kc.Users)
	}
	if kc.CurrentContext != "kubelet-bootstrap@c1" {
		t.Errorf("current context %q", kc.CurrentContext)
	}
}

func TestCNIConflist(t *testing.T) {
	ca, _ := newTestCA(t)
	c := testConfig(t, "192.0.2.1:7445")
	wc := testWorkerConfig(t, ca, endpointKey(t), "192.0.2.1:51820")
	changed, err := writeCNI(c, wc)
	if err != nil || !changed {
		t.Fatalf("first write: changed %v, %v", changed, err)
	}
	path := filepath.Join(c.CNIConfDir, "10-oneinfra.conflist")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		CNIVersion string `json:"cniVersion"`
		Name       string
		Plugins    []struct {
			Type         string
			Bridge       string
			IsGateway    bool
			IPMasq       bool
			HairpinMode  bool
			Capabilities map[string]bool
			IPAM         struct {
				Type    string
				Ranges  [][]struct{ Subnet string }
				Routes  []struct{ Dst string }
				DataDir string `json:"dataDir"`
			}
		}
	}
	if err := json.Unmarshal(b, &conf); err != nil {
		t.Fatal(err)
	}
	if conf.CNIVersion != "1.0.0" || conf.Name != "oneinfra" || len(conf.Plugins) != 2 {
		t.Fatalf("conflist: %s", b)
	}
	br, pm := conf.Plugins[0], conf.Plugins[1]
	if br.Type != "bridge" || br.Bridge != "oi-cni0" || !br.IsGateway || br.IPMasq || !br.HairpinMode {
		t.Errorf("bridge plugin: %+v", br)
	}
	if br.IPAM.Type != "host-local" || len(br.IPAM.Ranges) != 1 || br.IPAM.Ranges[0][0].Subnet != "10.245.1.0/24" ||
		br.IPAM.DataDir != c.path("cni-ipam") || len(br.IPAM.Routes) != 1 || br.IPAM.Routes[0].Dst != "0.0.0.0/0" {
		t.Errorf("ipam: %+v", br.IPAM)
	}
	if pm.Type != "portmap" || !pm.Capabilities["portMappings"] {
		t.Errorf("portmap plugin: %+v", pm)
	}
	fi1, _ := os.Stat(path)
	if changed, err := writeCNI(c, wc); err != nil || changed {
		t.Errorf("same content rewritten: changed %v, %v", changed, err)
	}
	if fi2, _ := os.Stat(path); !os.SameFile(fi1, fi2) {
		t.Error("same content: the file was replaced")
	}
	wc.PodCidr = "10.245.2.0/24"
	if changed, err := writeCNI(c, wc); err != nil || !changed {
		t.Errorf("new pod CIDR: changed %v, %v", changed, err)
	}
	if b, _ := os.ReadFile(path); !bytes.Contains(b, []byte(`"10.245.2.0/24"`)) {
		t.Errorf("new pod CIDR not written: %s", b)
	}
}

func TestRoutesAndChanges(t *testing.T) {
	got, err := routesFor("10.201.0.2/24", []string{"10.201.0.0/24", "10.245.0.0/16", "10.201.0.0/25", "10.0.0.0/8", "10.245.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"10.245.0.0/16", "10.0.0.0/8"}; !slices.Equal(got, want) {
		t.Errorf("routes %v, want %v", got, want)
	}
	a := &pb.WorkerConfig{Address: "10.201.0.2/24", Endpoint: "192.0.2.1:51820", EndpointPublicKey: "k", AllowedIps: []string{"10.201.0.0/24"}, ApiServer: "x"}
	b := proto.Clone(a).(*pb.WorkerConfig)
	b.ApiServer = "y"
	if tunnelChanged(a, b) {
		t.Error("API server change counted as a tunnel change")
	}
	for _, change := range []func(*pb.WorkerConfig){
		func(c *pb.WorkerConfig) { c.Endpoint = "192.0.2.2:51820" },
		func(c *pb.WorkerConfig) { c.EndpointPublicKey = "other" },
		func(c *pb.WorkerConfig) { c.AllowedIps = append(c.AllowedIps, "10.245.0.0/16") },
		func(c *pb.WorkerConfig) { c.Address = "10.201.0.3/24" },
	} {
		b := proto.Clone(a).(*pb.WorkerConfig)
		change(b)
		if !tunnelChanged(a, b) {
			t.Errorf("not a tunnel change: %v", b)
		}
	}
	fresh := &pb.WorkerConfig{Address: "10.201.0.2/24"}
	m := merge(&pb.WorkerConfig{CertPem: []byte("cert"), BootstrapToken: "tok"}, fresh)
	if string(m.CertPem) != "cert" || m.BootstrapToken != "tok" || m.Address != "10.201.0.2/24" {
		t.Errorf("merge lost the join-only fields: %v", m)
	}
	m = merge(&pb.WorkerConfig{BootstrapToken: "old"}, &pb.WorkerConfig{BootstrapToken: "new"})
	if m.BootstrapToken != "new" {
		t.Errorf("merge kept an old bootstrap token")
	}
}

func TestMasqueradeRules(t *testing.T) {
	got := fmt.Sprint(masqRules("10.201.0.1", "10.245.0.0/16", "10.201.0.0/24"))
	if want := "[[-d 10.201.0.1/32 -j MASQUERADE] [-d 10.245.0.0/16 -j RETURN] [-d 10.201.0.0/24 -j RETURN] [-j MASQUERADE]]"; got != want {
		t.Errorf("rules %s, want %s", got, want)
	}
	if n := masqChain("oi-wg0-abcdefgh"); len(n) > 28 {
		t.Errorf("chain name %q is longer than iptables allows", n)
	}
}

func TestCgroupRootInEveryHierarchy(t *testing.T) {
	dir := t.TempDir()
	var lines []string
	for i, m := range []struct{ dir, fs, opts string }{
		{"cpuset", "cgroup", "rw,cpuset"},
		{"memory", "cgroup", "rw,memory"},
		{"unified", "cgroup2", "rw,nsdelegate"},
		{"data", "ext4", "rw"},
		{"memory", "cgroup", "rw,memory"}, // mounted twice: listed once
	} {
		if err := os.MkdirAll(filepath.Join(dir, m.dir), 0o755); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, fmt.Sprintf("%d 1 0:%d / %s rw,nosuid shared:%d - %s %s %s", 30+i, 20+i, filepath.Join(dir, m.dir), i, m.fs, m.fs, m.opts))
	}
	mountinfo := filepath.Join(dir, "mountinfo")
	if err := os.WriteFile(mountinfo, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mounts, err := cgroupMounts(mountinfo)
	if err != nil || len(mounts) != 3 || !mounts[0].cpuset || mounts[1].cpuset || !mounts[2].unified {
		t.Fatalf("mounts %+v, %v", mounts, err)
	}
	if err := ensureCgroupRoot(mountinfo, "/oneinfra/w1"); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"cpuset", "memory", "unified"} {
		if fi, err := os.Stat(filepath.Join(dir, h, "oneinfra", "w1")); err != nil || !fi.IsDir() {
			t.Errorf("%s: %v", h, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "oneinfra")); err == nil {
		t.Error("made a cgroup in a filesystem that is not cgroup")
	}
	if err := ensureCgroupRoot(mountinfo, "/oneinfra/w1"); err != nil {
		t.Errorf("second time: %v", err)
	}
	if got := unescapeMount(`/a\040b`); got != "/a b" {
		t.Errorf("unescape: %q", got)
	}
}

func TestConfigChecks(t *testing.T) {
	for _, c := range []Config{
		{Name: "w1"},
		{Join: "no-port", Name: "w1"},
		{Join: "192.0.2.1:7445", Name: "W_1"},
		{Join: "192.0.2.1:7445", Name: "w1", CAHash: "md5:00"},
		{Join: "192.0.2.1:7445", Name: "w1", Interface: "a-very-long-interface"},
		{Join: "192.0.2.1:7445", Name: "w1", DataDir: "relative"},
	} {
		if _, err := c.withDefaults(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

// joinedFiles lists what a join leaves.
var joinedFiles = []string{configFile, tlsKeyFile, tlsCrtFile, tlsCAFile}

func TestJoinOnceThenFromSavedState(t *testing.T) {
	ca, hash := newTestCA(t)
	f := startFakeJoin(t, ca, hash, "127.0.0.1:0", testWorkerConfig(t, ca, endpointKey(t), "192.0.2.1:51820"))
	f.config.JoinEndpoints = []string{f.addr}
	c := testConfig(t, f.addr)
	c.Token, c.CAHash = testToken, hash
	w, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.ensureJoined(context.Background()); err != nil {
		t.Fatal(err)
	}
	if joins, _ := f.counts(); joins != 1 {
		t.Fatalf("%d joins", joins)
	}
	req := f.joined[0]
	if req.Name != "w1" || req.Token != testToken || req.PublicKey != w.wgKey.PublicKey().String() {
		t.Errorf("join request: name %q, public key %q (want %q)", req.Name, req.PublicKey, w.wgKey.PublicKey())
	}
	csr, err := tlsutil.ParseCSR(req.CsrPem)
	if err != nil || csr.Subject.CommonName != "w1" {
		t.Errorf("CSR: %v %v", csr, err)
	}
	for _, p := range []string{"wireguard.key", configFile, tlsKeyFile} {
		if fi, err := os.Stat(c.path(p)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v", p, err, fi.Mode())
		}
	}
	if b, _ := os.ReadFile(c.path(tlsCAFile)); !bytes.Equal(b, ca.CertPem) {
		t.Errorf("the pinned CA was not kept: %s", b)
	}
	// A restart: no token, no hash, no join.
	c2 := c
	c2.Token, c2.CAHash = "", ""
	w2, err := New(c2)
	if err != nil {
		t.Fatal(err)
	}
	if err := w2.ensureJoined(context.Background()); err != nil {
		t.Fatal(err)
	}
	if joins, _ := f.counts(); joins != 1 {
		t.Errorf("joined again on restart: %d joins", joins)
	}
	if w2.wgKey != w.wgKey || !proto.Equal(w2.state.config, w.state.config) {
		t.Error("restart: another key or configuration")
	}
	// The saved identity asks for the configuration with mutual TLS.
	wc, from, err := fetchConfig(context.Background(), w2.cfg, w2.state)
	if err != nil || from != f.addr || wc.Address != "10.201.0.2/24" {
		t.Fatalf("Config: %v from %s: %v", wc, from, err)
	}
	if _, configs := f.counts(); configs != 1 || f.configCNs[0] != "w1" {
		t.Errorf("Config calls %d, client certificates %v", configs, f.configCNs)
	}
	// Another name on the same data directory is refused.
	c3 := c2
	c3.Name = "w2"
	w3, _ := New(c3)
	if err := w3.ensureJoined(context.Background()); err == nil || !strings.Contains(err.Error(), `joined as "w1"`) {
		t.Errorf("another name: %v", err)
	}
}

func TestJoinRefused(t *testing.T) {
	ca, hash := newTestCA(t)
	for _, tc := range []struct {
		code codes.Code
		msg  string
	}{
		{codes.PermissionDenied, "token expired at 2026-11-20T10:00:00Z"},
		{codes.Unauthenticated, "token revoked"},
		{codes.InvalidArgument, "token belongs to another cluster"},
		{codes.AlreadyExists, `a worker named "w1" already joined`},
	} {
		t.Run(tc.code.String(), func(t *testing.T) {
			f := startFakeJoin(t, ca, hash, "127.0.0.1:0", testWorkerConfig(t, ca, endpointKey(t), "192.0.2.1:51820"))
			f.joinErrs = []error{status.Error(tc.code, tc.msg)}
			c := testConfig(t, f.addr)
			c.Token, c.CAHash = testToken, hash
			w, _ := New(c)
			began := time.Now()
			err := w.ensureJoined(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.msg) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q: want one line with %q", err, tc.msg)
			}
			t.Logf("%v", err)
			if joins, _ := f.counts(); joins != 1 || time.Since(began) > 5*time.Second {
				t.Errorf("a refusal was retried: %d joins", joins)
			}
			for _, p := range joinedFiles {
				if _, err := os.Stat(c.path(p)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s left after a refused join: %v", p, err)
				}
			}
		})
	}
}

func TestJoinRetriesWhileNotReady(t *testing.T) {
	ca, hash := newTestCA(t)
	// Nothing listens yet: the endpoint comes up a little later.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	f := &fakeJoin{ca: ca, caHash: hash, addr: addr, config: testWorkerConfig(t, ca, endpointKey(t), "192.0.2.1:51820")}
	f.joinErrs = []error{
		status.Error(codes.Unavailable, "the coordinator is electing a leader"),
		status.Error(codes.FailedPrecondition, "the cluster's VPN is not ready"),
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("listening again on %s: %v", addr, err)
			return
		}
		f.serve(t, ln)
	}()
	c := testConfig(t, addr)
	c.Token, c.CAHash = testToken, hash
	w, _ := New(c)
	if err := w.ensureJoined(context.Background()); err != nil {
		t.Fatal(err)
	}
	if joins, _ := f.counts(); joins != 3 {
		t.Errorf("%d join calls, want 3 (two not ready, one accepted)", joins)
	}
	if _, err := os.Stat(c.path(configFile)); err != nil {
		t.Error(err)
	}
}

func TestJoinPinMismatchIsFinal(t *testing.T) {
	ca, hash := newTestCA(t)
	_, otherHash := newTestCA(t)
	f := startFakeJoin(t, ca, hash, "127.0.0.1:0", testWorkerConfig(t, ca, endpointKey(t), "192.0.2.1:51820"))
	c := testConfig(t, f.addr)
	c.Token, c.CAHash = testToken, otherHash
	w, _ := New(c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := w.ensureJoined(ctx)
	if err == nil || !strings.Contains(err.Error(), "--ca-hash") || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wrong CA hash: %v", err)
	}
	if joins, _ := f.counts(); joins != 0 {
		t.Errorf("the untrusted endpoint got %d joins", joins)
	}
	// Without token nothing is tried.
	c.Token = ""
	w, _ = New(c)
	if err := w.ensureJoined(ctx); err == nil || !strings.Contains(err.Error(), "--token") {
		t.Errorf("no token: %v", err)
	}
}

func TestFetchConfigTriesEveryEndpoint(t *testing.T) {
	ca, hash := newTestCA(t)
	f := startFakeJoin(t, ca, hash, "127.0.0.1:0", testWorkerConfig(t, ca, endpointKey(t), "192.0.2.1:51820"))
	c := testConfig(t, f.addr)
	c.Token, c.CAHash = testToken, hash
	w, _ := New(c)
	if err := w.ensureJoined(context.Background()); err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	c.Join = dead
	w.state.config.JoinEndpoints = []string{dead, f.addr}
	_, from, err := fetchConfig(context.Background(), c, w.state)
	if err != nil || from != f.addr {
		t.Fatalf("from %q: %v", from, err)
	}
	w.state.config.JoinEndpoints = nil
	if _, _, err := fetchConfig(context.Background(), c, w.state); err == nil || !strings.Contains(err.Error(), dead) {
		t.Errorf("no endpoint answers: %v", err)
	}
}

// writeScript writes an executable shell script.
func writeScript(t *testing.T, path, body string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func readLines(path string) []string {
	b, _ := os.ReadFile(path)
	return strings.Fields(strings.ReplaceAll(string(b), " ", "_"))
}

func waitFor(t *testing.T, timeout time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSupervisor(t *testing.T) {
	dir := t.TempDir()
	runs := filepath.Join(dir, "runs")
	pidFile := filepath.Join(dir, "pid")
	// Exits at once on its first run, then stays.
	script := writeScript(t, filepath.Join(dir, "kubelet"), fmt.Sprintf(`echo "$*" >> %s
[ $(wc -l < %s) -ge 2 ] || exit 3
echo $$ > %s
exec sleep 600
`, runs, runs, pidFile))
	s := newSupervisor(script, filepath.Join(dir, "kubelet.log"), testLogger(t))
	s.minBackoff = 50 * time.Millisecond
	ctx := t.Context()
	if err := s.Start(ctx, []string{"--node-ip=10.201.0.2"}, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "restart after an exit", func() bool { return len(readLines(runs)) == 2 })
	if err := s.Start(ctx, []string{"--node-ip=10.201.0.2"}, false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(readLines(runs)); n != 2 {
		t.Errorf("restarted though nothing changed: %d runs", n)
	}
	if err := s.Start(ctx, []string{"--node-ip=10.201.0.3"}, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "restart on new flags", func() bool { return len(readLines(runs)) == 3 })
	if got := readLines(runs)[2]; got != "--node-ip=10.201.0.3" {
		t.Errorf("restarted with %q", got)
	}
	began := time.Now()
	s.Stop()
	if time.Since(began) > 5*time.Second {
		t.Errorf("stopping took %s", time.Since(began))
	}
	pid, _ := os.ReadFile(pidFile)
	if len(bytes.TrimSpace(pid)) == 0 {
		t.Fatal("the script recorded no pid")
	}
	if b, err := os.ReadFile("/proc/" + strings.TrimSpace(string(pid)) + "/stat"); err == nil && !strings.Contains(string(b), ") Z ") {
		t.Errorf("the kubelet (pid %s) outlived Stop: %s", bytes.TrimSpace(pid), b)
	}
}

func TestSystemdKubelet(t *testing.T) {
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	systemctl := writeScript(t, filepath.Join(dir, "systemctl"), fmt.Sprintf("echo \"$*\" >> %s\n", calls))
	s := &systemdKubelet{unitDir: filepath.Join(dir, "units"), kubelet: "/usr/local/bin/kubelet", systemctl: systemctl, logger: testLogger(t)}
	args := []string{"--config=/d/kubelet/config.yaml", "--node-ip=10.201.0.2"}
	step := func(args []string, filesChanged bool, want ...string) {
		t.Helper()
		os.Remove(calls)
		if err := s.Start(context.Background(), args, filesChanged); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(calls)
		if got := strings.Split(strings.TrimSpace(string(b)), "\n"); !slices.Equal(got, want) {
			t.Errorf("systemctl calls %q, want %q", got, want)
		}
	}
	step(args, false, "daemon-reload", "enable oneinfra-kubelet.service", "restart oneinfra-kubelet.service")
	unit, err := os.ReadFile(filepath.Join(dir, "units", "oneinfra-kubelet.service"))
	if err != nil || !strings.Contains(string(unit), "\nExecStart=/usr/local/bin/kubelet --config=/d/kubelet/config.yaml --node-ip=10.201.0.2\n") {
		t.Errorf("unit: %s %v", unit, err)
	}
	step(args, false, "enable --now oneinfra-kubelet.service")
	step(args, true, "enable oneinfra-kubelet.service", "restart oneinfra-kubelet.service")
	step([]string{"--node-ip=10.201.0.3"}, false, "daemon-reload", "enable oneinfra-kubelet.service", "restart oneinfra-kubelet.service")
}

func TestKubeletFilesModes(t *testing.T) {
	ca, _ := newTestCA(t)
	c := testConfig(t, "192.0.2.1:7445")
	wc := testWorkerConfig(t, ca, endpointKey(t), "192.0.2.1:51820")
	changed, err := writeKubeletFiles(c, wc)
	if err != nil || !changed {
		t.Fatalf("changed %v, %v", changed, err)
	}
	for p, mode := range map[string]os.FileMode{bootstrapKubeconfig: 0o600, kubeletConfigFile: 0o644, kubeletClientCA: 0o644} {
		if fi, err := os.Stat(c.path(p)); err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v, mode %v, want %v", p, err, fi.Mode(), mode)
		}
	}
	if changed, err := writeKubeletFiles(c, wc); err != nil || changed {
		t.Errorf("unchanged files rewritten: %v %v", changed, err)
	}
	wc.ClusterDns = "10.97.0.11"
	if changed, err := writeKubeletFiles(c, wc); err != nil || !changed {
		t.Errorf("new DNS: %v %v", changed, err)
	}
}

func TestHealthEndpoints(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	w := &Worker{cfg: Config{MetricsAddr: addr}, logger: testLogger(t)}
	if err := w.serveHealth(t.Context()); err != nil {
		t.Fatal(err)
	}
	get := func(path string) int {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d", code)
	}
	if code := get("/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz with the tunnel down: %d", code)
	}
	w.tunnelUp.Store(true)
	if code := get("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz with the tunnel up: %d", code)
	}
}

// joinedWorker is a worker joined through f, the only join endpoint.
func joinedWorker(t *testing.T, f *fakeJoin, hash string) (*Worker, Config) {
	t.Helper()
	f.config.JoinEndpoints = []string{f.addr}
	c := testConfig(t, f.addr)
	c.Token, c.CAHash = testToken, hash
	w, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.ensureJoined(context.Background()); err != nil {
		t.Fatal(err)
	}
	return w, c
}

// TestRenewCertificate: a worker whose certificate is past two thirds of
// its life renews it through its join endpoint, for a key of its own, and
// keeps it; the next call presents it.
func TestRenewCertificate(t *testing.T) {
	ca, hash := newTestCA(t)
	f := startFakeJoin(t, ca, hash, "127.0.0.1:0", testWorkerConfig(t, ca, endpointKey(t), "192.0.2.1:51820"))
	w, c := joinedWorker(t, f, hash)
	ctx := context.Background()
	// A certificate at the end of its life.
	key, keyPEM, _ := tlsutil.GenerateKey()
	csr, _ := tlsutil.CreateCSR(key, "w1", nil)
	old, err := tlsutil.SignCSR(ca, csr, tlsutil.CertOptions{CommonName: "w1", Usages: []tlsutil.Usage{tlsutil.UsageClient}, Validity: 9 * time.Second}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	w.state.cert = &pb.KeyPair{CertPem: old, KeyPem: keyPEM}
	// Due at 6s, valid until 9s: room for a busy machine's handshake.
	time.Sleep(6100 * time.Millisecond)
	if _, err := w.refresh(ctx, false); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	renewals := f.renewals
	f.mu.Unlock()
	if renewals != 1 || bytes.Equal(w.state.cert.CertPem, old) || bytes.Equal(w.state.cert.KeyPem, keyPEM) {
		t.Fatalf("%d renewals; certificate changed %v, key changed %v", renewals, !bytes.Equal(w.state.cert.CertPem, old), !bytes.Equal(w.state.cert.KeyPem, keyPEM))
	}
	if b, _ := os.ReadFile(c.path(tlsCrtFile)); !bytes.Equal(b, w.state.cert.CertPem) {
		t.Error("the renewed certificate is not kept")
	}
	if _, _, err := fetchConfig(ctx, w.cfg, w.state); err != nil {
		t.Errorf("Config with the renewed certificate: %v", err)
	}
	// Not due: nothing more.
	if _, err := w.refresh(ctx, false); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.renewals != 1 {
		t.Errorf("renewed a fresh certificate: %d renewals", f.renewals)
	}
}

// TestCoordinatorTrustMoves: a configuration of a coordinator CA rotation
// gives the worker the CAs to trust, which it keeps, and a signing CA its
// certificate is not of, which it renews at once; the next request says
// the generation it holds.
func TestCoordinatorTrustMoves(t *testing.T) {
	ca, hash := newTestCA(t)
	next, _ := newTestCA(t)
	bundle := append(append([]byte{}, ca.CertPem...), next.CertPem...)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeJoin{ca: ca, caHash: hash, addr: ln.Addr().String(), config: testWorkerConfig(t, ca, endpointKey(t), "192.0.2.1:51820"), clientCAs: bundle}
	f.serve(t, ln)
	w, c := joinedWorker(t, f, hash)
	ctx := context.Background()
	wc := proto.Clone(f.config).(*pb.WorkerConfig)
	wc.CoordinatorTrust = &pb.CoordinatorTrust{Generation: 2, CaPem: bundle, SignerPem: next.CertPem}
	f.setConfig(wc)
	f.mu.Lock()
	f.signer = next
	f.mu.Unlock()
	if _, err := w.refresh(ctx, false); err != nil {
		t.Fatal(err)
	}
	signer, _ := tlsutil.ParseCertPEM(next.CertPem)
	cert, _ := tlsutil.ParseCertPEM(w.state.cert.CertPem)
	if cert.CheckSignatureFrom(signer) != nil {
		t.Error("the certificate is not of the new signing CA")
	}
	if b, _ := os.ReadFile(c.path(tlsCAFile)); !bytes.Equal(b, bundle) {
		t.Error("the coordinator's CAs are not kept")
	}
	if _, err := w.refresh(ctx, false); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.renewals != 1 || f.lastConfig.GetCoordinatorTrustGeneration() != 2 {
		t.Errorf("%d renewals (want 1); the last request said generation %d, want 2", f.renewals, f.lastConfig.GetCoordinatorTrustGeneration())
	}
}
