package coordinator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net"
	"regexp"
	"slices"
	"time"
	"unicode/utf8"

	memdb "github.com/hashicorp/go-memdb"
	"github.com/oneinfra/oneinfra/coordinator/scheduler"
	"github.com/oneinfra/oneinfra/coordinator/state"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Bounds of a blocking watch.
const (
	defaultWatchWait = 5 * time.Minute
	maxWatchWait     = 10 * time.Minute
)

// assignmentTables are the tables an assignment is made from.
var assignmentTables = []string{state.TableClusters, state.TablePKI, state.TableHypervisors, state.TableComponents, state.TableComponentCerts, state.TableVPNPeers, state.TableBackups}

// agentAPI serves hypervisor agents, each only about itself.
type agentAPI struct {
	pb.UnimplementedAgentServer
	s *Server
}

func checkSelf(ctx context.Context, hypervisor string) error {
	if caller := callerOf(ctx); caller.Name != hypervisor {
		return fmt.Errorf("hypervisor %q may not act for %q: %w", caller.Name, hypervisor, errDenied)
	}
	return nil
}

// WatchAssignments is a blocking query: it returns when the state the
// hypervisor's assignments come from moves past min_index, or when the
// wait ends, with every assignment's hash. An agent that reconnects with
// its last index misses nothing: it gets the whole current list.
func (a *agentAPI) WatchAssignments(ctx context.Context, req *pb.WatchAssignmentsRequest) (*pb.WatchAssignmentsResponse, error) {
	if err := checkSelf(ctx, req.Hypervisor); err != nil {
		return nil, err
	}
	wait := defaultWatchWait
	if req.WaitMs > 0 {
		wait = min(time.Duration(req.WaitMs)*time.Millisecond, maxWatchWait)
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	a.s.metrics.watchers.Inc()
	defer a.s.metrics.watchers.Dec()
	for {
		st := a.s.State().View()
		ws := memdb.NewWatchSet()
		ws.Add(st.AbandonCh())
		index := st.Index(assignmentTables...)
		assignments, err := a.s.assignments(st, ws, req.Hypervisor, nil)
		if err != nil {
			return nil, err
		}
		resp := &pb.WatchAssignmentsResponse{Index: index}
		for _, as := range assignments {
			resp.Assignments = append(resp.Assignments, &pb.AssignmentRef{Component: as.Component.Metadata.Name, Hash: as.Hash})
		}
		resp.Digest = refsDigest(resp.Assignments)
		changed := index > req.MinIndex
		if req.KnownDigest != "" {
			// A server behind the one that last answered waits until it
			// has caught up, rather than answer with older assignments.
			changed = index >= req.MinIndex && resp.Digest != req.KnownDigest
		}
		if changed || ctx.Err() != nil {
			return resp, nil
		}
		if ws.WatchCtx(ctx) == nil {
			a.s.metrics.watchWakes.Inc()
		}
	}
}

// refsDigest is a digest of a hypervisor's assignments, names and hashes
// in the order given (assignments lists them in a fixed one).
func refsDigest(refs []*pb.AssignmentRef) string {
	h := sha256.New()
	for _, r := range refs {
		fmt.Fprintf(h, "%d:%s%d:%s", len(r.Component), r.Component, len(r.Hash), r.Hash)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// GetAssignments returns the full assignments of the named components (all
// when none are named).
func (a *agentAPI) GetAssignments(ctx context.Context, req *pb.GetAssignmentsRequest) (*pb.GetAssignmentsResponse, error) {
	if err := checkSelf(ctx, req.Hypervisor); err != nil {
		return nil, err
	}
	st := a.s.State().View()
	index := st.Index(assignmentTables...)
	as, err := a.s.assignments(st, nil, req.Hypervisor, req.Components)
	if err != nil {
		return nil, err
	}
	return &pb.GetAssignmentsResponse{Index: index, Assignments: as}, nil
}

// ReportStatus records what the agent runs; it runs on the leader.
func (a *agentAPI) ReportStatus(ctx context.Context, req *pb.ReportStatusRequest) (*pb.ReportStatusResponse, error) {
	if err := checkSelf(ctx, req.Hypervisor); err != nil {
		return nil, err
	}
	// lastSeen is the leader's time, not the agent's: health compares it
	// with the leader's clock.
	// The trust generation it holds, at most the current one.
	cfg := a.s.State().Config(nil)
	gen := min(req.TrustGeneration, cfg.GetTrustGeneration())
	cmd := &pb.ReportStatusCommand{Hypervisor: req.Hypervisor, Removed: req.Removed, Time: timestamppb.Now(), TrustGeneration: gen}
	if err := checkBackupResults(req.Components); err != nil {
		return nil, err
	}
	for _, r := range req.Components {
		cmd.Components = append(cmd.Components, &pb.Component{Metadata: &pb.ObjectMeta{Name: r.Component}, Status: r.Status})
	}
	events, err := agentEvents(a.s.State(), req.Hypervisor, req.Events, cmd.Time.AsTime())
	if err != nil {
		return nil, err
	}
	cmd.Events = events
	if _, err := a.s.raftApply(ReportStatusType, cmd); err != nil {
		return nil, err
	}
	return &pb.ReportStatusResponse{Trust: coordinatorTrust(cfg)}, nil
}

// Bounds of the events in one report.
const (
	maxAgentEvents       = 16
	maxAgentEventMessage = 1024
)

// agentEventReasonRE is what an agent's event reason may be: one CamelCase
// word, as every reason oneinfra writes.
var agentEventReasonRE = regexp.MustCompile(`^[A-Z][A-Za-z]{0,63}$`)

// agentEvents turns the events an agent tells about its components into
// events of their clusters, at the leader's time. Only components placed
// on the reporting hypervisor may be named; a malformed event is refused.
func agentEvents(st *state.Store, hypervisor string, in []*pb.AgentEvent, now time.Time) ([]*pb.Event, error) {
	if len(in) > maxAgentEvents {
		return nil, invalid("events: %d in one report, at most %d", len(in), maxAgentEvents)
	}
	var out []*pb.Event
	for i, e := range in {
		comp := st.Component(nil, e.Component)
		switch {
		case comp == nil || comp.Spec.Hypervisor != hypervisor:
			continue // moved or gone since: nothing to tell its cluster
		case e.Type != "Normal" && e.Type != "Warning":
			return nil, invalid("events[%d].type: %q is neither Normal nor Warning", i, e.Type)
		case !agentEventReasonRE.MatchString(e.Reason):
			return nil, invalid("events[%d].reason: %q is not one CamelCase word", i, e.Reason)
		case len(e.Message) > maxAgentEventMessage || !utf8.ValidString(e.Message):
			return nil, invalid("events[%d].message: not UTF-8 or longer than %d bytes", i, maxAgentEventMessage)
		}
		out = append(out, state.Event(comp.Spec.Cluster, e.Type, e.Reason, e.Component+": "+e.Message, now))
	}
	return out, nil
}

// checkBackupResults refuses backup results that are not what an agent
// sends: more than a few per component, or a message longer than an
// event's (it becomes one).
func checkBackupResults(reports []*pb.ComponentReport) error {
	for _, r := range reports {
		results := r.GetStatus().GetBackups()
		if len(results) > maxAgentEvents {
			return invalid("components[%s].backups: %d results, at most %d", r.Component, len(results), maxAgentEvents)
		}
		for i, b := range results {
			if len(b.Message) > maxAgentEventMessage || !utf8.ValidString(b.Message) {
				return invalid("components[%s].backups[%d].message: not UTF-8 or longer than %d bytes", r.Component, i, maxAgentEventMessage)
			}
		}
	}
	return nil
}

// GetGossipConfig gives the agent the gossip key (empty while the
// coordinator has none), for agents registered before there was one.
func (a *agentAPI) GetGossipConfig(ctx context.Context, req *pb.GetGossipConfigRequest) (*pb.GossipConfig, error) {
	if err := checkSelf(ctx, req.Hypervisor); err != nil {
		return nil, err
	}
	return &pb.GossipConfig{Key: a.s.State().Config(nil).GetGossipKey()}, nil
}

// assignments builds the assignments of a hypervisor, restricted to the
// named components when names is not empty. It reads (and so watches) only
// the rows they are made of: its own components, their clusters, and the
// hypervisors their peers are on, so that a write elsewhere in the fleet
// does not wake its watch.
func (s *Server) assignments(st *state.Store, ws memdb.WatchSet, hypervisor string, names []string) ([]*pb.Assignment, error) {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	hypervisors := map[string]*pb.Hypervisor{}
	var out []*pb.Assignment
	for _, comp := range st.ComponentsOnHypervisor(ws, hypervisor) {
		if len(want) > 0 && !want[comp.Metadata.Name] {
			continue
		}
		as, err := s.assignment(st, ws, comp, hypervisors)
		if err != nil {
			return nil, err
		}
		out = append(out, as)
	}
	return out, nil
}

// assignment is everything the agent needs to run one component. It adds
// to hypervisors those of the component's peers it lacks, as stored (their
// address and health): what else runs there does not wake its watch.
func (s *Server) assignment(st *state.Store, ws memdb.WatchSet, comp *pb.Component, hypervisors map[string]*pb.Hypervisor) (*pb.Assignment, error) {
	if comp.Spec.Orphaned {
		// Stopped, its files kept: nothing of a cluster is needed.
		as := &pb.Assignment{Component: comp, Orphaned: true, Deleting: comp.Metadata.DeletionTimestamp != nil}
		as.Hash = assignmentHash(as)
		return as, nil
	}
	cluster := st.Cluster(ws, comp.Spec.Cluster)
	p := st.ClusterPKI(ws, comp.Spec.Cluster)
	if cluster == nil || p == nil {
		return nil, fmt.Errorf("component %s: cluster %q: %w", comp.Metadata.Name, comp.Spec.Cluster, state.ErrNotFound)
	}
	as := &pb.Assignment{
		Component:         comp,
		ClusterSpec:       cluster.Spec,
		ApiServerEndpoint: cluster.GetStatus().GetApiServerEndpoint(),
		Images:            Images(s.cfg.ImageRepository, cluster.Spec.KubernetesVersion),
		Deleting:          comp.Metadata.DeletionTimestamp != nil,
	}
	if comp.Spec.Role == resources.RoleControlPlane {
		as.ServiceAccountKeyPem = p.ServiceAccountKeyPem
		as.EncryptionKey = p.EncryptionKey
	}
	peers := st.ComponentsOfCluster(ws, comp.Spec.Cluster)
	for _, peer := range peers {
		if _, ok := hypervisors[peer.Spec.Hypervisor]; !ok {
			if h := st.HypervisorRow(ws, peer.Spec.Hypervisor); h != nil {
				hypervisors[peer.Spec.Hypervisor] = h
			}
		}
	}
	hvs := slices.Collect(maps.Values(hypervisors))
	certs := st.ComponentCerts(ws, comp.Metadata.Name)
	if comp.Spec.Role == resources.RoleControlPlane {
		certs = runningCerts(certs)
	}
	as.Certs = certs.GetCerts()
	if !as.Deleting {
		withKeys(as, comp.Spec.Role, st.ComponentCerts(ws, comp.Metadata.Name))
	}
	as.CaCerts = trustOf(p, certs.GetTrust())
	as.TrustGeneration = certs.GetTrustGeneration()
	if comp.Spec.Role == resources.RoleControlPlane {
		as.Certs = maps.Clone(as.Certs)
		if as.Certs == nil {
			as.Certs = map[string]*pb.KeyPair{}
		}
		as.Certs[vocab.SignerCACert] = p.Cas[vocab.SignerCA]
		as.CertGeneration = certs.GetGeneration()
		as.Backups = s.backupTasks(st, ws, comp, p)
		as.Restore = s.restoreTask(st, cluster, p, peers, hypervisors)
	}
	for _, peer := range peers {
		h := hypervisors[peer.Spec.Hypervisor]
		if peer.Spec.Role != resources.RoleControlPlane || h == nil {
			continue
		}
		addr := h.Spec.Address
		etcdPeer := &pb.Endpoint{Name: peer.Metadata.Name, Address: addr, Port: peer.Spec.Ports["etcd-peer"]}
		if peer.Metadata.DeletionTimestamp == nil || peer.Metadata.Name == comp.Metadata.Name {
			as.EtcdPeers = append(as.EtcdPeers, etcdPeer)
			as.EtcdClients = append(as.EtcdClients, &pb.Endpoint{Name: peer.Metadata.Name, Address: addr, Port: peer.Spec.Ports["etcd-client"]})
		}
		// The ingress sends no connections to a replica that is about to
		// restart with renewed certificates.
		if peer.Metadata.DeletionTimestamp == nil && !(comp.Spec.Role == resources.RoleIngress && renewing(st.ComponentCerts(ws, peer.Metadata.Name))) {
			as.ApiServers = append(as.ApiServers, &pb.Endpoint{Name: peer.Metadata.Name, Address: addr, Port: peer.Spec.Ports["apiserver"]})
		}
		if comp.Spec.Role == resources.RoleControlPlane && !(peer.Metadata.DeletionTimestamp != nil && h.GetStatus().GetHealth() == resources.HealthDead) {
			as.EtcdMembers = append(as.EtcdMembers, etcdPeer)
		}
	}
	if comp.Spec.Role == resources.RoleControlPlane {
		as.ReplicaFloor = max(cluster.GetStatus().GetNextReplicaIndex(), uint32(scheduler.NextIndex(cluster.Metadata.Name, resources.RoleControlPlane, peers)))
	}
	if as.Deleting && comp.Spec.Role == resources.RoleControlPlane {
		as.IngressReleased = ingressReleased(liveIngresses(peers, comp.Spec.Cluster, hvs), comp.Metadata.Name)
	}
	if cluster.Spec.GetVpn().GetEnabled() && cluster.Spec.Vpn.Cidr != "" {
		as.Vpn = vpnAssignment(st, ws, cluster, comp, hypervisors)
	}
	as.Hash = assignmentHash(as)
	return as, nil
}

// vpnAssignment is a component's share of its cluster's VPN: the ingress
// gets the peers, control-plane replicas the gateway to route through.
func vpnAssignment(st *state.Store, ws memdb.WatchSet, cluster *pb.Cluster, comp *pb.Component, hypervisors map[string]*pb.Hypervisor) *pb.VPNAssignment {
	hub, _ := scheduler.EndpointAddress(cluster.Spec.Vpn.Cidr) // validated on apply
	v := &pb.VPNAssignment{Cidr: cluster.Spec.Vpn.Cidr, EndpointAddress: hub}
	if comp.Spec.Role == resources.RoleIngress {
		v.Routes = vpnRoutes(cluster)
		v.Peers = st.VPNPeers(ws, cluster.Metadata.Name)
		return v
	}
	for _, peer := range st.ComponentsOfCluster(ws, cluster.Metadata.Name) {
		if peer.Spec.Role == resources.RoleIngress && peer.Metadata.DeletionTimestamp == nil {
			v.Gateway = hypervisors[peer.Spec.Hypervisor].GetSpec().GetAddress()
		}
	}
	// The nodes, whose kubelets' certificates the replica approves: the
	// first for the bootstrap token handed to the node only, serving ones
	// for its VPN address only. Never a token's secret.
	for _, p := range st.VPNPeers(ws, cluster.Metadata.Name) {
		v.Peers = append(v.Peers, &pb.VPNPeer{Cluster: p.Cluster, Name: p.Name, Address: p.Address, BootstrapTokenId: p.BootstrapTokenId})
	}
	return v
}

// assignmentHash changes when anything the agent acts on changes, and not
// when only the component's reported status or indexes do.
func assignmentHash(as *pb.Assignment) string {
	c := proto.Clone(as).(*pb.Assignment)
	c.Hash = ""
	c.Component.Status = nil
	c.Component.Metadata.ModifyIndex = 0
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		panic(fmt.Sprintf("hashing assignment: %v", err)) // proto messages always marshal
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// Image versions that go with each Kubernetes version.
const (
	etcdImageTag    = "3.6.16-0"
	pauseImageTag   = "3.10"
	haproxyImageTag = "2.6"
	corednsImageTag = "v1.14.6"
)

// Images returns the image of each container of a cluster's components,
// from upstream registries or from repository when one is set.
func Images(repository, kubernetesVersion string) map[string]string {
	k8s, library := "registry.k8s.io", "docker.io/library"
	if repository != "" {
		k8s, library = repository, repository
	}
	v := "v" + kubernetesVersion
	return map[string]string{
		vocab.ImagePause:                 k8s + "/pause:" + pauseImageTag,
		vocab.ImageEtcd:                  k8s + "/etcd:" + etcdImageTag,
		vocab.ImageKubeAPIServer:         k8s + "/kube-apiserver:" + v,
		vocab.ImageKubeControllerManager: k8s + "/kube-controller-manager:" + v,
		vocab.ImageKubeScheduler:         k8s + "/kube-scheduler:" + v,
		vocab.ImageHAProxy:               library + "/haproxy:" + haproxyImageTag,
		vocab.ImageKubeProxy:             k8s + "/kube-proxy:" + v,
		vocab.ImageCoreDNS:               k8s + "/coredns/coredns:" + corednsImageTag,
	}
}

// IssueJoinCertificate signs the serving certificate of a public
// hypervisor's join endpoint: its own key (the CSR), server use only, for
// the hypervisor's addresses as the coordinator has them, never names the
// caller chose.
func (a *agentAPI) IssueJoinCertificate(ctx context.Context, req *pb.IssueJoinCertificateRequest) (*pb.IssueJoinCertificateResponse, error) {
	if err := checkSelf(ctx, req.Hypervisor); err != nil {
		return nil, err
	}
	h := a.s.State().Hypervisor(nil, req.Hypervisor)
	if h == nil {
		return nil, fmt.Errorf("hypervisor %q: %w", req.Hypervisor, state.ErrNotFound)
	}
	if !h.Spec.Public {
		return nil, fmt.Errorf("hypervisor %q is not public: it serves no join endpoint: %w", req.Hypervisor, errDenied)
	}
	var ips []net.IP
	for _, addr := range []string{h.Spec.Address, h.Spec.PublicAddress} {
		if ip := net.ParseIP(addr); ip != nil {
			ips = append(ips, ip)
		}
	}
	cert, rec, trust, err := a.s.signRecorded(req.CsrPem, tlsutil.CertOptions{
		CommonName: req.Hypervisor, Organizations: []string{vocab.RoleJoinEndpoint}, IPs: ips,
		Usages: []tlsutil.Usage{tlsutil.UsageServer}, Validity: a.s.cfg.certValidity(),
	}, "", issuer(ctx), time.Now())
	if err != nil {
		return nil, err
	}
	if _, err := a.s.raftApply(IssueCertsType, &pb.IssueCertsCommand{Certs: []*pb.IssuedCert{rec}}); err != nil {
		return nil, err
	}
	return &pb.IssueJoinCertificateResponse{CertPem: cert, CaPem: trust.CaPem}, nil
}
