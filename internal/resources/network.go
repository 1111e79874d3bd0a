package resources

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// DefaultPortRange is the host port range of a hypervisor that sets none.
const DefaultPortRange = "30000-32767"

// Port range limits: no privileged ports, and room for a few components.
const (
	MinPort         = 1024
	MaxPort         = 65535
	MinPortsInRange = 16
)

// parseCanonicalPrefix parses a CIDR that must be written as its network
// address, like 10.0.0.0/8 (not 10.1.2.3/8).
func parseCanonicalPrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %q", s)
	}
	if m := p.Masked(); m.String() != s {
		return netip.Prefix{}, fmt.Errorf("CIDR %q must be written as its network address %s", s, m)
	}
	return p, nil
}

// CIDRsOverlap reports whether two CIDRs share any address. CIDRs of
// different address families never overlap.
func CIDRsOverlap(a, b string) (bool, error) {
	pa, err := netip.ParsePrefix(a)
	if err != nil {
		return false, fmt.Errorf("invalid CIDR %q", a)
	}
	pb, err := netip.ParsePrefix(b)
	if err != nil {
		return false, fmt.Errorf("invalid CIDR %q", b)
	}
	return pa.Masked().Overlaps(pb.Masked()), nil
}

// CheckVPNOverlaps returns an error naming both clusters for every pair of
// VPN-enabled clusters whose spec.vpn.cidr overlap. Clusters without the
// VPN, or whose CIDR is not chosen yet, are skipped.
func CheckVPNOverlaps(clusters []*pb.Cluster) error {
	type vpn struct {
		name string
		cidr netip.Prefix
	}
	var seen []vpn
	var errs []error
	for _, c := range clusters {
		v := c.GetSpec().GetVpn()
		if !v.GetEnabled() || v.GetCidr() == "" {
			continue
		}
		name := c.GetMetadata().GetName()
		p, err := netip.ParsePrefix(v.GetCidr())
		if err != nil {
			errs = append(errs, fmt.Errorf("cluster %q: spec.vpn.cidr: invalid CIDR %q", name, v.GetCidr()))
			continue
		}
		p = p.Masked()
		for _, s := range seen {
			if s.cidr.Overlaps(p) {
				errs = append(errs, fmt.Errorf("VPN CIDR %s of cluster %q overlaps VPN CIDR %s of cluster %q", p, name, s.cidr, s.name))
			}
		}
		seen = append(seen, vpn{name, p})
	}
	return errors.Join(errs...)
}

// ParsePortRange parses a host port range "LOW-HIGH" (DefaultPortRange when
// s is empty), with 1 <= LOW <= HIGH <= 65535. ValidateHypervisor adds
// the operator rules (CheckPortRange).
func ParsePortRange(s string) (lo, hi uint32, err error) {
	if s == "" {
		s = DefaultPortRange
	}
	l, h, ok := strings.Cut(s, "-")
	if !ok {
		return 0, 0, fmt.Errorf("invalid port range %q: must be LOW-HIGH", s)
	}
	l64, err1 := strconv.ParseUint(l, 10, 32)
	h64, err2 := strconv.ParseUint(h, 10, 32)
	switch {
	case err1 != nil || err2 != nil:
		return 0, 0, fmt.Errorf("invalid port range %q: must be LOW-HIGH", s)
	case l64 == 0 || h64 > MaxPort:
		return 0, 0, fmt.Errorf("invalid port range %q: ports must be between 1 and %d", s, MaxPort)
	case l64 > h64:
		return 0, 0, fmt.Errorf("invalid port range %q: LOW must not exceed HIGH", s)
	}
	return uint32(l64), uint32(h64), nil
}

// CheckPortRange parses a hypervisor's port range and refuses one that is
// below MinPort or holds fewer than MinPortsInRange ports.
func CheckPortRange(s string) error {
	lo, hi, err := ParsePortRange(s)
	switch {
	case err != nil:
		return err
	case lo < MinPort:
		return fmt.Errorf("invalid port range %q: ports must be between %d and %d", s, MinPort, MaxPort)
	case hi-lo+1 < MinPortsInRange:
		return fmt.Errorf("invalid port range %q: must hold at least %d ports, got %d", s, MinPortsInRange, hi-lo+1)
	}
	return nil
}

// ServiceIP returns the first address of a service CIDR: the cluster IP of
// the kubernetes service.
func ServiceIP(serviceCIDR string) (net.IP, error) {
	prefix, err := netip.ParsePrefix(strings.TrimSpace(serviceCIDR))
	if err != nil {
		return nil, fmt.Errorf("service CIDR %q: %w", serviceCIDR, err)
	}
	prefix = prefix.Masked()
	first := prefix.Addr().Next()
	if !first.IsValid() || !prefix.Contains(first) {
		return nil, fmt.Errorf("service CIDR %q has no room for the kubernetes service", serviceCIDR)
	}
	return net.IP(first.AsSlice()), nil
}

// DNSServiceIP returns the tenth address of a service CIDR: the cluster IP
// of the kube-dns service, as kubeadm chooses it.
func DNSServiceIP(serviceCIDR string) (net.IP, error) {
	first, err := ServiceIP(serviceCIDR)
	if err != nil {
		return nil, err
	}
	a, _ := netip.AddrFromSlice(first)
	prefix := netip.MustParsePrefix(strings.TrimSpace(serviceCIDR)).Masked()
	for range 9 {
		a = a.Next()
	}
	if !prefix.Contains(a) {
		return nil, fmt.Errorf("service CIDR %q has no room for the DNS service", serviceCIDR)
	}
	return net.IP(a.AsSlice()), nil
}
