package coordinator

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/oneinfra/oneinfra/coordinator/pki"
	"github.com/oneinfra/oneinfra/coordinator/scheduler"
	"github.com/oneinfra/oneinfra/coordinator/state"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"golang.org/x/time/rate"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Worker joins: a public hypervisor's join endpoint forwards them here with
// its own certificate; the worker token is the worker's proof.

// bootstrapTokenTTL is how long a node's Kubernetes bootstrap token lives:
// the kubelet trades it for its own certificate within seconds.
const bootstrapTokenTTL = 24 * time.Hour

// nodePodPrefixLen is the size of the pod subnet each node gets.
const nodePodPrefixLen = 24

// errNotReady is a condition the caller should wait out (the VPN endpoint
// is not up yet); it maps to FailedPrecondition, which workers retry.
var errNotReady = errors.New("not ready")

// Joins per worker token: a burst, then one every joinInterval, so that a
// leaked token cannot fill a cluster's VPN with fake nodes at once.
const (
	joinBurst    = 10
	joinInterval = 2 * time.Second
)

// joinLimiter rate-limits worker joins per token, on the leader.
type joinLimiter struct {
	mu     sync.Mutex
	tokens map[string]*rate.Limiter
}

// allow reports whether the token may join one more node now, and when it
// may if not.
func (l *joinLimiter) allow(token string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.tokens == nil {
		l.tokens = map[string]*rate.Limiter{}
	}
	lim := l.tokens[token]
	if lim == nil {
		lim = rate.NewLimiter(rate.Every(joinInterval), joinBurst)
		l.tokens[token] = lim
	}
	r := lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// JoinWorker checks a worker token, allocates the node's VPN address and
// pod subnet in the replicated state and returns the node's configuration.
// Only the join endpoint of the hypervisor running the cluster's ingress
// relays its joins. A node that joins again with the same name and keys
// (a lost answer) gets the same allocation: its certificate request must
// be signed by the key of the certificate it was given, which only it
// holds.
func (a *agentAPI) JoinWorker(ctx context.Context, req *pb.JoinWorkerRequest) (*pb.WorkerConfig, error) {
	now := time.Now()
	// The token first, before any lock: a flood of bad tokens costs a
	// lookup each and slows no one else.
	tok, err := checkToken(func(id string) *pb.Token { return a.s.State().Token(nil, id) }, req.Token, TokenWorker, now)
	if err != nil {
		return nil, err
	}
	if ok, wait := a.s.joins.allow(tok.Id, now); !ok {
		return nil, status.Errorf(codes.ResourceExhausted, "token %s: more than %d joins at once (then one every %s): try again in %s",
			tok.Id, joinBurst, joinInterval, wait.Round(100*time.Millisecond))
	}
	if !resources.IsDNS1123Subdomain(req.Name) {
		return nil, invalid("--name: %q is not a valid node name (lowercase letters, digits, '-' and '.')", req.Name)
	}
	if _, err := wgtypes.ParseKey(req.PublicKey); err != nil {
		return nil, invalid("public key: %v", err)
	}
	csr, err := tlsutil.ParseCSR(req.CsrPem)
	if err != nil {
		return nil, invalid("certificate request: %v", err)
	}
	if csr.Subject.CommonName != req.Name {
		return nil, invalid("certificate request: CN %q is not the node name %q", csr.Subject.CommonName, req.Name)
	}
	a.s.writeMu.Lock() // allocations are read, decided and written at once
	defer a.s.writeMu.Unlock()
	st := a.s.State()
	cluster, err := a.s.relayedCluster(ctx, st, tok.Cluster)
	if err != nil {
		return nil, err
	}
	peer := st.VPNPeer(nil, tok.Cluster, req.Name)
	if peer != nil && peer.PublicKey != req.PublicKey {
		return nil, fmt.Errorf("node %q has already joined cluster %s with another key; remove it first (oneinfra-coord cluster remove-node %s %s): %w",
			req.Name, tok.Cluster, tok.Cluster, req.Name, errAlreadyExists)
	}
	if peer != nil && !holdsNodeKey(st, tok.Cluster, req.Name, csr.RawSubjectPublicKeyInfo) {
		return nil, fmt.Errorf("node %q has already joined cluster %s: joining again takes the node's own key, which this request is not signed with; remove it first (oneinfra-coord cluster remove-node %s %s): %w",
			req.Name, tok.Cluster, tok.Cluster, req.Name, errAlreadyExists)
	}
	isNew := peer == nil
	if isNew {
		if peer, err = newPeer(st, cluster, req, tok, now); err != nil {
			return nil, err
		}
	}
	certPEM, rec, trust, err := a.s.signRecorded(req.CsrPem, tlsutil.CertOptions{
		CommonName:    req.Name,
		Organizations: []string{vocab.RoleWorker, vocab.ClusterOrgPrefix + tok.Cluster},
		Usages:        []tlsutil.Usage{tlsutil.UsageClient}, Validity: a.s.cfg.certValidity(),
	}, tok.Cluster, "token/"+tok.Id, now)
	if err != nil {
		return nil, err
	}
	if isNew {
		ev := state.Event(tok.Cluster, "Normal", "NodeJoined",
			fmt.Sprintf("node %s joined the VPN as %s (pod subnet %s) through %s", req.Name, peer.Address, peer.PodCidr, callerOf(ctx).Name), now)
		if _, err := a.s.raftApply(JoinWorkerType, &pb.JoinWorkerCommand{Peer: peer, Event: ev, Cert: rec}); err != nil {
			return nil, err
		}
		a.s.logger.Info("worker joined", "cluster", tok.Cluster, "node", req.Name, "address", peer.Address, "token", tok.Id)
	} else if _, err := a.s.raftApply(IssueCertsType, &pb.IssueCertsCommand{Certs: []*pb.IssuedCert{rec}}); err != nil {
		return nil, err
	}
	cfg, err := a.s.workerConfig(a.s.State(), cluster, peer)
	if err != nil {
		return nil, err
	}
	cfg.CertPem, cfg.CoordinatorTrust = certPEM, trust // the CAs of the certificate's state
	return cfg, nil
}

// holdsNodeKey reports whether a node of a cluster was given a
// certificate, not revoked, for the public key spki.
func holdsNodeKey(st *state.Store, cluster, node string, spki []byte) bool {
	sum := sha256.Sum256(spki)
	return slices.ContainsFunc(st.IssuedTo(nil, vocab.RoleWorker, node), func(c *pb.IssuedCert) bool {
		return c.Cluster == cluster && !c.Revoked && bytes.Equal(c.PublicKeySha256, sum[:])
	})
}

// relayedCluster returns a VPN cluster whose worker joins the calling
// hypervisor may relay: only the one running its ingress (the VPN
// endpoint) does.
func (s *Server) relayedCluster(ctx context.Context, st *state.Store, name string) (*pb.Cluster, error) {
	cluster := st.Cluster(nil, name)
	switch {
	case cluster == nil:
		return nil, fmt.Errorf("cluster %q does not exist: %w", name, errDenied)
	case cluster.Metadata.DeletionTimestamp != nil:
		return nil, fmt.Errorf("cluster %s is being deleted: %w", name, errDenied)
	case !cluster.Spec.GetVpn().GetEnabled():
		return nil, fmt.Errorf("cluster %s has no VPN (spec.vpn.enabled is false): workers cannot join it: %w", name, errDenied)
	}
	ep, err := s.endpointOf(st, cluster)
	if err != nil {
		return nil, err
	}
	if caller := callerOf(ctx).Name; ep.hypervisor.Metadata.Name != caller {
		return nil, fmt.Errorf("hypervisor %s does not run the VPN endpoint of cluster %s: its workers join through %s: %w",
			caller, name, net.JoinHostPort(ep.hypervisor.Spec.PublicAddress, strconv.Itoa(resources.DefaultJoinPort)), errDenied)
	}
	return cluster, nil
}

// errAlreadyExists maps to AlreadyExists.
var errAlreadyExists = errors.New("already exists")

// newPeer allocates a node's addresses against the state read; the FSM
// refuses the entry if another join took them meanwhile.
func newPeer(st *state.Store, cluster *pb.Cluster, req *pb.JoinWorkerRequest, tok *pb.Token, now time.Time) (*pb.VPNPeer, error) {
	var addrs, subnets []string
	for _, p := range st.VPNPeers(nil, cluster.Metadata.Name) {
		addrs = append(addrs, p.Address)
		subnets = append(subnets, p.PodCidr)
	}
	addr, err := scheduler.AllocateVPNAddress(cluster.Spec.Vpn.Cidr, addrs)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", cluster.Metadata.Name, err)
	}
	subnet, err := scheduler.AllocateVPNCIDR(cluster.Spec.Networking.GetPodCidr(), nodePodPrefixLen, subnets)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: no /%d pod subnet left in spec.networking.podCIDR %s: %w",
			cluster.Metadata.Name, nodePodPrefixLen, cluster.Spec.Networking.GetPodCidr(), state.ErrConflict)
	}
	id, err := randomString(6)
	if err != nil {
		return nil, err
	}
	secret, err := randomString(16)
	if err != nil {
		return nil, err
	}
	return &pb.VPNPeer{
		Cluster: cluster.Metadata.Name, Name: req.Name, Address: addr, PodCidr: subnet,
		PublicKey: req.PublicKey, TokenId: tok.Id, Joined: timestamppb.New(now),
		BootstrapTokenId: id, BootstrapTokenSecret: secret,
		BootstrapTokenExpires: timestamppb.New(now.Add(bootstrapTokenTTL)),
	}, nil
}

