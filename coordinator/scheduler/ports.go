package scheduler

import (
	"fmt"

	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// ControlPlanePorts are the host ports a control-plane component needs.
var ControlPlanePorts = []string{vocab.PortAPIServer, vocab.PortEtcdClient, vocab.PortEtcdPeer, vocab.PortControllerManager, vocab.PortScheduler}

// IngressPorts are the host ports an ingress component needs.
var IngressPorts = []string{vocab.PortAPIServer, vocab.PortWireGuard}

// portRange is a hypervisor's port range; an invalid one wraps
// ErrInvalidPortRange.
func portRange(h *pb.Hypervisor) (low, high uint32, err error) {
	low, high, err = resources.ParsePortRange(h.GetSpec().GetPortRange())
	if err != nil {
		return 0, 0, fmt.Errorf("%w: %v", ErrInvalidPortRange, err)
	}
	return low, high, nil
}

// UsedPorts returns the host ports in use on hypervisor h: those of every
// component placed on it, and those its agent reports as allocated.
func UsedPorts(h *pb.Hypervisor, components []*pb.Component) map[uint32]bool {
	name := h.GetMetadata().GetName()
	used := make(map[uint32]bool)
	for _, p := range h.GetStatus().GetAllocatedPorts() {
		used[p] = true
	}
	for _, c := range components {
		if c.GetSpec().GetHypervisor() != name {
			continue
		}
		for _, p := range c.GetSpec().GetPorts() {
			used[p] = true
		}
	}
	return used
}

// AllocatePorts picks one free host port for each of names on hypervisor h,
// lowest free first, in the order of names. A port is free when it is in h's
// port range and not in UsedPorts(h, components). The error wraps ErrNoPorts
// when the range has fewer free ports than names.
func AllocatePorts(h *pb.Hypervisor, components []*pb.Component, names []string) (map[string]uint32, error) {
	if h == nil {
		return nil, fmt.Errorf("allocating ports: no hypervisor given")
	}
	hv := h.GetMetadata().GetName()
	low, high, err := portRange(h)
	if err != nil {
		return nil, fmt.Errorf("allocating ports on hypervisor %s: %w", hv, err)
	}
	seen := make(map[string]bool, len(names))
	for _, n := range names {
		if n == "" || seen[n] {
			return nil, fmt.Errorf("allocating ports on hypervisor %s: port name %q is empty or repeated", hv, n)
		}
		seen[n] = true
	}
	used := UsedPorts(h, components)
	out := make(map[string]uint32, len(names))
	p := low
	for _, n := range names {
		for p <= high && used[p] {
			p++
		}
		if p > high {
			return nil, fmt.Errorf("allocating %d ports on hypervisor %s: %w: %d free in range %d-%d; widen --port-range or add a hypervisor",
				len(names), hv, ErrNoPorts, freeInRange(used, low, high), low, high)
		}
		out[n] = p
		p++
	}
	return out, nil
}

// freeInRange counts the ports in [low, high] that are not used.
func freeInRange(used map[uint32]bool, low, high uint32) int {
	free := int(high-low) + 1
	for p := range used {
		if p >= low && p <= high {
			free--
		}
	}
	return free
}
