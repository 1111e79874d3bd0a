// Package vpn runs clusters' VPN endpoints on a public hypervisor: one
// WireGuard device per cluster (agent/wireguard), its peers the cluster's
// worker nodes, and the forwarding that joins them to each other and to the
// cluster's control plane:
//
//   - the device's address (the first of the VPN CIDR) routes the VPN;
//   - packets arriving on the device are routed with a table of the
//     cluster's own (its VPN and pod networks through the device), so two
//     clusters' overlapping pod CIDRs never meet;
//   - packets entering the tunnel from outside the cluster's networks (the
//     API servers reaching kubelets) are masqueraded to the endpoint's
//     address, so nodes answer through the tunnel;
//   - nodes reach the API at the endpoint's address and a fixed port
//     (resources.TunnelAPIPort), redirected to the ingress's port here, so
//     their kubeconfigs stay right when the ingress moves.
//
// Keys are made here, once per cluster, 0600; only public keys leave.
package vpn

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/oneinfra/oneinfra/agent/netconf"
	"github.com/oneinfra/oneinfra/agent/wireguard"
	"github.com/oneinfra/oneinfra/internal/resources"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Spec is the wanted endpoint of one cluster.
type Spec struct {
	Cluster    string
	ListenPort int
	// APIPort is the ingress's port on this host; connections to
	// resources.TunnelAPIPort at Address are redirected to it.
	APIPort int
	CIDR    string // the VPN, e.g. 10.200.0.0/24
	Address string // the endpoint's address in it, e.g. 10.200.0.1
	// Routes are the networks behind the tunnel (the VPN and the pods).
	Routes []string
	Peers  []*pb.VPNPeer
}

// Hub keeps the endpoints of this host.
type Hub struct {
	keyDir string
	impl   wireguard.Implementation
	prefix string

	mu        sync.Mutex
	endpoints map[string]*endpoint // by cluster
}

type endpoint struct {
	dev   *wireguard.Device
	table int
	spec  Spec
}

// DefaultPrefix starts the name of every device a hub makes.
const DefaultPrefix = "oi-"

// maxNameLen is the longest name Linux gives an interface (IFNAMSIZ - 1).
const maxNameLen = 15

// hashLen is how many base32 characters (5 bits each: 45 bits) of the
// SHA-256 of a cluster's name a shortened device name carries, so that two
// clusters of a host get the same one with a negligible chance.
const hashLen = 9

// MaxPrefixLen is the longest device prefix: it leaves room for '_' and
// the hash of a shortened name.
const MaxPrefixLen = maxNameLen - 1 - hashLen

// NewHub keeps keys in keyDir and makes devices with impl, named prefix
// (DefaultPrefix when empty) and the cluster's name. The prefix is at
// most MaxPrefixLen letters, digits, '-', '_' or '.'.
func NewHub(keyDir string, impl wireguard.Implementation, prefix string) (*Hub, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if len(prefix) > MaxPrefixLen || strings.Trim(prefix, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") != "" {
		return nil, fmt.Errorf("device prefix %q: at most %d letters, digits, '-', '_' or '.'", prefix, MaxPrefixLen)
	}
	return &Hub{keyDir: keyDir, impl: impl, prefix: prefix, endpoints: map[string]*endpoint{}}, nil
}

// InterfaceName is the device of a cluster: the prefix and the cluster's
// name when they fit in an interface name, else the prefix, as much of
// the name as fits, '_' and hashLen base32 characters of the name's
// SHA-256. A cluster name (a DNS-1123 label) has no '_', so a shortened
// name has one '_' more than any full one: the two never meet.
func (h *Hub) InterfaceName(cluster string) string {
	name := h.prefix + cluster
	if len(name) <= maxNameLen {
		return name
	}
	sum := sha256.Sum256([]byte(cluster))
	hash := strings.ToLower(base32.StdEncoding.EncodeToString(sum[:]))[:hashLen]
	head := maxNameLen - len(h.prefix) - 1 - hashLen
	return h.prefix + cluster[:head] + "_" + hash
}

// routeTable is the routing table of packets arriving on a cluster's
// device; listen ports are unique on a host, so tables are too.
func routeTable(port int) int { return 0x10000 + port }

