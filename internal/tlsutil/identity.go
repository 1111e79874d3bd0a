package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"sync/atomic"

	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// Identity is a certificate and key that connections present, and that a
// renewal replaces while they run: new handshakes present the new one,
// connections already made keep theirs (the old certificate stays valid
// until it expires). Safe for concurrent use.
type Identity struct {
	cur   atomic.Pointer[tls.Certificate]
	kp    atomic.Pointer[pb.KeyPair]
	chain *Trust
}

// NewIdentity presents kp; the issuers of kp's certificate found in chain
// (may be nil) are appended to the chain a server sends (see
// ServerConfig).
func NewIdentity(kp *pb.KeyPair, chain *Trust) (*Identity, error) {
	id := &Identity{chain: chain}
	return id, id.Set(kp)
}

// Set replaces the certificate and key presented from now on.
func (id *Identity) Set(kp *pb.KeyPair) error {
	var chainPEM []byte
	if id.chain != nil {
		chainPEM = id.chain.PEM()
	}
	c, err := certificateChain(kp, chainPEM)
	if err != nil {
		return err
	}
	id.cur.Store(&c)
	id.kp.Store(kp)
	return nil
}

// KeyPair is the certificate and key presented now.
func (id *Identity) KeyPair() *pb.KeyPair { return id.kp.Load() }

// Leaf is the certificate presented now.
func (id *Identity) Leaf() *x509.Certificate { return id.cur.Load().Leaf }

// Client makes conf present the identity as a client certificate.
func (id *Identity) Client(conf *tls.Config) *tls.Config {
	conf.Certificates = nil
	conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return id.cur.Load(), nil }
	return conf
}

// Server makes conf present the identity as a server certificate.
func (id *Identity) Server(conf *tls.Config) *tls.Config {
	conf.Certificates = nil
	conf.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return id.cur.Load(), nil }
	return conf
}
