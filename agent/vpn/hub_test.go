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
	hub := NewHub(dir, wireguard.Choose(wireguard.ProbeKernel), "")
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
	// Remove leaves nothing: device, table, rule, chains, key.
	hub.RemoveExcept(map[string]bool{})
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

func TestInterfaceName(t *testing.T) {
	h := NewHub("", wireguard.Userspace, "")
	if n := h.InterfaceName("edge"); n != "oi-edge" {
		t.Errorf("InterfaceName(edge) = %s", n)
	}
	a, b := h.InterfaceName("a-very-long-cluster-name-1"), h.InterfaceName("a-very-long-cluster-name-2")
	if len(a) > 15 || a == b {
		t.Errorf("long names: %s %s", a, b)
	}
	if n := NewHub("", wireguard.Userspace, "p2-").InterfaceName("edge"); n != "p2-edge" {
		t.Errorf("with prefix p2-: %s", n)
	}
}
