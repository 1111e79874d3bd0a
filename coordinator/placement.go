package coordinator

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/oneinfra/oneinfra/coordinator/pki"
	"github.com/oneinfra/oneinfra/coordinator/scheduler"
	"github.com/oneinfra/oneinfra/coordinator/state"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// vpnPrefixLen is the size of the VPN block a cluster gets from the pool.
const vpnPrefixLen = 24

// reconcileClusters brings every cluster's placement and status up to
// date, one Raft entry per cluster that changed.
func (s *Server) reconcileClusters(now time.Time) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	var errs []error
	var fleet fleetLists
	for _, c := range s.State().Clusters(nil) {
		// Each cluster is planned on one consistent view, which includes
		// what the clusters planned before it wrote.
		st := s.State().View()
		if c = st.Cluster(nil, c.Metadata.Name); c == nil {
			continue
		}
		hypervisors, all := fleet.of(st)
		cmd, err := s.planCluster(st, c, hypervisors, all, now)
		if err == nil && cmd != nil {
			_, err = s.raftApply(PlaceType, cmd)
		}
		if err == nil {
			err = s.advanceRotation(c.Metadata.Name, now)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("cluster %s: %w", c.Metadata.Name, err))
		}
	}
	return errors.Join(errs...)
}

// fleetLists are every hypervisor and component as of one state of their
// tables, listed again only once a write moved either: a pass over many
// clusters reads the fleet once, not once per cluster.
type fleetLists struct {
	index       uint64
	hypervisors []*pb.Hypervisor
	components  []*pb.Component
}

// of returns the lists as of st, which the caller may append to but not
// change.
func (f *fleetLists) of(st *state.Store) ([]*pb.Hypervisor, []*pb.Component) {
	if index := st.Index(state.TableHypervisors, state.TableComponents); index != f.index || f.hypervisors == nil {
		f.index, f.hypervisors, f.components = index, st.Hypervisors(nil), st.Components(nil)
	}
	return slices.Clip(f.hypervisors), slices.Clip(f.components)
}

// memberOf reports whether comp is a component of cluster in role: not an
// orphaned one (ComponentSpec.orphaned), which belongs to no cluster but
// keeps its name and ports among all components.
func memberOf(comp *pb.Component, cluster, role string) bool {
	return comp.Spec.Cluster == cluster && comp.Spec.Role == role && !comp.Spec.Orphaned
}

// planCluster decides what a cluster needs now, given every hypervisor and
// component of st: new components, components to remove, a VPN block, a
// new status. It returns nil when nothing changes.
func (s *Server) planCluster(st *state.Store, c *pb.Cluster, hypervisors []*pb.Hypervisor, all []*pb.Component, now time.Time) (*pb.PlaceCommand, error) {
	name := c.Metadata.Name
	cmd := &pb.PlaceCommand{Cluster: name, Time: timestamppb.New(now)}
	var schedErr error
	if c.Metadata.DeletionTimestamp == nil {
		schedErr = s.place(st, c, hypervisors, all, cmd, now)
	}
	if schedErr != nil && !isSchedulingError(schedErr) {
		return nil, schedErr
	}
	forgetOnDead(c, st.ComponentsOfCluster(nil, name), hypervisors, cmd, now)
	var mine []*pb.Component
	for _, comp := range st.ComponentsOfCluster(nil, name) {
		if !slices.Contains(cmd.Forget, comp.Metadata.Name) {
			mine = append(mine, comp)
		}
	}
	mine = append(mine, cmd.Components...)
	status := clusterStatus(c, mine, hypervisors, schedErr, now)
	setBackupCondition(status, c.Spec.GetBackup(), st.Backups(nil, name), now)
	var cp []*pb.Component
	for _, comp := range mine {
		if comp.Spec.Role == resources.RoleControlPlane && comp.Metadata.DeletionTimestamp == nil {
			cp = append(cp, comp)
		}
	}
	if e := finishRestore(status, name, cp, now); e != nil {
		cmd.Events = append(cmd.Events, e)
	}
	if len(cmd.Components) == 0 && len(cmd.Certs) == 0 && len(cmd.Remove) == 0 && len(cmd.Forget) == 0 &&
		len(cmd.Events) == 0 && cmd.VpnCidr == "" && sameStatus(c.Status, status) {
		return nil, nil
	}
	if old := resources.FindCondition(c.GetStatus().GetConditions(), CondScheduled); schedErr != nil &&
		(old == nil || old.Status != "False" || old.Message != schedErr.Error()) {
		cmd.Events = append(cmd.Events, state.Event(name, "Warning", schedulingReason(schedErr), schedErr.Error(), now))
	}
	if phase := status.Phase; phase != c.GetStatus().GetPhase() {
		cmd.Events = append(cmd.Events, state.Event(name, "Normal", "Phase"+phase, fmt.Sprintf("cluster is %s", phase), now))
	}
	cmd.Status = status
	return cmd, nil
}

