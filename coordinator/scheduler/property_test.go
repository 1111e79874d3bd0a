package scheduler

import (
	"errors"
	"fmt"
	"math/rand"
	"net/netip"
	"slices"
	"testing"

	"github.com/oneinfra/oneinfra/internal/resources"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// The property tests check the rules of SPEC.md "Placement" against a model
// written here from the rules, over many random inputs with fixed seeds.

const iterations = 2000

// randomHypervisors makes n hypervisors with random kinds, health and small
// port ranges, in random order.
func randomHypervisors(r *rand.Rand, n int) []*pb.Hypervisor {
	var out []*pb.Hypervisor
	for i := range n {
		h := hv(fmt.Sprintf("hv-%02d", i))
		if r.Intn(10) < 3 {
			public(h)
		}
		if r.Intn(10) == 0 {
			unschedulable(h)
		}
		switch r.Intn(10) {
		case 0:
			dead(h)
		case 1:
			suspect(h)
		case 2:
			h.Status.Health = ""
		}
		if r.Intn(20) == 0 {
			deleting(h)
		}
		switch r.Intn(30) {
		case 0:
			h.Spec.PortRange = "" // default, large
		case 1:
			h.Spec.PortRange = "oops"
		default:
			h.Spec.PortRange = fmt.Sprintf("30000-%d", 30000+r.Intn(25))
		}
		if r.Intn(5) == 0 {
			h.Status.AllocatedPorts = []uint32{uint32(30000 + r.Intn(25))}
		}
		out = append(out, h)
	}
	r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// randomComponents makes n components of random clusters on random
// hypervisors (some unknown), with random ports that may collide.
func randomComponents(r *rand.Rand, hs []*pb.Hypervisor, clusters []string, n int) []*pb.Component {
	var out []*pb.Component
	for i := range n {
		host := "ghost"
		if len(hs) > 0 && r.Intn(8) > 0 {
			host = hs[r.Intn(len(hs))].GetMetadata().GetName()
		}
		role := resources.RoleControlPlane
		if r.Intn(3) == 0 {
			role = resources.RoleIngress
		}
		var ports []uint32
		for range r.Intn(4) {
			ports = append(ports, uint32(29995+r.Intn(35)))
		}
		out = append(out, comp(fmt.Sprintf("c-%d", i), clusters[r.Intn(len(clusters))], role, host, ports...))
	}
	return out
}

// model is the test's own view of one hypervisor.
type model struct {
	name     string
	eligible bool // schedulable, alive (not dead nor suspect), not deleting, valid range
	public   bool
	suspect  bool
	free     int // free ports in range
	load     int
}

func modelOf(hs []*pb.Hypervisor, comps []*pb.Component) map[string]*model {
	out := make(map[string]*model)
	for _, h := range hs {
		name := h.GetMetadata().GetName()
		m := &model{name: name, public: h.GetSpec().GetPublic(), suspect: h.GetStatus().GetHealth() == resources.HealthSuspect}
		out[name] = m
		low, high, err := portRange(h)
		m.eligible = err == nil && !h.GetSpec().GetUnschedulable() && h.GetStatus().GetHealth() != resources.HealthDead &&
			h.GetStatus().GetHealth() != resources.HealthSuspect && h.GetMetadata().GetDeletionTimestamp() == nil
		if err != nil {
			continue
		}
		used := map[uint32]bool{}
		for _, p := range h.GetStatus().GetAllocatedPorts() {
			used[p] = true
		}
		for _, c := range comps {
			if c.GetSpec().GetHypervisor() == name {
				m.load++
				for _, p := range c.GetSpec().GetPorts() {
					used[p] = true
				}
			}
		}
		for p := low; p <= high; p++ {
			if !used[p] {
				m.free++
			}
		}
	}
	return out
}

func replicasOf(cluster, role string, comps []*pb.Component) map[string]int {
	out := map[string]int{}
	for _, c := range comps {
		if c.GetSpec().GetCluster() == cluster && c.GetSpec().GetRole() == role {
			out[c.GetSpec().GetHypervisor()]++
		}
	}
	return out
}

func TestPropertyControlPlaneSpread(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	need := len(ControlPlanePorts)
	for it := range iterations {
		hs := randomHypervisors(r, r.Intn(12))
		clusters := []string{"other", "more"}
		withOwn := r.Intn(3) == 0 // some runs already have replicas of demo
		if withOwn {
			clusters = append(clusters, "demo")
		}
		comps := randomComponents(r, hs, clusters, r.Intn(20))
		want := 1 + r.Intn(7)

		out, err := PlaceControlPlane("demo", want, hs, comps)

		ms := modelOf(hs, comps)
		anyEligible, k, capacity := false, 0, 0
		for _, m := range ms {
			if m.eligible && !m.public {
				anyEligible = true
				if m.free >= need {
					k++
					capacity += m.free / need
				}
			}
		}
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("iteration %d (want %d, out %v, err %v): %s", it, want, out, err, fmt.Sprintf(format, args...))
		}
		switch {
		case !anyEligible:
			if !errors.Is(err, ErrNoPrivateHypervisor) || len(out) != 0 {
				fail("want ErrNoPrivateHypervisor")
			}
			continue
		case capacity < want:
			if !errors.Is(err, ErrNoPorts) || len(out) != capacity {
				fail("want ErrNoPorts after %d replicas", capacity)
			}
		case err != nil || len(out) != want:
			fail("want %d replicas and no error", want)
		}

		// Every replica is on an eligible private hypervisor with room, and
		// each step picks the best one by the SPEC's order.
		mine := replicasOf("demo", resources.RoleControlPlane, comps)
		got := map[string]int{}
		for _, name := range out {
			m := ms[name]
			if m == nil || !m.eligible || m.public || m.free < need {
				fail("%s is not an eligible private hypervisor with room", name)
			}
			for _, o := range ms {
				if o == m || !o.eligible || o.public || o.free < need {
					continue
				}
				if mine[o.name] < mine[name] {
					fail("%s got another replica while %s had fewer", name, o.name)
				}
				if mine[o.name] == mine[name] && !o.suspect && m.suspect {
					fail("suspect %s chosen over alive %s", name, o.name)
				}
				if mine[o.name] == mine[name] && o.suspect == m.suspect &&
					(o.load < m.load || o.load == m.load && o.name < name) {
					fail("%s (load %d) chosen over %s (load %d)", name, m.load, o.name, o.load)
				}
			}
			m.free -= need
			m.load++
			mine[name]++
			got[name]++
		}

		if withOwn {
			continue
		}
		// A fresh cluster: min(r, k) distinct hypervisors, and no doubles
		// while an eligible hypervisor with room has none.
		if len(got) != min(len(out), k) {
			fail("%d distinct hypervisors, want min(%d, %d)", len(got), len(out), k)
		}
		for name, n := range got {
			if n < 2 {
				continue
			}
			for _, o := range modelOf(hs, comps) {
				if o.eligible && !o.public && o.free >= need && got[o.name] == 0 {
					fail("%s got %d replicas while %s had room and none", name, n, o.name)
				}
			}
		}
	}
}

func TestPropertyIngress(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	need := len(IngressPorts)
	for it := range iterations {
		hs := randomHypervisors(r, r.Intn(10))
		comps := randomComponents(r, hs, []string{"other", "demo"}, r.Intn(20))

		out, err := PlaceIngress("demo", hs, comps)

		ms := modelOf(hs, comps)
		anyEligible, room := false, false
		for _, m := range ms {
			if m.eligible && m.public {
				anyEligible = true
				room = room || m.free >= need
			}
		}
		switch {
		case !anyEligible:
			if !errors.Is(err, ErrNoPublicHypervisor) {
				t.Fatalf("iteration %d: err = %v, want ErrNoPublicHypervisor", it, err)
			}
		case !room:
			if !errors.Is(err, ErrNoPorts) {
				t.Fatalf("iteration %d: err = %v, want ErrNoPorts", it, err)
			}
		default:
			m := ms[out]
			if err != nil || m == nil || !m.public || !m.eligible || m.free < need {
				t.Fatalf("iteration %d: placed on %q (%+v), err %v", it, out, m, err)
			}
		}
	}
}

func TestPropertyAllocatePorts(t *testing.T) {
	r := rand.New(rand.NewSource(3))
	for it := range iterations {
		low := uint32(1 + r.Intn(65535))
		high := min(low+uint32(r.Intn(40)), 65535)
		h := hv("a", withPorts(fmt.Sprintf("%d-%d", low, high)))
		if r.Intn(3) == 0 {
			h.Status.AllocatedPorts = []uint32{low + uint32(r.Intn(40))}
		}
		var comps []*pb.Component
		for i := range r.Intn(6) {
			host := "a"
			if r.Intn(3) == 0 {
				host = "b"
			}
			var ports []uint32
			for range r.Intn(8) {
				ports = append(ports, low+uint32(r.Intn(45))-2)
			}
			comps = append(comps, comp(fmt.Sprint(i), "x", resources.RoleIngress, host, ports...))
		}
		var names []string
		for i := range r.Intn(10) {
			names = append(names, fmt.Sprintf("n%d", i))
		}

		got, err := AllocatePorts(h, comps, names)

		used := map[uint32]bool{}
		for _, p := range h.Status.AllocatedPorts {
			used[p] = true
		}
		for _, c := range comps {
			if c.Spec.Hypervisor == "a" {
				for _, p := range c.Spec.Ports {
					used[p] = true
				}
			}
		}
		var free []uint32
		for p := low; p <= high; p++ {
			if !used[p] {
				free = append(free, p)
			}
		}
		if len(free) < len(names) {
			if !errors.Is(err, ErrNoPorts) || got != nil {
				t.Fatalf("iteration %d: %d free, %d names: got %v, err %v", it, len(free), len(names), got, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("iteration %d: %v", it, err)
		}
		for i, n := range names {
			if got[n] != free[i] {
				t.Fatalf("iteration %d: %s = %d, want the lowest free %d", it, n, got[n], free[i])
			}
		}
	}
}

// TestPropertySequentialPlacement places many clusters one after another,
// feeding each result back as components, removing some clusters and
// killing some hypervisors on the way. Ports are never handed out twice on
// one hypervisor, and running out of ports happens exactly when the model
// says the space is full.
func TestPropertySequentialPlacement(t *testing.T) {
	need := len(ControlPlanePorts)
	for seed := range int64(300) {
		r := rand.New(rand.NewSource(100 + seed))
		var hs []*pb.Hypervisor
		for i := range 2 + r.Intn(7) {
			hs = append(hs, hv(fmt.Sprintf("p%d", i), withPorts(fmt.Sprintf("31000-%d", 31000+4+r.Intn(60)))))
		}
		for i := range 1 + r.Intn(3) {
			hs = append(hs, hv(fmt.Sprintf("g%d", i), public, withPorts(fmt.Sprintf("31000-%d", 31000+1+r.Intn(20)))))
		}
		for _, h := range hs {
			if r.Intn(4) == 0 {
				h.Status.AllocatedPorts = []uint32{31000 + uint32(r.Intn(10))}
			}
		}
		var all []*pb.Component
		fullInARow := 0
		for n := 0; n < 120 && fullInARow < 4; n++ {
			cluster := fmt.Sprintf("c%d", n)
			replicas := 1 + r.Intn(5)

			capacity, publicRoom, anyPrivate, anyPublic := 0, false, false, false
			for _, m := range modelOf(hs, all) {
				if !m.eligible {
					continue
				}
				if m.public {
					anyPublic = true
					publicRoom = publicRoom || m.free >= len(IngressPorts)
				} else {
					anyPrivate = true
					capacity += m.free / need
				}
			}

			cps, err := NewControlPlaneComponents(cluster, replicas, 0, hs, all)
			switch {
			case !anyPrivate:
				if !errors.Is(err, ErrNoPrivateHypervisor) {
					t.Fatalf("seed %d cluster %s: err = %v, want ErrNoPrivateHypervisor", seed, cluster, err)
				}
			case capacity < replicas:
				if !errors.Is(err, ErrNoPorts) || len(cps) != capacity {
					t.Fatalf("seed %d cluster %s: capacity %d, %d replicas: got %d, err %v", seed, cluster, capacity, replicas, len(cps), err)
				}
				fullInARow++
			case err != nil || len(cps) != replicas:
				t.Fatalf("seed %d cluster %s: got %d of %d, err %v", seed, cluster, len(cps), replicas, err)
			}
			all = append(all, cps...)

			ing, err := NewIngressComponent(cluster, hs, all)
			switch {
			case !anyPublic:
				if !errors.Is(err, ErrNoPublicHypervisor) {
					t.Fatalf("seed %d cluster %s: err %v, want ErrNoPublicHypervisor", seed, cluster, err)
				}
			case !publicRoom:
				if !errors.Is(err, ErrNoPorts) {
					t.Fatalf("seed %d cluster %s: err %v, want ErrNoPorts", seed, cluster, err)
				}
			case err != nil:
				t.Fatalf("seed %d cluster %s: %v", seed, cluster, err)
			}
			if ing != nil {
				all = append(all, ing)
			}

			// Remove an earlier cluster now and then; its ports become free.
			if r.Intn(5) == 0 {
				gone := fmt.Sprintf("c%d", r.Intn(n+1))
				all = slices.DeleteFunc(all, func(c *pb.Component) bool { return c.Spec.Cluster == gone })
			}
			// A hypervisor dies now and then; its components stay.
			if r.Intn(40) == 0 {
				dead(hs[r.Intn(len(hs))])
			}
			checkNoDoublePorts(t, seed, hs, all)
		}
	}
}

func checkNoDoublePorts(t *testing.T, seed int64, hs []*pb.Hypervisor, all []*pb.Component) {
	t.Helper()
	byName := map[string]*pb.Hypervisor{}
	for _, h := range hs {
		byName[h.Metadata.Name] = h
	}
	owner := map[string]string{}
	names := map[string]bool{}
	for _, c := range all {
		if names[c.Metadata.Name] {
			t.Fatalf("seed %d: component name %s used twice", seed, c.Metadata.Name)
		}
		names[c.Metadata.Name] = true
		h := byName[c.Spec.Hypervisor]
		if h == nil {
			t.Fatalf("seed %d: %s on unknown hypervisor %s", seed, c.Metadata.Name, c.Spec.Hypervisor)
		}
		if h.Spec.Public != (c.Spec.Role == resources.RoleIngress) {
			t.Fatalf("seed %d: %s (%s) on hypervisor %s with public=%v", seed, c.Metadata.Name, c.Spec.Role, h.Metadata.Name, h.Spec.Public)
		}
		low, high, _ := portRange(h)
		for _, p := range c.Spec.Ports {
			if p < low || p > high || slices.Contains(h.Status.AllocatedPorts, p) {
				t.Fatalf("seed %d: %s has port %d outside %s or reported allocated", seed, c.Metadata.Name, p, h.Spec.PortRange)
			}
			key := fmt.Sprintf("%s:%d", h.Metadata.Name, p)
			if o, ok := owner[key]; ok {
				t.Fatalf("seed %d: port %s handed to both %s and %s", seed, key, o, c.Metadata.Name)
			}
			owner[key] = c.Metadata.Name
		}
	}
}

// firstFreeBlock is the brute-force model of AllocateVPNCIDR.
func firstFreeBlock(pool netip.Prefix, bits int, taken []netip.Prefix) (netip.Prefix, bool) {
	for a := pool.Addr(); a.IsValid() && pool.Contains(a); {
		b := netip.PrefixFrom(a, bits)
		free := true
		for _, t := range taken {
			if t.Addr().Is4() == a.Is4() && t.Overlaps(b) {
				free = false
				break
			}
		}
		if free {
			return b, true
		}
		a = lastAddr(b).Next()
	}
	return netip.Prefix{}, false
}

func TestPropertyVPNCIDR(t *testing.T) {
	r := rand.New(rand.NewSource(4))
	for it := range iterations / 4 {
		var pool netip.Prefix
		var bits int
		var taken []netip.Prefix
		if r.Intn(5) == 0 {
			pool = netip.MustParsePrefix("fd00:200::/56")
			bits = 56 + r.Intn(7)
			for range r.Intn(6) {
				a := netip.MustParseAddr(fmt.Sprintf("fd00:200:0:%x::", r.Intn(300)))
				taken = append(taken, netip.PrefixFrom(a, 50+r.Intn(30)).Masked())
			}
		} else {
			poolBits := 16 + r.Intn(9)
			pool = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(192 + r.Intn(16)), 0, 0}), poolBits).Masked()
			bits = min(poolBits+r.Intn(7), 32)
			for range r.Intn(8) {
				a := netip.AddrFrom4([4]byte{10, byte(192 + r.Intn(16)), byte(r.Intn(256)), byte(r.Intn(256))})
				taken = append(taken, netip.PrefixFrom(a, 8+r.Intn(25)).Masked())
			}
		}
		for step := 0; ; step++ {
			strs := make([]string, len(taken))
			for i, p := range taken {
				strs[i] = p.String()
			}
			got, err := AllocateVPNCIDR(pool.String(), bits, strs)
			want, ok := firstFreeBlock(pool, bits, taken)
			if !ok {
				if !errors.Is(err, ErrVPNPoolExhausted) {
					t.Fatalf("iteration %d step %d: pool %s /%d full but got %q, %v", it, step, pool, bits, got, err)
				}
				break
			}
			if err != nil || got != want.String() {
				t.Fatalf("iteration %d step %d: pool %s /%d taken %v: got %q %v, want %s", it, step, pool, bits, strs, got, err, want)
			}
			p := netip.MustParsePrefix(got)
			for _, o := range taken {
				if o.Addr().Is4() == p.Addr().Is4() && o.Overlaps(p) {
					t.Fatalf("iteration %d: %s overlaps taken %s", it, p, o)
				}
			}
			taken = append(taken, p)
		}
	}
}

