package coordinator

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// bootstrapAPI trades join tokens for certificates signed by the
// coordinator CA. Callers have no certificate yet; the token is the proof.
type bootstrapAPI struct {
	pb.UnimplementedBootstrapServer
	s *Server
}

func (a *bootstrapAPI) token(presented, kind string) (*pb.Token, error) {
	st := a.s.State()
	return checkToken(func(id string) *pb.Token { return st.Token(nil, id) }, presented, kind, time.Now())
}

// signingCA is the CA of cfg, with its key, that signs certificates of
// role: the coordinator CA, but during a rotation's stage 2 the old one
// for serving roles (see servingMoves).
func signingCA(cfg *pb.CoordinatorConfig, role string) (*pb.KeyPair, error) {
	if cfg.GetCa() == nil {
		return nil, fmt.Errorf("the coordinator is still bootstrapping: %w", errNoLeader)
	}
	if prev := cfg.GetRotation().GetPrevious(); prev != nil && serving(role) && !servingMoves(cfg) {
		return prev, nil
	}
	return cfg.Ca, nil
}

// JoinServer signs the certificate of a server about to join; it becomes a
// voter when it calls Peer.Join with that certificate.
func (a *bootstrapAPI) JoinServer(ctx context.Context, req *pb.JoinServerRequest) (*pb.JoinServerResponse, error) {
	tok, err := a.token(req.Token, TokenServer)
	if err != nil {
		return nil, err
	}
	if !resources.IsDNS1123Subdomain(req.Id) {
		return nil, invalid("--id: %q is not a valid server ID (lowercase letters, digits, '-' and '.')", req.Id)
	}
	host, _, err := net.SplitHostPort(req.RaftAddress)
	if err != nil {
		return nil, invalid("raft address %q: %v", req.RaftAddress, err)
	}
	for _, srv := range a.s.State().Servers(nil) {
		if srv.Id == req.Id && srv.RaftAddress != req.RaftAddress {
			return nil, invalid("--id: server %q is already a member at %s", req.Id, srv.RaftAddress)
		}
	}
	// Recorded with the token's use: the certificate counts as a server's
	// only once its holder is a member (see Trust).
	cert, rec, trust, err := a.s.signRecorded(req.CsrPem, serverCertOptions(req.Id, host, a.s.cfg.certValidity()), "", "token/"+tok.Id, time.Now())
	if err != nil {
		return nil, err
	}
	if _, err := a.s.raftApply(IssueCertsType, &pb.IssueCertsCommand{Certs: []*pb.IssuedCert{rec}, TokenId: tok.Id}); err != nil {
		return nil, err
	}
	a.s.logger.Info("server certificate issued", "id", req.Id, "token", tok.Id)
	return &pb.JoinServerResponse{CertPem: cert, CaPem: trust.CaPem, Keyring: a.s.keys.Marshal()}, nil
}

// RegisterHypervisor records a hypervisor and signs its agent's
// certificate; the agent's key never leaves it.
func (a *bootstrapAPI) RegisterHypervisor(ctx context.Context, req *pb.RegisterHypervisorRequest) (*pb.RegisterHypervisorResponse, error) {
	tok, err := a.token(req.Token, TokenHypervisor)
	if err != nil {
		return nil, err
	}
	if tok.Name != "" && tok.Name != req.Name {
		return nil, fmt.Errorf("token %s registers hypervisor %q only, not %q: %w", tok.Id, tok.Name, req.Name, errDenied)
	}
	replace := tok.Name == req.Name
	if !replace && a.s.State().Hypervisor(nil, req.Name) != nil {
		return nil, fmt.Errorf("hypervisor %q is registered already; to register a machine that lost its identity under this name, use a token made with --name %s: %w",
			req.Name, req.Name, errAlreadyExists)
	}
	now := time.Now()
	h := &pb.Hypervisor{
		ApiVersion: resources.APIVersion, Kind: resources.KindHypervisor,
		Metadata: &pb.ObjectMeta{Name: req.Name, Uid: newUID(), CreationTimestamp: timestamppb.New(now)},
		Spec:     req.Spec,
		Status:   &pb.HypervisorStatus{Health: resources.HealthAlive, LastSeen: timestamppb.New(now)},
	}
	if h.Spec == nil {
		h.Spec = &pb.HypervisorSpec{}
	}
	h.Spec.Unschedulable = false
	resources.DefaultHypervisor(h)
	if err := resources.ValidateHypervisor(h); err != nil {
		return nil, invalid("hypervisor %q: %v", req.Name, err)
	}
	// A client certificate only: it serves nothing (a public hypervisor's
	// join endpoint has a certificate of its own, IssueJoinCertificate).
	cert, rec, trust, err := a.s.signRecorded(req.CsrPem, tlsutil.CertOptions{
		CommonName: req.Name, Organizations: []string{vocab.RoleHypervisor},
		Usages: []tlsutil.Usage{tlsutil.UsageClient}, Validity: a.s.cfg.certValidity(),
	}, "", "token/"+tok.Id, now)
	if err != nil {
		return nil, err
	}
	if _, err := a.s.raftApply(RegisterHypervisorType, &pb.RegisterHypervisorCommand{
		Hypervisor: h, TokenId: tok.Id, Cert: rec, Replace: replace, Time: timestamppb.New(now),
	}); err != nil {
		return nil, err
	}
	var servers []string
	for _, srv := range a.s.State().Servers(nil) {
		servers = append(servers, srv.ApiAddress)
	}
	a.s.logger.Info("hypervisor registered", "hypervisor", req.Name, "public", h.Spec.Public, "token", tok.Id, "again", replace)
	return &pb.RegisterHypervisorResponse{CertPem: cert, CaPem: trust.CaPem, Servers: servers,
		GossipKey: a.s.State().Config(nil).GetGossipKey()}, nil
}
