package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/oneinfra/oneinfra/internal/client"
	"github.com/oneinfra/oneinfra/internal/renewal"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// identity is the agent's certificate from the coordinator CA and the CAs
// it trusts, under DATA-DIR/identity. Its key is made here and never
// leaves the machine; a renewal (renewIdentity) replaces both while
// connections use them, and a CA rotation the CAs (syncTrust).
type identity struct {
	trust *tlsutil.Trust
	cert  *tlsutil.Identity
	mu    sync.Mutex // one write at a time, of what is current then
}

func newIdentity(caPEM []byte, kp *pb.KeyPair) (*identity, error) {
	trust, err := tlsutil.NewTrust(caPEM)
	if err != nil {
		return nil, fmt.Errorf("coordinator CA: %w", err)
	}
	cert, err := tlsutil.NewIdentity(kp, nil)
	if err != nil {
		return nil, err
	}
	return &identity{trust: trust, cert: cert}, nil
}

func identityDir(dataDir string) string { return filepath.Join(dataDir, "identity") }

func loadIdentity(dataDir string) (*identity, error) {
	dir := identityDir(dataDir)
	ca, err1 := os.ReadFile(filepath.Join(dir, "ca.crt"))
	cert, err2 := os.ReadFile(filepath.Join(dir, "agent.crt"))
	key, err3 := os.ReadFile(filepath.Join(dir, "agent.key"))
	if err := errors.Join(err1, err2, err3); err != nil {
		return nil, err
	}
	return newIdentity(ca, &pb.KeyPair{CertPem: cert, KeyPem: key})
}

func (id *identity) write(dataDir string) error {
	id.mu.Lock()
	defer id.mu.Unlock()
	dir := identityDir(dataDir)
	kp := id.cert.KeyPair()
	if err := tlsutil.WriteFileAtomic(filepath.Join(dir, "agent.key"), kp.KeyPem, 0o600); err != nil {
		return err
	}
	if err := tlsutil.WriteFileAtomic(filepath.Join(dir, "agent.crt"), kp.CertPem, 0o644); err != nil {
		return err
	}
	return tlsutil.WriteFileAtomic(filepath.Join(dir, "ca.crt"), id.trust.PEM(), 0o644)
}

// tlsConfig is the client configuration for calls to the coordinator,
// presenting the current certificate.
func (id *identity) tlsConfig() (*tls.Config, error) {
	conf, err := tlsutil.ClientConfig(nil, id.trust.PEM(), "")
	if err != nil {
		return nil, err
	}
	return id.cert.Client(conf), nil
}

// register trades the token for a certificate, pinning the coordinator CA
// by its hash, and returns the identity and the coordinator's answer (its
// servers, the gossip key).
func register(ctx context.Context, cfg Config) (*identity, *pb.RegisterHypervisorResponse, error) {
	if cfg.Token == "" || cfg.CAHash == "" {
		return nil, nil, errors.New("this agent has no identity yet: the first start needs --token and --ca-hash (oneinfra-coord token create --kind hypervisor)")
	}
	if err := tlsutil.ValidateCAHash(cfg.CAHash); err != nil {
		return nil, nil, fmt.Errorf("--ca-hash: %w", err)
	}
	key, keyPEM, err := tlsutil.GenerateKey()
	if err != nil {
		return nil, nil, err
	}
	csr, err := tlsutil.CreateCSR(key, cfg.Name, nil)
	if err != nil {
		return nil, nil, err
	}
	conn, err := client.DialTLS(cfg.Coordinators, tlsutil.PinnedClientConfig(cfg.CAHash, ""))
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	spec := &pb.HypervisorSpec{Address: cfg.Address, Public: cfg.Public, PublicAddress: cfg.PublicAddress, PortRange: cfg.PortRange}
	var resp *pb.RegisterHypervisorResponse
	for attempt := 0; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		resp, err = pb.NewBootstrapClient(conn).RegisterHypervisor(cctx, &pb.RegisterHypervisorRequest{
			Token: cfg.Token, Name: cfg.Name, Spec: spec, CsrPem: csr,
		})
		cancel()
		if err == nil || attempt == 4 || ctx.Err() != nil {
			break
		}
		time.Sleep(2 * time.Second)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("registering with the coordinator: %w", err)
	}
	if err := tlsutil.BundleHasCA(resp.CaPem, cfg.CAHash); err != nil {
		return nil, nil, fmt.Errorf("registering: the coordinator's CAs: %w (--ca-hash)", err)
	}
	id, err := newIdentity(resp.CaPem, &pb.KeyPair{CertPem: resp.CertPem, KeyPem: keyPEM})
	return id, resp, err
}

