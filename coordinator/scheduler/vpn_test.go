package scheduler

import (
	"errors"
	"strings"
	"testing"
)

// TestAllocateVPNAddress: addresses are handed out lowest first, never
// twice, skipping the network, the endpoint and the broadcast; a freed
// one is reused; a full CIDR is an error that says what to do.
func TestAllocateVPNAddress(t *testing.T) {
	const cidr = "10.200.0.0/28" // .2 to .14: 13 nodes
	var taken []string
	seen := map[string]bool{}
	for range 13 {
		a, err := AllocateVPNAddress(cidr, taken)
		if err != nil {
			t.Fatalf("after %d: %v", len(taken), err)
		}
		if seen[a] || a == "10.200.0.0" || a == "10.200.0.1" || a == "10.200.0.15" {
			t.Fatalf("handed out %s (taken %v)", a, taken)
		}
		seen[a] = true
		taken = append(taken, a+"/28") // interface form counts as the address
	}
	_, err := AllocateVPNAddress(cidr, taken)
	if !errors.Is(err, ErrCIDRFull) || !strings.Contains(err.Error(), cidr) || !strings.Contains(err.Error(), "larger vpn.cidr") {
		t.Fatalf("full CIDR: %v", err)
	}
	// Freeing .7 makes it the next one.
	taken = append(taken[:5], taken[6:]...)
	if a, err := AllocateVPNAddress(cidr, taken); err != nil || a != "10.200.0.7" {
		t.Errorf("after freeing 10.200.0.7: %s %v", a, err)
	}
	for _, bad := range []string{"10.200.0.0/31", "nope"} {
		if _, err := AllocateVPNAddress(bad, nil); err == nil {
			t.Errorf("AllocateVPNAddress(%q) succeeded", bad)
		}
	}
	if _, err := AllocateVPNAddress(cidr, []string{"x"}); err == nil || !strings.Contains(err.Error(), `"x"`) {
		t.Errorf("a bad taken address: %v", err)
	}
}

func TestEndpointAddress(t *testing.T) {
	if a, err := EndpointAddress("10.200.3.0/24"); err != nil || a != "10.200.3.1" {
		t.Errorf("EndpointAddress = %s, %v", a, err)
	}
}

// TestNodePodSubnets: node pod subnets come from the cluster's pod CIDR
// the way VPN blocks come from the pool: never overlapping, freed ones
// reused, exhaustion an error.
func TestNodePodSubnets(t *testing.T) {
	var taken []string
	for want := range []int{0, 1, 2, 3} {
		s, err := AllocateVPNCIDR("10.244.0.0/22", 24, taken)
		if err != nil || s != "10.244."+string(rune('0'+want))+".0/24" {
			t.Fatalf("subnet %d: %s %v", want, s, err)
		}
		taken = append(taken, s)
	}
	if _, err := AllocateVPNCIDR("10.244.0.0/22", 24, taken); !errors.Is(err, ErrVPNPoolExhausted) {
		t.Fatalf("exhausted: %v", err)
	}
	if s, err := AllocateVPNCIDR("10.244.0.0/22", 24, taken[1:]); err != nil || s != "10.244.0.0/24" {
		t.Errorf("reuse: %s %v", s, err)
	}
}
