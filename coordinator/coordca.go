package coordinator

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"time"

	"github.com/oneinfra/oneinfra/coordinator/state"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Rotation of the coordinator's own CA (`oneinfra-coord rotate-ca`, see
// CoordinatorCARotation). Every holder of a coordinator certificate learns
// what to trust and what signs (pb.CoordinatorTrust): servers from the
// state they apply, agents in each report's answer, workers in their
// configuration from the join endpoint, operators' CLI from a header on
// every answer (client.TrustHeader). The leader moves to the next stage once
// nothing waits (caRotationWaiting):
//
//  1. every agent and worker holds the new CA beside the old;
//  2. every agent, worker and operator holds a client certificate of the
//     new CA (servers and join endpoints keep theirs, of the old one, so
//     that a CLI whose file knows only the old CA still reaches them and
//     renews, and join tokens keep pinning the CA they present);
//  3. every server and join endpoint holds one;
//
// and then the old CA is dropped: a certificate of it works no more.

// Stages of a coordinator CA rotation.
const (
	caStageTrusting = iota + 1
	caStageHolders
	caStageServers
)

// CAStageName says what a stage of a coordinator CA rotation does.
func CAStageName(stage uint32) string {
	switch stage {
	case caStageTrusting:
		return "new CA trusted beside the old"
	case caStageHolders:
		return "agents, workers and operators take certificates of the new CA"
	case caStageServers:
		return "servers and join endpoints take certificates of the new CA"
	}
	return fmt.Sprintf("stage %d", stage)
}

// trustPEM is every CA to trust.
func trustPEM(cfg *pb.CoordinatorConfig) []byte {
	if len(cfg.GetTrustPem()) > 0 {
		return cfg.TrustPem
	}
	return cfg.GetCa().GetCertPem()
}

// coordinatorTrust is what holders are told to trust and be signed by.
func coordinatorTrust(cfg *pb.CoordinatorConfig) *pb.CoordinatorTrust {
	if cfg == nil {
		return nil
	}
	return &pb.CoordinatorTrust{Generation: cfg.TrustGeneration, CaPem: trustPEM(cfg), SignerPem: cfg.GetCa().GetCertPem(), ServingMoves: servingMoves(cfg)}
}

// servingMoves reports whether serving certificates (servers', join
// endpoints') must be of the CA that signs now: not before a rotation's
// servers stage.
func servingMoves(cfg *pb.CoordinatorConfig) bool {
	return cfg.GetRotation() == nil || cfg.Rotation.Stage >= caStageServers
}

// RotateCA starts a rotation of the coordinator CA.
func (a *operatorAPI) RotateCA(ctx context.Context, req *pb.RotateCARequest) (*pb.RotateCAResponse, error) {
	s := a.s
	if err := s.startCARotation(); err != nil {
		return nil, err
	}
	st := s.State()
	return &pb.RotateCAResponse{Status: caStatus(st, s.caWaiting(ctx, st))}, nil
}

// startCARotation makes the next CA and has it trusted beside the
// coordinator CA (stage 1).
func (s *Server) startCARotation() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	cfg := s.State().Config(nil)
	if cfg == nil {
		return errNoLeader
	}
	if r := cfg.Rotation; r != nil {
		return status.Errorf(codes.FailedPrecondition, "a rotation of the coordinator CA is under way already (stage %d: %s)", r.Stage, CAStageName(r.Stage))
	}
	now := time.Now()
	next, err := tlsutil.NewCA("oneinfra coordinator CA "+now.UTC().Format("2006-01-02T15:04:05Z"), caValidity, now)
	if err != nil {
		return err
	}
	cmd := &pb.SetTrustCommand{
		Ca: cfg.Ca, TrustPem: bundle(cfg.Ca.CertPem, next.CertPem), TrustGeneration: cfg.TrustGeneration + 1,
		Rotation:              &pb.CoordinatorCARotation{Stage: caStageTrusting, Next: next, Started: timestamppb.New(now), StageSince: timestamppb.New(now)},
		ExpectTrustGeneration: cfg.TrustGeneration,
	}
	if _, err := s.raftApply(SetTrustType, cmd); err != nil {
		return err
	}
	s.logger.Info("coordinator CA rotation begun", "stage", caStageTrusting, "next", tlsutil.CertHash(mustCert(next.CertPem)))
	return nil
}

// CAStatus describes the coordinator CA and its rotation.
func (a *operatorAPI) CAStatus(ctx context.Context, req *pb.CAStatusRequest) (*pb.CAStatusResponse, error) {
	st := a.s.State()
	return caStatus(st, a.s.caWaiting(ctx, st)), nil
}

