package coordinator

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"time"

	"github.com/oneinfra/oneinfra/coordinator/pki"
	"github.com/oneinfra/oneinfra/coordinator/state"
	"github.com/oneinfra/oneinfra/internal/client"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/version"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// operatorAPI serves the oneinfra-coord CLI.
type operatorAPI struct {
	pb.UnimplementedOperatorServer
	s *Server
}

// readMeta says how fresh this server's state is.
func (s *Server) readMeta() *pb.ReadMeta {
	_, leader := s.raft.LeaderWithID()
	var servers []string
	for _, srv := range s.State().Servers(nil) {
		servers = append(servers, srv.ApiAddress)
	}
	return &pb.ReadMeta{
		Servers:       servers,
		Index:         s.raft.AppliedIndex(),
		Leader:        string(leader),
		IsLeader:      s.IsLeader(),
		LastContactMs: uint32(time.Since(s.raft.LastContact()).Milliseconds()),
		Server:        s.cfg.ID,
	}
}

// Apply creates or updates clusters and edits hypervisors' operator-owned
// fields. The request is checked whole against the current state before
// anything is written, and written in one Raft entry.
func (a *operatorAPI) Apply(ctx context.Context, req *pb.ApplyRequest) (*pb.ApplyResponse, error) {
	s := a.s
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if len(req.Resources) == 0 {
		return nil, invalid("no resources to apply")
	}
	st := s.State()
	now := time.Now()
	cmd := &pb.ApplyResourcesCommand{}
	resp := &pb.ApplyResponse{}
	seen := map[string]bool{}
	for _, r := range req.Resources {
		var result *pb.ApplyResult
		var err error
		switch {
		case r.GetCluster() != nil:
			result, err = applyCluster(st, r.GetCluster(), req.CreateOnly, s.cfg.BackupTarget != "", cmd, now)
		case r.GetHypervisor() != nil:
			result, err = applyHypervisor(st, r.GetHypervisor(), cmd)
		default:
			err = invalid("no resource in the document")
		}
		if err != nil {
			return nil, prefixed(r.Source, err)
		}
		key := result.Kind + "/" + result.Name
		if seen[key] {
			return nil, prefixed(r.Source, invalid("%s %q appears twice", result.Kind, result.Name))
		}
		seen[key] = true
		resp.Results = append(resp.Results, result)
	}
	// VPN CIDRs may not overlap: check the clusters as they would be.
	after := map[string]*pb.Cluster{}
	for _, c := range st.Clusters(nil) {
		after[c.Metadata.Name] = c
	}
	for _, c := range cmd.Clusters {
		after[c.Metadata.Name] = c
	}
	var all []*pb.Cluster
	for _, c := range after {
		all = append(all, c)
	}
	if err := resources.CheckVPNOverlaps(all); err != nil {
		return nil, invalid("%v", err)
	}
	if len(cmd.Clusters) == 0 && len(cmd.Hypervisors) == 0 {
		resp.Index = st.Index()
		return resp, nil
	}
	index, err := s.raftApply(ApplyResourcesType, cmd)
	if err != nil {
		return nil, err
	}
	resp.Index = index
	return resp, nil
}

// prefixed names the manifest document an error is about.
func prefixed(source string, err error) error {
	if source == "" {
		return err
	}
	if _, ok := err.(*invalidError); ok {
		return invalid("%s: %v", source, err)
	}
	return fmt.Errorf("%s: %w", source, err)
}