func TestPropertyVPNAddress(t *testing.T) {
	r := rand.New(rand.NewSource(5))
	for it := range iterations / 4 {
		bits := 24 + r.Intn(7)
		cidr := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200, byte(r.Intn(256)), 0}), bits).Masked()
		network, broadcast := cidr.Addr(), lastAddr(cidr)
		hosts := 1<<(32-bits) - 3
		taken := map[netip.Addr]bool{}
		var strs []string
		for range r.Intn(hosts + 3) {
			a := netip.AddrFrom4([4]byte{10, 200, cidr.Addr().As4()[2] + byte(r.Intn(2)), byte(r.Intn(256))})
			strs = append(strs, a.String())
			if cidr.Contains(a) && a != network && a != network.Next() && a != broadcast {
				taken[a] = true
			}
		}
		given := 0
		for {
			got, err := AllocateVPNAddress(cidr.String(), strs)
			if len(taken) == hosts {
				if !errors.Is(err, ErrCIDRFull) {
					t.Fatalf("iteration %d: %s full but got %q, %v", it, cidr, got, err)
				}
				break
			}
			if err != nil {
				t.Fatalf("iteration %d: %s has %d of %d taken: %v", it, cidr, len(taken), hosts, err)
			}
			a := netip.MustParseAddr(got)
			if !cidr.Contains(a) || a == network || a == network.Next() || a == broadcast || taken[a] {
				t.Fatalf("iteration %d: %s handed out %s", it, cidr, a)
			}
			taken[a] = true
			strs = append(strs, got)
			given++
		}
		if given > hosts {
			t.Fatalf("iteration %d: handed out %d of %d", it, given, hosts)
		}
	}
}
