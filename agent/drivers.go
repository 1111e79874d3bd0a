package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/oneinfra/oneinfra/agent/controlplane"
	"github.com/oneinfra/oneinfra/agent/cri"
	"github.com/oneinfra/oneinfra/agent/host"
	"github.com/oneinfra/oneinfra/agent/ingress"
	"github.com/oneinfra/oneinfra/agent/vpn"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

func newDrivers(a *Agent) map[string]driver {
	return map[string]driver{
		resources.RoleControlPlane: &controlPlaneDriver{a: a, leaving: map[string]time.Time{}, apis: map[string]*replicaAPI{}},
		resources.RoleIngress:      &ingressDriver{a: a, backends: map[string][]string{}, unloaded: map[string]bool{}},
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
	// apis are what each replica of a VPN cluster keeps to act in its
	// cluster's API (by component).
	apis map[string]*replicaAPI
	// backups takes the etcd backups asked of the replicas.
	backups backupRunner
}

// ingressWaitMax bounds how long a replica being removed keeps its etcd
// member and API server for the ingress to confirm it dropped it (an
// ingress whose agent cannot reach the coordinator never confirms).
const ingressWaitMax = time.Minute

// etcdDecision is how a replica's etcd member starts, as the agent keeps
// it; a Repair marks it discarded, and the next plan decides again.
type etcdDecision struct {
	controlplane.EtcdBootstrap
	Discarded bool `json:"discarded,omitempty"`
}

// plan decides once how this etcd member starts (a new cluster with the
// members placed with it, or joining the existing one as a learner) and
// keeps that decision, so the rendered pods never change on a restart; a
// decision a repair discarded is made again, never with the initial
// cluster.
func (d *controlPlaneDriver) plan(ctx context.Context, as *pb.Assignment, paths host.Paths) (*host.Plan, error) {
	name := as.Component.Metadata.Name
	if d.restoring(as) {
		// No pods: once they are gone, synced restores the etcd data.
		return &host.Plan{Dirs: []string{paths.DataDir()}}, nil
	}
	var saved *etcdDecision
	if b := d.a.store.decision(name); b != nil {
		saved = &etcdDecision{}
		if err := json.Unmarshal(b, saved); err != nil {
			return nil, fmt.Errorf("reading the etcd bootstrap decision: %w", err)
		}
	}
	if saved != nil && !saved.Discarded {
		return controlplane.Render(as, paths, saved.EtcdBootstrap)
	}
	boot, err := controlplane.DecideBootstrap(ctx, as, paths, saved == nil)
	if err != nil {
		return nil, err
	}
	if saved != nil {
		boot.Attempt = saved.Attempt + 1
	}
	if err := d.setDecision(name, etcdDecision{EtcdBootstrap: boot}); err != nil {
		return nil, err
	}
	d.a.logger.Info("decided how etcd starts", "component", name, "state", boot.State, "initialCluster", boot.InitialCluster, "attempt", boot.Attempt)
	return controlplane.Render(as, paths, boot)
}

func (d *controlPlaneDriver) setDecision(name string, dec etcdDecision) error {
	b, err := json.Marshal(dec)
	if err != nil {
		return err
	}
	return d.a.store.setDecision(name, b)
}

// restoring reports whether the replica's etcd data is older than the
// restore its assignment asks for.
func (d *controlPlaneDriver) restoring(as *pb.Assignment) bool {
	r := as.GetRestore()
	return r != nil && d.restoredGeneration(as.Component.Metadata.Name) < r.Generation
}

func (d *controlPlaneDriver) restoredGeneration(name string) uint64 {
	n, _ := strconv.ParseUint(d.a.store.meta("restored/"+name), 10, 64)
	return n
}

// restore restores the replica's etcd data from the backup its
// assignment names, its pods stopped, and records the generation done;
// the next plan starts its pods again on that data.
func (d *controlPlaneDriver) restore(ctx context.Context, as *pb.Assignment, paths host.Paths, pods []cri.PodStatus, status *pb.ComponentStatus) {
	name, r := as.Component.Metadata.Name, as.GetRestore()
	status.State = vocab.StatePending
	if len(pods) > 0 {
		status.Message = fmt.Sprintf("restoring backup %s: stopping the pods", r.Backup.GetId())
		return
	}
	start := time.Now()
	err := controlplane.Restore(ctx, as, paths, r)
	if err == nil {
		err = d.a.store.setMeta("restored/"+name, strconv.FormatUint(r.Generation, 10))
	}
	if err != nil {
		status.Message = fmt.Sprintf("restoring backup %s: %v", r.Backup.GetId(), err)
		d.a.logger.Warn("restoring etcd data from a backup", "component", name, "backup", r.Backup.GetId(), "err", err)
		return
	}
	status.Message = fmt.Sprintf("restored backup %s: starting", r.Backup.GetId())
	d.a.logger.Info("etcd data restored from a backup", "component", name, "backup", r.Backup.GetId(), "generation", r.Generation, "took", time.Since(start).Round(time.Millisecond))
}

func (d *controlPlaneDriver) synced(ctx context.Context, as *pb.Assignment, paths host.Paths, _ bool, pods []cri.PodStatus, status *pb.ComponentStatus) {
	if d.restoring(as) {
		d.restore(ctx, as, paths, pods, status)
		return
	}
	status.RestoreGeneration = d.restoredGeneration(as.Component.Metadata.Name)
	// The pods were reconciled with the assignment's certificates: once
	// the replica is Running again, it runs them.
	status.CertGeneration = as.CertGeneration
	status.TrustGeneration = as.TrustGeneration
	if v := as.GetVpn(); v.GetGateway() != "" {
		err := vpn.RouteThrough(v.Gateway, v.Cidr)
		status.Conditions = append(status.Conditions, condition(vocab.CondVPNRoute, err, "the VPN is routed through "+v.Gateway))
	}
	for _, p := range pods {
		if p.State != cri.PodRunning {
			if p.Name == controlplane.EtcdPod {
				d.repair(ctx, as, paths, p)
			}
			return
		}
	}
	err := controlplane.PromoteLearners(ctx, as, paths)
	status.Conditions = append(status.Conditions, condition(vocab.CondEtcdMember, err, "voting etcd member"))
	if err == nil {
		status.Backups = d.backups.report(ctx, d, as)
		ready := controlplane.APIServerReady(ctx, as)
		status.Conditions = append(status.Conditions, condition(vocab.CondAPIServerReady, ready, "kube-apiserver answers /readyz"))
		if ready == nil && as.GetVpn() != nil {
			d.actInClusterAPI(ctx, as)
		}
		// Members the coordinator removed for good that are still listed
		// (moved off a dead hypervisor, whose agent cannot take them out)
		// go: the assignment's view says which, so a member added since
		// is never taken for one.
		removed, err := controlplane.RemoveGone(ctx, as, paths)
		for _, name := range removed {
			d.a.logger.Info("removed an etcd member the coordinator removed", "component", as.Component.Metadata.Name, "member", name)
		}
		if err != nil {
			d.a.logger.Warn("removing etcd members the coordinator removed", "component", as.Component.Metadata.Name, "err", err)
		}
	}
}

// failingRestarts is how many restarts of an etcd container that never
// started make its bootstrap decision suspect.
const failingRestarts = 2

// repair mends an etcd member whose pod does not run and that cannot work
// as it is (controlplane.Diagnose): it discards the bootstrap decision
// and, for a member that was removed from its cluster, sets its data
// aside, so that the next sync joins it again; an event says which.
func (d *controlPlaneDriver) repair(ctx context.Context, as *pb.Assignment, paths host.Paths, etcd cri.PodStatus) {
	failing := false
	for _, c := range etcd.Containers {
		failing = failing || (c.State != cri.ContainerRunning && c.RestartCount >= failingRestarts)
	}
	fix, why := controlplane.Diagnose(ctx, as, paths, failing)
	if fix == controlplane.NoRepair {
		return
	}
	name := as.Component.Metadata.Name
	var dec etcdDecision
	if b := d.a.store.decision(name); b != nil {
		if err := json.Unmarshal(b, &dec); err != nil {
			d.a.logger.Warn("reading the etcd bootstrap decision", "component", name, "err", err)
			return
		}
	}
	reason := "EtcdRedecided"
	if fix == controlplane.Rejoin {
		reason = "EtcdRejoining"
		if err := controlplane.SetAsideData(paths); err != nil {
			d.a.logger.Warn("setting a removed etcd member's data aside", "component", name, "err", err)
			return
		}
	}
	dec.Discarded = true
	if err := d.setDecision(name, dec); err != nil {
		d.a.logger.Warn("discarding the etcd bootstrap decision", "component", name, "err", err)
		return
	}
	d.a.logger.Warn("repairing an etcd member", "component", name, "repair", reason, "why", why)
	d.a.event(name, "Warning", reason, why)
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
	delete(d.apis, name)
	return nil
}

// ingressDriver runs haproxy in front of a cluster's API servers.
type ingressDriver struct {
	a *Agent
	// backends: the API servers each ingress's running haproxy last said
	// it has up (kept when haproxy does not answer).
	backends map[string][]string
	// unloaded: ingresses whose haproxy has not loaded their files since
	// they changed (a reload failed): tried again at every sync.
	unloaded map[string]bool
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
	if filesChanged || d.unloaded[name] {
		if err := ingress.Reload(ctx, paths); err != nil {
			d.unloaded[name] = true
			d.a.logger.Warn("reloading haproxy; trying again at the next sync", "component", name, "err", err)
		} else {
			delete(d.unloaded, name)
		}
	}
	if !d.unloaded[name] {
		// haproxy runs with the assignment's certificates and CAs.
		status.TrustGeneration = as.TrustGeneration
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
	status.Conditions = append(status.Conditions, condition(vocab.CondAPIReachable, err, "the API answers /readyz through the ingress"))
	if err == nil && as.GetVpn() != nil {
		err := d.a.applyAddons(ctx, as, address)
		status.Conditions = append(status.Conditions, condition(vocab.CondAddons, err, "bootstrap tokens, node RBAC, kube-proxy and CoreDNS applied"))
	}
}

func (d *ingressDriver) removing(_ context.Context, as *pb.Assignment, _ host.Paths) error {
	delete(d.backends, as.Component.Metadata.Name)
	delete(d.unloaded, as.Component.Metadata.Name)
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
