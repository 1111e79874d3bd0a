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
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// identity is the agent's certificate from the coordinator CA, under
// DATA-DIR/identity. Its key is made here and never leaves the machine.
type identity struct {
	caPEM []byte
	cert  *pb.KeyPair
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
	return &identity{caPEM: ca, cert: &pb.KeyPair{CertPem: cert, KeyPem: key}}, nil
}

func (id *identity) write(dataDir string) error {
	dir := identityDir(dataDir)
	if err := tlsutil.WriteFileAtomic(filepath.Join(dir, "agent.key"), id.cert.KeyPem, 0o600); err != nil {
		return err
	}
	if err := tlsutil.WriteFileAtomic(filepath.Join(dir, "agent.crt"), id.cert.CertPem, 0o644); err != nil {
		return err
	}
	return tlsutil.WriteFileAtomic(filepath.Join(dir, "ca.crt"), id.caPEM, 0o644)
}

// tlsConfig is the client configuration for calls to the coordinator.
func (id *identity) tlsConfig() (*tls.Config, error) {
	return tlsutil.ClientConfig(id.cert, id.caPEM, "")
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
	return &identity{caPEM: resp.CaPem, cert: &pb.KeyPair{CertPem: resp.CertPem, KeyPem: keyPEM}}, resp, nil
}
