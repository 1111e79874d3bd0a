package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/oneinfra/oneinfra/internal/client"
	"github.com/oneinfra/oneinfra/internal/renewal"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// identity is the agent's certificate from the coordinator CA, under
// DATA-DIR/identity. Its key is made here and never leaves the machine; a
// renewal (renewIdentity) replaces both while connections use them.
type identity struct {
	caPEM []byte
	cert  *tlsutil.Identity
}

func newIdentity(caPEM []byte, kp *pb.KeyPair) (*identity, error) {
	cert, err := tlsutil.NewIdentity(kp, nil)
	if err != nil {
		return nil, err
	}
	return &identity{caPEM: caPEM, cert: cert}, nil
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
	dir := identityDir(dataDir)
	kp := id.cert.KeyPair()
	if err := tlsutil.WriteFileAtomic(filepath.Join(dir, "agent.key"), kp.KeyPem, 0o600); err != nil {
		return err
	}
	if err := tlsutil.WriteFileAtomic(filepath.Join(dir, "agent.crt"), kp.CertPem, 0o644); err != nil {
		return err
	}
	return tlsutil.WriteFileAtomic(filepath.Join(dir, "ca.crt"), id.caPEM, 0o644)
}

// tlsConfig is the client configuration for calls to the coordinator,
// presenting the current certificate.
func (id *identity) tlsConfig() (*tls.Config, error) {
	conf, err := tlsutil.ClientConfig(nil, id.caPEM, "")
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
	if hash, err := tlsutil.CAHash(resp.CaPem); err != nil || hash != cfg.CAHash {
		return nil, nil, errors.New("registering: the coordinator's CA does not match --ca-hash")
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
	if !renewal.Due(leaf, now) {
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
	// A connection presents the certificate of its handshake: new calls
	// go over a new one; the old one finishes what it carries.
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
	a.logger.Info("the agent's certificate renewed", "expires", a.id.cert.Leaf().NotAfter)
	return nil
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
		case <-time.After(renewal.CheckEvery(a.id.cert.Leaf())):
		}
	}
}
