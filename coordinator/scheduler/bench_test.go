package scheduler

import (
	"fmt"
	"testing"

	"github.com/oneinfra/oneinfra/internal/resources"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// benchInput makes 1000 hypervisors (one in ten public) and 10000
// components with their ports, spread over them.
func benchInput() ([]*pb.Hypervisor, []*pb.Component) {
	var hs []*pb.Hypervisor
	for i := range 1000 {
		h := hv(fmt.Sprintf("hv-%04d", i))
		h.Spec.Public = i%10 == 0
		hs = append(hs, h)
	}
	next := make([]uint32, len(hs))
	var comps []*pb.Component
	for i := range 10000 {
		n := (i * 7919) % len(hs)
		role, ports := resources.RoleControlPlane, ControlPlanePorts
		if hs[n].Spec.Public {
			role, ports = resources.RoleIngress, IngressPorts
		}
		m := make(map[string]uint32, len(ports))
		for _, p := range ports {
			m[p] = 30000 + next[n]
			next[n]++
		}
		comps = append(comps, &pb.Component{
			Metadata: &pb.ObjectMeta{Name: fmt.Sprintf("c%d-%d", i/3, i%3)},
			Spec:     &pb.ComponentSpec{Cluster: fmt.Sprintf("c%d", i/3), Role: role, Hypervisor: hs[n].Metadata.Name, Ports: m},
		})
	}
	return hs, comps
}

func BenchmarkPlaceControlPlane(b *testing.B) {
	hs, comps := benchInput()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := PlaceControlPlane("new", 3, hs, comps); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNewControlPlaneComponents(b *testing.B) {
	hs, comps := benchInput()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NewControlPlaneComponents("new", 3, 0, hs, comps); err != nil {
			b.Fatal(err)
		}
	}
}
