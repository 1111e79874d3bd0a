package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/oneinfra/oneinfra/agent/controlplane"
	"github.com/oneinfra/oneinfra/agent/cri"
	"github.com/oneinfra/oneinfra/agent/host"
	"github.com/oneinfra/oneinfra/agent/ingress"
	"github.com/oneinfra/oneinfra/agent/vpn"
	"github.com/oneinfra/oneinfra/internal/resources"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// Conditions the agent reports on components.
const (
	// condAPIReachable: the cluster's API answers /readyz through this
	// ingress (the coordinator's Ready condition depends on it).
	condAPIReachable = "APIReachable"
	// condEtcdMember: this control-plane replica is a voting etcd member.
	condEtcdMember = "EtcdMember"
	// condAPIServerReady: this control-plane replica's API server answers
	// /readyz.
	condAPIServerReady = "APIServerReady"
	// condVPNEndpoint: the cluster's WireGuard endpoint runs here.
	condVPNEndpoint = "VPNEndpoint"
	// condVPNRoute: this host routes the cluster's VPN through its endpoint.
	condVPNRoute = "VPNRoute"
	// condAddons: the objects worker nodes need are applied in the cluster.
	condAddons = "AddonsApplied"
)

func newDrivers(a *Agent) map[string]driver {
	return map[string]driver{
		resources.RoleControlPlane: &controlPlaneDriver{a: a, leaving: map[string]time.Time{}},
		resources.RoleIngress:      &ingressDriver{a: a, backends: map[string][]string{}},
	}
}

// condition is a component condition; it carries no time, so that an
// unchanged one does not make a new report.
func condition(typ string, err error, okMessage string) *pb.Condition {
	c := &pb.Condition{Type: typ, Status: "True", Reason: "OK", Message: okMessage}
	if err != nil {
		c.Status, c.Reason, c.Message = "False", "Failed", err.Error()
	}
	return c
}

// controlPlaneDriver runs etcd and the Kubernetes control plane.
type controlPlaneDriver struct {
	a *Agent
	// leaving: when each replica being removed was first seen so.
	leaving map[string]time.Time
}

// ingressWaitMax bounds how long a replica being removed keeps its etcd
// member and API server for the ingress to confirm it dropped it (an
// ingress whose agent cannot reach the coordinator never confirms).
const ingressWaitMax = time.Minute

// plan decides once how this etcd member starts (a new cluster, or joining
// the existing one as a learner) and keeps that decision, so the rendered
// pods never change on a restart.
func (d *controlPlaneDriver) plan(ctx context.Context, as *pb.Assignment, paths host.Paths) (*host.Plan, error) {
	name := as.Component.Metadata.Name
	var boot controlplane.EtcdBootstrap
	if saved := d.a.store.decision(name); saved != nil {
		if err := json.Unmarshal(saved, &boot); err != nil {
			return nil, fmt.Errorf("reading the etcd bootstrap decision: %w", err)
		}
	} else {
		var err error
		if boot, err = controlplane.DecideBootstrap(ctx, as, paths); err != nil {
			return nil, err
		}
		b, err := json.Marshal(boot)
		if err != nil {
			return nil, err
		}
		if err := d.a.store.setDecision(name, b); err != nil {
			return nil, err
		}
		d.a.logger.Info("decided how etcd starts", "component", name, "state", boot.State, "initialCluster", boot.InitialCluster)
	}
	return controlplane.Render(as, paths, boot)
}

func (d *controlPlaneDriver) synced(ctx context.Context, as *pb.Assignment, paths host.Paths, _ bool, pods []cri.PodStatus, status *pb.ComponentStatus) {
	if v := as.GetVpn(); v.GetGateway() != "" {
		err := vpn.RouteThrough(v.Gateway, v.Cidr)
		status.Conditions = append(status.Conditions, condition(condVPNRoute, err, "the VPN is routed through "+v.Gateway))
	}
	for _, p := range pods {
		if p.State != cri.PodRunning {
			return
		}
	}
	err := controlplane.PromoteLearners(ctx, as, paths)
	status.Conditions = append(status.Conditions, condition(condEtcdMember, err, "voting etcd member"))
	if err == nil {
		status.Conditions = append(status.Conditions, condition(condAPIServerReady, controlplane.APIServerReady(ctx, as), "kube-apiserver answers /readyz"))
	}
	if err == nil && d.a.assignmentsFresh() {
		// Members the coordinator moved off a dead hypervisor cannot
		// leave by themselves: the survivors take them out. Only on
		// fresh assignments, so a member added since is never a stranger.
		removed, err := controlplane.RemoveStrangers(ctx, as, paths)
		for _, name := range removed {
			d.a.logger.Info("removed an etcd member that is no longer a peer", "component", as.Component.Metadata.Name, "member", name)
		}
		if err != nil {
			d.a.logger.Warn("removing etcd members that are no longer peers", "component", as.Component.Metadata.Name, "err", err)
		}
	}
}

