package tlsutil

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Trust is a bundle of CAs that a CA rotation replaces while servers use
// it: every handshake verifies against the bundle as it is then. Safe for
// concurrent use.
type Trust struct {
	cur atomic.Pointer[trustSet]
}

type trustSet struct {
	pem   []byte
	pool  *x509.CertPool
	certs []*x509.Certificate
	// issuers remembers IssuerOf's answers for this bundle (a knownIssuer
	// by the SHA-256 of the certificate): a client's certificate is
	// checked on each of its calls, and a signature check costs more than
	// the call. Every sweepEvery answers, those of expired certificates
	// are forgotten.
	issuers  sync.Map
	answered atomic.Int64
}

type knownIssuer struct {
	ca       *x509.Certificate
	notAfter time.Time
}

const sweepEvery = 4096

// NewTrust trusts the CAs of bundlePEM.
func NewTrust(bundlePEM []byte) (*Trust, error) {
	t := &Trust{}
	return t, t.Set(bundlePEM)
}

// Set replaces the bundle; it must hold at least one certificate.
func (t *Trust) Set(bundlePEM []byte) error {
	certs, err := ParseCertsPEM(bundlePEM)
	if err != nil {
		return err
	}
	if len(certs) == 0 {
		return errors.New("a CA bundle holds no certificate")
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	t.cur.Store(&trustSet{pem: append([]byte(nil), bundlePEM...), pool: pool, certs: certs})
	return nil
}

// PEM is the bundle.
func (t *Trust) PEM() []byte { return t.cur.Load().pem }

// Pool is the bundle as a pool.
func (t *Trust) Pool() *x509.CertPool { return t.cur.Load().pool }

// IssuerOf returns the CA of the bundle that signed cert, or nil.
func (t *Trust) IssuerOf(cert *x509.Certificate) *x509.Certificate {
	set := t.cur.Load()
	key := sha256.Sum256(cert.Raw)
	if known, ok := set.issuers.Load(key); ok {
		return known.(knownIssuer).ca
	}
	var issuer *x509.Certificate
	for _, ca := range set.certs {
		if cert.CheckSignatureFrom(ca) == nil {
			issuer = ca
			break
		}
	}
	set.issuers.Store(key, knownIssuer{ca: issuer, notAfter: cert.NotAfter})
	if set.answered.Add(1)%sweepEvery == 0 {
		now := time.Now()
		set.issuers.Range(func(k, v any) bool {
			if v.(knownIssuer).notAfter.Before(now) {
				set.issuers.Delete(k)
			}
			return true
		})
	}
	return issuer
}

// IssuedBy reports whether caPEM's certificate signed cert.
func IssuedBy(cert *x509.Certificate, caPEM []byte) bool {
	ca, err := ParseCertPEM(caPEM)
	return err == nil && cert.CheckSignatureFrom(ca) == nil
}

// ServerConfig serves the identity (TLS 1.3 minimum, its chain taken from
// its Trust) and verifies client certificates as clientAuth says against
// trust, both as they are at each handshake.
func (id *Identity) ServerConfig(trust *Trust, clientAuth tls.ClientAuthType) *tls.Config {
	conf := &tls.Config{MinVersion: tls.VersionTLS13, ClientAuth: clientAuth}
	conf.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := conf.Clone()
		c.GetConfigForClient = nil
		c.ClientCAs = trust.Pool()
		return c, nil
	}
	return id.Server(conf)
}
