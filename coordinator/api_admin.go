package coordinator

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"github.com/oneinfra/oneinfra/coordinator/state"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Named operators and coordinator members: who may drive the coordinator,
// and which servers it is made of.

// activeOperators names the operators with a certificate that is neither
// revoked nor expired at now.
func activeOperators(st *state.Store, now time.Time) []string {
	var names []string
	for _, c := range st.AllIssued(nil) {
		if c.Role == vocab.RoleOperator && !c.Revoked && now.Before(c.NotAfter.AsTime()) && !slices.Contains(names, c.Name) {
			names = append(names, c.Name)
		}
	}
	slices.Sort(names)
	return names
}

// CreateAdmin signs a named operator's certificate for the key it made
// (the CSR): the private key never leaves the operator's machine.
func (a *operatorAPI) CreateAdmin(ctx context.Context, req *pb.CreateAdminRequest) (*pb.CreateAdminResponse, error) {
	if !resources.IsDNS1123Label(req.Name) {
		return nil, invalid("NAME: %q is not a valid operator name (a DNS-1123 label)", req.Name)
	}
	csr, err := tlsutil.ParseCSR(req.CsrPem)
	if err != nil {
		return nil, invalid("certificate request: %v", err)
	}
	if csr.Subject.CommonName != req.Name {
		return nil, invalid("certificate request: CN %q is not the operator name %q", csr.Subject.CommonName, req.Name)
	}
	now := time.Now()
	st := a.s.State()
	if slices.Contains(activeOperators(st, now), req.Name) {
		return nil, fmt.Errorf("operator %q exists; revoke it first (oneinfra-coord admin revoke %s) or choose another name: %w", req.Name, req.Name, errAlreadyExists)
	}
	validity := a.s.cfg.certValidity()
	if req.TtlSeconds > 0 {
		validity = min(validity, time.Duration(req.TtlSeconds)*time.Second)
	}
	cert, rec, trust, err := a.s.signRecorded(req.CsrPem, tlsutil.CertOptions{
		CommonName: req.Name, Organizations: []string{vocab.RoleOperator},
		Usages: []tlsutil.Usage{tlsutil.UsageClient}, Validity: validity,
	}, "", issuer(ctx), now)
	if err != nil {
		return nil, err
	}
	if _, err := a.s.raftApply(IssueCertsType, &pb.IssueCertsCommand{Certs: []*pb.IssuedCert{rec}}); err != nil {
		return nil, err
	}
	var servers []string
	for _, srv := range st.Servers(nil) {
		servers = append(servers, srv.ApiAddress)
	}
	return &pb.CreateAdminResponse{CertPem: cert, CaPem: trust.CaPem, Servers: servers}, nil
}

// ListAdmins lists the operators' certificates, by name, newest first.
func (a *operatorAPI) ListAdmins(ctx context.Context, req *pb.ListAdminsRequest) (*pb.ListAdminsResponse, error) {
	var out []*pb.IssuedCert
	for _, c := range a.s.State().AllIssued(nil) {
		if c.Role == vocab.RoleOperator {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(x, y *pb.IssuedCert) int {
		if c := strings.Compare(x.Name, y.Name); c != 0 {
			return c
		}
		return y.NotBefore.AsTime().Compare(x.NotBefore.AsTime())
	})
	return &pb.ListAdminsResponse{Certificates: out}, nil
}

// RevokeAdmin revokes every certificate of a named operator, unless that
// would leave no operator at all.
func (a *operatorAPI) RevokeAdmin(ctx context.Context, req *pb.RevokeAdminRequest) (*pb.RevokeAdminResponse, error) {
	a.s.writeMu.Lock()
	defer a.s.writeMu.Unlock()
	now := time.Now()
	active := activeOperators(a.s.State(), now)
	if !slices.Contains(active, req.Name) {
		return nil, fmt.Errorf("operator %q has no certificate to revoke (admin list shows the operators): %w", req.Name, state.ErrNotFound)
	}
	if len(active) == 1 {
		return nil, fmt.Errorf("revoking %q would leave no operator: create another one first (oneinfra-coord admin create NAME): %w", req.Name, state.ErrConflict)
	}
	before := 0
	for _, c := range a.s.State().IssuedTo(nil, vocab.RoleOperator, req.Name) {
		if !c.Revoked {
			before++
		}
	}
	if _, err := a.s.raftApply(RevokeCertsType, revokeCmd(vocab.RoleOperator, req.Name, "", "revoked by "+issuer(ctx), now)); err != nil {
		return nil, err
	}
	a.s.logger.Info("operator revoked", "operator", req.Name, "by", issuer(ctx), "certificates", before)
	return &pb.RevokeAdminResponse{Revoked: uint32(before)}, nil
}

// RemoveMember takes a server out of the coordinator: its record and
// certificates go first (so it is refused at once), then Raft drops it.
// The last server cannot be removed.
func (a *operatorAPI) RemoveMember(ctx context.Context, req *pb.RemoveMemberRequest) (*pb.RemoveMemberResponse, error) {
	s := a.s
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	servers := f.Configuration().Servers
	if !slices.ContainsFunc(servers, func(srv raft.Server) bool { return string(srv.ID) == req.Id }) {
		return nil, fmt.Errorf("server %q is not a member (members lists them): %w", req.Id, state.ErrNotFound)
	}
	if len(servers) == 1 {
		return nil, fmt.Errorf("server %q is the last member: removing it would end the coordinator: %w", req.Id, state.ErrConflict)
	}
	if _, err := s.raftApply(RemoveServerType, &pb.RemoveServerCommand{Id: req.Id, Time: timestamppb.Now()}); err != nil {
		return nil, err
	}
	if err := s.await(s.raft.RemoveServer(raft.ServerID(req.Id), 0, 30*time.Second)); err != nil {
		return nil, fmt.Errorf("removing server %s from raft: %w", req.Id, err)
	}
	s.logger.Info("server removed", "id", req.Id, "by", issuer(ctx))
	return &pb.RemoveMemberResponse{}, nil
}