// chain is the cluster's masquerade chain in the nat table; it is as
// unique as the device's name, and at most 23 of the 28 characters
// iptables allows.
func chain(iface string) string { return "OI-MASQ-" + iface }

// Ensure brings a cluster's endpoint to spec, touching only what differs,
// and returns its public key.
func (h *Hub) Ensure(spec Spec) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	fail := func(err error) (string, error) { return "", fmt.Errorf("VPN endpoint of %s: %w", spec.Cluster, err) }
	prefix, err := netip.ParsePrefix(spec.CIDR)
	if err != nil {
		return fail(fmt.Errorf("VPN CIDR: %w", err))
	}
	addr, err := netip.ParseAddr(spec.Address)
	if err != nil || !prefix.Contains(addr) {
		return fail(fmt.Errorf("endpoint address %q is not in %s", spec.Address, spec.CIDR))
	}
	if spec.APIPort <= 0 || spec.APIPort > 65535 {
		return fail(fmt.Errorf("API port %d out of range", spec.APIPort))
	}
	keyFile, err := h.keyFile(spec.Cluster)
	if err != nil {
		return fail(err)
	}
	key, err := wireguard.LoadOrCreateKey(keyFile)
	if err != nil {
		return fail(err)
	}
	iface := h.InterfaceName(spec.Cluster)
	ep := h.endpoints[spec.Cluster]
	if ep != nil && ep.table != routeTable(spec.ListenPort) {
		h.removeLocked(spec.Cluster, false) // the port moved: start over
		ep = nil
	}
	if ep == nil {
		dev, err := wireguard.Open(iface, h.impl)
		if err != nil {
			return fail(err)
		}
		ep = &endpoint{dev: dev, table: routeTable(spec.ListenPort)}
		h.endpoints[spec.Cluster] = ep
	}
	cfg := wireguard.Config{
		PrivateKey: key, ListenPort: spec.ListenPort,
		Address: &net.IPNet{IP: net.IP(addr.AsSlice()), Mask: net.CIDRMask(prefix.Bits(), 32)},
	}
	for _, p := range spec.Peers {
		pk, err := wgtypes.ParseKey(p.PublicKey)
		if err != nil {
			return fail(fmt.Errorf("node %s: public key: %w", p.Name, err))
		}
		var allowed []net.IPNet
		for _, s := range []string{p.Address + "/32", p.PodCidr} {
			_, n, err := net.ParseCIDR(s)
			if err != nil {
				return fail(fmt.Errorf("node %s: %w", p.Name, err))
			}
			allowed = append(allowed, *n)
		}
		cfg.Peers = append(cfg.Peers, wireguard.Peer{PublicKey: pk, AllowedIPs: allowed})
	}
	if _, err := ep.dev.Ensure(cfg); err != nil {
		return fail(err)
	}
	if err := h.forward(iface, ep.table, spec); err != nil {
		return fail(err)
	}
	ep.spec = spec
	return key.PublicKey().String(), nil
}

// forward sets up the routing table, rule and firewall of a device.
func (h *Hub) forward(iface string, table int, spec Spec) error {
	if err := netconf.EnableForwarding(); err != nil {
		return err
	}
	for _, r := range spec.Routes {
		if err := netconf.IP("route", "replace", r, "dev", iface, "table", fmt.Sprint(table)); err != nil {
			return err
		}
	}
	if err := netconf.EnsureTableRule("iif", iface, table); err != nil {
		return err
	}
	// What the endpoint itself sends from its VPN address (the API
	// servers' egress, agent/egress) goes into the cluster's networks too.
	if err := netconf.EnsureTableRule("from", spec.Address, table); err != nil {
		return err
	}
	for _, dir := range []string{"-i", "-o"} {
		if err := netconf.EnsureRule("filter", "FORWARD", dir, iface, "-j", "ACCEPT"); err != nil {
			return err
		}
	}
	c := chain(iface)
	var rules [][]string
	for _, r := range spec.Routes {
		rules = append(rules, []string{"-s", r, "-j", "RETURN"})
	}
	if err := netconf.EnsureChain("nat", c, append(rules, []string{"-j", "MASQUERADE"})); err != nil {
		return err
	}
	if err := netconf.EnsureRule("nat", "POSTROUTING", "-o", iface, "-j", c); err != nil {
		return err
	}
	api := apiChain(iface)
	redirect := [][]string{{"-d", spec.Address + "/32", "-p", "tcp", "--dport", strconv.Itoa(resources.TunnelAPIPort),
		"-j", "REDIRECT", "--to-ports", strconv.Itoa(spec.APIPort)}}
	if err := netconf.EnsureChain("nat", api, redirect); err != nil {
		return err
	}
	return netconf.EnsureRule("nat", "PREROUTING", "-i", iface, "-j", api)
}