func caStatus(st *state.Store, waiting []string) *pb.CAStatusResponse {
	cfg := st.Config(nil)
	out := &pb.CAStatusResponse{TrustGeneration: cfg.GetTrustGeneration()}
	if ca, err := tlsutil.ParseCertPEM(cfg.GetCa().GetCertPem()); err == nil {
		out.CaHash, out.NotAfter = tlsutil.CertHash(ca), timestamppb.New(ca.NotAfter)
	}
	if r := cfg.GetRotation(); r != nil {
		out.Rotation = &pb.CARotationStatus{Stage: r.Stage, Started: r.Started, StageSince: r.StageSince, Waiting: waiting}
	}
	return out
}

// caWaiting is what the coordinator CA rotation waits for: holders (see
// caRotationWaiting) and, until servers move, member servers that do not
// say they trust the CAs of the stage yet (a server that missed them could
// not come back once the others present certificates of the new CA).
//
// Servers are asked only once no holder waits, so that a stage costs
// their status calls once, not at every pass of the leader loop.
func (s *Server) caWaiting(ctx context.Context, st *state.Store) []string {
	out := caRotationWaiting(st, time.Now())
	cfg := st.Config(nil)
	if len(out) > 0 || cfg.GetRotation() == nil || servingMoves(cfg) {
		return out
	}
	for _, srv := range st.Servers(nil) {
		var held uint64
		if srv.Id == s.cfg.ID {
			held = s.trustHeld.Load()
		} else if ps, err := s.askPeerStatus(ctx, srv.ApiAddress); err == nil {
			held = ps.TrustGeneration
		}
		if held < cfg.TrustGeneration {
			out = append(out, fmt.Sprintf("server %s to trust the new CA (or members remove it)", srv.Id))
		}
	}
	return out
}

