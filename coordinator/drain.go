package coordinator

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/oneinfra/oneinfra/coordinator/state"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/proto"
)

// Draining: `hypervisor drain` makes a hypervisor unschedulable and marks
// it draining. Its components move elsewhere while it still runs them, so
// no write is lost and no etcd quorum is put at risk:
//
//   - A control-plane replica is moved make-before-break: one replica more
//     than wanted is placed on another private hypervisor; once it runs
//     and the ingress has it up, the replica on the draining hypervisor is
//     removed as in a scale down (its agent takes it out of etcd once the
//     ingress has dropped it). One at a time per cluster, and only
//     while every replica of the cluster runs and none is being removed.
//   - An ingress is replaced on another public hypervisor as for a dead
//     one (new ports, certificates, VPN endpoint); its agent removes the
//     old one.
//
// When nothing can take a component, a DrainBlocked event says why and the
// component stays where it is. A draining hypervisor that dies is handled
// as dead.

// moveReason says why a component must leave its hypervisor: "dead",
// "draining", or "" when it may stay.
func moveReason(hypervisors []*pb.Hypervisor, comp *pb.Component) string {
	h := hypervisorByName(hypervisors, comp.Spec.Hypervisor)
	switch {
	case h.GetStatus().GetHealth() == resources.HealthDead:
		return "dead"
	case h.GetStatus().GetDraining():
		return "draining"
	}
	return ""
}

// drainSurge returns the control-plane replica to move now, or nil: one
// that is leaving (leaving says why, "" for one that stays) and not dead.
// One is moved when the cluster has the replicas it wants, all Running,
// and none being removed.
func drainSurge(c *pb.Cluster, have []*pb.Component, leaving func(*pb.Component) string, all []*pb.Component) *pb.Component {
	if len(have) != int(c.Spec.ControlPlane.GetReplicas()) {
		return nil
	}
	var moving []*pb.Component
	for _, comp := range have {
		if comp.GetStatus().GetState() != vocab.StateRunning {
			return nil
		}
		if why := leaving(comp); why != "" && why != "dead" {
			moving = append(moving, comp)
		}
	}
	for _, comp := range all {
		if memberOf(comp, c.Metadata.Name, resources.RoleControlPlane) && comp.Metadata.DeletionTimestamp != nil {
			return nil
		}
	}
	if len(moving) == 0 {
		return nil
	}
	sort.Slice(moving, func(i, j int) bool { return moving[i].Metadata.Name < moving[j].Metadata.Name })
	return moving[0]
}

// liveIngresses are the ingresses of cluster among components that are not
// on a dead hypervisor: those that may send connections to API servers.
func liveIngresses(components []*pb.Component, cluster string, hypervisors []*pb.Hypervisor) []*pb.Component {
	var out []*pb.Component
	for _, c := range components {
		if memberOf(c, cluster, resources.RoleIngress) && moveReason(hypervisors, c) != "dead" {
			out = append(out, c)
		}
	}
	return out
}

// ingressReleased reports whether none of ingresses sends new connections
// to the API server of replica name, as they last reported (the servers
// their haproxy has up): a replica being removed leaves etcd only then.
func ingressReleased(ingresses []*pb.Component, name string) bool {
	for _, in := range ingresses {
		if slices.Contains(in.GetStatus().GetBackends(), name) {
			return false
		}
	}
	return true
}

// servingAll reports whether every replica in comps is Running and up in
// every Running ingress of ingresses: the replica a drain moves goes only
// once its replacement takes connections, or the ingress would be left
// with no server up.
func servingAll(comps, ingresses []*pb.Component) bool {
	for _, comp := range comps {
		if comp.GetStatus().GetState() != vocab.StateRunning {
			return false
		}
		for _, in := range ingresses {
			if in.GetStatus().GetState() == vocab.StateRunning && !slices.Contains(in.GetStatus().GetBackends(), comp.Metadata.Name) {
				return false
			}
		}
	}
	return true
}

// removalOrder sorts the replicas a scale down picks from: those on dead
// hypervisors first, then those leaving for another reason (a drain, due
// certificates), then the newest.
func removalOrder(have []*pb.Component, leaving func(*pb.Component) string) {
	rank := func(comp *pb.Component) int {
		switch leaving(comp) {
		case "dead":
			return 0
		case "":
			return 2
		}
		return 1
	}
	sort.Slice(have, func(i, j int) bool {
		if a, b := rank(have[i]), rank(have[j]); a != b {
			return a < b
		}
		if a, b := have[i].Metadata.CreateIndex, have[j].Metadata.CreateIndex; a != b {
			return a > b
		}
		return have[i].Metadata.Name > have[j].Metadata.Name
	})
}

// drainBlocked adds a DrainBlocked event to cmd unless the cluster has it.
func drainBlocked(st *state.Store, cluster, msg string, cmd *pb.PlaceCommand, now time.Time) {
	if !hasEventMessage(st.Events(nil, cluster), "DrainBlocked", msg) {
		cmd.Events = append(cmd.Events, state.Event(cluster, "Warning", "DrainBlocked", msg, now))
	}
}

// SetScheduling cordons (unschedulable), drains (unschedulable and
// draining) or uncordons a hypervisor. A drain tells every cluster with a
// component there.
func (a *operatorAPI) SetScheduling(ctx context.Context, req *pb.SetSchedulingRequest) (*pb.SetSchedulingResponse, error) {
	if req.Drain && !req.Unschedulable {
		return nil, invalid("drain: a draining hypervisor is unschedulable too")
	}
	s := a.s
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	st := s.State()
	old := st.Hypervisor(nil, req.Name)
	if old == nil {
		return nil, fmt.Errorf("hypervisor %q: %w", req.Name, state.ErrNotFound)
	}
	if old.Spec.Unschedulable == req.Unschedulable && old.GetStatus().GetDraining() == req.Drain {
		return &pb.SetSchedulingResponse{Hypervisor: old, Index: st.Index()}, nil
	}
	h := proto.Clone(old).(*pb.Hypervisor)
	if h.Status == nil {
		h.Status = &pb.HypervisorStatus{}
	}
	h.Spec.Unschedulable, h.Status.Draining = req.Unschedulable, req.Drain
	cmd := &pb.ApplyResourcesCommand{Hypervisors: []*pb.Hypervisor{h}}
	if req.Drain {
		now := time.Now()
		var clusters []string
		for _, comp := range st.ComponentsOnHypervisor(nil, req.Name) {
			if !slices.Contains(clusters, comp.Spec.Cluster) {
				clusters = append(clusters, comp.Spec.Cluster)
				cmd.Events = append(cmd.Events, state.Event(comp.Spec.Cluster, "Normal", "Draining",
					fmt.Sprintf("hypervisor %s is draining: the cluster's components there move elsewhere, one at a time", req.Name), now))
			}
		}
	}
	index, err := s.raftApply(ApplyResourcesType, cmd)
	if err != nil {
		return nil, err
	}
	return &pb.SetSchedulingResponse{Hypervisor: s.State().Hypervisor(nil, req.Name), Index: index}, nil
}