// place fills cmd with the components the cluster lacks or has too many
// of. A scheduling error (nothing fits) is returned for the status; the
// components that did fit are placed all the same.
func (s *Server) place(st *state.Store, c *pb.Cluster, hypervisors []*pb.Hypervisor, all []*pb.Component, cmd *pb.PlaceCommand, now time.Time) error {
	name := c.Metadata.Name
	clusterPKI := st.ClusterPKI(nil, name)
	if clusterPKI == nil {
		return fmt.Errorf("cluster %s has no PKI", name)
	}
	live := map[string][]*pb.Component{}
	for _, comp := range all {
		if memberOf(comp, name, comp.Spec.Role) && comp.Metadata.DeletionTimestamp == nil {
			live[comp.Spec.Role] = append(live[comp.Spec.Role], comp)
		}
	}
	var errs []error
	if c.Spec.Vpn.GetEnabled() && c.Spec.Vpn.GetCidr() == "" {
		cidr, err := scheduler.AllocateVPNCIDR(s.vpnPool(st), vpnPrefixLen, takenVPNCIDRs(st, name))
		if err != nil {
			errs = append(errs, err)
		} else {
			cmd.VpnCidr = cidr
		}
	}
	// An ingress on a dead or draining hypervisor is replaced by one on
	// another public hypervisor (new ports, its address in the API
	// servers' certificates below); the old one is marked for removal (and
	// forgotten once the new one runs if its hypervisor is dead). Without
	// another public hypervisor it stays.
	var replacedIngress *pb.Component
	why := ""
	if ing := live[resources.RoleIngress]; len(ing) > 0 {
		if why = moveReason(hypervisors, ing[0]); why != "" {
			replacedIngress = ing[0]
			delete(live, resources.RoleIngress)
		}
	}
	if len(live[resources.RoleIngress]) == 0 {
		comp, err := scheduler.NewIngressComponent(name, hypervisors, all)
		if err != nil {
			if replacedIngress != nil {
				live[resources.RoleIngress] = []*pb.Component{replacedIngress}
				err = fmt.Errorf("replacing ingress %s on %s hypervisor %s: %w", replacedIngress.Metadata.Name, why, replacedIngress.Spec.Hypervisor, err)
				if why == "draining" {
					// The cluster is fine where it is: the drain waits.
					drainBlocked(st, name, err.Error(), cmd, now)
					err = nil
				}
			}
			if err != nil {
				errs = append(errs, err)
			}
		} else {
			// Its certificates come once its agent gives their keys.
			all = append(all, comp)
			live[resources.RoleIngress] = []*pb.Component{comp}
			cmd.Components = append(cmd.Components, comp)
			if replacedIngress != nil {
				cmd.Remove = append(cmd.Remove, replacedIngress.Metadata.Name)
				cmd.Events = append(cmd.Events, replacingEvent(replacedIngress, comp, why, now))
			} else {
				cmd.Events = append(cmd.Events, placedEvent(comp, now))
			}
		}
	}
	endpointHost := ""
	if ing := live[resources.RoleIngress]; len(ing) > 0 {
		endpointHost = hypervisorByName(hypervisors, ing[0].Spec.Hypervisor).GetSpec().GetPublicAddress()
	}
	// Nodes reach the API through the tunnel, at the VPN endpoint's address.
	var tunnelHosts []string
	if cidr := cmp.Or(c.Spec.Vpn.GetCidr(), cmd.VpnCidr); c.Spec.Vpn.GetEnabled() && cidr != "" {
		if hub, err := scheduler.EndpointAddress(cidr); err == nil {
			tunnelHosts = append(tunnelHosts, hub)
		}
	}
	identity := func(comp *pb.Component) pki.ControlPlaneIdentity {
		return pki.ControlPlaneIdentity{
			Validity:            s.cfg.certValidity(),
			Component:           comp.Metadata.Name,
			HypervisorAddresses: []string{hypervisorByName(hypervisors, comp.Spec.Hypervisor).GetSpec().GetAddress()},
			IngressAddresses:    tunnelHosts,
			APIServerHost:       endpointHost,
			ExtraSANs:           c.Spec.ApiServer.GetExtraSans(),
			ServiceCIDR:         c.Spec.Networking.GetServiceCidr(),
		}
	}
	// issue issues a replica's next set for the spare keys its agent gave
	// (pki.ErrNoKeys until it has).
	issue := func(comp *pb.Component) (*pb.ComponentCerts, error) {
		certs, err := pki.ControlPlaneCerts(clusterPKI, identity(comp), st.ComponentCerts(nil, comp.Metadata.Name).GetSpareKeys(), now)
		if err != nil {
			return nil, fmt.Errorf("issuing certificates of %s: %w", comp.Metadata.Name, err)
		}
		return certs, nil
	}
	want := int(c.Spec.ControlPlane.GetReplicas())
	have := live[resources.RoleControlPlane]
	// A replica on a dead hypervisor is replaced (one at a time, with
	// quorum): the new one is placed, the old one marked for removal.
	have, replacement, err := s.replaceDeadReplica(st, c, have, hypervisors, all, cmd, now)
	if err != nil {
		if !isSchedulingError(err) {
			return err
		}
		errs = append(errs, err)
	}
	for _, comp := range have {
		old := st.ComponentCerts(nil, comp.Metadata.Name)
		if len(old.GetCerts()) == 0 {
			// A new replica gets its first set once its agent gave the
			// keys.
			fresh, err := issue(comp)
			if errors.Is(err, pki.ErrNoKeys) {
				continue
			}
			if err != nil {
				return err
			}
			cmd.Certs = append(cmd.Certs, fresh)
			continue
		}
		// An API server placed before its ingress (or before the ingress
		// moved) lacks the ingress address in its serving certificate:
		// that one is issued again in place, for the same key (the API
		// server reads it again by itself); the others, which its pod
		// holds in memory, stay.
		stale := endpointHost != "" && !certNames(old, vocab.APIServerCert, endpointHost)
		for _, h := range tunnelHosts {
			stale = stale || !certNames(old, vocab.APIServerCert, h)
		}
		if !stale {
			continue
		}
		next, err := withServing(old, func(kp *pb.KeyPair) (*pb.KeyPair, error) {
			cert, err := tlsutil.ParseCertPEM(kp.GetCertPem())
			if err != nil {
				return nil, fmt.Errorf("the serving certificate of %s: %w", comp.Metadata.Name, err)
			}
			return pki.APIServerServingCert(clusterPKI, identity(comp), cert.RawSubjectPublicKeyInfo, now)
		})
		if err != nil {
			return err
		}
		cmd.Certs = append(cmd.Certs, next)
	}
	due := newDueCheck(clusterPKI, now)
	ingresses := liveIngresses(all, name, hypervisors)
	// A CA rotation's stage reaches the ingress once the control plane
	// holds it: the add-ons it applies then start again with the cluster
	// CA the controller-managers publish (kube-root-ca.crt).
	cpHolds := !slices.ContainsFunc(have, func(comp *pb.Component) bool {
		return trustStale(clusterPKI, st.ComponentCerts(nil, comp.Metadata.Name))
	})
	if err := renewIngressCerts(st, clusterPKI, due, ingresses, cpHolds, tunnelHosts, s.cfg.certValidity(), cmd); err != nil {
		return err
	}
	// A replica leaves its hypervisor when that is dead or draining, and a
	// single replica when its certificates are due.
	leaving := func(comp *pb.Component) string {
		if why := moveReason(hypervisors, comp); why != "" {
			return why
		}
		return certsDueMove(st, c, clusterPKI, due, comp)
	}
	if replacement != nil {
		all = append(all, replacement)
		have = append(have, replacement)
	}
	// A leaving replica is moved make-before-break: one more is placed
	// now, the old one removed below once that one runs.
	var drained *pb.Component
	if replacement == nil {
		drained = drainSurge(c, have, leaving, all)
	}
	// Certificates renew one replica at a time, starting only while the
	// cluster is steady (see rolling.go): every live ingress, whatever its
	// state, has every replica up.
	servesAll := func(in *pb.Component) bool {
		return in.Metadata.DeletionTimestamp != nil || !slices.ContainsFunc(have, func(comp *pb.Component) bool {
			return !slices.Contains(in.GetStatus().GetBackends(), comp.Metadata.Name)
		})
	}
	steady := replacement == nil && drained == nil && len(have) == want && servingAll(have, ingresses) &&
		!slices.ContainsFunc(ingresses, func(in *pb.Component) bool { return !servesAll(in) }) &&
		!slices.ContainsFunc(have, func(comp *pb.Component) bool { return leaving(comp) != "" }) &&
		!slices.ContainsFunc(all, func(comp *pb.Component) bool {
			return memberOf(comp, name, resources.RoleControlPlane) && comp.Metadata.DeletionTimestamp != nil
		})
	var allIngresses []*pb.Component
	for _, comp := range all {
		if memberOf(comp, name, resources.RoleIngress) {
			allIngresses = append(allIngresses, comp)
		}
	}
	r := &roller{st: st, cluster: c, pki: clusterPKI, due: due, deadline: renewalDeadline(s.cfg.certValidity()),
		ingresses: allIngresses, hypervisors: hypervisors, issue: issue, cmd: cmd}
	if err := r.roll(have, steady); err != nil {
		return err
	}
	// While a restore runs, the member set stays the one it restores.
	restoring := c.GetStatus().GetRestore().GetState() == RestoreRestoring
	switch {
	case restoring:
	case len(have) < want || drained != nil:
		n := want - len(have)
		if drained != nil {
			n = 1
		}
		comps, err := scheduler.NewControlPlaneComponents(name, n, int(c.GetStatus().GetNextReplicaIndex()), hypervisors, all)
		if err == nil && len(comps) == n && c.GetStatus().GetNextReplicaIndex() == 0 && scheduler.NextIndex(name, resources.RoleControlPlane, all) == 0 {
			startTogether(comps, hypervisors)
		}
		if err != nil {
			if drained != nil {
				drainBlocked(st, name, fmt.Sprintf("not moving %s (%s) off hypervisor %s: %v", drained.Metadata.Name, leaving(drained), drained.Spec.Hypervisor, err), cmd, now)
			} else {
				errs = append(errs, err)
			}
		}
		for _, comp := range comps {
			cmd.Components = append(cmd.Components, comp)
			if drained != nil {
				cmd.Events = append(cmd.Events, replacingEvent(drained, comp, leaving(drained), now))
			} else {
				cmd.Events = append(cmd.Events, placedEvent(comp, now))
			}
		}
	case len(have) > want:
		// Scale down: replicas on dead hypervisors go first, then those on
		// draining ones (once the others all run), then the newest.
		removalOrder(have, leaving)
		stay := have[len(have)-want:]
		for _, comp := range have[:len(have)-want] {
			why := "scale down"
			if reason := leaving(comp); reason != "" && reason != "dead" {
				if !servingAll(stay, ingresses) {
					continue // its replacement does not take connections yet
				}
				why = reason + ", its replacement runs"
			}
			cmd.Remove = append(cmd.Remove, comp.Metadata.Name)
			cmd.Events = append(cmd.Events, state.Event(name, "Normal", "Removing",
				fmt.Sprintf("removing %s from %s (%s)", comp.Metadata.Name, comp.Spec.Hypervisor, why), now))
		}
	}
	return joinErrors(errs)
}