// applyCluster validates a cluster against the stored one and adds what
// to write to cmd.
func applyCluster(st *state.Store, in *pb.Cluster, createOnly, backups bool, cmd *pb.ApplyResourcesCommand, now time.Time) (*pb.ApplyResult, error) {
	c := proto.Clone(in).(*pb.Cluster)
	if c.Metadata == nil {
		c.Metadata = &pb.ObjectMeta{}
	}

	name := c.Metadata.Name
	old := st.Cluster(nil, name)
	if old != nil && old.Spec.GetVpn().GetEnabled() && c.Spec.GetVpn().GetEnabled() && c.Spec.Vpn.Cidr == "" {
		c.Spec.Vpn.Cidr = old.Spec.Vpn.Cidr // keep the block the pool gave
	}
	resources.DefaultCluster(c)
	if backups && c.Spec.Backup == nil {
		c.Spec.Backup = resources.DefaultBackupSpec()
	}
	if err := resources.ValidateCluster(c); err != nil {
		return nil, invalid("Cluster %q: %v", name, err)
	}
	result := &pb.ApplyResult{Kind: resources.KindCluster, Name: name, Action: "created"}
	if old == nil {
		c.Metadata.Uid = newUID()
		c.Metadata.CreationTimestamp = timestamppb.New(now)
		c.Status = &pb.ClusterStatus{Phase: resources.PhasePending}
		p, err := pki.NewClusterPKI(name, now)
		if err != nil {
			return nil, fmt.Errorf("making the PKI of cluster %s: %w", name, err)
		}
		cmd.Pki = append(cmd.Pki, p)
		cmd.Clusters = append(cmd.Clusters, c)
		cmd.Events = append(cmd.Events, state.Event(name, "Normal", "Created", "cluster created", now))
		return result, nil
	}
	switch {
	case createOnly:
		return nil, fmt.Errorf("cluster %q already exists: %w", name, state.ErrConflict)
	case old.Metadata.DeletionTimestamp != nil:
		return nil, fmt.Errorf("cluster %q is being deleted: %w", name, state.ErrConflict)
	}
	if err := checkImmutable(old.Spec, c.Spec); err != nil {
		return nil, invalid("Cluster %q: %v", name, err)
	}
	if proto.Equal(old.Spec, c.Spec) && equalLabels(old.Metadata.Labels, c.Metadata.Labels) {
		result.Action = "unchanged"
		return result, nil
	}
	updated := proto.Clone(old).(*pb.Cluster)
	updated.Spec = c.Spec
	updated.Metadata.Labels = c.Metadata.Labels
	cmd.Clusters = append(cmd.Clusters, updated)
	cmd.Events = append(cmd.Events, state.Event(name, "Normal", "Updated",
		fmt.Sprintf("spec updated: %d control-plane replica(s)", c.Spec.ControlPlane.GetReplicas()), now))
	result.Action = "configured"
	return result, nil
}

// checkImmutable refuses changes to what a running cluster cannot change:
// only the replica count and labels may change after creation.
func checkImmutable(old, new *pb.ClusterSpec) error {
	switch {
	case old.KubernetesVersion != new.KubernetesVersion:
		return fmt.Errorf("spec.kubernetesVersion: cannot change from %s to %s (upgrades are not supported)", old.KubernetesVersion, new.KubernetesVersion)
	case old.GetVpn().GetEnabled() != new.GetVpn().GetEnabled():
		return fmt.Errorf("spec.vpn.enabled: cannot change after creation")
	case old.GetVpn().GetCidr() != new.GetVpn().GetCidr():
		return fmt.Errorf("spec.vpn.cidr: cannot change after creation (is %s)", old.GetVpn().GetCidr())
	case !proto.Equal(old.GetNetworking(), new.GetNetworking()):
		return fmt.Errorf("spec.networking: cannot change after creation")
	case !proto.Equal(old.GetApiServer(), new.GetApiServer()):
		return fmt.Errorf("spec.apiServer.extraSANs: cannot change after creation")
	}
	return nil
}

// applyHypervisor takes the operator-owned fields of a hypervisor (labels
// and unschedulable); the rest belongs to its agent and must not differ.
func applyHypervisor(st *state.Store, in *pb.Hypervisor, cmd *pb.ApplyResourcesCommand) (*pb.ApplyResult, error) {
	name := in.GetMetadata().GetName()
	h := proto.Clone(in).(*pb.Hypervisor)
	resources.DefaultHypervisor(h)
	if err := resources.ValidateHypervisor(h); err != nil {
		return nil, invalid("Hypervisor %q: %v", name, err)
	}
	old := st.Hypervisor(nil, name)
	if old == nil {
		return nil, invalid("Hypervisor %q: not registered: hypervisors are added by their agent (oneinfra-agent hypervisor --token ...)", name)
	}
	want := proto.Clone(old.Spec).(*pb.HypervisorSpec)
	want.Unschedulable = h.Spec.Unschedulable
	if !proto.Equal(want, h.Spec) {
		return nil, invalid("Hypervisor %q: spec: only unschedulable (and metadata.labels) can be changed; the rest is set by its agent", name)
	}
	result := &pb.ApplyResult{Kind: resources.KindHypervisor, Name: name, Action: "unchanged"}
	if old.Spec.Unschedulable == h.Spec.Unschedulable && equalLabels(old.Metadata.Labels, h.Metadata.Labels) {
		return result, nil
	}
	updated := proto.Clone(old).(*pb.Hypervisor)
	updated.Spec.Unschedulable = h.Spec.Unschedulable
	updated.Metadata.Labels = h.Metadata.Labels
	// Made schedulable again, it is no longer drained.
	updated.Status.Draining = old.Status.GetDraining() && h.Spec.Unschedulable
	cmd.Hypervisors = append(cmd.Hypervisors, updated)
	result.Action = "configured"
	return result, nil
}

