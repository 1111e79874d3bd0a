package coordinator

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/raft"
	"github.com/oneinfra/oneinfra/coordinator/state"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Trust: every certificate the coordinator CA signs carries one role
// (vocab.Roles) and is recorded in the replicated state (IssuedCert), so
// that it can be listed and revoked. A call is admitted only when its
// certificate
//
//   - has exactly one role, the one its service requires;
//   - is not revoked, and is the one recorded for its holder: once a
//     holder has records, a certificate of that holder that is not among
//     them (a replaced one) is refused; a holder without any record is one
//     registered before records were kept, and is taken as it is;
//   - for a server, names a current member of the coordinator: a server
//     certificate counts only while its server is a Raft member (a server
//     that got its certificate but has not joined may only call
//     Peer.Join), and only then are identities it forwards believed.
//
// Revocation (delete hypervisor, cluster remove-node, members remove,
// admin revoke, a hypervisor registered again under its name) marks the
// records revoked, which the next call sees: it takes effect at once on
// every server that has applied the entry.

// errRevoked: the caller's certificate is revoked or replaced.
var errRevoked = errors.New("certificate revoked")

// roleOf returns the one role of a certificate, or "" when it has none or
// several.
func roleOf(cert *x509.Certificate) string {
	role := ""
	for _, o := range cert.Subject.Organization {
		if slices.Contains(vocab.Roles, o) {
			if role != "" {
				return ""
			}
			role = o
		}
	}
	return role
}

// serialOf is how a certificate's serial is written in records.
func serialOf(cert *x509.Certificate) string { return cert.SerialNumber.Text(16) }

// issuedRecord records a certificate issued to a holder.
func issuedRecord(certPEM []byte, role, name, cluster, issuedBy string) (*pb.IssuedCert, error) {
	cert, err := tlsutil.ParseCertPEM(certPEM)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return &pb.IssuedCert{
		Serial: serialOf(cert), Role: role, Name: name, Cluster: cluster,
		NotBefore: timestamppb.New(cert.NotBefore), NotAfter: timestamppb.New(cert.NotAfter),
		IssuedBy: issuedBy, PublicKeySha256: sum[:],
	}, nil
}

// signRecorded signs a certificate request with the coordinator CA for
// its role (opts.Organizations[0]) and holder (opts.CommonName; a worker
// also names its cluster), and returns the certificate, its record (which
// names the CA) and the CAs to trust with it (CoordinatorTrust), of the
// same state. The caller commits the record, with whatever else its entry
// holds.
func (s *Server) signRecorded(csrPEM []byte, opts tlsutil.CertOptions, cluster, issuedBy string, now time.Time) ([]byte, *pb.IssuedCert, *pb.CoordinatorTrust, error) {
	cfg := s.State().Config(nil)
	ca, err := signingCA(cfg, opts.Organizations[0])
	if err != nil {
		return nil, nil, nil, err
	}
	caCert, err := tlsutil.ParseCertPEM(ca.CertPem)
	if err != nil {
		return nil, nil, nil, err
	}
	cert, err := tlsutil.SignCSR(ca, csrPEM, opts, now)
	if err != nil {
		return nil, nil, nil, invalid("certificate request: %v", err)
	}
	rec, err := issuedRecord(cert, opts.Organizations[0], opts.CommonName, cluster, issuedBy)
	if err != nil {
		return nil, nil, nil, err
	}
	rec.CaHash = tlsutil.CertHash(caCert)
	return cert, rec, coordinatorTrust(cfg), nil
}

// admit checks that a caller's certificate is neither revoked nor
// replaced (see Trust).
func admit(st *state.Store, id identity) error {
	rec := st.Issued(nil, id.Serial)
	switch {
	case !id.NotAfter.IsZero() && time.Now().After(id.NotAfter):
		// A connection outlives its handshake's check.
		return fmt.Errorf("the certificate %s of %s expired at %s: %w", id.Serial, id, id.NotAfter.UTC().Format(time.RFC3339), errRevoked)
	case rec != nil && rec.Revoked:
		return fmt.Errorf("the certificate %s of %s was revoked at %s (%s): %w",
			id.Serial, id, rec.RevokedAt.AsTime().UTC().Format(time.RFC3339), rec.RevokedReason, errRevoked)
	case rec != nil && (rec.Role != id.Role || rec.Name != id.Name):
		return fmt.Errorf("the certificate %s was issued to %s/%s, not %s: %w", id.Serial, rec.Role, rec.Name, id, errDenied)
	case rec == nil && len(st.IssuedTo(nil, id.Role, id.Name)) > 0:
		return fmt.Errorf("the certificate %s is not the one %s holds now (it was replaced or revoked): %w", id.Serial, id, errRevoked)
	}
	return nil
}

