package tlsutil

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// caHashPrefix is the algorithm prefix of a CA hash.
const caHashPrefix = "sha256:"

// ErrCAHashMismatch is returned when no certificate presented by a server
// is a CA whose hash is the pinned one.
var ErrCAHashMismatch = errors.New("no presented CA certificate matches the pinned CA hash")

// CAHash returns the kubeadm-style hash of a CA certificate: "sha256:"
// followed by the lowercase hex SHA-256 of the certificate's DER-encoded
// SubjectPublicKeyInfo. It is the same value as
//
//	openssl x509 -pubkey -noout -in ca.crt | openssl pkey -pubin -outform der | sha256sum
//
// and the first certificate of caCertPEM is the one hashed.
func CAHash(caCertPEM []byte) (string, error) {
	cert, err := ParseCertPEM(caCertPEM)
	if err != nil {
		return "", err
	}
	return CertHash(cert), nil
}

// CertHash is CAHash for a parsed certificate.
func CertHash(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return caHashPrefix + hex.EncodeToString(sum[:])
}

// ValidateCAHash checks that s has the form "sha256:" followed by 64 hex
// digits.
func ValidateCAHash(s string) error {
	rest, ok := strings.CutPrefix(strings.ToLower(s), caHashPrefix)
	if !ok {
		return fmt.Errorf("CA hash %q must start with %q", s, caHashPrefix)
	}
	if b, err := hex.DecodeString(rest); err != nil || len(b) != sha256.Size {
		return fmt.Errorf("CA hash %q must be %q followed by %d hex digits", s, caHashPrefix, 2*sha256.Size)
	}
	return nil
}

// hashesEqual compares two CA hashes, ignoring the case of the hex digits.
func hashesEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(strings.ToLower(a)), []byte(strings.ToLower(b))) == 1
}

// FindPinnedCA returns the first of certs that is a CA certificate whose
// CertHash is caHash, or ErrCAHashMismatch.
func FindPinnedCA(caHash string, certs []*x509.Certificate) (*x509.Certificate, error) {
	for _, c := range certs {
		if c.IsCA && c.BasicConstraintsValid && hashesEqual(CertHash(c), caHash) {
			return c, nil
		}
	}
	return nil, ErrCAHashMismatch
}

// BundleHasCA checks that a PEM bundle a server sent holds the CA whose
// hash is caHash.
func BundleHasCA(bundlePEM []byte, caHash string) error {
	certs, err := ParseCertsPEM(bundlePEM)
	if err != nil {
		return err
	}
	_, err = FindPinnedCA(caHash, certs)
	return err
}

// PinnedCA parses the DER certificates a server presented (as
// tls.ConnectionState.PeerCertificates or VerifyPeerCertificate give them)
// and returns the CA certificate among them whose hash is caHash. Callers
// use it after a pinned handshake to learn the CA and trust it from then
// on (EncodeCertPEM turns it into PEM).
func PinnedCA(caHash string, rawCerts [][]byte) (*x509.Certificate, error) {
	certs, err := parseRaw(rawCerts)
	if err != nil {
		return nil, err
	}
	return FindPinnedCA(caHash, certs)
}

// PinnedClientConfig returns a client TLS configuration that trusts no
// system root and no preset pool. Instead it accepts a server only if, among
// the certificates the server presents, there is a CA certificate whose
// CAHash is caHash, the server's leaf certificate chains to that CA (the
// other presented certificates may serve as intermediates), the leaf is
// valid for TLS server authentication and, when serverName is not empty,
// the leaf is valid for serverName (a DNS name or an IP address).
//
// The server must therefore send its whole chain, CA included, as
// ServerConfig does. This is kubeadm-style discovery: a joining machine
// that knows only the CA hash (printed with its token) can reach the
// coordinator safely and learn its CA, with PinnedCA, from the handshake.
//
// The returned configuration sets InsecureSkipVerify only to replace the
// default verification by the pinned one above; it is never weaker.
// Callers may add client certificates to it.
func PinnedClientConfig(caHash string, serverName string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: serverName,
		RootCAs:    x509.NewCertPool(),
		// The default verification would need a root pool; the pinned
		// verification below is done instead.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
			return verifyPinned(caHash, serverName, rawCerts, time.Now())
		},
	}
}

// verifyPinned checks a presented chain against a pinned CA hash.
func verifyPinned(caHash, serverName string, rawCerts [][]byte, now time.Time) error {
	certs, err := parseRaw(rawCerts)
	if err != nil {
		return err
	}
	if len(certs) == 0 {
		return errors.New("server presented no certificate")
	}
	leaf := certs[0]
	ca, err := FindPinnedCA(caHash, certs[1:])
	if err != nil {
		return fmt.Errorf("server certificate %q: %w", leaf.Subject.CommonName, err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		if c != ca {
			inter.AddCert(c)
		}
	}
	_, err = leaf.Verify(x509.VerifyOptions{
		DNSName:       serverName,
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("verifying server certificate against pinned CA: %w", err)
	}
	return nil
}

// parseRaw parses DER certificates.
func parseRaw(rawCerts [][]byte) ([]*x509.Certificate, error) {
	certs := make([]*x509.Certificate, 0, len(rawCerts))
	for _, raw := range rawCerts {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return nil, fmt.Errorf("parsing presented certificate: %w", err)
		}
		certs = append(certs, c)
	}
	return certs, nil
}
