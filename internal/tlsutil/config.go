package tlsutil

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// ServerConfig returns a server TLS configuration (TLS 1.3 minimum) that
// presents cert. The chain it sends is every certificate in cert.CertPem
// followed by the issuers of that chain found in caPEM, up to and
// including the root CA, so that clients pinning the CA by hash (see
// PinnedClientConfig) find it. caPEM is also the pool client certificates
// are verified against; it is required when clientAuth verifies them.
func ServerConfig(cert *pb.KeyPair, caPEM []byte, clientAuth tls.ClientAuthType) (*tls.Config, error) {
	tlsCert, err := certificateChain(cert, caPEM)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{tlsCert},
		ClientAuth:   clientAuth,
	}
	if len(caPEM) > 0 {
		pool, err := CertPool(caPEM)
		if err != nil {
			return nil, fmt.Errorf("client CA: %w", err)
		}
		cfg.ClientCAs = pool
	} else if clientAuth == tls.VerifyClientCertIfGiven || clientAuth == tls.RequireAndVerifyClientCert {
		return nil, errors.New("a CA is required to verify client certificates")
	}
	return cfg, nil
}

// ClientConfig returns a client TLS configuration (TLS 1.3 minimum) that
// trusts only the CAs in caPEM, expects the server to be valid for
// serverName (when not empty; otherwise the dialed host name is used) and,
// when cert is not nil, presents cert as client certificate.
func ClientConfig(cert *pb.KeyPair, caPEM []byte, serverName string) (*tls.Config, error) {
	if len(caPEM) == 0 {
		return nil, errors.New("a CA is required to verify the server")
	}
	pool, err := CertPool(caPEM)
	if err != nil {
		return nil, fmt.Errorf("server CA: %w", err)
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    pool,
		ServerName: serverName,
	}
	if cert != nil {
		tlsCert, err := certificateChain(cert, nil)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{tlsCert}
	}
	return cfg, nil
}

// certificateChain builds a tls.Certificate from kp and appends the issuers
// found in extraPEM until a self-signed certificate ends the chain.
func certificateChain(kp *pb.KeyPair, extraPEM []byte) (tls.Certificate, error) {
	leaf, key, err := ParseKeyPair(kp)
	if err != nil {
		return tls.Certificate{}, err
	}
	chain, err := ParseCertsPEM(kp.GetCertPem())
	if err != nil {
		return tls.Certificate{}, err
	}
	var extra []*x509.Certificate
	if len(extraPEM) > 0 {
		if extra, err = ParseCertsPEM(extraPEM); err != nil {
			return tls.Certificate{}, fmt.Errorf("CA: %w", err)
		}
	}
	for range extra {
		last := chain[len(chain)-1]
		if selfSigned(last) {
			break
		}
		next := issuerOf(last, extra, chain)
		if next == nil {
			break
		}
		chain = append(chain, next)
	}
	out := tls.Certificate{PrivateKey: key, Leaf: leaf}
	for _, c := range chain {
		out.Certificate = append(out.Certificate, c.Raw)
	}
	return out, nil
}

// selfSigned reports whether c is signed by its own key.
func selfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

// issuerOf returns the certificate among candidates that signed c and is not
// already in chain.
func issuerOf(c *x509.Certificate, candidates, chain []*x509.Certificate) *x509.Certificate {
next:
	for _, cand := range candidates {
		for _, have := range chain {
			if have.Equal(cand) {
				continue next
			}
		}
		if c.CheckSignatureFrom(cand) == nil {
			return cand
		}
	}
	return nil
}

// PeerRole returns a VerifyConnection function that accepts a peer only
// when its certificate carries role among its subject organizations and
// none of the others in roles: a client checks the role of the server it
// reached, not just its CA (the CA signs other roles too).
func PeerRole(role string, roles []string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("the peer presented no certificate")
		}
		leaf := cs.PeerCertificates[0]
		has := false
		for _, o := range leaf.Subject.Organization {
			for _, r := range roles {
				if o == r && r != role {
					return fmt.Errorf("the peer's certificate (%q) is a %s's, not a %s's", leaf.Subject.CommonName, r, role)
				}
			}
			has = has || o == role
		}
		if !has {
			return fmt.Errorf("the peer's certificate (%q) is not a %s's", leaf.Subject.CommonName, role)
		}
		return nil
	}
}