func (d *controlPlaneDriver) removing(ctx context.Context, as *pb.Assignment, paths host.Paths) error {
	name := as.Component.Metadata.Name
	if len(as.ApiServers) > 0 && !as.IngressReleased {
		// The cluster stays: no request may reach an API server whose
		// etcd member is gone, so the ingress drops this one first.
		since, ok := d.leaving[name]
		if !ok {
			since = time.Now()
			d.leaving[name] = since
		}
		if time.Since(since) < ingressWaitMax {
			return fmt.Errorf("%w for the ingress to stop sending requests here", host.ErrWaiting)
		}
		d.a.logger.Warn("the ingress did not confirm it stopped sending requests here; leaving etcd anyway", "component", name, "waited", ingressWaitMax)
	}
	if err := controlplane.RemoveMember(ctx, as, paths); err != nil {
		return err
	}
	delete(d.leaving, name)
	return nil
}

// ingressDriver runs haproxy in front of a cluster's API servers.
type ingressDriver struct {
	a *Agent
	// backends: the API servers each ingress's running haproxy last said
	// it has up (kept when haproxy does not answer).
	backends map[string][]string
}

func (d *ingressDriver) plan(_ context.Context, as *pb.Assignment, paths host.Paths) (*host.Plan, error) {
	return ingress.Render(as, paths)
}

// synced reloads haproxy when only its configuration changed (the pod kept
// running), then checks the API through it.
func (d *ingressDriver) synced(ctx context.Context, as *pb.Assignment, paths host.Paths, filesChanged bool, pods []cri.PodStatus, status *pb.ComponentStatus) {
	if as.GetVpn() != nil {
		status.Conditions = append(status.Conditions, d.a.syncVPN(as, status))
	}
	name := as.Component.Metadata.Name
	for _, p := range pods {
		if p.State != cri.PodRunning {
			delete(d.backends, name)
			return
		}
	}
	if filesChanged {
		if err := ingress.Reload(ctx, paths); err != nil {
			d.a.logger.Warn("reloading haproxy", "component", name, "err", err)
		}
	}
	if up, err := upServers(ctx, paths); err == nil {
		d.backends[name] = up
	} else {
		d.a.logger.Warn("reading haproxy's servers", "component", name, "err", err)
	}
	status.Backends = d.backends[name]
	address := d.a.cfg.PublicAddress
	if address == "" {
		address = d.a.cfg.Address
	}
	err := ingress.Probe(ctx, as, address)
	status.Conditions = append(status.Conditions, condition(condAPIReachable, err, "the API answers /readyz through the ingress"))
	if err == nil && as.GetVpn() != nil {
		err := d.a.applyAddons(ctx, as, address)
		status.Conditions = append(status.Conditions, condition(condAddons, err, "bootstrap tokens, node RBAC, kube-proxy and CoreDNS applied"))
	}
}

func (d *ingressDriver) removing(_ context.Context, as *pb.Assignment, _ host.Paths) error {
	delete(d.backends, as.Component.Metadata.Name)
	if d.a.hub != nil {
		d.a.hub.Remove(as.Component.Spec.Cluster)
	}
	return nil
}

// upServers names the API servers the running haproxy at paths has up:
// those it sends new connections to.
func upServers(ctx context.Context, paths host.Paths) ([]string, error) {
	servers, err := ingress.Servers(ctx, paths)
	if err != nil {
		return nil, err
	}
	var up []string
	for _, s := range servers {
		if s.Up() {
			up = append(up, s.Name)
		}
	}
	return up, nil
}