// GetWorkerConfig returns a joined node's current configuration (the
// endpoint may have moved since it joined).
func (a *agentAPI) GetWorkerConfig(ctx context.Context, req *pb.GetWorkerConfigRequest) (*pb.WorkerConfig, error) {
	id := identity{Role: vocab.RoleWorker, Name: req.Name, Serial: req.Serial}
	st := a.s.stateWithRecord(ctx, id)
	if err := admit(st, id); err != nil {
		return nil, err
	}
	if rec := st.Issued(nil, req.Serial); rec == nil || rec.Cluster != req.Cluster {
		return nil, fmt.Errorf("the certificate %s is not one issued to node %q of cluster %q: %w", req.Serial, req.Name, req.Cluster, errDenied)
	}
	cluster, err := a.s.relayedCluster(ctx, st, req.Cluster)
	if err != nil {
		return nil, err
	}
	peer := st.VPNPeer(nil, req.Cluster, req.Name)
	if peer == nil {
		return nil, fmt.Errorf("node %q of cluster %q is not joined (removed?): %w", req.Name, req.Cluster, errDenied)
	}
	cfg, err := a.s.workerConfig(st, cluster, peer)
	if err != nil {
		return nil, err
	}
	cfg.BootstrapToken = "" // only Join hands it out: the node kept it
	// What the node says it holds, if it can hold it: no generation past
	// the current one.
	cmd := &pb.WorkerTrustCommand{Cluster: req.Cluster, Name: req.Name}
	if req.TrustGeneration > peer.TrustGeneration && req.TrustGeneration <= cfg.TrustGeneration {
		cmd.TrustGeneration = req.TrustGeneration
	}
	if req.CoordinatorTrustGeneration > peer.CoordinatorTrustGeneration && req.CoordinatorTrustGeneration <= cfg.GetCoordinatorTrust().GetGeneration() {
		cmd.CoordinatorTrustGeneration = req.CoordinatorTrustGeneration
	}
	if cmd.TrustGeneration > 0 || cmd.CoordinatorTrustGeneration > 0 {
		if _, err := a.s.raftApply(WorkerTrustType, cmd); err != nil {
			// Told again at its next request.
			a.s.logger.Warn("recording the trust generation a node holds", "cluster", req.Cluster, "node", req.Name, "err", err)
		}
	}
	return cfg, nil
}

