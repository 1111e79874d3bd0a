package coordinator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/oneinfra/oneinfra/coordinator/keyring"
	"github.com/oneinfra/oneinfra/internal/client"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// caValidity is the coordinator CA's lifetime; leaf certificates live
// Config.CertValidity.
const caValidity = 10 * 365 * 24 * time.Hour

// Files under DATA-DIR/tls, and the admin credentials.
const (
	caCertFile     = "ca.crt"
	caKeyFile      = "ca.key" // only until the CA is in the replicated state
	serverCertFile = "server.crt"
	serverKeyFile  = "server.key"
	AdminConfFile  = "admin.conf"
)

// serverCreds is this server's TLS identity and the CAs it trusts; a
// renewal replaces its certificate, and a CA rotation the CAs, while the
// API and Raft serve with them.
type serverCreds struct {
	dir   string
	trust *tlsutil.Trust
	cert  *tlsutil.Identity
}

func tlsDir(dataDir string) string { return filepath.Join(dataDir, "tls") }

// loadCreds reads the identity a previous start left in the data dir.
func loadCreds(dataDir string) (*serverCreds, error) {
	dir := tlsDir(dataDir)
	caPEM, err := os.ReadFile(filepath.Join(dir, caCertFile))
	if err != nil {
		return nil, fmt.Errorf("reading server identity: %w", err)
	}
	certPEM, err := os.ReadFile(filepath.Join(dir, serverCertFile))
	if err != nil {
		return nil, fmt.Errorf("reading server identity: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, serverKeyFile))
	if err != nil {
		return nil, fmt.Errorf("reading server identity: %w", err)
	}
	return newCreds(dir, caPEM, &pb.KeyPair{CertPem: certPEM, KeyPem: keyPEM})
}

func newCreds(dir string, caPEM []byte, kp *pb.KeyPair) (*serverCreds, error) {
	trust, err := tlsutil.NewTrust(caPEM)
	if err != nil {
		return nil, fmt.Errorf("server CA: %w", err)
	}
	cert, err := tlsutil.NewIdentity(kp, trust)
	if err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	return &serverCreds{dir: dir, trust: trust, cert: cert}, nil
}

func (c *serverCreds) write(kp *pb.KeyPair) error {
	if err := c.writeTrust(); err != nil {
		return err
	}
	if err := tlsutil.WriteFileAtomic(filepath.Join(c.dir, serverKeyFile), kp.KeyPem, 0o600); err != nil {
		return err
	}
	return tlsutil.WriteFileAtomic(filepath.Join(c.dir, serverCertFile), kp.CertPem, 0o644)
}

// writeTrust keeps the CAs this server trusts in DATA-DIR/tls.
func (c *serverCreds) writeTrust() error {
	return tlsutil.WriteFileAtomic(filepath.Join(c.dir, caCertFile), c.trust.PEM(), 0o644)
}

// caHash is the hash of the CA that signed this server's certificate:
// what a client pinning this server's CA gives (--ca-hash).
func (c *serverCreds) caHash() string {
	if ca := c.trust.IssuerOf(c.cert.Leaf()); ca != nil {
		return tlsutil.CertHash(ca)
	}
	return ""
}

// serverCertOptions names a server for its peers, agents and the CLI: its
// advertised host and loopback (not the machine's host name: the leader
// signs joining and renewing servers' certificates, and would put its own).
func serverCertOptions(id, host string, validity time.Duration) tlsutil.CertOptions {
	opts := tlsutil.CertOptions{
		CommonName:    id,
		Organizations: []string{vocab.RoleServer},
		DNSNames:      []string{"localhost"},
		IPs:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		Usages:        []tlsutil.Usage{tlsutil.UsageServer, tlsutil.UsageClient},
		Validity:      validity,
	}
	if ip := net.ParseIP(host); ip != nil {
		opts.IPs = append(opts.IPs, ip)
	} else {
		opts.DNSNames = append(opts.DNSNames, host)
	}
	return opts
}

// bootstrapCreds makes the coordinator CA, this server's certificate and
// admin.conf. The CA key stays in DATA-DIR/tls/ca.key until the leader has
// written it into the replicated state.
func bootstrapCreds(dataDir, id, host, apiAddr string, validity time.Duration) (*serverCreds, error) {
	now := time.Now()
	ca, err := tlsutil.NewCA("oneinfra coordinator CA", caValidity, now)
	if err != nil {
		return nil, err
	}
	kp, err := tlsutil.Issue(ca, serverCertOptions(id, host, validity), now)
	if err != nil {
		return nil, err
	}
	creds, err := newCreds(tlsDir(dataDir), ca.CertPem, kp)
	if err != nil {
		return nil, err
	}
	if err := tlsutil.WriteFileAtomic(filepath.Join(creds.dir, caKeyFile), ca.KeyPem, 0o600); err != nil {
		return nil, err
	}
	if err := creds.write(kp); err != nil {
		return nil, err
	}
	admin, err := tlsutil.Issue(ca, tlsutil.CertOptions{
		CommonName: vocab.BootstrapOperator, Organizations: []string{vocab.RoleOperator},
		Usages: []tlsutil.Usage{tlsutil.UsageClient}, Validity: validity,
	}, now)
	if err != nil {
		return nil, err
	}
	conf := client.NewConfig([]string{apiAddr}, ca.CertPem, admin)
	if err := conf.Write(filepath.Join(dataDir, AdminConfFile)); err != nil {
		return nil, err
	}
	return creds, nil
}

// pendingCA returns the CA key pair bootstrap left on disk, or nil.
func (c *serverCreds) pendingCA() *pb.KeyPair {
	key, err := os.ReadFile(filepath.Join(c.dir, caKeyFile))
	if err != nil {
		return nil
	}
	ca := c.trust.IssuerOf(c.cert.Leaf())
	if ca == nil {
		return nil
	}
	return &pb.KeyPair{CertPem: tlsutil.EncodeCertPEM(ca), KeyPem: key}
}

// dropPendingCA removes the on-disk CA key once it is replicated.
func (c *serverCreds) dropPendingCA() error {
	err := os.Remove(filepath.Join(c.dir, caKeyFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// joinCreds trades a server token for a certificate through an existing
// server whose CA is pinned by hash; this server's key never leaves it.
func joinCreds(ctx context.Context, cfg Config, host, apiAddr, raftAddr string) (*serverCreds, error) {
	if cfg.Token == "" || cfg.CAHash == "" {
		return nil, errors.New("--join needs --token and --ca-hash")
	}
	if err := tlsutil.ValidateCAHash(cfg.CAHash); err != nil {
		return nil, fmt.Errorf("--ca-hash: %w", err)
	}
	if existing, err := loadCreds(cfg.DataDir); err == nil {
		return existing, nil // a previous join got its certificate and keyring already
	}
	key, keyPEM, err := tlsutil.GenerateKey()
	if err != nil {
		return nil, err
	}
	csr, err := tlsutil.CreateCSR(key, cfg.ID, nil)
	if err != nil {
		return nil, err
	}
	pinned := tlsutil.PinnedClientConfig(cfg.CAHash, "")
	conn, err := client.DialTLS([]string{cfg.Join}, pinned)
	if err != nil {
		return nil, fmt.Errorf("--join: %w", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := pb.NewBootstrapClient(conn).JoinServer(ctx, &pb.JoinServerRequest{
		Token: cfg.Token, Id: cfg.ID, RaftAddress: raftAddr, ApiAddress: apiAddr, CsrPem: csr,
	})
	if err != nil {
		return nil, fmt.Errorf("joining through %s: %w", cfg.Join, err)
	}
	if err := tlsutil.BundleHasCA(resp.CaPem, cfg.CAHash); err != nil {
		return nil, fmt.Errorf("joining through %s: the CAs sent: %w", cfg.Join, err)
	}
	keys, err := keyring.Parse(resp.Keyring)
	if err != nil {
		return nil, fmt.Errorf("joining through %s: the keyring sent: %w", cfg.Join, err)
	}
	kp := &pb.KeyPair{CertPem: resp.CertPem, KeyPem: keyPEM}
	creds, err := newCreds(tlsDir(cfg.DataDir), resp.CaPem, kp)
	if err != nil {
		return nil, err
	}
	// The keyring first: credentials on disk mean the join is done.
	if err := keys.Write(filepath.Join(cfg.DataDir, keyring.FileName)); err != nil {
		return nil, err
	}
	return creds, creds.write(kp)
}

// serverKeyring loads DATA-DIR/keyring. --bootstrap makes it unless one is
// there already: an operator who lost every server starts a new one with
// the old keyring to restore the old state's snapshots.
func serverKeyring(dataDir string, bootstrap bool) (*keyring.Keyring, error) {
	path := filepath.Join(dataDir, keyring.FileName)
	keys, err := keyring.Load(path)
	switch {
	case err == nil:
		return keys, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, err
	case !bootstrap:
		return nil, fmt.Errorf("%s is missing: the coordinator state is sealed with it; copy it from another server of this coordinator (mode 0600)", path)
	}
	if keys, err = keyring.New(); err != nil {
		return nil, err
	}
	return keys, keys.Write(path)
}

// serverTLS presents this server's certificate with its CA (for clients
// that pin it) and verifies client certificates as clientAuth says, with
// the CAs trusted at each handshake.
func (c *serverCreds) serverTLS(clientAuth tls.ClientAuthType) (*tls.Config, error) {
	return c.cert.ServerConfig(c.trust, clientAuth), nil
}

// apiTLS serves the gRPC API: a client certificate is verified when given;
// which calls need one is decided per method (Bootstrap calls use tokens).
func (c *serverCreds) apiTLS() (*tls.Config, error) {
	return c.serverTLS(tls.VerifyClientCertIfGiven)
}

// raftServerTLS accepts Raft connections from other servers only.
func (c *serverCreds) raftServerTLS() (*tls.Config, error) {
	conf, err := c.serverTLS(tls.RequireAndVerifyClientCert)
	if err != nil {
		return nil, err
	}
	conf.VerifyConnection = requireServerPeer
	return conf, nil
}

// clientTLS dials other servers, for Raft and forwarded calls, trusting
// the CAs trusted now (a rotation makes it again: peerPool.redial).
func (c *serverCreds) clientTLS() (*tls.Config, error) {
	conf, err := tlsutil.ClientConfig(nil, c.trust.PEM(), "")
	if err != nil {
		return nil, err
	}
	c.cert.Client(conf)
	conf.VerifyConnection = requireServerPeer
	return conf, nil
}

// requireServerPeer refuses a peer whose certificate is not a server's.
var requireServerPeer = tlsutil.PeerRole(vocab.RoleServer, vocab.Roles)