// recordWait bounds how long a call waits for the record of its
// caller's certificate (see stateWithRecord).
const recordWait = 3 * time.Second

// stateWithRecord is the state to admit id in: the current one, or, when
// it has no record of id's certificate but records of its holder, the
// first within recordWait that has it. A holder may use a certificate the
// leader just issued (a renewal) before this server applied the entry
// that records it; a replaced certificate keeps its record, so it never
// waits.
func (s *Server) stateWithRecord(ctx context.Context, id identity) *state.Store {
	ctx, cancel := context.WithTimeout(ctx, recordWait)
	defer cancel()
	for {
		st := s.State()
		ws := memdb.NewWatchSet()
		ws.Add(st.AbandonCh())
		expired := !id.NotAfter.IsZero() && time.Now().After(id.NotAfter)
		if id.Serial == "" || expired || st.Issued(ws, id.Serial) != nil || len(st.IssuedTo(nil, id.Role, id.Name)) == 0 {
			return st
		}
		if ws.WatchCtx(ctx) != nil {
			return s.State()
		}
	}
}

// isMember reports whether a coordinator server is a member.
func isMember(st *state.Store, id string) bool {
	return slices.ContainsFunc(st.Servers(nil), func(s *pb.Server) bool { return s.Id == id })
}

// pendingServer reports whether a server certificate was issued by
// JoinServer and is not revoked: its holder may call Peer.Join.
func pendingServer(st *state.Store, id identity) bool {
	rec := st.Issued(nil, id.Serial)
	return rec != nil && !rec.Revoked && rec.Role == vocab.RoleServer && rec.Name == id.Name
}

// raftPeer admits a Raft connection from the server certificate of a
// member of this server's Raft configuration, never a revoked or replaced
// one; while this server knows no configuration yet (it is joining), any
// server certificate's.
func (s *Server) raftPeer(cs tls.ConnectionState) error {
	if err := requireServerPeer(cs); err != nil {
		return err
	}
	leaf := cs.PeerCertificates[0]
	if err := admit(s.State(), identity{Role: vocab.RoleServer, Name: leaf.Subject.CommonName, Serial: serialOf(leaf)}); err != nil {
		return err
	}
	r := s.started.Load()
	if r == nil {
		return nil
	}
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	servers := f.Configuration().Servers
	if len(servers) == 0 || slices.ContainsFunc(servers, func(srv raft.Server) bool { return string(srv.ID) == leaf.Subject.CommonName }) {
		return nil
	}
	return fmt.Errorf("raft connection from server %q, which is not a member", leaf.Subject.CommonName)
}

// revokeCmd revokes the certificates of a holder.
func revokeCmd(role, name, cluster, reason string, now time.Time) *pb.RevokeCertsCommand {
	return &pb.RevokeCertsCommand{Role: role, Name: name, Cluster: cluster, Reason: reason, Time: timestamppb.New(now)}
}

// revokeIn marks revoked, in txn, the certificates a RevokeCertsCommand
// names, and returns how many it revoked.
func revokeIn(txn *state.Txn, cmd *pb.RevokeCertsCommand) int {
	var recs []*pb.IssuedCert
	for _, serial := range cmd.Serials {
		if rec := txn.Issued(serial); rec != nil {
			recs = append(recs, rec)
		}
	}
	if cmd.Role != "" {
		for _, rec := range txn.IssuedTo(cmd.Role, cmd.Name) {
			if cmd.Cluster == "" || rec.Cluster == cmd.Cluster {
				recs = append(recs, rec)
			}
		}
	}
	n := 0
	for _, rec := range recs {
		if rec.Revoked {
			continue
		}
		rec = proto.Clone(rec).(*pb.IssuedCert)
		rec.Revoked, rec.RevokedAt, rec.RevokedReason = true, cmd.Time, cmd.Reason
		txn.UpsertIssued(rec)
		n++
	}
	return n
}

// issuer names the caller of a request that issues a certificate, for
// the record: "operator/NAME", or what the caller says it is.
func issuer(ctx context.Context) string {
	id := callerOf(ctx)
	if id.Role == "" {
		return "unauthenticated"
	}
	return id.String()
}
