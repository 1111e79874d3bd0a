package scheduler

import (
	"fmt"

	"github.com/oneinfra/oneinfra/internal/resources"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// hvOpt changes a test hypervisor.
type hvOpt func(*pb.Hypervisor)

func public(h *pb.Hypervisor)        { h.Spec.Public = true }
func unschedulable(h *pb.Hypervisor) { h.Spec.Unschedulable = true }
func dead(h *pb.Hypervisor)          { h.Status.Health = resources.HealthDead }
func suspect(h *pb.Hypervisor)       { h.Status.Health = resources.HealthSuspect }
func deleting(h *pb.Hypervisor) {
	h.Metadata.DeletionTimestamp = &timestamppb.Timestamp{Seconds: 1}
}
func withPorts(r string) hvOpt { return func(h *pb.Hypervisor) { h.Spec.PortRange = r } }
func allocated(ports ...uint32) hvOpt {
	return func(h *pb.Hypervisor) { h.Status.AllocatedPorts = ports }
}

func hv(name string, opts ...hvOpt) *pb.Hypervisor {
	h := &pb.Hypervisor{
		Metadata: &pb.ObjectMeta{Name: name},
		Spec:     &pb.HypervisorSpec{Address: "10.0.0.1"},
		Status:   &pb.HypervisorStatus{Health: resources.HealthAlive},
	}
	for _, o := range opts {
		o(h)
	}
	return h
}

func hvs(hs ...*pb.Hypervisor) []*pb.Hypervisor { return hs }

// comp makes a component; ports are named p0, p1, ...
func comp(name, cluster, role, hypervisor string, ports ...uint32) *pb.Component {
	m := make(map[string]uint32, len(ports))
	for i, p := range ports {
		m[fmt.Sprintf("p%d", i)] = p
	}
	return &pb.Component{
		Metadata: &pb.ObjectMeta{Name: name},
		Spec:     &pb.ComponentSpec{Cluster: cluster, Role: role, Hypervisor: hypervisor, Ports: m},
	}
}

// filler makes n components of another cluster on hypervisor, without ports.
func filler(hypervisor string, n int) []*pb.Component {
	var out []*pb.Component
	for i := range n {
		out = append(out, comp(fmt.Sprintf("fill-%s-%d", hypervisor, i), "fill", resources.RoleControlPlane, hypervisor))
	}
	return out
}

func concat(parts ...[]*pb.Component) []*pb.Component {
	var out []*pb.Component
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