// vpnEndpoint is where a cluster's VPN endpoint runs.
type vpnEndpoint struct {
	ingress    *pb.Component
	hypervisor *pb.Hypervisor
	publicKey  string
}

// endpointOf finds the live ingress of a VPN cluster and its WireGuard key;
// errNotReady until its agent has reported the key.
func (s *Server) endpointOf(st *state.Store, cluster *pb.Cluster) (*vpnEndpoint, error) {
	for _, comp := range st.ComponentsOfCluster(nil, cluster.Metadata.Name) {
		if comp.Spec.Role != resources.RoleIngress || comp.Metadata.DeletionTimestamp != nil {
			continue
		}
		h := st.Hypervisor(nil, comp.Spec.Hypervisor)
		key := comp.GetStatus().GetWireguardPublicKey()
		if h == nil || key == "" {
			break
		}
		return &vpnEndpoint{ingress: comp, hypervisor: h, publicKey: key}, nil
	}
	return nil, fmt.Errorf("the VPN endpoint of cluster %s is not up yet (its ingress has not reported a WireGuard key): %w", cluster.Metadata.Name, errNotReady)
}

// workerConfig is what a joined node needs to reach its cluster.
func (s *Server) workerConfig(st *state.Store, cluster *pb.Cluster, peer *pb.VPNPeer) (*pb.WorkerConfig, error) {
	ep, err := s.endpointOf(st, cluster)
	if err != nil {
		return nil, err
	}
	vpn := cluster.Spec.Vpn.Cidr
	prefix, err := netip.ParsePrefix(vpn)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: spec.vpn.cidr: %w", cluster.Metadata.Name, err)
	}
	hub, err := scheduler.EndpointAddress(vpn)
	if err != nil {
		return nil, err
	}
	p := st.ClusterPKI(nil, cluster.Metadata.Name)
	trust := pki.Trust(p)
	dns, err := resources.DNSServiceIP(cluster.Spec.Networking.GetServiceCidr())
	if err != nil {
		return nil, err
	}
	cfg := &pb.WorkerConfig{
		Cluster:            cluster.Metadata.Name,
		Name:               peer.Name,
		Address:            peer.Address + "/" + strconv.Itoa(prefix.Bits()),
		PodCidr:            peer.PodCidr,
		ClusterPodCidr:     cluster.Spec.Networking.GetPodCidr(),
		ServiceCidr:        cluster.Spec.Networking.GetServiceCidr(),
		ClusterDns:         dns.String(),
		EndpointPublicKey:  ep.publicKey,
		Endpoint:           net.JoinHostPort(ep.hypervisor.Spec.PublicAddress, strconv.Itoa(int(ep.ingress.Spec.Ports[vocab.PortWireGuard]))),
		EndpointAddress:    hub,
		AllowedIps:         vpnRoutes(cluster),
		ApiServer:          "https://" + net.JoinHostPort(hub, strconv.Itoa(resources.TunnelAPIPort)),
		ClusterCaPem:       trust[vocab.ClusterCA],
		KubeletClientCaPem: trust[vocab.KubeletClientCA],
		SignerCaPem:        p.GetCas()[vocab.SignerCA].GetCertPem(),
		TrustGeneration:    p.GetTrustGeneration(),
		BootstrapToken:     peer.BootstrapTokenId + "." + peer.BootstrapTokenSecret,
		CoordinatorTrust:   coordinatorTrust(st.Config(nil)),
	}
	for _, h := range st.Hypervisors(nil) {
		if h.Spec.Public && h.Spec.PublicAddress != "" {
			cfg.JoinEndpoints = append(cfg.JoinEndpoints, net.JoinHostPort(h.Spec.PublicAddress, strconv.Itoa(resources.DefaultJoinPort)))
		}
	}
	slices.Sort(cfg.JoinEndpoints)
	return cfg, nil
}