// bundle joins PEM certificates.
func bundle(pems ...[]byte) []byte {
	var b bytes.Buffer
	for _, p := range pems {
		b.Write(bytes.TrimSpace(p))
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// mustCert parses a certificate the coordinator made itself.
func mustCert(certPEM []byte) *x509.Certificate {
	c, err := tlsutil.ParseCertPEM(certPEM)
	if err != nil {
		panic(err)
	}
	return c
}

// caRotationWaiting lists what the coordinator CA rotation's stage waits
// for, with what the operator can do about a holder that does not move.
func caRotationWaiting(st *state.Store, now time.Time) []string {
	cfg := st.Config(nil)
	r := cfg.GetRotation()
	if r == nil {
		return nil
	}
	var out []string
	switch r.Stage {
	case caStageTrusting:
		for _, h := range st.Hypervisors(nil) {
			if h.GetStatus().GetTrustGeneration() < cfg.TrustGeneration {
				out = append(out, fmt.Sprintf("hypervisor %s to trust the new CA (%s; or delete it)", h.Metadata.Name, h.GetStatus().GetHealth()))
			}
		}
		for _, c := range st.Clusters(nil) {
			for _, p := range st.VPNPeers(nil, c.Metadata.Name) {
				if p.CoordinatorTrustGeneration < cfg.TrustGeneration {
					out = append(out, fmt.Sprintf("node %s of cluster %s to trust the new CA (or cluster remove-node)", p.Name, p.Cluster))
				}
			}
		}
	case caStageHolders:
		out = unmoved(st, cfg, now, func(role string) bool { return !serving(role) })
	case caStageServers:
		out = unmoved(st, cfg, now, serving)
	}
	return out
}

// serving reports whether a role's certificates serve (see servingMoves).
func serving(role string) bool { return role == vocab.RoleServer || role == vocab.RoleJoinEndpoint }

// holder is one holder of coordinator certificates.
type holder struct{ role, cluster, name string }

// unmoved describes the holders (of the roles that count) not moved yet.
func unmoved(st *state.Store, cfg *pb.CoordinatorConfig, now time.Time, counts func(role string) bool) []string {
	var out []string
	for _, h := range unmovedHolders(st, cfg, now, counts) {
		switch h.role {
		case vocab.RoleOperator:
			out = append(out, fmt.Sprintf("operator %s to run any oneinfra-coord command with its credentials (or admin revoke %s)", h.name, h.name))
		case vocab.RoleWorker:
			out = append(out, fmt.Sprintf("node %s of cluster %s to renew its certificate (or cluster remove-node)", h.name, h.cluster))
		case vocab.RoleServer:
			out = append(out, fmt.Sprintf("server %s to renew its certificate", h.name))
		case vocab.RoleJoinEndpoint:
			out = append(out, fmt.Sprintf("the join endpoint of hypervisor %s to renew its certificate", h.name))
		default:
			out = append(out, fmt.Sprintf("hypervisor %s to renew its certificate (or delete it)", h.name))
		}
	}
	return out
}

// unmovedHolders are the holders, still there, with a certificate of the
// coordinator CA that still works (not revoked, not expired) but none from
// the CA that signs now.
func unmovedHolders(st *state.Store, cfg *pb.CoordinatorConfig, now time.Time, counts func(role string) bool) []holder {
	signer := tlsutil.CertHash(mustCert(cfg.Ca.CertPem))
	live := map[holder]bool{} // holder → holds one from the signer
	var order []holder
	for _, rec := range st.AllIssued(nil) {
		if !slices.Contains(vocab.Roles, rec.Role) || !counts(rec.Role) || rec.Revoked || !now.Before(rec.NotAfter.AsTime()) || gone(st, rec) {
			continue
		}
		h := holder{rec.Role, rec.Cluster, rec.Name}
		if _, seen := live[h]; !seen {
			order = append(order, h)
		}
		live[h] = live[h] || rec.CaHash == signer
	}
	var out []holder
	for _, h := range order {
		if !live[h] {
			out = append(out, h)
		}
	}
	return out
}

// gone reports whether the holder of a record is no more: a node of a
// deleted cluster, a deleted hypervisor's agent or join endpoint, a
// server that is not a member (any more, or yet).
func gone(st *state.Store, rec *pb.IssuedCert) bool {
	switch rec.Role {
	case vocab.RoleServer:
		return !isMember(st, rec.Name)
	case vocab.RoleWorker:
		return st.VPNPeer(nil, rec.Cluster, rec.Name) == nil
	case vocab.RoleHypervisor, vocab.RoleJoinEndpoint:
		return st.Hypervisor(nil, rec.Name) == nil
	}
	return false
}

// nextTrust is the command that moves a coordinator CA rotation from its
// stage to the next, or ends it.
func nextTrust(cfg *pb.CoordinatorConfig, now time.Time) *pb.SetTrustCommand {
	r := cfg.Rotation
	cmd := &pb.SetTrustCommand{
		Ca: cfg.Ca, TrustPem: cfg.TrustPem, TrustGeneration: cfg.TrustGeneration + 1,
		ExpectTrustGeneration: cfg.TrustGeneration,
	}
	switch r.Stage {
	case caStageTrusting:
		cmd.Ca = r.Next
		cmd.Rotation = &pb.CoordinatorCARotation{Stage: caStageHolders, Previous: cfg.Ca, Started: r.Started, StageSince: timestamppb.New(now)}
	case caStageHolders:
		cmd.Rotation = proto.Clone(r).(*pb.CoordinatorCARotation)
		cmd.Rotation.Stage, cmd.Rotation.StageSince = caStageServers, timestamppb.New(now)
	default:
		cmd.TrustPem = nil // the signing CA alone
	}
	return cmd
}

// advanceCARotation moves the coordinator CA rotation on once nothing
// waits for its stage.
func (s *Server) advanceCARotation(ctx context.Context, now time.Time) error {
	st := s.State()
	cfg := st.Config(nil)
	if cfg.GetRotation() == nil || len(s.caWaiting(ctx, st)) > 0 {
		return nil
	}
	// Decided on st: the command applies only while the trust generation
	// is still st's.
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	cmd := nextTrust(cfg, now)
	if _, err := s.raftApply(SetTrustType, cmd); err != nil {
		return err
	}
	if cmd.Rotation == nil {
		s.logger.Info("coordinator CA rotation done: the old CA is trusted no more", "took", now.Sub(cfg.Rotation.Started.AsTime()).Round(time.Second))
	} else {
		s.logger.Info("coordinator CA rotation", "stage", cmd.Rotation.Stage, "doing", CAStageName(cmd.Rotation.Stage))
	}
	return nil
}

// applySetTrust writes the coordinator CA's rotation if its trust
// generation is still the one the command was decided on.
func (f *FSM) applySetTrust(txn *state.Txn, m proto.Message) error {
	cmd := m.(*pb.SetTrustCommand)
	cfg := txn.Config()
	switch {
	case cfg == nil:
		return fmt.Errorf("the coordinator configuration: %w", state.ErrNotFound)
	case cfg.TrustGeneration != cmd.ExpectTrustGeneration:
		return fmt.Errorf("the coordinator CA moved on (trust generation %d, not %d): %w", cfg.TrustGeneration, cmd.ExpectTrustGeneration, state.ErrConflict)
	}
	cfg = proto.Clone(cfg).(*pb.CoordinatorConfig)
	cfg.Ca, cfg.TrustPem, cfg.TrustGeneration, cfg.Rotation = cmd.Ca, cmd.TrustPem, cmd.TrustGeneration, cmd.Rotation
	txn.SetConfig(cfg)
	return nil
}
