package wireguard

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/testutil"
	"golang.zx2c4.com/wireguard/wgctrl"
)

func TestChoose(t *testing.T) {
	if got := Choose(func() error { return nil }); got != Kernel {
		t.Errorf("with kernel WireGuard: %s", got)
	}
	if got := Choose(func() error { return errors.New(`Unknown device type`) }); got != Userspace {
		t.Errorf("without kernel WireGuard: %s", got)
	}
	t.Logf("this machine: %s", Choose(ProbeKernel))
}

func TestKeyMadeOnceAndPrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wg.key")
	k1, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := LoadOrCreateKey(path)
	if err != nil || k1 != k2 {
		t.Fatalf("second load gave another key: %v", err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %o", fi.Mode().Perm())
	}
}

func udpPort(t *testing.T) int {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// TestTunnel makes two devices with this machine's implementation, peers
// them over loopback, and waits for their handshake, read through wgctrl.
func TestTunnel(t *testing.T) {
	impl := Choose(ProbeKernel)
	dir := t.TempDir()
	type side struct {
		dev  *Device
		cfg  Config
		port int
	}
	var sides [2]*side
	for i := range sides {
		key, err := LoadOrCreateKey(filepath.Join(dir, fmt.Sprintf("k%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("oiwgt%d%d", os.Getpid()%1000, i)
		dev, err := Open(name, impl)
		if err != nil {
			t.Fatalf("opening %s (%s): %v", name, impl, err)
		}
		t.Cleanup(func() { dev.Close() })
		_, ipnet, _ := net.ParseCIDR(fmt.Sprintf("10.199.%d.1/24", i))
		ipnet.IP = net.IPv4(10, 199, byte(i), 1)
		sides[i] = &side{dev: dev, port: udpPort(t), cfg: Config{PrivateKey: key, Address: ipnet}}
		sides[i].cfg.ListenPort = sides[i].port
	}
	for i, s := range sides {
		other := sides[1-i]
		_, allowed, _ := net.ParseCIDR(fmt.Sprintf("10.199.%d.0/24", 1-i))
		s.cfg.Peers = []Peer{{PublicKey: other.cfg.PrivateKey.PublicKey(), Endpoint: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: other.port},
			AllowedIPs: []net.IPNet{*allowed}, Keepalive: time.Second}}
	}
	for _, s := range sides {
		if changed, err := s.dev.Ensure(s.cfg); err != nil || !changed {
			t.Fatalf("configuring %s: changed %v, %v", s.dev.Name, changed, err)
		}
	}
	client, err := wgctrl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	began := time.Now()
	testutil.Eventually(t, 20*time.Second, "handshake", func() error {
		for _, s := range sides {
			d, err := client.Device(s.dev.Name)
			if err != nil {
				return err
			}
			if len(d.Peers) != 1 || d.Peers[0].LastHandshakeTime.IsZero() {
				return fmt.Errorf("%s: no handshake yet", s.dev.Name)
			}
		}
		return nil
	})
	t.Logf("%s WireGuard handshake in %.2fs", impl, time.Since(began).Seconds())
	// The wanted state again changes nothing: the live tunnel is untouched.
	for _, s := range sides {
		if changed, err := s.dev.Ensure(s.cfg); err != nil || changed {
			t.Errorf("re-ensuring %s: changed %v, %v", s.dev.Name, changed, err)
		}
	}
}

// TestEnsureAnyListenPort: a device wanted with ListenPort 0 (a worker
// behind NAT) gets some port, and the same wanted state again changes
// nothing, so the port its NAT mapping uses stays.
func TestEnsureAnyListenPort(t *testing.T) {
	impl := Choose(ProbeKernel)
	dir := t.TempDir()
	key, err := LoadOrCreateKey(filepath.Join(dir, "k"))
	if err != nil {
		t.Fatal(err)
	}
	peerKey, err := LoadOrCreateKey(filepath.Join(dir, "peer"))
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("oiwga%d", os.Getpid()%100000)
	dev, err := Open(name, impl)
	if err != nil {
		t.Fatalf("opening %s (%s): %v", name, impl, err)
	}
	t.Cleanup(func() { dev.Close() })
	_, allowed, _ := net.ParseCIDR("10.198.0.0/24")
	cfg := Config{
		PrivateKey: key,
		Address:    &net.IPNet{IP: net.IPv4(10, 198, 0, 2), Mask: net.CIDRMask(24, 32)},
		Peers: []Peer{{PublicKey: peerKey.PublicKey(), Endpoint: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: udpPort(t)},
			AllowedIPs: []net.IPNet{*allowed}, Keepalive: 25 * time.Second}},
	}
	if changed, err := dev.Ensure(cfg); err != nil || !changed {
		t.Fatalf("first Ensure: changed %v, %v", changed, err)
	}
	client, err := wgctrl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	before, err := client.Device(name)
	if err != nil {
		t.Fatal(err)
	}
	if before.ListenPort == 0 {
		t.Fatalf("%s listens on no port", name)
	}
	if changed, err := dev.Ensure(cfg); err != nil || changed {
		t.Errorf("second Ensure with ListenPort 0: changed %v, %v", changed, err)
	}
	after, err := client.Device(name)
	if err != nil {
		t.Fatal(err)
	}
	if after.ListenPort != before.ListenPort {
		t.Errorf("listen port moved from %d to %d", before.ListenPort, after.ListenPort)
	}
}
