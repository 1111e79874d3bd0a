package coordinator

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/oneinfra/oneinfra/coordinator/scheduler"
	"github.com/oneinfra/oneinfra/coordinator/state"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Rescheduling: the components of a hypervisor whose committed health is
// dead are placed elsewhere.
//
//   - A control-plane replica on a dead hypervisor is replaced by a new one
//     on another private hypervisor (the scheduler takes neither dead nor
//     suspect ones), in the same entry that marks the old one for removal.
//     Its agent is gone, so it cannot leave etcd itself: it is left out
//     of the etcd members in every assignment (replicas marked for
//     removal on a dead hypervisor are), so the surviving replicas'
//     agents remove it, which also lets the replacement join.
//   - One replacement at a time per cluster: none starts while a live
//     replica on a hypervisor that is not dead is not Running yet (a
//     replacement catching up, a replica starting) or a replica of an
//     alive hypervisor is being removed; and only while the Running
//     replicas outside dead hypervisors are a quorum of the live replicas,
//     since only a quorum can remove the dead member. Without one, the
//     cluster gets a NotReplacing event and keeps waiting.
//   - An ingress on a dead public hypervisor is replaced by one on another
//     public hypervisor (placement.go: new ports, API server certificates
//     issued again for its address).
//   - A component marked for removal on a dead hypervisor is forgotten
//     (PlaceCommand.forget, which frees its ports) without its agent's
//     report once the replicas of its role outside dead hypervisors are as
//     many as wanted and all Running: the replacement runs, and etcd has
//     lost the old member since it was marked (a Running replica is a
//     voting member). In a cluster being deleted it is forgotten at once.

// onDead reports whether comp's hypervisor is dead.
func onDead(hypervisors []*pb.Hypervisor, comp *pb.Component) bool {
	return moveReason(hypervisors, comp) == "dead"
}

// replacingEvent tells that old, on a hypervisor that is dead or draining
// (why), is replaced.
func replacingEvent(old, replacement *pb.Component, why string, now time.Time) *pb.Event {
	typ := "Normal"
	if why == "dead" {
		typ = "Warning"
	}
	return state.Event(old.Spec.Cluster, typ, "Replacing",
		fmt.Sprintf("replacing %s %s on hypervisor %s (%s) with %s on hypervisor %s",
			old.Spec.Role, old.Metadata.Name, old.Spec.Hypervisor, why, replacement.Metadata.Name, replacement.Spec.Hypervisor), now)
}

// replaceDeadReplica replaces at most one control-plane replica on a dead
// hypervisor. It returns the live replicas without the replaced one, and
// the replacement (the removal and the event are in cmd; its
// certificates come once its agent gives their keys). A scheduling error says no hypervisor could take the replacement.
func (s *Server) replaceDeadReplica(st *state.Store, c *pb.Cluster, have []*pb.Component, hypervisors []*pb.Hypervisor, all []*pb.Component,
	cmd *pb.PlaceCommand, now time.Time) ([]*pb.Component, *pb.Component, error) {
	name := c.Metadata.Name
	want := int(c.Spec.ControlPlane.GetReplicas())
	if len(have) > want {
		return have, nil, nil // scale down removes dead replicas first
	}
	var dead []*pb.Component
	running := 0
	for _, comp := range have {
		switch {
		case onDead(hypervisors, comp):
			dead = append(dead, comp)
		case comp.GetStatus().GetState() == vocab.StateRunning:
			running++
		default:
			return have, nil, nil // a replica is still starting: one at a time
		}
	}
	if len(dead) == 0 {
		return have, nil, nil
	}
	for _, comp := range all {
		if memberOf(comp, name, resources.RoleControlPlane) &&
			comp.Metadata.DeletionTimestamp != nil && !onDead(hypervisors, comp) {
			return have, nil, nil // a replica is leaving etcd by itself
		}
	}
	sort.Slice(dead, func(i, j int) bool { return dead[i].Metadata.Name < dead[j].Metadata.Name })
	old := dead[0]
	if quorum := len(have)/2 + 1; running < quorum {
		lost := len(dead) == len(have) // every hypervisor holding its data
		if b := newestTaken(st.Backups(nil, name)); lost && b != nil && s.cfg.BackupTarget != "" {
			return s.rebuild(c, dead, hypervisors, all, b, cmd, now)
		}
		msg := fmt.Sprintf("not replacing %s on dead hypervisor %s: %d of %d control-plane replicas run outside dead hypervisors, etcd needs %d to replace a member",
			old.Metadata.Name, old.Spec.Hypervisor, running, len(have), quorum)
		if lost {
			msg += ", and the cluster has no backup to rebuild from: waiting for the hypervisor"
		}
		if !hasEventMessage(st.Events(nil, name), "NotReplacing", msg) {
			cmd.Events = append(cmd.Events, state.Event(name, "Warning", "NotReplacing", msg, now))
		}
		return have, nil, nil
	}
	repl, err := placeReplica(c, hypervisors, all, cmd)
	if repl == nil {
		return have, nil, fmt.Errorf("replacing %s on dead hypervisor %s: %w", old.Metadata.Name, old.Spec.Hypervisor, err)
	}
	cmd.Remove = append(cmd.Remove, old.Metadata.Name)
	cmd.Events = append(cmd.Events, replacingEvent(old, repl, "dead", now))
	rest := make([]*pb.Component, 0, len(have)-1)
	for _, comp := range have {
		if comp != old {
			rest = append(rest, comp)
		}
	}
	return rest, repl, nil
}

