package vpn

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oneinfra/oneinfra/agent/wireguard"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// inNetNS is set in the copy of the test binary that runs inside a
// network namespace of its own.
const inNetNS = "ONEINFRA_VPN_TEST_NETNS"

// TestHub runs TestHubInNamespace in a fresh network namespace, so the
// routes, rules and firewall it makes touch nothing of this host.
func TestHub(t *testing.T) {
	for _, tool := range []string{"ip", "iptables", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing (apt-get install -y iproute2 iptables util-linux): %v", tool, err)
		}
	}
	ns := fmt.Sprintf("oivpntest%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "delete", ns).Run()
	cmd := exec.Command("nsenter", "--net=/run/netns/"+ns, os.Args[0], "-test.run=^TestHubInNamespace$", "-test.v")
	cmd.Env = append(os.Environ(), inNetNS+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("in namespace %s:\n%s", ns, out)
	if err != nil || !strings.Contains(string(out), "--- PASS: TestHubInNamespace") {
		t.Fatalf("the hub test in its namespace failed: %v", err)
	}
}

func TestHubInNamespace(t *testing.T) {
	if os.Getenv(inNetNS) == "" {
		t.Skip("runs inside TestHub's network namespace")
	}
	run := func(args ...string) string {
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
		return string(out)
	}
	run("ip", "link", "set", "lo", "up")
	dir := t.TempDir()
	hub, err := NewHub(dir, wireguard.Choose(wireguard.ProbeKernel), "")
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	k1, _ := wgtypes.GeneratePrivateKey()
	k2, _ := wgtypes.GeneratePrivateKey()
	spec := Spec{
		Cluster: "edge", ListenPort: 31999, APIPort: 31998, CIDR: "10.200.9.0/24", Address: "10.200.9.1",
		Routes: []string{"10.200.9.0/24", "10.244.0.0/16"},
		Peers: []*pb.VPNPeer{
			{Name: "w-1", Address: "10.200.9.2", PodCidr: "10.244.0.0/24", PublicKey: k1.PublicKey().String()},
			{Name: "w-2", Address: "10.200.9.3", PodCidr: "10.244.1.0/24", PublicKey: k2.PublicKey().String()},
		},
	}
	pub, err := hub.Ensure(spec)
	if err != nil {
		t.Fatal(err)
	}
	// The key was made here, 0600, and only its public half comes out.
	fi, err := os.Stat(filepath.Join(dir, "edge.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	wg, err := wgctrl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer wg.Close()
	dev, err := wg.Device("oi-edge")
	if err != nil {
		t.Fatal(err)
	}
	if dev.PublicKey.String() != pub || dev.ListenPort != 31999 || len(dev.Peers) != 2 {
		t.Fatalf("device: key %s port %d peers %d", dev.PublicKey, dev.ListenPort, len(dev.Peers))
	}
	for _, p := range dev.Peers {
		var nets []string
		for _, n := range p.AllowedIPs {
			nets = append(nets, n.String())
		}
		if p.PublicKey == k1.PublicKey() && strings.Join(nets, ",") != "10.200.9.2/32,10.244.0.0/24" {
			t.Errorf("w-1 allowed IPs: %v", nets)
		}
	}
	if out := run("ip", "addr", "show", "dev", "oi-edge"); !strings.Contains(out, "10.200.9.1/24") {
		t.Errorf("device address:\n%s", out)
	}
	table := fmt.Sprint(routeTable(31999))
	if out := run("ip", "route", "show", "table", table); !strings.Contains(out, "10.244.0.0/16 dev oi-edge") || !strings.Contains(out, "10.200.9.0/24 dev oi-edge") {
		t.Errorf("table %s:\n%s", table, out)
	}
	if out := run("ip", "rule", "show"); !strings.Contains(out, "iif oi-edge lookup "+table) {
		t.Errorf("rules:\n%s", out)
	}
	nat := run("iptables", "-w", "-t", "nat", "-S")
	for _, want := range []string{"-A POSTROUTING -o oi-edge -j OI-MASQ-oi-edge", "-A OI-MASQ-oi-edge -s 10.244.0.0/16 -j RETURN", "-A OI-MASQ-oi-edge -j MASQUERADE",
		"-A PREROUTING -i oi-edge -j OI-API-oi-edge", "-A OI-API-oi-edge -d 10.200.9.1/32 -p tcp -m tcp --dport 6443 -j REDIRECT --to-ports 31998"} {
		if !strings.Contains(nat, want) {
			t.Errorf("nat table lacks %q:\n%s", want, nat)
		}
	}
	if b, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(string(b)) != "1" {
		t.Error("forwarding is off")
	}
	// The same spec again changes nothing: the rules are not doubled.
	if _, err := hub.Ensure(spec); err != nil {
		t.Fatal(err)
	}
	if again := run("iptables", "-w", "-t", "nat", "-S"); again != nat {
		t.Errorf("a second Ensure changed the nat table:\n%s", again)
	}
	peers, err := hub.Peers("edge")
	if err != nil || len(peers) != 2 {
		t.Fatalf("peers: %v %v", peers, err)
	}
	// A removed peer goes from the device.
	spec.Peers = spec.Peers[1:]
	if _, err := hub.Ensure(spec); err != nil {
		t.Fatal(err)
	}
	if dev, _ := wg.Device("oi-edge"); len(dev.Peers) != 1 || dev.Peers[0].PublicKey != k2.PublicKey() {
		t.Errorf("after removing w-1: %v", dev.Peers)
	}
	// A bad peer key is an error naming the node.
	bad := spec
	bad.Peers = []*pb.VPNPeer{{Name: "w-9", Address: "10.200.9.9", PodCidr: "10.244.9.0/24", PublicKey: "nope"}}
	if _, err := hub.Ensure(bad); err == nil || !strings.Contains(err.Error(), "w-9") {
		t.Errorf("bad key: %v", err)
	}
	// Two clusters whose names share a long prefix get devices, tables,
	// rules and chains of their own.
	var long []string
	for i, c := range []string{"customer-1271", "customer-1367"} {
		k, _ := wgtypes.GeneratePrivateKey()
		s := Spec{
			Cluster: c, ListenPort: 32001 + i, APIPort: 31998, CIDR: fmt.Sprintf("10.200.%d.0/24", 10+i), Address: fmt.Sprintf("10.200.%d.1", 10+i),
			Routes: []string{fmt.Sprintf("10.200.%d.0/24", 10+i), "10.244.0.0/16"},
			Peers:  []*pb.VPNPeer{{Name: "w-1", Address: fmt.Sprintf("10.200.%d.2", 10+i), PodCidr: "10.244.0.0/24", PublicKey: k.PublicKey().String()}},
		}
		if _, err := hub.Ensure(s); err != nil {
			t.Fatal(err)
		}
		long = append(long, hub.InterfaceName(c))
	}
	if long[0] == long[1] {
		t.Fatalf("customer-1271 and customer-1367 share the device %s", long[0])
	}
	nat = run("iptables", "-w", "-t", "nat", "-S")
	for i, dev := range long {
		if _, err := wg.Device(dev); err != nil {
			t.Errorf("device %s: %v", dev, err)
		}
		table := fmt.Sprint(routeTable(32001 + i))
		if out := run("ip", "rule", "show"); !strings.Contains(out, "iif "+dev+" lookup "+table) {
			t.Errorf("rule of %s:\n%s", dev, out)
		}
		for _, want := range []string{"-A POSTROUTING -o " + dev + " -j " + chain(dev), "-A PREROUTING -i " + dev + " -j " + apiChain(dev)} {
			if !strings.Contains(nat, want) {
				t.Errorf("nat table lacks %q:\n%s", want, nat)
			}
		}
	}
	// A crafted name does not lead Remove out of the key dir, nor to
	// another cluster's device whose name it spells.
	outside := filepath.Join(filepath.Dir(dir), "outside.key")
	if err := os.WriteFile(outside, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	hub.Remove("../outside")
	if _, err := os.Stat(outside); err != nil {
		t.Errorf("Remove(../outside): %v", err)
	}
	hub.Remove(strings.TrimPrefix(long[0], DefaultPrefix))
	if _, err := wg.Device(long[0]); err != nil {
		t.Errorf("Remove(%s) took customer-1271's device: %v", strings.TrimPrefix(long[0], DefaultPrefix), err)
	}
	// Remove leaves nothing: devices, tables, rules, chains, keys.
	hub.RemoveExcept(map[string]bool{})
	for _, dev := range long {
		if _, err := wg.Device(dev); err == nil {
			t.Errorf("device %s left", dev)
		}
	}
	if out := run("iptables", "-w", "-t", "nat", "-S"); strings.Contains(out, "OI-") {
		t.Errorf("nat chains left:\n%s", out)
	}
	if _, err := wg.Device("oi-edge"); err == nil {
		t.Error("device left")
	}
	if out := run("ip", "rule", "show"); strings.Contains(out, "oi-edge") {
		t.Errorf("rule left:\n%s", out)
	}
	if out := run("iptables", "-w", "-t", "nat", "-S"); strings.Contains(out, "oi-edge") {
		t.Errorf("nat rules left:\n%s", out)
	}
	if out := run("iptables", "-w", "-S", "FORWARD"); strings.Contains(out, "oi-edge") {
		t.Errorf("forward rules left:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "edge.key")); !os.IsNotExist(err) {
		t.Errorf("key left: %v", err)
	}
}

func newHub(t *testing.T, keyDir, prefix string) *Hub {
	t.Helper()
	h, err := NewHub(keyDir, wireguard.Userspace, prefix)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// Names that fit stay as they were before names were hashed, so that an
// upgraded agent keeps the devices of short-named clusters.
func TestInterfaceNameKeepsShortNames(t *testing.T) {
	for _, c := range []struct{ prefix, cluster, want string }{
		{"", "edge", "oi-edge"},
		{"oi-", "demo", "oi-demo"},
		{"p2-", "edge", "p2-edge"},
		{"", "customer-127", "oi-customer-127"}, // 15 bytes: the longest kept
		{"p10-", "customer-12", "p10-customer-12"},
	} {
		if got := newHub(t, "", c.prefix).InterfaceName(c.cluster); got != c.want {
			t.Errorf("prefix %q cluster %s: %s, want %s", c.prefix, c.cluster, got, c.want)
		}
	}
}

// The clusters of the bug report, whose names share a long prefix, get
// devices and chains of their own.
func TestInterfaceNameLongNames(t *testing.T) {
	h := newHub(t, "", "")
	a, b := h.InterfaceName("customer-1271"), h.InterfaceName("customer-1367")
	if a == b || chain(a) == chain(b) || apiChain(a) == apiChain(b) {
		t.Fatalf("customer-1271 and customer-1367 share %s", a)
	}
	for _, n := range []string{a, b} {
		if len(n) != 15 || !strings.HasPrefix(n, "oi-cu_") {
			t.Errorf("shortened name %q: want 15 bytes, oi-cu_ and the hash", n)
		}
	}
	long := strings.Repeat("a", 63)
	if n := h.InterfaceName(long); len(n) != 15 || n == h.InterfaceName(long[:62]) {
		t.Errorf("63-character names: %s", n)
	}
}

// Over many names sharing a long prefix, and the short names beside them,
// no two clusters get the same device or chain, and a shortened name never
// equals a full one, whatever the prefix.
func TestInterfaceNamesUnique(t *testing.T) {
	for prefix, n := range map[string]int{"": 200_000, "p2-": 20_000, "p10-": 20_000, "o_": 20_000, "abcde": 20_000} {
		h := newHub(t, "", prefix)
		devices := map[string]string{}
		chains := map[string]string{}
		add := func(cluster string) {
			dev := h.InterfaceName(cluster)
			if len(dev) > maxNameLen || !strings.HasPrefix(dev, h.prefix) {
				t.Fatalf("prefix %q: %s gets %q", prefix, cluster, dev)
			}
			// A shortened name has one '_' more than the prefix, a full one none.
			marks := strings.Count(h.prefix, "_")
			if len(h.prefix+cluster) > maxNameLen {
				marks++
			}
			if strings.Count(dev, "_") != marks {
				t.Fatalf("prefix %q: %s gets %q", prefix, cluster, dev)
			}
			if other, ok := devices[dev]; ok {
				t.Fatalf("prefix %q: %s and %s share the device %s", prefix, other, cluster, dev)
			}
			devices[dev] = cluster
			for _, c := range []string{chain(dev), apiChain(dev)} {
				if len(c) > 28 {
					t.Fatalf("chain %s of %s: longer than iptables allows", c, cluster)
				}
				if other, ok := chains[c]; ok {
					t.Fatalf("prefix %q: %s and %s share the chain %s", prefix, other, cluster, c)
				}
				chains[c] = cluster
			}
		}
		for i := range n {
			add(fmt.Sprintf("customer-%d", i))
			if i < 1000 {
				add(fmt.Sprintf("cu%d", i)) // short names beside the shortened ones
			}
		}
		for i := range n / 10 {
			add(fmt.Sprintf("%s-%d", strings.Repeat("tenant", 9), i))
		}
	}
}

func TestNewHubRefusesBadPrefixes(t *testing.T) {
	for _, p := range []string{"toolong", "a/b", "a b", "a:"} {
		if _, err := NewHub("", wireguard.Userspace, p); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", p)) {
			t.Errorf("prefix %q: %v", p, err)
		}
	}
}

// A cluster name that is not a DNS-1123 label gets no key, here or
// anywhere else.
func TestEnsureRefusesBadClusterNames(t *testing.T) {
	top := t.TempDir()
	h := newHub(t, filepath.Join(top, "keys"), "")
	for _, name := range []string{"../escaped", "a/b", "Upper", "a_b"} {
		_, err := h.Ensure(Spec{Cluster: name, ListenPort: 31999, APIPort: 31998, CIDR: "10.200.9.0/24", Address: "10.200.9.1"})
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("cluster name %q is not a DNS-1123 label", name)) {
			t.Errorf("cluster %q: %v", name, err)
		}
	}
	if entries, _ := os.ReadDir(top); len(entries) != 0 {
		t.Errorf("files made: %v", entries)
	}
}
