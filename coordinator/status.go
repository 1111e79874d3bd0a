package coordinator

import (
	"fmt"
	"strings"
	"time"

	"github.com/oneinfra/oneinfra/coordinator/scheduler"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Cluster condition types.
const (
	CondScheduled         = "Scheduled"
	CondControlPlaneReady = "ControlPlaneReady"
	CondIngressReady      = "IngressReady"
	CondReady             = "Ready"
	// CondBackedUp: the newest finished etcd backup was taken (False:
	// it failed, saying why).
	CondBackedUp = "BackedUp"
)

// clusterStatus derives a cluster's status from its placement and the
// reports of its components' agents. It keeps transition times of
// conditions that did not change.
func clusterStatus(c *pb.Cluster, comps []*pb.Component, hypervisors []*pb.Hypervisor, schedErr error, now time.Time) *pb.ClusterStatus {
	old := c.GetStatus()
	st := &pb.ClusterStatus{}
	for _, cond := range old.GetConditions() {
		st.Conditions = append(st.Conditions, proto.Clone(cond).(*pb.Condition))
	}
	set := func(typ string, ok bool, reason, message string) {
		status := "False"
		if ok {
			status = "True"
		}
		st.Conditions = resources.SetCondition(st.Conditions, &pb.Condition{
			Type: typ, Status: status, Reason: reason, Message: message, LastTransitionTime: timestamppb.New(now),
		})
	}
	var cp, ingress []*pb.Component
	for _, comp := range comps {
		if comp.Metadata.DeletionTimestamp != nil {
			continue
		}
		if comp.Spec.Role == resources.RoleIngress {
			ingress = append(ingress, comp)
		} else {
			cp = append(cp, comp)
		}
	}
	if len(ingress) > 0 {
		h := hypervisorByName(hypervisors, ingress[0].Spec.Hypervisor)
		st.ApiServerEndpoint = "https://" + endpointOf(h, ingress[0], "apiserver", true)
		if c.Spec.Vpn.GetEnabled() {
			st.VpnEndpoint = endpointOf(h, ingress[0], "wireguard", true)
		}
	}

	st.Restore = old.GetRestore()
	// Names are never used twice: the next replica's index only grows.
	st.NextReplicaIndex = max(old.GetNextReplicaIndex(), uint32(scheduler.NextIndex(c.Metadata.Name, resources.RoleControlPlane, comps)))

	want := int(c.Spec.ControlPlane.GetReplicas())
	if schedErr != nil {
		set(CondScheduled, false, schedulingReason(schedErr), schedErr.Error())
	} else {
		set(CondScheduled, true, "Placed", fmt.Sprintf("%d control-plane replica(s) and the ingress are placed", want))
	}
	cpReady, cpWhy := componentsReady(cp, want, "control-plane replica")
	set(CondControlPlaneReady, cpReady, readyReason(cpReady), cpWhy)
	ingReady, ingWhy := componentsReady(ingress, 1, "ingress")
	set(CondIngressReady, ingReady, readyReason(ingReady), ingWhy)

	apiReady, apiWhy := false, "no ingress reports on the API yet"
	if len(ingress) > 0 {
		if cond := resources.FindCondition(ingress[0].GetStatus().GetConditions(), vocab.CondAPIReachable); cond != nil {
			apiReady, apiWhy = cond.Status == "True", cond.Message
		}
	}
	switch {
	case schedErr != nil:
		set(CondReady, false, "Unschedulable", schedErr.Error())
	case !cpReady:
		set(CondReady, false, "ControlPlaneNotReady", cpWhy)
	case !ingReady:
		set(CondReady, false, "IngressNotReady", ingWhy)
	case !apiReady:
		set(CondReady, false, "APIUnreachable", apiWhy)
	default:
		set(CondReady, true, "APIReady", "the API answers /readyz through the ingress at "+st.ApiServerEndpoint)
	}

	wasReady := old.GetPhase() == resources.PhaseReady || old.GetPhase() == resources.PhaseDegraded
	switch {
	case c.Metadata.DeletionTimestamp != nil:
		st.Phase = resources.PhaseDeleting
	case schedErr == nil && cpReady && ingReady && apiReady:
		st.Phase = resources.PhaseReady
	case wasReady:
		st.Phase = resources.PhaseDegraded
	case schedErr != nil || len(cp) < want || len(ingress) == 0:
		st.Phase = resources.PhasePending
	default:
		st.Phase = resources.PhaseProvisioning
	}
	return st
}

func readyReason(ok bool) string {
	if ok {
		return "Running"
	}
	return "NotRunning"
}

// componentsReady says whether want components are placed and running,
// and if not, why, naming each component that is not. One more than wanted
// (a replacement starting while a hypervisor drains) leaves the wanted
// number running: that is ready.
func componentsReady(comps []*pb.Component, want int, what string) (bool, string) {
	var why []string
	if missing := want - len(comps); missing > 0 {
		why = append(why, fmt.Sprintf("%d %s(s) not placed", missing, what))
	}
	running := 0
	for _, comp := range comps {
		s := comp.GetStatus()
		switch {
		case s.GetState() == "":
			why = append(why, fmt.Sprintf("%s on %s: no report from its agent yet", comp.Metadata.Name, comp.Spec.Hypervisor))
		case s.GetState() != vocab.StateRunning:
			msg := fmt.Sprintf("%s on %s: %s", comp.Metadata.Name, comp.Spec.Hypervisor, s.GetState())
			if s.GetMessage() != "" {
				msg += ": " + s.GetMessage()
			}
			why = append(why, msg)
		default:
			running++
		}
	}
	if running < want {
		return false, strings.Join(why, "; ")
	}
	return true, fmt.Sprintf("%d %s(s) running", running, what)
}
