package scheduler

import (
	"fmt"
	"slices"
	"strings"

	"github.com/oneinfra/oneinfra/internal/resources"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// UnschedulableReason says why no new component may be placed on h, or
// returns "" when one may. It does not look at Spec.Public nor at ports.
func UnschedulableReason(h *pb.Hypervisor) string {
	switch {
	case h.GetMetadata().GetDeletionTimestamp() != nil:
		return "being deleted"
	case h.GetStatus().GetHealth() == resources.HealthDead:
		return "dead"
	case h.GetStatus().GetHealth() == resources.HealthSuspect:
		// Its agent may be gone: a new component (a replacement above
		// all) must not land where it may never start.
		return "suspect"
	case h.GetSpec().GetUnschedulable():
		return "unschedulable"
	}
	if _, _, err := portRange(h); err != nil {
		return "invalid port range"
	}
	return ""
}

// candidate is an eligible hypervisor as seen by one placement.
type candidate struct {
	name string
	load int // components on it, of all clusters
	mine int // components of the cluster and role being placed
	free int // free ports in its range

	low, high uint32   // port range
	used      []uint32 // ports in use, with repeats
}

// better orders candidates: fewest replicas of the cluster first (spread),
// then least loaded, then by name.
func (c *candidate) better(o *candidate) bool {
	if c.mine != o.mine {
		return c.mine < o.mine
	}
	if c.load != o.load {
		return c.load < o.load
	}
	return c.name < o.name
}

// candidates returns the hypervisors that may take a new component of
// cluster in role (public ones for ingress, private ones otherwise), and a
// summary of why the others may not.
func candidates(cluster, role string, hypervisors []*pb.Hypervisor, components []*pb.Component) ([]*candidate, string) {
	wantPublic := role == resources.RoleIngress
	byName := make(map[string]*candidate)
	seen := make(map[string]bool)
	skipped := make(map[string]int)
	var order []string
	for _, h := range hypervisors {
		name := h.GetMetadata().GetName()
		if name == "" || seen[name] {
			continue // the first one of a name wins
		}
		seen[name] = true
		reason := UnschedulableReason(h)
		if reason == "" && h.GetSpec().GetPublic() != wantPublic {
			reason = "private"
			if h.GetSpec().GetPublic() {
				reason = "public"
			}
		}
		if reason != "" {
			if skipped[reason] == 0 {
				order = append(order, reason)
			}
			skipped[reason]++
			continue
		}
		low, high, _ := portRange(h)
		byName[name] = &candidate{
			name: name,
			low:  low,
			high: high,
			used: slices.Clone(h.GetStatus().GetAllocatedPorts()),
		}
	}
	for _, c := range components {
		s := c.GetSpec()
		cand := byName[s.GetHypervisor()]
		if cand == nil {
			continue
		}
		cand.load++
		if s.GetCluster() == cluster && s.GetRole() == role && !s.GetOrphaned() {
			cand.mine++ // an orphaned one belongs to no cluster
		}
		for _, p := range s.GetPorts() {
			cand.used = append(cand.used, p)
		}
	}
	out := make([]*candidate, 0, len(byName))
	for _, cand := range byName {
		// Count the distinct used ports in range: sorted, repeats skipped.
		slices.Sort(cand.used)
		cand.free = int(cand.high-cand.low) + 1
		for i, p := range cand.used {
			if p >= cand.low && p <= cand.high && (i == 0 || cand.used[i-1] != p) {
				cand.free--
			}
		}
		cand.used = nil
		out = append(out, cand)
	}
	slices.SortFunc(out, func(a, b *candidate) int { return strings.Compare(a.name, b.name) })

	if len(seen) == 0 {
		return out, "none registered"
	}
	parts := make([]string, 0, len(order))
	for _, r := range order {
		parts = append(parts, fmt.Sprintf("%d %s", skipped[r], r))
	}
	return out, fmt.Sprintf("%d registered: %s", len(seen), strings.Join(parts, ", "))
}

// pick returns the best candidate with at least need free ports, or nil.
func pick(cands []*candidate, need int) *candidate {
	var best *candidate
	for _, c := range cands {
		if c.free >= need && (best == nil || c.better(best)) {
			best = c
		}
	}
	return best
}

// PlaceControlPlane returns the hypervisor names for want new control-plane
// replicas of cluster, one name per replica, given all existing components
// of every cluster.
//
// Only private hypervisors that are schedulable, alive (neither dead nor
// suspect) and not being deleted are eligible, and only while they have
// free ports for a whole control-plane component. Replicas go to distinct
// hypervisors whenever enough have room: each replica goes to the eligible
// hypervisor holding the fewest replicas of cluster, then to the least
// loaded (components of all clusters), then by name.
//
// The error wraps ErrNoPrivateHypervisor when no hypervisor is eligible, and
// ErrNoPorts when the eligible ones run out of ports; with ErrNoPorts the
// returned slice holds the replicas that could be placed.
func PlaceControlPlane(cluster string, want int, hypervisors []*pb.Hypervisor, components []*pb.Component) ([]string, error) {
	if want < 0 {
		return nil, fmt.Errorf("placing control plane of cluster %s: negative replica count %d", cluster, want)
	}
	if want == 0 {
		return nil, nil
	}
	cands, why := candidates(cluster, resources.RoleControlPlane, hypervisors, components)
	if len(cands) == 0 {
		return nil, fmt.Errorf("placing control plane of cluster %s: %w (%s); start `oneinfra-agent hypervisor` without --public on a private machine, or clear unschedulable on one",
			cluster, ErrNoPrivateHypervisor, why)
	}
	need := len(ControlPlanePorts)
	out := make([]string, 0, want)
	for len(out) < want {
		best := pick(cands, need)
		if best == nil {
			return out, fmt.Errorf("placing control plane of cluster %s: %w: placed %d of %d replicas, no private hypervisor has %d free ports left; widen --port-range or add a private hypervisor",
				cluster, ErrNoPorts, len(out), want, need)
		}
		best.mine++
		best.load++
		best.free -= need
		out = append(out, best.name)
	}
	return out, nil
}

// PlaceIngress returns the public hypervisor for a new ingress of cluster:
// among schedulable, alive (neither dead nor suspect), not deleting public
// hypervisors with free ports for an ingress, the one holding the fewest
// ingresses of cluster, then least loaded, then by name. The error
// wraps ErrNoPublicHypervisor or ErrNoPorts.
func PlaceIngress(cluster string, hypervisors []*pb.Hypervisor, components []*pb.Component) (string, error) {
	cands, why := candidates(cluster, resources.RoleIngress, hypervisors, components)
	if len(cands) == 0 {
		return "", fmt.Errorf("placing ingress of cluster %s: %w (%s); start `oneinfra-agent hypervisor --public --public-address IP` on a machine reachable by clients, or clear unschedulable on one",
			cluster, ErrNoPublicHypervisor, why)
	}
	need := len(IngressPorts)
	best := pick(cands, need)
	if best == nil {
		return "", fmt.Errorf("placing ingress of cluster %s: %w: no public hypervisor has %d free ports left; widen --port-range or add a public hypervisor",
			cluster, ErrNoPorts, need)
	}
	return best.name, nil
}

// NewControlPlaneComponents places want new control-plane replicas of
// cluster (PlaceControlPlane), names them (NextIndex, and never below
// minIndex) and allocates their ports (AllocatePorts), returning Components
// ready to be written. The inputs are not modified. Errors are those of
// PlaceControlPlane; with ErrNoPorts the components that could be made are
// returned too.
func NewControlPlaneComponents(cluster string, want, minIndex int, hypervisors []*pb.Hypervisor, components []*pb.Component) ([]*pb.Component, error) {
	names, placeErr := PlaceControlPlane(cluster, want, hypervisors, components)
	if len(names) == 0 {
		return nil, placeErr
	}
	all := slices.Clip(components)
	out := make([]*pb.Component, 0, len(names))
	for _, hv := range names {
		c, err := newComponent(cluster, resources.RoleControlPlane, hv, ControlPlanePorts, minIndex, hypervisors, all)
		if err != nil {
			return out, err
		}
		out = append(out, c)
		all = append(all, c)
	}
	return out, placeErr
}

// NewIngressComponent places (PlaceIngress), names and gives ports to a new
// ingress component of cluster. The inputs are not modified.
func NewIngressComponent(cluster string, hypervisors []*pb.Hypervisor, components []*pb.Component) (*pb.Component, error) {
	hv, err := PlaceIngress(cluster, hypervisors, components)
	if err != nil {
		return nil, err
	}
	return newComponent(cluster, resources.RoleIngress, hv, IngressPorts, 0, hypervisors, components)
}

func newComponent(cluster, role, hv string, ports []string, minIndex int, hypervisors []*pb.Hypervisor, components []*pb.Component) (*pb.Component, error) {
	var h *pb.Hypervisor
	for _, x := range hypervisors {
		if x.GetMetadata().GetName() == hv {
			h = x
			break
		}
	}
	got, err := AllocatePorts(h, components, ports)
	if err != nil {
		return nil, fmt.Errorf("placing %s of cluster %s: %w", role, cluster, err)
	}
	return &pb.Component{
		ApiVersion: "oneinfra.io/v1alpha1",
		Kind:       "Component",
		Metadata:   &pb.ObjectMeta{Name: resources.ComponentName(cluster, role, max(minIndex, NextIndex(cluster, role, components)))},
		Spec: &pb.ComponentSpec{
			Cluster:    cluster,
			Role:       role,
			Hypervisor: hv,
			Ports:      got,
		},
	}, nil
}
