package scheduler

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// DefaultVPNPrefixLen is the size of the VPN block a cluster gets from the
// pool when it names none.
const DefaultVPNPrefixLen = 24

// lastAddr returns the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// parseCIDR parses a CIDR or a bare address (a one-address prefix), masked.
func parseCIDR(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// AllocateVPNCIDR returns the lowest block of size /prefixLen inside pool
// (e.g. "10.200.0.0/16") that overlaps none of taken. Entries of taken may be
// CIDRs of any size, or bare addresses, inside the pool or not; those of the
// other address family are ignored. prefixLen 0 means DefaultVPNPrefixLen.
// The error wraps ErrVPNPoolExhausted when every block overlaps one taken.
func AllocateVPNCIDR(pool string, prefixLen int, taken []string) (string, error) {
	if prefixLen == 0 {
		prefixLen = DefaultVPNPrefixLen
	}
	p, err := netip.ParsePrefix(strings.TrimSpace(pool))
	if err != nil {
		return "", fmt.Errorf("allocating VPN block: invalid pool %q: %v", pool, err)
	}
	p = p.Masked()
	if prefixLen < p.Bits() || prefixLen > p.Addr().BitLen() {
		return "", fmt.Errorf("allocating VPN block: a /%d block does not fit in pool %s", prefixLen, p)
	}
	type span struct{ first, last netip.Addr }
	spans := make([]span, 0, len(taken))
	for _, t := range taken {
		tp, err := parseCIDR(t)
		if err != nil {
			return "", fmt.Errorf("allocating VPN block: invalid taken CIDR %q: %v", t, err)
		}
		if tp.Addr().Is4() != p.Addr().Is4() || !tp.Overlaps(p) {
			continue
		}
		spans = append(spans, span{tp.Addr(), lastAddr(tp)})
	}
	slices.SortFunc(spans, func(a, b span) int { return a.first.Compare(b.first) })

	// Sweep the blocks from the bottom of the pool, jumping over every taken
	// span that overlaps the current block.
	next := p.Addr()
	for _, s := range spans {
		if s.last.Less(next) {
			continue // ends below the current block, as do the spans before it
		}
		block := netip.PrefixFrom(next, prefixLen)
		end := lastAddr(block)
		if end.Less(s.first) {
			return block.String(), nil // s and every later span start above it
		}
		// s overlaps the block: move past both, onto a block boundary.
		jump := end
		if jump.Less(s.last) {
			jump = s.last
		}
		next = lastAddr(netip.PrefixFrom(jump, prefixLen)).Next()
		if !next.IsValid() || !p.Contains(next) {
			return "", fmt.Errorf("allocating a /%d VPN block: %w: every block of %s overlaps a taken one; give the cluster a vpn.cidr outside the pool or enlarge the pool",
				prefixLen, ErrVPNPoolExhausted, p)
		}
	}
	return netip.PrefixFrom(next, prefixLen).String(), nil
}

// hostBounds returns the network and broadcast addresses of cidr, which must
// hold at least four addresses (network, endpoint, one host, broadcast).
func hostBounds(cidr string) (netip.Addr, netip.Addr, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(cidr))
	if err != nil {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("invalid VPN CIDR %q: %v", cidr, err)
	}
	p = p.Masked()
	if p.Bits() > p.Addr().BitLen()-2 {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("VPN CIDR %s is too small: it needs room for an endpoint and a host", p)
	}
	return p.Addr(), lastAddr(p), nil
}

// EndpointAddress returns the first host address of cidr, reserved for the
// cluster's VPN endpoint (the ingress): "10.200.0.1" for "10.200.0.0/24".
func EndpointAddress(cidr string) (string, error) {
	network, _, err := hostBounds(cidr)
	if err != nil {
		return "", err
	}
	return network.Next().String(), nil
}

// AllocateVPNAddress returns the lowest host address of cidr that is not in
// taken, skipping the network address, EndpointAddress and the last
// (broadcast) address. Entries of taken are addresses, bare or in interface
// form ("10.200.0.5/24" takes 10.200.0.5 only). The error wraps ErrCIDRFull
// when no address is left.
func AllocateVPNAddress(cidr string, taken []string) (string, error) {
	network, broadcast, err := hostBounds(cidr)
	if err != nil {
		return "", fmt.Errorf("allocating VPN address: %w", err)
	}
	used := make(map[netip.Addr]bool, len(taken))
	for _, t := range taken {
		t = strings.TrimSpace(t)
		var a netip.Addr
		if strings.Contains(t, "/") {
			p, perr := netip.ParsePrefix(t)
			a, err = p.Addr(), perr
		} else {
			a, err = netip.ParseAddr(t)
		}
		if err != nil {
			return "", fmt.Errorf("allocating VPN address: invalid taken address %q: %v", t, err)
		}
		used[a] = true
	}
	for a := network.Next().Next(); a.Less(broadcast); a = a.Next() {
		if !used[a] {
			return a.String(), nil
		}
	}
	return "", fmt.Errorf("allocating VPN address in %s: %w: every host address is taken; give the cluster a larger vpn.cidr",
		cidr, ErrCIDRFull)
}
