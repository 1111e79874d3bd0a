package coordinator

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"time"

	"github.com/oneinfra/oneinfra/internal/renewal"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// Renewal of the coordinator CA's certificates: each holder renews its own
// (internal/renewal says when) with a key it makes, and the coordinator
// signs it for the same role and name as the certificate the call comes
// with, never for names the holder chose. The old certificate stays valid
// until it expires, so that connections opened with it keep working.

// renewFor signs the renewal of id's certificate for the key of csrPEM,
// with opts' usages and names, records it and returns it with the CA.
func (s *Server) renewFor(ctx context.Context, id identity, csrPEM []byte, opts tlsutil.CertOptions, cluster string) (*pb.RenewCertificateResponse, error) {
	csr, err := tlsutil.ParseCSR(csrPEM)
	if err != nil {
		return nil, invalid("certificate request: %v", err)
	}
	if csr.Subject.CommonName != id.Name {
		return nil, invalid("certificate request: CN %q is not %q, the holder of the certificate the call comes with", csr.Subject.CommonName, id.Name)
	}
	if rec := s.State().Issued(nil, id.Serial); rec != nil {
		if sum := sha256.Sum256(csr.RawSubjectPublicKeyInfo); bytes.Equal(sum[:], rec.PublicKeySha256) {
			return nil, invalid("certificate request: the key is the current certificate's: a renewal takes a new key")
		}
	}
	opts.CommonName = id.Name
	opts.Validity = s.cfg.certValidity()
	cert, rec, ca, err := s.signRecorded(csrPEM, opts, cluster, "renewal/"+id.Serial, time.Now())
	if err != nil {
		return nil, err
	}
	if _, err := s.raftApply(IssueCertsType, &pb.IssueCertsCommand{Certs: []*pb.IssuedCert{rec}}); err != nil {
		return nil, err
	}
	s.logger.Info("certificate renewed", "holder", id.String(), "old", id.Serial, "new", rec.Serial, "expires", rec.NotAfter.AsTime())
	return &pb.RenewCertificateResponse{CertPem: cert, CaPem: ca.CertPem}, nil
}

// RenewCredentials renews the calling operator's certificate.
func (a *operatorAPI) RenewCredentials(ctx context.Context, req *pb.RenewCertificateRequest) (*pb.RenewCertificateResponse, error) {
	return a.s.renewFor(ctx, callerOf(ctx), req.CsrPem, tlsutil.CertOptions{
		Organizations: []string{vocab.RoleOperator}, Usages: []tlsutil.Usage{tlsutil.UsageClient},
	}, "")
}

// RenewCertificate renews the calling hypervisor agent's certificate.
func (a *agentAPI) RenewCertificate(ctx context.Context, req *pb.RenewCertificateRequest) (*pb.RenewCertificateResponse, error) {
	return a.s.renewFor(ctx, callerOf(ctx), req.CsrPem, tlsutil.CertOptions{
		Organizations: []string{vocab.RoleHypervisor}, Usages: []tlsutil.Usage{tlsutil.UsageClient},
	}, "")
}

// RenewWorkerCertificate renews a worker's certificate, for the join
// endpoint of its cluster's VPN, which verified the current one.
func (a *agentAPI) RenewWorkerCertificate(ctx context.Context, req *pb.RenewWorkerCertificateRequest) (*pb.RenewCertificateResponse, error) {
	w := req.GetWorker()
	id := identity{Role: vocab.RoleWorker, Name: w.GetName(), Serial: w.GetSerial()}
	st := a.s.stateWithRecord(ctx, id)
	if err := admit(st, id); err != nil {
		return nil, err
	}
	if rec := st.Issued(nil, w.GetSerial()); rec == nil || rec.Cluster != w.GetCluster() {
		return nil, fmt.Errorf("the certificate %s is not one issued to node %q of cluster %q: %w", w.GetSerial(), w.GetName(), w.GetCluster(), errDenied)
	}
	if _, err := a.s.relayedCluster(ctx, st, w.GetCluster()); err != nil {
		return nil, err
	}
	if st.VPNPeer(nil, w.GetCluster(), w.GetName()) == nil {
		return nil, fmt.Errorf("node %q of cluster %q is not joined (removed?): %w", w.GetName(), w.GetCluster(), errDenied)
	}
	return a.s.renewFor(ctx, id, req.CsrPem, tlsutil.CertOptions{
		Organizations: []string{vocab.RoleWorker, vocab.ClusterOrgPrefix + w.GetCluster()}, Usages: []tlsutil.Usage{tlsutil.UsageClient},
	}, w.GetCluster())
}

// RenewCertificate renews the calling server's certificate, for the
// address the coordinator knows it at.
func (a *peerAPI) RenewCertificate(ctx context.Context, req *pb.RenewCertificateRequest) (*pb.RenewCertificateResponse, error) {
	id := callerOf(ctx)
	host := ""
	for _, srv := range a.s.State().Servers(nil) {
		if srv.Id == id.Name {
			host, _, _ = net.SplitHostPort(srv.RaftAddress)
		}
	}
	if host == "" {
		return nil, fmt.Errorf("server %q is not a member: %w", id.Name, errDenied)
	}
	return a.s.renewFor(ctx, id, req.CsrPem, serverCertOptions(id.Name, host, a.s.cfg.certValidity()), "")
}

// renewLoop renews this server's own certificate (API and Raft) as it
// comes due, through the leader, until the server stops.
func (s *Server) renewLoop() {
	defer s.wg.Done()
	for {
		select {
		case <-s.stopCh:
			return
		case <-time.After(renewal.CheckEvery(s.creds.cert.Leaf())):
		}
		if !renewal.Due(s.creds.cert.Leaf(), time.Now()) {
			continue
		}
		if err := s.renewOwn(); err != nil {
			s.logger.Warn("renewing this server's certificate; trying again", "expires", s.creds.cert.Leaf().NotAfter, "err", err)
		}
	}
}

// renewOwn has the leader sign this server's certificate for a new key,
// keeps it in DATA-DIR/tls and presents it from the next handshake on.
func (s *Server) renewOwn() error {
	addr, err := s.leaderAPI()
	if err != nil {
		return err
	}
	conn, err := s.peers.get(addr)
	if err != nil {
		return err
	}
	key, keyPEM, err := tlsutil.GenerateKey()
	if err != nil {
		return err
	}
	csr, err := tlsutil.CreateCSR(key, s.cfg.ID, nil)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	resp, err := pb.NewPeerClient(conn).RenewCertificate(ctx, &pb.RenewCertificateRequest{CsrPem: csr})
	if err != nil {
		return err
	}
	kp := &pb.KeyPair{CertPem: resp.CertPem, KeyPem: keyPEM}
	if err := s.creds.write(kp); err != nil {
		return err
	}
	if err := s.creds.cert.Set(kp); err != nil {
		return err
	}
	s.peers.renewed()
	s.logger.Info("this server's certificate renewed", "expires", s.creds.cert.Leaf().NotAfter)
	return nil
}
