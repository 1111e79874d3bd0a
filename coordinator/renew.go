package coordinator

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/go-memdb"
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
	cert, rec, trust, err := s.signRecorded(csrPEM, opts, cluster, "renewal/"+id.Serial, time.Now())
	if err != nil {
		return nil, err
	}
	if _, err := s.raftApply(IssueCertsType, &pb.IssueCertsCommand{Certs: []*pb.IssuedCert{rec}}); err != nil {
		return nil, err
	}
	s.logger.Info("certificate renewed", "holder", id.String(), "old", id.Serial, "new", rec.Serial, "expires", rec.NotAfter.AsTime())
	return &pb.RenewCertificateResponse{CertPem: cert, CaPem: trust.CaPem, TrustGeneration: trust.Generation}, nil
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

// renewLoop keeps this server's trust and certificate (API and Raft)
// current until the server stops: the CAs the state says to trust, and a
// renewal through the leader as the certificate comes due, or at once when
// a CA rotation's stage wants one of the new CA.
func (s *Server) renewLoop() {
	defer s.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-s.stopCh
		cancel()
	}()
	for ctx.Err() == nil {
		st := s.State()
		ws := memdb.NewWatchSet()
		ws.Add(st.AbandonCh())
		cfg := st.Config(ws)
		if err := s.syncTrust(cfg); err != nil {
			s.logger.Warn("taking the coordinator's new CAs; trying again", "err", err)
		} else {
			s.trustHeld.Store(cfg.GetTrustGeneration())
		}
		wait := renewal.CheckEvery(s.creds.cert.Leaf())
		if renewal.Due(s.creds.cert.Leaf(), time.Now()) || s.mustMove(cfg) {
			if err := s.renewOwn(); err != nil {
				s.logger.Warn("renewing this server's certificate; trying again", "expires", s.creds.cert.Leaf().NotAfter, "err", err)
				wait = min(wait, 5*time.Second)
			}
		}
		wctx, stop := context.WithTimeout(ctx, wait)
		_ = ws.WatchCtx(wctx)
		stop()
	}
}

// syncTrust makes this server trust the CAs cfg says, from the next
// handshake on, and keeps them in DATA-DIR/tls.
func (s *Server) syncTrust(cfg *pb.CoordinatorConfig) error {
	want := trustPEM(cfg)
	if len(want) == 0 || bytes.Equal(want, s.creds.trust.PEM()) {
		return nil
	}
	if err := s.creds.trust.Set(want); err != nil {
		return err
	}
	if err := s.creds.writeTrust(); err != nil {
		return err
	}
	conf, err := s.creds.clientTLS()
	if err != nil {
		return err
	}
	s.peers.redial(conf)
	s.logger.Info("this server trusts the coordinator's CAs of trust generation", "generation", cfg.TrustGeneration)
	return nil
}

// mustMove reports whether this server's certificate must be renewed now
// because it is not of the CA that signs: from a CA rotation's servers
// stage on (before it, clients that know only the old CA still reach
// servers of it).
func (s *Server) mustMove(cfg *pb.CoordinatorConfig) bool {
	if cfg.GetCa() == nil || !servingMoves(cfg) {
		return false
	}
	return !tlsutil.IssuedBy(s.creds.cert.Leaf(), cfg.Ca.CertPem)
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