// startTogether makes the first replicas ever placed in a cluster, all it
// asked for, its first etcd members, started at once with each other as
// the initial cluster (etcd's static bootstrap), rather than one at a
// time; when they are three or more, so that the quorum forms without one
// that never starts (its replacement joins as a learner). Fewer take the
// learner path, where the first runs alone.
func startTogether(comps []*pb.Component, hypervisors []*pb.Hypervisor) {
	if len(comps) < 3 {
		return
	}
	initial := make([]*pb.Endpoint, 0, len(comps))
	for _, comp := range comps {
		initial = append(initial, &pb.Endpoint{
			Name:    comp.Metadata.Name,
			Address: hypervisorByName(hypervisors, comp.Spec.Hypervisor).GetSpec().GetAddress(),
			Port:    comp.Spec.Ports[vocab.PortEtcdPeer],
		})
	}
	for _, comp := range comps {
		comp.Spec.EtcdInitialCluster = initial
	}
}

// joinErrors joins errors on one line; errors.Is sees each of them.
func joinErrors(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return oneLineErrors(errs)
}

type oneLineErrors []error

func (e oneLineErrors) Error() string {
	msgs := make([]string, len(e))
	for i, err := range e {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (e oneLineErrors) Unwrap() []error { return e }

// certNames reports whether the named certificate of a component is valid
// for host (an IP or a DNS name).
func certNames(certs *pb.ComponentCerts, name, host string) bool {
	kp := certs.GetCerts()[name]
	if kp == nil {
		return false
	}
	cert, err := tlsutil.ParseCertPEM(kp.CertPem)
	return err == nil && cert.VerifyHostname(host) == nil
}

func placedEvent(comp *pb.Component, now time.Time) *pb.Event {
	return state.Event(comp.Spec.Cluster, "Normal", "Placed",
		fmt.Sprintf("%s %s placed on %s", comp.Spec.Role, comp.Metadata.Name, comp.Spec.Hypervisor), now)
}

// vpnPool is the replicated VPN pool, or the default before bootstrap ends.
func (s *Server) vpnPool(st *state.Store) string {
	if p := st.Config(nil).GetVpnPool(); p != "" {
		return p
	}
	return s.cfg.VPNPool
}

// takenVPNCIDRs lists the VPN CIDRs of every other cluster.
func takenVPNCIDRs(st *state.Store, except string) []string {
	var out []string
	for _, c := range st.Clusters(nil) {
		if c.Metadata.Name != except && c.Spec.GetVpn().GetCidr() != "" {
			out = append(out, c.Spec.Vpn.Cidr)
		}
	}
	return out
}

func hypervisorByName(hs []*pb.Hypervisor, name string) *pb.Hypervisor {
	for _, h := range hs {
		if h.Metadata.Name == name {
			return h
		}
	}
	return nil
}

func isSchedulingError(err error) bool {
	return schedulingReason(err) != ""
}

// schedulingReason is the condition reason for an error that keeps a
// cluster from being placed, or "" for any other error.
func schedulingReason(err error) string {
	switch {
	case errors.Is(err, scheduler.ErrNoPrivateHypervisor):
		return "NoPrivateHypervisor"
	case errors.Is(err, scheduler.ErrNoPublicHypervisor):
		return "NoPublicHypervisor"
	case errors.Is(err, scheduler.ErrNoPorts):
		return "NoFreePorts"
	case errors.Is(err, scheduler.ErrVPNPoolExhausted):
		return "VPNPoolExhausted"
	}
	return ""
}

// endpointOf returns host:port of a component's named port.
func endpointOf(h *pb.Hypervisor, comp *pb.Component, port string, public bool) string {
	host := h.GetSpec().GetAddress()
	if public {
		host = h.GetSpec().GetPublicAddress()
	}
	return net.JoinHostPort(host, strconv.Itoa(int(comp.Spec.Ports[port])))
}

// sameStatus compares statuses ignoring when conditions last changed.
func sameStatus(a, b *pb.ClusterStatus) bool {
	strip := func(s *pb.ClusterStatus) *pb.ClusterStatus {
		s = proto.Clone(s).(*pb.ClusterStatus)
		for _, c := range s.GetConditions() {
			c.LastTransitionTime = nil
		}
		return s
	}
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return proto.Equal(strip(a), strip(b))
}
