// Package wireguard keeps a WireGuard interface on this host: kernel
// WireGuard where the kernel has it, else an embedded wireguard-go device
// on a TUN with its UAPI socket open, so wgctrl and `wg show` read and
// configure both alike. A device is configured only where it differs from
// the wanted state, so live tunnels are not disturbed. Private keys are
// made on this machine, once, and kept 0600.
package wireguard

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Implementation is how a device is made.
type Implementation string

const (
	Kernel    Implementation = "kernel"
	Userspace Implementation = "userspace"
)

// Choose picks kernel WireGuard when the probe says the kernel can make a
// WireGuard link, else the userspace device.
func Choose(probe func() error) Implementation {
	if probe() == nil {
		return Kernel
	}
	return Userspace
}

// ProbeKernel checks that the kernel makes WireGuard links, by making and
// removing one.
func ProbeKernel() error {
	name := fmt.Sprintf("wgprobe%d", os.Getpid()%100000)
	if err := ipCmd("link", "add", "dev", name, "type", "wireguard"); err != nil {
		return err
	}
	return ipCmd("link", "delete", "dev", name)
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// LoadOrCreateKey returns the private key kept at path, making it the
// first time (mode 0600). The key never leaves the machine; only its
// public half is sent anywhere.
func LoadOrCreateKey(path string) (wgtypes.Key, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return wgtypes.ParseKey(strings.TrimSpace(string(b)))
	}
	if !errors.Is(err, os.ErrNotExist) {
		return wgtypes.Key{}, err
	}
	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return wgtypes.Key{}, err
	}
	if err := tlsutil.WriteFileAtomic(path, []byte(key.String()+"\n"), 0o600); err != nil {
		return wgtypes.Key{}, err
	}
	return key, nil
}

// Peer is one wanted peer of a device.
type Peer struct {
	PublicKey  wgtypes.Key
	Endpoint   *net.UDPAddr // nil: the peer dials in (behind NAT)
	AllowedIPs []net.IPNet
	Keepalive  time.Duration
}

// Config is the wanted state of a device.
type Config struct {
	PrivateKey wgtypes.Key
	// ListenPort is the UDP port to listen on; 0 means any: the device
	// keeps whatever port it has (a random one from its first start), as
	// a peer that only dials out behind NAT wants.
	ListenPort int
	Address    *net.IPNet // the interface's own address and its network
	Peers      []Peer
}

// Device is a WireGuard interface this process keeps.
type Device struct {
	Name string
	Impl Implementation
	// userspace device state, when Impl is Userspace
	dev  *device.Device
	uapi net.Listener
}

// Open makes the interface name with the chosen implementation, or takes
// over a kernel one that exists.
func Open(name string, impl Implementation) (*Device, error) {
	d := &Device{Name: name, Impl: impl}
	if impl == Kernel {
		if _, err := net.InterfaceByName(name); err != nil {
			if err := ipCmd("link", "add", "dev", name, "type", "wireguard"); err != nil {
				return nil, err
			}
		}
		return d, ipCmd("link", "set", "dev", name, "up")
	}
	tdev, err := tun.CreateTUN(name, device.DefaultMTU)
	if err != nil {
		return nil, fmt.Errorf("creating TUN %s: %w", name, err)
	}
	fileUAPI, err := ipc.UAPIOpen(name)
	if err != nil {
		tdev.Close()
		return nil, fmt.Errorf("opening the UAPI socket of %s: %w", name, err)
	}
	d.dev = device.NewDevice(tdev, conn.NewDefaultBind(), device.NewLogger(device.LogLevelError, "wireguard "+name+": "))
	d.uapi, err = ipc.UAPIListen(name, fileUAPI)
	if err != nil {
		d.dev.Close()
		return nil, fmt.Errorf("listening on the UAPI socket of %s: %w", name, err)
	}
	go func() {
		for {
			c, err := d.uapi.Accept()
			if err != nil {
				return
			}
			go d.dev.IpcHandle(c)
		}
	}()
	if err := d.dev.Up(); err != nil {
		d.Close()
		return nil, err
	}
	return d, ipCmd("link", "set", "dev", name, "up")
}

// Close removes the interface.
func (d *Device) Close() error {
	if d.Impl == Kernel {
		return ipCmd("link", "delete", "dev", d.Name)
	}
	if d.uapi != nil {
		d.uapi.Close()
	}
	d.dev.Close()
	_ = os.Remove(filepath.Join("/var/run/wireguard", d.Name+".sock"))
	return nil
}

// Ensure brings the device to cfg through wgctrl, touching nothing when it
// already matches. It reports whether it changed anything.
func (d *Device) Ensure(cfg Config) (bool, error) {
	client, err := wgctrl.New()
	if err != nil {
		return false, err
	}
	defer client.Close()
	current, err := client.Device(d.Name)
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", d.Name, err)
	}
	changed := false
	if !matches(current, cfg) {
		wg := wgtypes.Config{PrivateKey: &cfg.PrivateKey, ReplacePeers: true}
		if cfg.ListenPort != 0 {
			port := cfg.ListenPort
			wg.ListenPort = &port
		}
		for _, p := range cfg.Peers {
			keepalive := p.Keepalive
			wg.Peers = append(wg.Peers, wgtypes.PeerConfig{
				PublicKey: p.PublicKey, Endpoint: p.Endpoint, AllowedIPs: p.AllowedIPs,
				ReplaceAllowedIPs: true, PersistentKeepaliveInterval: &keepalive,
			})
		}
		if err := client.ConfigureDevice(d.Name, wg); err != nil {
			return false, fmt.Errorf("configuring %s: %w", d.Name, err)
		}
		changed = true
	}
	if cfg.Address != nil {
		has, err := hasAddress(d.Name, cfg.Address)
		if err != nil {
			return changed, err
		}
		if !has {
			if err := ipCmd("addr", "add", cfg.Address.String(), "dev", d.Name); err != nil {
				return changed, err
			}
			changed = true
		}
	}
	return changed, nil
}

// matches compares what the device runs with what is wanted.
func matches(cur *wgtypes.Device, cfg Config) bool {
	if cur.PrivateKey != cfg.PrivateKey || (cfg.ListenPort != 0 && cur.ListenPort != cfg.ListenPort) || len(cur.Peers) != len(cfg.Peers) {
		return false
	}
	have := map[wgtypes.Key]wgtypes.Peer{}
	for _, p := range cur.Peers {
		have[p.PublicKey] = p
	}
	for _, want := range cfg.Peers {
		got, ok := have[want.PublicKey]
		if !ok || got.PersistentKeepaliveInterval != want.Keepalive || ipNets(got.AllowedIPs) != ipNets(want.AllowedIPs) {
			return false
		}
		if want.Endpoint != nil && (got.Endpoint == nil || got.Endpoint.String() != want.Endpoint.String()) {
			return false
		}
	}
	return true
}

func ipNets(nets []net.IPNet) string {
	s := make([]string, len(nets))
	for i, n := range nets {
		s[i] = n.String()
	}
	sort.Strings(s)
	return strings.Join(s, ",")
}

func hasAddress(name string, want *net.IPNet) (bool, error) {
	iface, err := net.InterfaceByName(name)
	if err != nil {
		return false, err
	}
	addrs, err := iface.Addrs()
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if a.String() == want.String() {
			return true, nil
		}
	}
	return false, nil
}