// renewIdentity renews the agent's certificate once it is due
// (internal/renewal): a key made here, signed by the coordinator for the
// same name, written to DATA-DIR/identity and presented from the next
// handshake on. It returns why the agent cannot call the coordinator any
// more, when it cannot (its certificate expired): readiness says so.
func (a *Agent) renewIdentity(ctx context.Context) error {
	leaf := a.id.cert.Leaf()
	now := time.Now()
	if !renewal.Due(leaf, now) && a.fromSigner(leaf) {
		return nil
	}
	key, keyPEM, err := tlsutil.GenerateKey()
	if err != nil {
		return err
	}
	csr, err := tlsutil.CreateCSR(key, a.cfg.Name, nil)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	resp, err := a.api.RenewCertificate(cctx, &pb.RenewCertificateRequest{CsrPem: csr})
	if err != nil {
		if now.After(leaf.NotAfter) {
			return fmt.Errorf("the agent's certificate expired at %s and could not be renewed (%v): register it again with a token bound to its name (oneinfra-coord token create --kind hypervisor --name %s)",
				leaf.NotAfter.UTC().Format(time.RFC3339), err, a.cfg.Name)
		}
		a.logger.Warn("renewing the agent's certificate; trying again", "expires", leaf.NotAfter, "err", err)
		return nil
	}
	if err := a.id.cert.Set(&pb.KeyPair{CertPem: resp.CertPem, KeyPem: keyPEM}); err != nil {
		return fmt.Errorf("the renewed certificate: %w", err)
	}
	if err := a.id.write(a.cfg.DataDir); err != nil {
		return fmt.Errorf("keeping the renewed certificate: %w", err)
	}
	if err := a.redial(); err != nil {
		return err
	}
	a.logger.Info("the agent's certificate renewed", "expires", a.id.cert.Leaf().NotAfter)
	return nil
}

// redial makes new calls to the coordinator go over a new connection,
// with the current certificate and CAs: a connection keeps those of its
// handshake; the old one finishes what it carries.
func (a *Agent) redial() error {
	conf, err := a.id.tlsConfig()
	if err != nil {
		return err
	}
	conn, err := client.DialMembers(a.members, conf, client.PreferServing())
	if err != nil {
		return err
	}
	old := a.conn.Swap(conn)
	time.AfterFunc(time.Minute, func() { old.Close() })
	return nil
}

// syncTrust takes what a report's answer says to trust and be signed by
// (a coordinator CA rotation): the CAs, for calls to the coordinator and
// for workers at the join endpoint from the next handshake on, and, when
// the signing CA did not sign the agent's certificate (or the join
// endpoint's, once serving certificates move), a renewal at once.
// Reports then say the generation held.
func (a *Agent) syncTrust(t *pb.CoordinatorTrust) {
	if t == nil || len(t.CaPem) == 0 {
		return
	}
	if held := a.id.trust.PEM(); !bytes.Equal(t.CaPem, held) {
		if err := a.id.trust.Set(t.CaPem); err != nil {
			a.logger.Warn("the coordinator's CAs are unusable; keeping the ones held", "err", err)
			return
		}
		if err := a.redial(); err != nil {
			_ = a.id.trust.Set(held) // taken again at the next answer
			a.logger.Warn("dialing the coordinator with its new CAs; trying again", "err", err)
			return
		}
		if err := a.id.write(a.cfg.DataDir); err != nil {
			a.logger.Warn("keeping the coordinator's CAs", "err", err)
		}
		a.logger.Info("the agent trusts the coordinator's CAs of trust generation", "generation", t.Generation)
	}
	if signer, err := tlsutil.ParseCertPEM(t.SignerPem); err == nil {
		a.signer.Store(signer)
	}
	a.servingMoves.Store(t.ServingMoves)
	a.trustGen.Store(t.Generation)
	join := a.joinCert.Load()
	if !a.fromSigner(a.id.cert.Leaf()) || (join != nil && !a.joinCertCurrent(join.Leaf())) {
		select {
		case a.renewNow <- struct{}{}:
		default:
		}
	}
}

// fromSigner reports whether cert is of the CA that signs now (as far as
// the agent was told).
func (a *Agent) fromSigner(cert *x509.Certificate) bool {
	signer := a.signer.Load()
	return signer == nil || cert.CheckSignatureFrom(signer) == nil
}

// joinCertCurrent reports whether the join endpoint's certificate may
// stay: of the CA that signs, or of the old one until serving
// certificates move (a rotation's servers stage: workers' join tokens pin
// the CA the servers present).
func (a *Agent) joinCertCurrent(cert *x509.Certificate) bool {
	return !a.servingMoves.Load() || a.fromSigner(cert)
}

// renewLoop renews the agent's certificates as they come due, until ctx
// ends; an agent that can no longer call the coordinator says why, in
// its log and its readiness.
func (a *Agent) renewLoop(ctx context.Context) {
	for {
		if err := a.renewIdentity(ctx); err != nil {
			if prev := a.identityErr.Load(); prev == nil || (*prev).Error() != err.Error() {
				a.logger.Error("the agent cannot call the coordinator", "err", err)
			}
			a.identityErr.Store(&err) // cleared by the next call that works
		}
		a.renewJoinCertificate(ctx)
		select {
		case <-ctx.Done():
			return
		case <-a.renewNow:
		case <-time.After(renewal.CheckEvery(a.id.cert.Leaf())):
		}
	}
}