// vpnRoutes are the networks a VPN cluster's nodes and control plane reach
// through the tunnel: the VPN itself and the pods.
func vpnRoutes(cluster *pb.Cluster) []string {
	return []string{cluster.Spec.Vpn.GetCidr(), cluster.Spec.Networking.GetPodCidr()}
}

// ListPeers lists a cluster's VPN peers with what its endpoint's device
// last said about each.
func (a *operatorAPI) ListPeers(ctx context.Context, req *pb.ListPeersRequest) (*pb.ListPeersResponse, error) {
	st := a.s.State()
	c := st.Cluster(nil, req.Cluster)
	if c == nil {
		return nil, fmt.Errorf("cluster %q: %w", req.Cluster, state.ErrNotFound)
	}
	seen := map[string]*pb.PeerStatus{}
	for _, comp := range st.ComponentsOfCluster(nil, req.Cluster) {
		if comp.Spec.Role == resources.RoleIngress {
			for _, ps := range comp.GetStatus().GetVpnPeers() {
				seen[ps.PublicKey] = ps
			}
		}
	}
	resp := &pb.ListPeersResponse{VpnEndpoint: c.GetStatus().GetVpnEndpoint(), Meta: a.s.readMeta()}
	for _, p := range st.VPNPeers(nil, req.Cluster) {
		info := &pb.PeerInfo{Name: p.Name, Address: p.Address, PodCidr: p.PodCidr, PublicKey: p.PublicKey, Joined: p.Joined}
		if ps := seen[p.PublicKey]; ps != nil {
			info.LastHandshake, info.Endpoint = ps.LastHandshake, ps.Endpoint
		}
		resp.Peers = append(resp.Peers, info)
	}
	return resp, nil
}

// RemovePeer removes a node from a cluster's VPN: its peer goes from the
// endpoint, its address and pod subnet are freed, its bootstrap token is
// deleted from the cluster.
func (a *operatorAPI) RemovePeer(ctx context.Context, req *pb.RemovePeerRequest) (*pb.RemovePeerResponse, error) {
	now := time.Now()
	ev := state.Event(req.Cluster, "Normal", "NodeRemoved", fmt.Sprintf("node %s removed from the VPN; its certificates are revoked", req.Name), now)
	if _, err := a.s.raftApply(RemovePeerType, &pb.RemovePeerCommand{Cluster: req.Cluster, Name: req.Name, Event: ev, Time: timestamppb.New(now)}); err != nil {
		return nil, err
	}
	return &pb.RemovePeerResponse{}, nil
}