// forgetOnDead adds to cmd the components of c marked for removal on dead
// hypervisors that may be forgotten now, with a Moved event each.
func forgetOnDead(c *pb.Cluster, comps []*pb.Component, hypervisors []*pb.Hypervisor, cmd *pb.PlaceCommand, now time.Time) {
	deletingCluster := c.Metadata.DeletionTimestamp != nil
	want := map[string]int{resources.RoleControlPlane: int(c.Spec.ControlPlane.GetReplicas()), resources.RoleIngress: 1}
	where := map[string][]string{} // role: hypervisors of its running replicas outside dead ones
	ready := map[string]bool{}
	for role, n := range want {
		count, ok := 0, true
		for _, comp := range comps {
			if comp.Spec.Role != role || comp.Metadata.DeletionTimestamp != nil || onDead(hypervisors, comp) {
				continue
			}
			count++
			ok = ok && comp.GetStatus().GetState() == vocab.StateRunning
			where[role] = append(where[role], comp.Spec.Hypervisor)
		}
		ready[role] = ok && count >= n
		sort.Strings(where[role])
	}
	for _, comp := range comps {
		if comp.Metadata.DeletionTimestamp == nil || !onDead(hypervisors, comp) {
			continue
		}
		if !deletingCluster && !ready[comp.Spec.Role] {
			continue
		}
		cmd.Forget = append(cmd.Forget, comp.Metadata.Name)
		msg := fmt.Sprintf("%s %s forgotten on hypervisor %s (dead) without its agent", comp.Spec.Role, comp.Metadata.Name, comp.Spec.Hypervisor)
		reason := "Forgotten"
		if !deletingCluster {
			reason = "Moved"
			msg = fmt.Sprintf("%s %s moved off hypervisor %s (dead): its replacement runs, %s now on %s; the old one is forgotten",
				comp.Spec.Role, comp.Metadata.Name, comp.Spec.Hypervisor, comp.Spec.Role, strings.Join(where[comp.Spec.Role], ", "))
		}
		cmd.Events = append(cmd.Events, state.Event(c.Metadata.Name, "Normal", reason, msg, now))
	}
}

func hasEventMessage(events []*pb.Event, reason, msg string) bool {
	for _, e := range events {
		if e.Reason == reason && e.Message == msg {
			return true
		}
	}
	return false
}

// rebuild brings back a cluster whose every replica's hypervisor is dead,
// so that its etcd data cannot come back: one replica is placed on a live
// hypervisor and restored from the newest backup b (a restore of the
// next generation, see backuprestore.go), the dead ones removed; the
// others are placed once it runs, and join it. What was written since
// the backup is lost, and said so.
func (s *Server) rebuild(c *pb.Cluster, dead []*pb.Component, hypervisors []*pb.Hypervisor, all []*pb.Component,
	b *pb.Backup, cmd *pb.PlaceCommand, now time.Time) ([]*pb.Component, *pb.Component, error) {
	name := c.Metadata.Name
	repl, err := placeReplica(c, hypervisors, all, cmd)
	if repl == nil {
		return nil, nil, fmt.Errorf("rebuilding from backup %s: %w", b.Id, err)
	}
	var gone []string
	for _, old := range dead {
		cmd.Remove = append(cmd.Remove, old.Metadata.Name)
		gone = append(gone, old.Spec.Hypervisor)
	}
	if c.Status == nil {
		c.Status = &pb.ClusterStatus{}
	}
	c.Status.Restore = &pb.ClusterRestore{Backup: b.Id, Generation: c.Status.GetRestore().GetGeneration() + 1, State: RestoreRestoring,
		Requested: timestamppb.New(now), Revision: b.Revision, Taken: b.Finished, Reason: "rebuild"}
	cmd.Events = append(cmd.Events, state.Event(name, "Warning", "Rebuilding", fmt.Sprintf(
		"every control-plane replica's hypervisor is dead (%s): rebuilding on %s from backup %s, taken %s ago (etcd revision %d); what was written since is lost",
		strings.Join(gone, ", "), repl.Spec.Hypervisor, b.Id, now.Sub(b.GetFinished().AsTime()).Round(time.Second), b.Revision), now))
	return nil, repl, nil
}

// placeReplica places one more control-plane replica of c in cmd; nil
// and why (a scheduling error when nothing fits) if it cannot.
func placeReplica(c *pb.Cluster, hypervisors []*pb.Hypervisor, all []*pb.Component, cmd *pb.PlaceCommand) (*pb.Component, error) {
	comps, err := scheduler.NewControlPlaneComponents(c.Metadata.Name, 1, int(c.GetStatus().GetNextReplicaIndex()), hypervisors, all)
	if len(comps) == 0 {
		return nil, err
	}
	cmd.Components = append(cmd.Components, comps[0])
	return comps[0], nil
}