func equalLabels(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func newUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// Get lists or shows resources of one kind.
func (a *operatorAPI) Get(ctx context.Context, req *pb.GetRequest) (*pb.GetResponse, error) {
	kind, err := resources.NormalizeKind(req.Kind)
	if err != nil {
		return nil, invalid("%v", err)
	}
	st := a.s.State()
	resp := &pb.GetResponse{Meta: a.s.readMeta()}
	notFound := func() error { return fmt.Errorf("%s %q: %w", singular(kind), req.Name, state.ErrNotFound) }
	switch kind {
	case "clusters":
		if req.Name != "" {
			c := st.Cluster(nil, req.Name)
			if c == nil {
				return nil, notFound()
			}
			resp.Clusters = []*pb.Cluster{c}
		} else {
			resp.Clusters = st.Clusters(nil)
		}
	case "hypervisors":
		if req.Name != "" {
			h := st.Hypervisor(nil, req.Name)
			if h == nil {
				return nil, notFound()
			}
			resp.Hypervisors = []*pb.Hypervisor{h}
		} else {
			resp.Hypervisors = st.Hypervisors(nil)
		}
	case "components":
		if req.Name != "" {
			c := st.Component(nil, req.Name)
			if c == nil {
				return nil, notFound()
			}
			resp.Components = []*pb.Component{c}
		} else {
			resp.Components = st.Components(nil)
		}
	}
	for _, c := range resp.Clusters {
		c.ApiVersion, c.Kind = resources.APIVersion, resources.KindCluster
		if b := newestTaken(st.Backups(nil, c.Metadata.Name)); b != nil {
			if c.Status == nil {
				c.Status = &pb.ClusterStatus{}
			}
			c.Status.Backups = []*pb.BackupStatus{{Id: b.Id, Time: b.Finished, Revision: b.Revision}}
		}
	}
	for _, h := range resp.Hypervisors {
		h.ApiVersion, h.Kind = resources.APIVersion, resources.KindHypervisor
	}
	for _, c := range resp.Components {
		c.ApiVersion, c.Kind = resources.APIVersion, resources.KindComponent
	}
	return resp, nil
}

func singular(kind string) string { return kind[:len(kind)-1] }

// Delete starts the deletion of a cluster, or removes an empty hypervisor.
func (a *operatorAPI) Delete(ctx context.Context, req *pb.DeleteRequest) (*pb.DeleteResponse, error) {
	kind, err := resources.NormalizeKind(req.Kind)
	if err != nil {
		return nil, invalid("%v", err)
	}
	var index uint64
	switch kind {
	case "clusters":
		index, err = a.s.raftApply(DeleteClusterType, &pb.DeleteClusterCommand{Name: req.Name, Time: timestamppb.Now()})
	case "hypervisors":
		index, err = a.s.raftApply(DeleteHypervisorType, &pb.DeleteHypervisorCommand{Name: req.Name, Time: timestamppb.Now()})
	default:
		// Only orphaned components: the others follow their cluster.
		if comp := a.s.State().Component(nil, req.Name); comp != nil && !comp.Spec.Orphaned {
			return nil, invalid("component %q belongs to cluster %s: delete the cluster, or change its replicas; only orphaned components are deleted alone", req.Name, comp.Spec.Cluster)
		}
		index, err = a.s.raftApply(DeleteComponentType, &pb.DeleteComponentCommand{Name: req.Name, Time: timestamppb.Now()})
	}
	if err != nil {
		return nil, err
	}
	deleted := true
	switch kind {
	case "clusters":
		deleted = a.s.State().Cluster(nil, req.Name) == nil
	case "components":
		deleted = a.s.State().Component(nil, req.Name) == nil
	}
	return &pb.DeleteResponse{Deleted: deleted, Index: index}, nil
}

// Describe returns a cluster with its components, the hypervisors they
// are on and its recent events; or a hypervisor with its components and
// the recent events that name it.
func (a *operatorAPI) Describe(ctx context.Context, req *pb.DescribeRequest) (*pb.DescribeResponse, error) {
	kind := resources.Clusters
	if req.Kind != "" {
		var err error
		if kind, err = resources.NormalizeKind(req.Kind); err != nil || kind == resources.Components {
			return nil, invalid("describe: clusters or hypervisors can be described, got %q", req.Kind)
		}
	}
	st := a.s.State().View()
	if kind == resources.Hypervisors {
		return describeHypervisor(st, req.Name, a.s.readMeta())
	}
	c := st.Cluster(nil, req.Name)
	if c == nil {
		return nil, fmt.Errorf("cluster %q: %w", req.Name, state.ErrNotFound)
	}
	c.ApiVersion, c.Kind = resources.APIVersion, resources.KindCluster
	comps := st.ComponentsOfCluster(nil, req.Name)
	var hypervisors []*pb.Hypervisor
	for _, h := range st.Hypervisors(nil) {
		if slices.ContainsFunc(comps, func(comp *pb.Component) bool { return comp.Spec.Hypervisor == h.Metadata.Name }) {
			hypervisors = append(hypervisors, h)
		}
	}
	return &pb.DescribeResponse{
		Cluster:      c,
		Components:   comps,
		Hypervisors:  hypervisors,
		Events:       st.Events(nil, req.Name),
		Meta:         a.s.readMeta(),
		Certificates: certificateSummaries(st, c, comps, time.Now()),
		Backups:      newestFirst(st.Backups(nil, req.Name)),
		CaRotation:   rotationStatus(st, req.Name, st.ClusterPKI(nil, req.Name)),
	}, nil
}

// describeHypervisor is a hypervisor, what is placed on it, and the
// clusters' events that name it, oldest first.
func describeHypervisor(st *state.Store, name string, meta *pb.ReadMeta) (*pb.DescribeResponse, error) {
	h := st.Hypervisor(nil, name)
	if h == nil {
		return nil, fmt.Errorf("hypervisor %q: %w", name, state.ErrNotFound)
	}
	h.ApiVersion, h.Kind = resources.APIVersion, resources.KindHypervisor
	names := regexp.MustCompile(`(^|[^\w-])` + regexp.QuoteMeta(name) + `($|[^\w-])`)
	var events []*pb.Event
	for _, c := range st.Clusters(nil) {
		for _, e := range st.Events(nil, c.Metadata.Name) {
			if names.MatchString(e.Message) {
				events = append(events, e)
			}
		}
	}
	sort.Slice(events, func(i, j int) bool { return events[i].Index < events[j].Index })
	return &pb.DescribeResponse{
		Hypervisors: []*pb.Hypervisor{h},
		Components:  st.ComponentsOnHypervisor(nil, name),
		Events:      events,
		Meta:        meta,
	}, nil
}

// defaultKubeconfigTTL is how long a cluster kubeconfig's certificate
// lives unless --ttl says otherwise (or the certificate validity is
// shorter).
const defaultKubeconfigTTL = 24 * time.Hour

// roleKubeconfig records a cluster admin kubeconfig issued to an
// operator (the record's name is the operator; its cluster, the cluster).
const roleKubeconfig = "kubeconfig"

// Kubeconfig issues an admin kubeconfig for a cluster with an ingress,
// recorded with who asked for it and when it expires.
func (a *operatorAPI) Kubeconfig(ctx context.Context, req *pb.KubeconfigRequest) (*pb.KubeconfigResponse, error) {
	st := a.s.State()
	c := st.Cluster(nil, req.Name)
	if c == nil {
		return nil, fmt.Errorf("cluster %q: %w", req.Name, state.ErrNotFound)
	}
	if c.GetStatus().GetApiServerEndpoint() == "" {
		why := "its ingress is not placed yet"
		if cond := resources.FindCondition(c.GetStatus().GetConditions(), CondScheduled); cond != nil && cond.Status == "False" {
			why = cond.Message
		}
		return nil, fmt.Errorf("cluster %q has no API endpoint: %s: %w", req.Name, why, state.ErrConflict)
	}
	p := st.ClusterPKI(nil, req.Name)
	if p == nil {
		return nil, fmt.Errorf("cluster %q has no PKI: %w", req.Name, state.ErrNotFound)
	}
	ttl := min(defaultKubeconfigTTL, a.s.cfg.certValidity())
	if req.TtlSeconds > 0 {
		ttl = time.Duration(req.TtlSeconds) * time.Second
	}
	if ttl > a.s.cfg.certValidity() {
		return nil, invalid("--ttl: %s is longer than the %s certificates live (serve --cert-validity)", ttl, a.s.cfg.certValidity())
	}
	if len(req.CsrPem) == 0 {
		return nil, invalid("csr_pem: required: the caller makes the kubeconfig's key and sends a certificate request")
	}
	pub, err := tlsutil.CSRPublicKey(req.CsrPem)
	if err != nil {
		return nil, invalid("csr_pem: %v", err)
	}
	certPEM, err := pki.AdminKubeconfigCert(p, pub, ttl, time.Now())
	if err != nil {
		return nil, err
	}
	rec, err := issuedRecord(certPEM, roleKubeconfig, callerOf(ctx).Name, req.Name, issuer(ctx))
	if err != nil {
		return nil, err
	}
	if _, err := a.s.raftApply(IssueCertsType, &pb.IssueCertsCommand{Certs: []*pb.IssuedCert{rec}}); err != nil {
		return nil, err
	}
	// During a CA rotation it trusts the old and new cluster CAs.
	return &pb.KubeconfigResponse{CertPem: certPEM, CaPem: pki.Trust(p)[vocab.ClusterCA], Server: c.Status.ApiServerEndpoint}, nil
}

// CreateToken makes a join token and says the CA hash to pin with it.
func (a *operatorAPI) CreateToken(ctx context.Context, req *pb.CreateTokenRequest) (*pb.CreateTokenResponse, error) {
	switch req.Kind {
	case TokenHypervisor, TokenServer:
		if req.Cluster != "" {
			return nil, invalid("--cluster: only worker tokens belong to a cluster")
		}
	case TokenWorker:
		if req.Cluster == "" {
			return nil, invalid("--cluster: required for a worker token")
		}
		if a.s.State().Cluster(nil, req.Cluster) == nil {
			return nil, invalid("--cluster: cluster %q does not exist", req.Cluster)
		}
	default:
		return nil, invalid("--kind: must be hypervisor, server or worker, got %q", req.Kind)
	}
	if req.Name != "" && req.Kind != TokenHypervisor {
		return nil, invalid("--name: only hypervisor tokens are bound to a name")
	}
	if req.Name != "" && !resources.IsDNS1123Label(req.Name) {
		return nil, invalid("--name: %q is not a valid hypervisor name (a DNS-1123 label)", req.Name)
	}
	ttl := DefaultTokenTTL
	if req.TtlSeconds > 0 {
		ttl = time.Duration(req.TtlSeconds) * time.Second
	}
	if ttl > MaxTokenTTL {
		return nil, invalid("--ttl: %s is longer than the %s a token may live", ttl, MaxTokenTTL)
	}
	uses := defaultUses(req.Kind)
	if req.Uses > 0 {
		uses = req.Uses
	}
	secret, tok, err := newToken(req.Kind, req.Cluster, ttl, uses, req.Name, time.Now())
	if err != nil {
		return nil, err
	}
	if _, err := a.s.raftApply(UpsertTokenType, &pb.UpsertTokenCommand{Token: tok}); err != nil {
		return nil, err
	}
	hash := a.s.creds.caHash()
	if hash == "" {
		return nil, fmt.Errorf("this server's certificate is from no CA it trusts: %w", errNoLeader)
	}
	tok.SecretHash = nil
	return &pb.CreateTokenResponse{Token: secret, CaHash: hash, Info: tok}, nil
}

// ListTokens lists tokens without their secret hashes.
func (a *operatorAPI) ListTokens(ctx context.Context, req *pb.ListTokensRequest) (*pb.ListTokensResponse, error) {
	toks := a.s.State().Tokens(nil)
	for _, t := range toks {
		t.SecretHash = nil
	}
	return &pb.ListTokensResponse{Tokens: toks, Meta: a.s.readMeta()}, nil
}

// RevokeToken makes a token unusable from now on.
func (a *operatorAPI) RevokeToken(ctx context.Context, req *pb.RevokeTokenRequest) (*pb.RevokeTokenResponse, error) {
	_, err := a.s.raftApply(RevokeTokenType, &pb.RevokeTokenCommand{Id: req.Id})
	return &pb.RevokeTokenResponse{}, err
}

// Members lists the coordinator servers as Raft sees them, each with its
// own view of its indexes.
func (a *operatorAPI) Members(ctx context.Context, req *pb.MembersRequest) (*pb.MembersResponse, error) {
	f := a.s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	_, leader := a.s.raft.LeaderWithID()
	apiAddrs := map[string]string{}
	for _, srv := range a.s.State().Servers(nil) {
		apiAddrs[srv.Id] = srv.ApiAddress
	}
	resp := &pb.MembersResponse{}
	for _, srv := range f.Configuration().Servers {
		m := &pb.Member{
			Id: string(srv.ID), RaftAddress: string(srv.Address), ApiAddress: apiAddrs[string(srv.ID)],
			Leader: srv.ID == leader, Suffrage: srv.Suffrage.String(),
		}
		var st *pb.PeerStatusResponse
		var err error
		if string(srv.ID) == a.s.cfg.ID {
			st = a.s.peerStatus()
		} else if m.ApiAddress == "" {
			err = fmt.Errorf("API address unknown")
		} else {
			st, err = a.s.askPeerStatus(ctx, m.ApiAddress)
		}
		if err != nil {
			m.Error = err.Error()
		} else {
			m.Reachable = true
			m.State, m.LastIndex, m.AppliedIndex, m.CommitIndex = st.State, st.LastIndex, st.AppliedIndex, st.CommitIndex
		}
		resp.Members = append(resp.Members, m)
	}
	return resp, nil
}

func (s *Server) askPeerStatus(ctx context.Context, addr string) (*pb.PeerStatusResponse, error) {
	conn, err := s.peers.get(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return pb.NewPeerClient(conn).Status(ctx, &pb.PeerStatusRequest{})
}

// SnapshotSave streams a consistent copy of this server's state.
func (a *operatorAPI) SnapshotSave(req *pb.SnapshotSaveRequest, stream pb.Operator_SnapshotSaveServer) error {
	var buf bytes.Buffer
	if err := EncodeSnapshot(&buf, a.s.State().Snapshot(), a.s.keys); err != nil {
		return err
	}
	return client.SendChunks(buf.Bytes(), nil, stream.Send)
}

// SnapshotRestore replaces the resources of the state with a saved
// snapshot's, through the leader.
func (a *operatorAPI) SnapshotRestore(stream pb.Operator_SnapshotRestoreServer) error {
	data, opts, err := receiveChunks(stream)
	if err != nil {
		return err
	}
	if a.s.IsLeader() {
		resp, err := a.s.restore(data, opts.Force, opts.DryRun)
		if err != nil {
			return err
		}
		return stream.SendAndClose(resp)
	}
	addr, err := a.s.leaderAPI()
	if err != nil {
		return err
	}
	conn, err := a.s.peers.get(addr)
	if err != nil {
		return err
	}
	out, err := pb.NewPeerClient(conn).Restore(stream.Context())
	if err != nil {
		return err
	}
	if err := client.SendChunks(data, opts, out.Send); err != nil {
		return err
	}
	resp, err := out.CloseAndRecv()
	if err != nil {
		return err
	}
	return stream.SendAndClose(resp)
}

// Version reports the build and the Kubernetes versions it supports.
func (a *operatorAPI) Version(ctx context.Context, req *pb.VersionRequest) (*pb.VersionResponse, error) {
	return &pb.VersionResponse{Version: version.Version, KubernetesVersions: version.KubernetesVersions}, nil
}