// apiChain is the cluster's nat chain redirecting the tunnel's API port
// (at most 22 characters).
func apiChain(iface string) string { return "OI-API-" + iface }

// Peers says what a cluster's device knows of each peer.
func (h *Hub) Peers(cluster string) ([]*pb.PeerStatus, error) {
	client, err := wgctrl.New()
	if err != nil {
		return nil, err
	}
	defer client.Close()
	dev, err := client.Device(h.InterfaceName(cluster))
	if err != nil {
		return nil, err
	}
	var out []*pb.PeerStatus
	for _, p := range dev.Peers {
		ps := &pb.PeerStatus{PublicKey: p.PublicKey.String(), RxBytes: uint64(p.ReceiveBytes), TxBytes: uint64(p.TransmitBytes)}
		if !p.LastHandshakeTime.IsZero() {
			ps.LastHandshake = timestamppb.New(p.LastHandshakeTime)
		}
		if p.Endpoint != nil {
			ps.Endpoint = p.Endpoint.String()
		}
		out = append(out, ps)
	}
	return out, nil
}

// Remove takes a cluster's endpoint down and forgets its key.
func (h *Hub) Remove(cluster string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.removeLocked(cluster, true)
}

// RemoveExcept removes the endpoints of every cluster not in keep.
func (h *Hub) RemoveExcept(keep map[string]bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.endpoints {
		if !keep[c] {
			h.removeLocked(c, true)
		}
	}
}

// Close takes every device down (the process is ending) but keeps keys.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.endpoints {
		h.removeLocked(c, false)
	}
}

// removeLocked takes a cluster's endpoint down. A name that is not a
// cluster's touches nothing: Ensure never made anything for it, and its
// device name could be another cluster's.
func (h *Hub) removeLocked(cluster string, forgetKey bool) {
	keyFile, err := h.keyFile(cluster)
	if err != nil {
		return
	}
	ep := h.endpoints[cluster]
	iface := h.InterfaceName(cluster)
	if ep != nil {
		_ = ep.dev.Close()
		netconf.RemoveTableRule("iif", iface, ep.table)
		netconf.RemoveTableRule("from", ep.spec.Address, ep.table)
		_ = netconf.IP("route", "flush", "table", fmt.Sprint(ep.table))
	}
	c := chain(iface)
	_ = netconf.DeleteRule("nat", "POSTROUTING", "-o", iface, "-j", c)
	netconf.RemoveChain("nat", c)
	_ = netconf.DeleteRule("nat", "PREROUTING", "-i", iface, "-j", apiChain(iface))
	netconf.RemoveChain("nat", apiChain(iface))
	for _, dir := range []string{"-i", "-o"} {
		_ = netconf.DeleteRule("filter", "FORWARD", dir, iface, "-j", "ACCEPT")
	}
	delete(h.endpoints, cluster)
	if forgetKey {
		_ = os.Remove(keyFile)
	}
}

// keyFile is where a cluster's private key is kept, in the key dir; it
// refuses a cluster name that is not a DNS-1123 label, which could lead
// out of the dir and would break the uniqueness of InterfaceName.
func (h *Hub) keyFile(cluster string) (string, error) {
	if !resources.IsDNS1123Label(cluster) {
		return "", fmt.Errorf("cluster name %q is not a DNS-1123 label", cluster)
	}
	return filepath.Join(h.keyDir, cluster+".key"), nil
}

// RouteThrough routes networks through gateway on this host (a private
// hypervisor reaching a cluster's VPN through its endpoint's host).
func RouteThrough(gateway string, networks ...string) error {
	for _, n := range networks {
		if err := netconf.IP("route", "replace", n, "via", gateway); err != nil {
			return err
		}
	}
	return nil
}
