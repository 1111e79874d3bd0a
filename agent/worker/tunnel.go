package worker

import (
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/oneinfra/oneinfra/agent/netconf"
	"github.com/oneinfra/oneinfra/agent/wireguard"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Keepalive keeps the NAT mapping towards the endpoint open.
const Keepalive = 25 * time.Second

// tunnel is the worker's WireGuard device and what goes with it: routes,
// forwarding and the masquerading of pod traffic to the outside.
type tunnel struct {
	dev     *wireguard.Device
	key     wgtypes.Key
	logger  *slog.Logger
	applied *pb.WorkerConfig // what the device was last brought to
}

// deviceConfig is the wanted state of the device for wc. The worker has
// no fixed listen port (ListenPort 0: any).
func deviceConfig(wc *pb.WorkerConfig, key wgtypes.Key) (wireguard.Config, error) {
	ip, ipnet, err := net.ParseCIDR(wc.GetAddress())
	if err != nil {
		return wireguard.Config{}, fmt.Errorf("address: %w", err)
	}
	peerKey, err := wgtypes.ParseKey(wc.GetEndpointPublicKey())
	if err != nil {
		return wireguard.Config{}, fmt.Errorf("endpoint public key: %w", err)
	}
	endpoint, err := net.ResolveUDPAddr("udp", wc.GetEndpoint())
	if err != nil {
		return wireguard.Config{}, fmt.Errorf("endpoint %q: %w", wc.GetEndpoint(), err)
	}
	allowed, err := parseNets(wc.GetAllowedIps())
	if err != nil {
		return wireguard.Config{}, fmt.Errorf("allowed IPs: %w", err)
	}
	return wireguard.Config{
		PrivateKey: key,
		Address:    &net.IPNet{IP: ip, Mask: ipnet.Mask},
		Peers:      []wireguard.Peer{{PublicKey: peerKey, Endpoint: endpoint, AllowedIPs: allowed, Keepalive: Keepalive}},
	}, nil
}

func parseNets(list []string) ([]net.IPNet, error) {
	var out []net.IPNet
	for _, s := range list {
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			return nil, err
		}
		out = append(out, *n)
	}
	return out, nil
}

// tunnelChanged says whether going from a to b needs the device, its
// address or its routes reconfigured.
func tunnelChanged(a, b *pb.WorkerConfig) bool {
	return a.GetAddress() != b.GetAddress() || a.GetEndpoint() != b.GetEndpoint() ||
		a.GetEndpointPublicKey() != b.GetEndpointPublicKey() || !slices.Equal(a.GetAllowedIps(), b.GetAllowedIps()) ||
		a.GetPodCidr() != b.GetPodCidr() || a.GetClusterPodCidr() != b.GetClusterPodCidr()
}

// routesFor lists the allowed networks the interface address does not
// already cover: they need a route through the device.
func routesFor(address string, allowed []string) ([]string, error) {
	_, own, err := net.ParseCIDR(address)
	if err != nil {
		return nil, err
	}
	ownOnes, _ := own.Mask.Size()
	var out []string
	for _, a := range allowed {
		_, n, err := net.ParseCIDR(a)
		if err != nil {
			return nil, err
		}
		ones, _ := n.Mask.Size()
		if own.Contains(n.IP) && ones >= ownOnes {
			continue
		}
		if !slices.Contains(out, n.String()) {
			out = append(out, n.String())
		}
	}
	return out, nil
}

// apply brings the device, its routes, forwarding and masquerading to wc.
func (t *tunnel) apply(wc *pb.WorkerConfig) error {
	cfg, err := deviceConfig(wc, t.key)
	if err != nil {
		return err
	}
	prev := t.applied
	if prev != nil && prev.GetAddress() != wc.GetAddress() && prev.GetAddress() != "" {
		// The node moved in the VPN: drop its old address.
		_ = netconf.IP("addr", "del", prev.GetAddress(), "dev", t.dev.Name)
	}
	changed, err := t.dev.Ensure(cfg)
	if err != nil {
		return err
	}
	routes, err := routesFor(wc.GetAddress(), wc.GetAllowedIps())
	if err != nil {
		return err
	}
	for _, r := range routes {
		if err := netconf.IP("route", "replace", r, "dev", t.dev.Name); err != nil {
			return err
		}
	}
	if prev != nil {
		old, _ := routesFor(prev.GetAddress(), prev.GetAllowedIps())
		for _, r := range old {
			if !slices.Contains(routes, r) {
				_ = netconf.IP("route", "del", r, "dev", t.dev.Name)
			}
		}
	}
	if err := netconf.EnableForwarding(); err != nil {
		return err
	}
	_, vpn, _ := net.ParseCIDR(wc.GetAddress())
	if err := ensureMasquerade(masqChain(t.dev.Name), wc.GetPodCidr(), wc.GetEndpointAddress(), wc.GetClusterPodCidr(), vpn.String()); err != nil {
		return err
	}
	if changed {
		t.logger.Info("tunnel configured", "interface", t.dev.Name, "implementation", string(t.dev.Impl),
			"address", wc.GetAddress(), "endpoint", wc.GetEndpoint(), "allowed_ips", strings.Join(wc.GetAllowedIps(), ","))
	}
	t.applied = wc
	return nil
}

// lastHandshake is the time of the last handshake with the endpoint (zero
// when none happened).
func (t *tunnel) lastHandshake() (time.Time, error) {
	client, err := wgctrl.New()
	if err != nil {
		return time.Time{}, err
	}
	defer client.Close()
	d, err := client.Device(t.dev.Name)
	if err != nil {
		return time.Time{}, err
	}
	want, err := wgtypes.ParseKey(t.applied.GetEndpointPublicKey())
	if err != nil {
		return time.Time{}, err
	}
	for _, p := range d.Peers {
		if p.PublicKey == want {
			return p.LastHandshakeTime, nil
		}
	}
	return time.Time{}, fmt.Errorf("%s has no peer for the endpoint", t.dev.Name)
}

// masqChain is the nat chain holding the worker's masquerade rules.
func masqChain(iface string) string { return "OI-MASQ-" + iface }

// masqRules are the rules of the masquerade chain, in order: traffic from
// the node's pods to the VPN endpoint itself (the API through the ingress)
// takes the node's VPN address, which the endpoint's host routes back
// through the tunnel (pod CIDRs of clusters may overlap there, so it routes
// them only for traffic it forwards); to the cluster's pods or the rest of
// the VPN it keeps its source; anything else (the outside) is masqueraded.
// iptables takes one -d per rule, hence the chain.
func masqRules(endpoint, clusterPodCIDR, vpnCIDR string) [][]string {
	return [][]string{
		{"-d", endpoint + "/32", "-j", "MASQUERADE"},
		{"-d", clusterPodCIDR, "-j", "RETURN"},
		{"-d", vpnCIDR, "-j", "RETURN"},
		{"-j", "MASQUERADE"},
	}
}

// ensureMasquerade makes, idempotently, the equivalent of
//
//	-t nat -A POSTROUTING -s POD_CIDR ! -d CLUSTER_POD_CIDR ! -d VPN_CIDR -j MASQUERADE
//
// (and the endpoint exception of masqRules) as a jump from POSTROUTING to
// chain.
func ensureMasquerade(chain, podCIDR, endpoint, clusterPodCIDR, vpnCIDR string) error {
	if err := netconf.EnsureChain("nat", chain, masqRules(endpoint, clusterPodCIDR, vpnCIDR)); err != nil {
		return err
	}
	return netconf.EnsureRule("nat", "POSTROUTING", "-s", podCIDR, "-j", chain)
}
