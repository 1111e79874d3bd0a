package scheduler

import (
	"errors"
	"testing"
)

func TestAllocateVPNCIDR(t *testing.T) {
	tests := []struct {
		name      string
		pool      string
		prefixLen int
		taken     []string
		want      string
		err       error
		fails     bool
	}{
		{name: "empty pool", pool: "10.200.0.0/16", prefixLen: 24, want: "10.200.0.0/24"},
		{name: "default size", pool: "10.200.0.0/16", want: "10.200.0.0/24"},
		{name: "first taken", pool: "10.200.0.0/16", prefixLen: 24, taken: []string{"10.200.0.0/24"}, want: "10.200.1.0/24"},
		{name: "hole is reused", pool: "10.200.0.0/16", prefixLen: 24, taken: []string{"10.200.1.0/24", "10.200.0.0/24", "10.200.3.0/24"}, want: "10.200.2.0/24"},
		{name: "larger taken block", pool: "10.200.0.0/16", prefixLen: 24, taken: []string{"10.200.0.0/23"}, want: "10.200.2.0/24"},
		{name: "smaller taken block", pool: "10.200.0.0/16", prefixLen: 24, taken: []string{"10.200.0.128/30"}, want: "10.200.1.0/24"},
		{name: "bare address", pool: "10.200.0.0/16", prefixLen: 24, taken: []string{"10.200.0.255"}, want: "10.200.1.0/24"},
		{name: "unmasked taken", pool: "10.200.0.0/16", prefixLen: 24, taken: []string{"10.200.0.7/24"}, want: "10.200.1.0/24"},
		{name: "taken outside the pool", pool: "10.200.0.0/16", prefixLen: 24, taken: []string{"10.100.0.0/16", "192.168.0.0/24", "10.201.0.0/24"}, want: "10.200.0.0/24"},
		{name: "taken straddles the pool start", pool: "10.200.4.0/22", prefixLen: 24, taken: []string{"10.200.0.0/21"}, err: ErrVPNPoolExhausted},
		{name: "taken contains the pool", pool: "10.200.0.0/16", prefixLen: 24, taken: []string{"10.0.0.0/8"}, err: ErrVPNPoolExhausted},
		{name: "full", pool: "10.200.0.0/23", prefixLen: 24, taken: []string{"10.200.1.0/24", "10.200.0.9"}, err: ErrVPNPoolExhausted},
		{name: "last block", pool: "10.200.0.0/23", prefixLen: 24, taken: []string{"10.200.0.9"}, want: "10.200.1.0/24"},
		{name: "block as large as the pool", pool: "10.200.0.0/24", prefixLen: 24, want: "10.200.0.0/24"},
		{name: "top of the address space", pool: "255.255.255.0/24", prefixLen: 25, taken: []string{"255.255.255.0/25"}, want: "255.255.255.128/25"},
		{name: "top of the address space full", pool: "255.255.255.0/24", prefixLen: 25, taken: []string{"255.255.255.0/25", "255.255.255.255"}, err: ErrVPNPoolExhausted},
		{name: "unmasked pool", pool: "10.200.3.4/16", prefixLen: 24, want: "10.200.0.0/24"},
		{name: "ipv6", pool: "fd00:200::/48", prefixLen: 64, taken: []string{"fd00:200::/64", "10.200.0.0/16"}, want: "fd00:200:0:1::/64"},
		{name: "ipv4 pool ignores ipv6 taken", pool: "10.200.0.0/16", prefixLen: 24, taken: []string{"::/0"}, want: "10.200.0.0/24"},
		{name: "block larger than pool", pool: "10.200.0.0/24", prefixLen: 16, fails: true},
		{name: "block too small", pool: "10.200.0.0/24", prefixLen: 33, fails: true},
		{name: "invalid pool", pool: "10.200.0.0", prefixLen: 24, fails: true},
		{name: "invalid taken", pool: "10.200.0.0/16", prefixLen: 24, taken: []string{"nope"}, fails: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := AllocateVPNCIDR(tc.pool, tc.prefixLen, tc.taken)
			switch {
			case tc.err != nil:
				if !errors.Is(err, tc.err) {
					t.Fatalf("got %q, err = %v, want %v", got, err, tc.err)
				}
			case tc.fails:
				if err == nil || errors.Is(err, ErrVPNPoolExhausted) {
					t.Fatalf("got %q, err = %v, want a usage error", got, err)
				}
			case err != nil:
				t.Fatalf("unexpected error: %v", err)
			case got != tc.want:
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestAllocateVPNAddress(t *testing.T) {
	tests := []struct {
		name  string
		cidr  string
		taken []string
		want  string
		err   error
		fails bool
	}{
		{name: "empty", cidr: "10.200.0.0/24", want: "10.200.0.2"},
		{name: "taken", cidr: "10.200.0.0/24", taken: []string{"10.200.0.2", "10.200.0.4"}, want: "10.200.0.3"},
		{name: "interface form", cidr: "10.200.0.0/24", taken: []string{"10.200.0.2/24"}, want: "10.200.0.3"},
		{name: "host prefix form", cidr: "10.200.0.0/24", taken: []string{"10.200.0.2/32"}, want: "10.200.0.3"},
		{name: "endpoint in taken changes nothing", cidr: "10.200.0.0/24", taken: []string{"10.200.0.1"}, want: "10.200.0.2"},
		{name: "last host", cidr: "10.200.0.0/29", taken: []string{"10.200.0.2", "10.200.0.3", "10.200.0.4", "10.200.0.5"}, want: "10.200.0.6"},
		{name: "full", cidr: "10.200.0.0/29", taken: []string{"10.200.0.2", "10.200.0.3", "10.200.0.4", "10.200.0.5", "10.200.0.6"}, err: ErrCIDRFull},
		{name: "smallest", cidr: "10.200.0.0/30", want: "10.200.0.2"},
		{name: "smallest full", cidr: "10.200.0.0/30", taken: []string{"10.200.0.2"}, err: ErrCIDRFull},
		{name: "unmasked cidr", cidr: "10.200.0.9/24", want: "10.200.0.2"},
		{name: "ipv6", cidr: "fd00::/64", taken: []string{"fd00::2"}, want: "fd00::3"},
		{name: "too small", cidr: "10.200.0.0/31", fails: true},
		{name: "invalid cidr", cidr: "10.200.0.0/40", fails: true},
		{name: "invalid taken", cidr: "10.200.0.0/24", taken: []string{"10.200.0.300"}, fails: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := AllocateVPNAddress(tc.cidr, tc.taken)
			switch {
			case tc.err != nil:
				if !errors.Is(err, tc.err) {
					t.Fatalf("got %q, err = %v, want %v", got, err, tc.err)
				}
			case tc.fails:
				if err == nil || errors.Is(err, ErrCIDRFull) {
					t.Fatalf("got %q, err = %v, want a usage error", got, err)
				}
			case err != nil:
				t.Fatalf("unexpected error: %v", err)
			case got != tc.want:
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestEndpointAddress(t *testing.T) {
	tests := []struct {
		cidr, want string
		ok         bool
	}{
		{"10.200.0.0/24", "10.200.0.1", true},
		{"10.200.7.0/24", "10.200.7.1", true},
		{"10.200.0.0/30", "10.200.0.1", true},
		{"fd00::/64", "fd00::1", true},
		{"10.200.0.0/31", "", false},
		{"bad", "", false},
	}
	for _, tc := range tests {
		got, err := EndpointAddress(tc.cidr)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("EndpointAddress(%q) = %q, %v", tc.cidr, got, err)
		}
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
