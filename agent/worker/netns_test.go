package worker

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/agent/netconf"
	"github.com/oneinfra/oneinfra/agent/wireguard"
	"github.com/oneinfra/oneinfra/internal/testutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// sh runs a command and fails the test when it fails.
func sh(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := netconf.Output(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// echoEnv makes the test binary an echo server (see TestMain): it
// listens on the address the variable names, says "listening PORT", and
// answers each connection with the address it came from.
const echoEnv = "ONEINFRA_WORKER_TEST_ECHO"

func TestMain(m *testing.M) {
	if addr := os.Getenv(echoEnv); addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Printf("listening %d\n", ln.Addr().(*net.TCPAddr).Port)
		for {
			c, err := ln.Accept()
			if err != nil {
				os.Exit(1)
			}
			fmt.Fprintf(c, "%s\n", c.RemoteAddr())
			c.Close()
		}
	}
	os.Exit(m.Run())
}

// echoInNetns runs the echo server in the network namespace at nsPath
// and returns its port.
func echoInNetns(t *testing.T, nsPath string) int {
	t.Helper()
	cmd := exec.Command("nsenter", "--net="+nsPath, os.Args[0])
	cmd.Env = append(os.Environ(), echoEnv+"=:0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	var port int
	if _, serr := fmt.Sscanf(line, "listening %d", &port); err != nil || serr != nil {
		t.Fatalf("echo server in %s: %q %v", nsPath, line, err)
	}
	return port
}

// workerProc is one run of the oneinfra-agent worker binary.
type workerProc struct {
	cmd  *exec.Cmd
	log  *lockedBuffer
	done chan error
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func startWorker(t *testing.T, args ...string) *workerProc {
	t.Helper()
	p := &workerProc{cmd: exec.Command("nsenter", args...), log: &lockedBuffer{}, done: make(chan error, 1)}
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.stop(10*time.Second) != nil || t.Failed() || testing.Verbose() {
			t.Logf("worker log:\n%s", p.log)
		}
	})
	return p
}

// stop sends SIGTERM and waits; it kills after timeout.
func (p *workerProc) stop(timeout time.Duration) error {
	select {
	case err := <-p.done:
		p.done <- err
		return err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		err := <-p.done
		p.done <- err
		return fmt.Errorf("did not stop within %s: %v", timeout, err)
	}
}

// TestWorkerInNetworkNamespace runs the oneinfra-agent worker binary in a
// network namespace of its own, joined through a fake join endpoint and
// tunnelled to a WireGuard hub (this machine's implementation, the
// userspace one when the kernel has none) in the root namespace.
func TestWorkerInNetworkNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (network namespaces, TUN devices, iptables)")
	}
	for _, tool := range []string{"ip", "nsenter", "iptables", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed: %v", tool, err)
		}
	}
	id := os.Getpid() % 100000
	x := os.Getpid()%250 + 1
	ns := fmt.Sprintf("oiwt%d", id)
	nsPath := "/run/netns/" + ns
	vethHost, vethNS := fmt.Sprintf("oiwh%d", id), fmt.Sprintf("oiwn%d", id)
	hubName, wgName := fmt.Sprintf("oiwhub%d", id), fmt.Sprintf("oiwwk%d", id)
	hubIP, workerIP := fmt.Sprintf("172.29.%d.1", x), fmt.Sprintf("172.29.%d.2", x)
	vpnHub, vpnWorker := fmt.Sprintf("10.201.%d.1", x), fmt.Sprintf("10.201.%d.2", x)
	cgroupRoot := fmt.Sprintf("/oneinfra-wtest-%d", id)
	dir := t.TempDir()

	// The worker's namespace, its veth to the root namespace.
	sh(t, "ip", "netns", "add", ns)
	t.Cleanup(func() {
		_ = netconf.Run("ip", "netns", "del", ns)
		_ = netconf.Run("ip", "link", "del", vethHost)
	})
	sh(t, "ip", "link", "add", vethHost, "type", "veth", "peer", "name", vethNS)
	sh(t, "ip", "link", "set", vethNS, "netns", ns)
	sh(t, "ip", "addr", "add", hubIP+"/30", "dev", vethHost)
	sh(t, "ip", "link", "set", vethHost, "up")
	sh(t, "ip", "-n", ns, "addr", "add", workerIP+"/30", "dev", vethNS)
	sh(t, "ip", "-n", ns, "link", "set", vethNS, "up")
	sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
	sh(t, "ip", "-n", ns, "route", "add", "default", "via", hubIP)
	t.Cleanup(func() {
		for _, m := range mustCgroupMounts(t) {
			_ = os.Remove(filepath.Join(m.path, cgroupRoot))
		}
	})

	// The hub: the cluster's VPN endpoint, in the root namespace.
	hubKey, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	impl := wireguard.Choose(wireguard.ProbeKernel)
	hub, err := wireguard.Open(hubName, impl)
	if err != nil {
		t.Fatalf("hub device (%s): %v", impl, err)
	}
	t.Cleanup(func() { hub.Close() })
	var hubMu sync.Mutex
	hubCfg := wireguard.Config{PrivateKey: hubKey, ListenPort: freeUDPPort(t), Address: &net.IPNet{IP: net.ParseIP(vpnHub).To4(), Mask: net.CIDRMask(24, 32)}}
	if _, err := hub.Ensure(hubCfg); err != nil {
		t.Fatal(err)
	}

	// The join endpoint, which adds the worker to the hub as the public
	// agent does.
	ca, hash := newTestCA(t)
	wc := testWorkerConfig(t, ca, hubKey.PublicKey().String(), fmt.Sprintf("%s:%d", hubIP, hubCfg.ListenPort))
	wc.Address = vpnWorker + "/24"
	wc.EndpointAddress = vpnHub
	wc.AllowedIps = []string{fmt.Sprintf("10.201.%d.0/24", x), "10.245.0.0/16"}
	wc.ApiServer = "https://" + vpnHub + ":6443"
	f := startFakeJoin(t, ca, hash, hubIP+":0", wc)
	var joinedAt time.Time
	var workerKey wgtypes.Key
	f.onJoin = func(req *pb.JoinWorkerRequest) {
		key, err := wgtypes.ParseKey(req.PublicKey)
		if err != nil {
			t.Errorf("join: public key: %v", err)
			return
		}
		hubMu.Lock()
		defer hubMu.Unlock()
		joinedAt, workerKey = time.Now(), key
		hubCfg.Peers = []wireguard.Peer{{PublicKey: key, AllowedIPs: []net.IPNet{
			{IP: net.ParseIP(vpnWorker).To4(), Mask: net.CIDRMask(32, 32)},
			{IP: net.IPv4(10, 245, 1, 0).To4(), Mask: net.CIDRMask(24, 32)},
		}}}
		if _, err := hub.Ensure(hubCfg); err != nil {
			t.Errorf("adding the worker to the hub: %v", err)
		}
	}

	// The binary, and a kubelet that records its arguments and waits.
	bin := filepath.Join(dir, "oneinfra-agent")
	build := exec.Command("go", "build", "-o", bin, "github.com/oneinfra/oneinfra/cmd/oneinfra-agent")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building oneinfra-agent: %v\n%s", err, out)
	}
	kubeletArgs, kubeletPid := filepath.Join(dir, "kubelet-args"), filepath.Join(dir, "kubelet-pid")
	kubelet := writeScript(t, filepath.Join(dir, "kubelet"), fmt.Sprintf("printf '%%s\\n' \"$@\" > %s\necho $$ > %s\nexec sleep 3600\n", kubeletArgs, kubeletPid))
	data := filepath.Join(dir, "data")
	args := []string{"--net=" + nsPath, bin, "worker", "--join", f.addr, "--name", "w1",
		"--data-dir", data, "--kubelet-command", kubelet, "--kubelet-root-dir", filepath.Join(dir, "kubelet-root"),
		"--cni-conf-dir", filepath.Join(dir, "cni"), "--interface", wgName, "--cgroup-root", cgroupRoot,
		"--health-interval", "500ms", "--refresh-interval", "2s"}

	client, err := wgctrl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	handshakeAfter := func(after time.Time) func() error {
		return func() error {
			d, err := client.Device(hubName)
			if err != nil {
				return err
			}
			if len(d.Peers) != 1 {
				return fmt.Errorf("hub has %d peers", len(d.Peers))
			}
			if hs := d.Peers[0].LastHandshakeTime; !hs.After(after) {
				return fmt.Errorf("no handshake since %s (last %s)", after.Format(time.TimeOnly), hs.Format(time.TimeOnly))
			}
			return nil
		}
	}

	// First start: join, tunnel, kubelet.
	began := time.Now()
	w1 := startWorker(t, append(args[:len(args):len(args)], "--token", testToken, "--ca-hash", hash)...)
	testutil.Eventually(t, 30*time.Second, "first handshake at the hub", handshakeAfter(began))
	hubMu.Lock()
	t.Logf("start → join %s, join → handshake %s (%s WireGuard)", joinedAt.Sub(began).Round(time.Millisecond),
		time.Since(joinedAt).Round(time.Millisecond), impl)
	key1 := workerKey
	hubMu.Unlock()

	// Through the tunnel: ping, and TCP to a listener in the namespace.
	testutil.Eventually(t, 10*time.Second, "ping through the tunnel", func() error {
		return ping(vpnWorker, time.Second)
	})
	port := echoInNetns(t, nsPath)
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(vpnWorker, fmt.Sprint(port)), 5*time.Second)
	if err != nil {
		t.Fatalf("TCP through the tunnel: %v", err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	conn.Close()
	if host, _, _ := net.SplitHostPort(strings.TrimSpace(line)); err != nil || host != vpnHub {
		t.Errorf("TCP through the tunnel: the worker saw %q (%v), want a connection from %s", line, err, vpnHub)
	}

	// The kubelet and the host state the worker made.
	testutil.Eventually(t, 10*time.Second, "kubelet started", func() error {
		_, err := os.Stat(kubeletPid)
		return err
	})
	kargs := strings.Split(strings.TrimSpace(string(mustRead(t, kubeletArgs))), "\n")
	for _, want := range []string{"--node-ip=" + vpnWorker, "--hostname-override=w1", "--config=" + filepath.Join(data, "kubelet/config.yaml"),
		"--bootstrap-kubeconfig=" + filepath.Join(data, "kubelet/bootstrap-kubeconfig")} {
		if !slices.Contains(kargs, want) {
			t.Errorf("kubelet arguments %q lack %s", kargs, want)
		}
	}
	for _, p := range []string{"wireguard.key", "worker.json", "tls/worker.key", "kubelet/bootstrap-kubeconfig"} {
		if fi, err := os.Stat(filepath.Join(data, p)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v, want 0600", p, err, fi.Mode().Perm())
		}
	}
	if b := mustRead(t, filepath.Join(dir, "cni", "10-oneinfra.conflist")); !bytes.Contains(b, []byte(`"subnet": "10.245.1.0/24"`)) {
		t.Errorf("CNI configuration: %s", b)
	}
	if out := sh(t, "ip", "-n", ns, "route", "show", "10.245.0.0/16"); !strings.Contains(out, "dev "+wgName) {
		t.Errorf("no route to the cluster's pods through %s: %q", wgName, out)
	}
	if out := strings.TrimSpace(sh(t, "nsenter", "--net="+nsPath, "cat", "/proc/sys/net/ipv4/ip_forward")); out != "1" {
		t.Errorf("ip_forward = %s in the worker's namespace", out)
	}
	chain := masqChain(wgName)
	if err := netconf.Run("nsenter", "--net="+nsPath, "iptables", "-w", "-t", "nat", "-C", "POSTROUTING", "-s", "10.245.1.0/24", "-j", chain); err != nil {
		t.Errorf("no masquerade jump: %v", err)
	}
	rules := sh(t, "nsenter", "--net="+nsPath, "iptables", "-w", "-t", "nat", "-S", chain)
	for _, want := range []string{"-d 10.245.0.0/16 -j RETURN", fmt.Sprintf("-d 10.201.%d.0/24 -j RETURN", x), "-j MASQUERADE"} {
		if !strings.Contains(rules, want) {
			t.Errorf("masquerade chain lacks %q:\n%s", want, rules)
		}
	}
	for _, m := range mustCgroupMounts(t) {
		if fi, err := os.Stat(filepath.Join(m.path, cgroupRoot)); err != nil || !fi.IsDir() {
			t.Errorf("cgroup root missing in %s: %v", m.path, err)
		}
		if m.cpuset {
			if b, _ := os.ReadFile(filepath.Join(m.path, cgroupRoot, "cpuset.cpus")); len(bytes.TrimSpace(b)) == 0 {
				t.Errorf("%s: the cgroup root has no CPUs", m.path)
			}
		}
	}
	if strings.Contains(w1.log.String(), testToken) || strings.Contains(w1.log.String(), wc.BootstrapToken) {
		t.Error("the log shows a token")
	}

	// Stop: the kubelet stops with the agent, the userspace device goes.
	pid := strings.TrimSpace(string(mustRead(t, kubeletPid)))
	if err := w1.stop(15 * time.Second); err != nil {
		t.Fatalf("stopping the worker: %v", err)
	}
	if _, err := os.Stat("/proc/" + pid); err == nil {
		if b, _ := os.ReadFile("/proc/" + pid + "/stat"); !strings.Contains(string(b), ") Z ") {
			t.Errorf("the kubelet (pid %s) outlived the agent", pid)
		}
	}
	key := mustRead(t, filepath.Join(data, "wireguard.key"))

	// Restart without token: no second join, same key, the tunnel again.
	restarted := time.Now()
	_ = os.Remove(kubeletPid)
	w2 := startWorker(t, args...)
	testutil.Eventually(t, 30*time.Second, "handshake after the restart", handshakeAfter(restarted))
	t.Logf("restart → handshake %s", time.Since(restarted).Round(time.Millisecond))
	if joins, _ := f.counts(); joins != 1 {
		t.Errorf("%d joins: the restart joined again", joins)
	}
	if !bytes.Equal(key, mustRead(t, filepath.Join(data, "wireguard.key"))) {
		t.Error("the WireGuard key changed")
	}
	if d, err := client.Device(hubName); err != nil || len(d.Peers) != 1 || d.Peers[0].PublicKey != key1 {
		t.Errorf("hub peers after the restart: %v", err)
	}
	testutil.Eventually(t, 10*time.Second, "kubelet restarted", func() error {
		_, err := os.Stat(kubeletPid)
		return err
	})
	testutil.Eventually(t, 10*time.Second, "a Config call with the client certificate", func() error {
		if _, configs := f.counts(); configs == 0 {
			return errors.New("none yet")
		}
		return nil
	})

	// The endpoint moves: the worker learns it from Config and follows.
	moved := time.Now()
	hubMu.Lock()
	hubCfg.ListenPort = freeUDPPort(t)
	if _, err := hub.Ensure(hubCfg); err != nil {
		t.Fatal(err)
	}
	newEndpoint := fmt.Sprintf("%s:%d", hubIP, hubCfg.ListenPort)
	hubMu.Unlock()
	wc2 := testWorkerConfig(t, ca, hubKey.PublicKey().String(), newEndpoint)
	wc2.Address, wc2.EndpointAddress, wc2.AllowedIps, wc2.ApiServer = wc.Address, wc.EndpointAddress, wc.AllowedIps, wc.ApiServer
	wc2.KubeletClientCaPem = wc.KubeletClientCaPem
	f.setConfig(wc2)
	testutil.Eventually(t, 30*time.Second, "handshake on the new endpoint", handshakeAfter(moved))
	t.Logf("endpoint moved → handshake %s", time.Since(moved).Round(time.Millisecond))
	if err := ping(vpnWorker, 2*time.Second); err != nil {
		t.Errorf("ping after the move: %v", err)
	}
	testutil.Eventually(t, 5*time.Second, "new endpoint saved", func() error {
		if !bytes.Contains(mustRead(t, filepath.Join(data, "worker.json")), []byte(newEndpoint)) {
			return errors.New("worker.json still has the old endpoint")
		}
		return nil
	})
	if !strings.Contains(w2.log.String(), "tunnel configuration changed") {
		t.Errorf("the move was not logged:\n%s", w2.log)
	}
	if err := w2.stop(15 * time.Second); err != nil {
		t.Errorf("stopping the worker: %v", err)
	}
}

// ping sends one ICMP echo request to ip and waits for the reply.
func ping(ip string, timeout time.Duration) error {
	c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return err
	}
	defer c.Close()
	id, seq := os.Getpid()&0xffff, int(time.Now().UnixNano()&0xffff)
	msg := []byte{8, 0, 0, 0, byte(id >> 8), byte(id), byte(seq >> 8), byte(seq), 'o', 'n', 'e', 'i'}
	sum := 0
	for i := 0; i < len(msg); i += 2 {
		sum += int(msg[i])<<8 | int(msg[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	msg[2], msg[3] = byte(^sum>>8), byte(^sum)
	dst := &net.IPAddr{IP: net.ParseIP(ip)}
	if _, err := c.WriteTo(msg, dst); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("ping %s: %w", ip, err)
		}
		if from.String() == ip && n >= 8 && buf[0] == 0 && int(buf[4])<<8|int(buf[5]) == id && int(buf[6])<<8|int(buf[7]) == seq {
			return nil
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustCgroupMounts(t *testing.T) []cgroupMount {
	t.Helper()
	m, err := cgroupMounts("/proc/self/mountinfo")
	if err != nil || len(m) == 0 {
		t.Fatalf("cgroup hierarchies: %v %v", m, err)
	}
	return m
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}
