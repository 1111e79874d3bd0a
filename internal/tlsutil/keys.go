// Package tlsutil holds the TLS and X.509 helpers shared by the coordinator
// and the agents: certificate authorities, keys, certificate signing
// requests, leaf certificates, kubeadm-style CA pinning by hash, TLS
// configurations and atomic writes of secret files.
//
// Every key made here is ECDSA P-256. Keys are PEM encoded as SEC 1
// ("EC PRIVATE KEY"), which Kubernetes, etcd and haproxy all read;
// parsing also accepts PKCS #8 and PKCS #1 keys. Certificates are PEM
// ("CERTIFICATE") and requests are PEM ("CERTIFICATE REQUEST").
//
// The package uses the standard library only.
package tlsutil

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// PEM block types written by this package.
const (
	certificateBlock = "CERTIFICATE"
	ecKeyBlock       = "EC PRIVATE KEY"
	pkcs8KeyBlock    = "PRIVATE KEY"
	rsaKeyBlock      = "RSA PRIVATE KEY"
	csrBlock         = "CERTIFICATE REQUEST"
	publicKeyBlock   = "PUBLIC KEY"
)

// ErrKeyMismatch is returned when a private key does not belong to the
// certificate it is paired with.
var ErrKeyMismatch = errors.New("private key does not match certificate")

// GenerateKey makes a new ECDSA P-256 private key and returns it together
// with its PEM encoding.
func GenerateKey() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating ECDSA P-256 key: %w", err)
	}
	keyPEM, err := EncodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return key, keyPEM, nil
}

// EncodeKey PEM-encodes a private key: SEC 1 ("EC PRIVATE KEY") for ECDSA
// keys, PKCS #8 ("PRIVATE KEY") for any other kind.
func EncodeKey(key crypto.Signer) ([]byte, error) {
	if k, ok := key.(*ecdsa.PrivateKey); ok {
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			return nil, fmt.Errorf("encoding EC private key: %w", err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: ecKeyBlock, Bytes: der}), nil
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pkcs8KeyBlock, Bytes: der}), nil
}

// ParseKeyPEM parses the first private key found in keyPEM (SEC 1, PKCS #8
// or PKCS #1).
func ParseKeyPEM(keyPEM []byte) (crypto.Signer, error) {
	rest := keyPEM
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no private key found in PEM data")
		}
		switch block.Type {
		case ecKeyBlock:
			k, err := x509.ParseECPrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parsing EC private key: %w", err)
			}
			return k, nil
		case rsaKeyBlock:
			k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parsing RSA private key: %w", err)
			}
			return k, nil
		case pkcs8KeyBlock:
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parsing PKCS #8 private key: %w", err)
			}
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, fmt.Errorf("unsupported private key type %T", k)
			}
			return s, nil
		}
	}
}

// EncodePublicKey PEM-encodes a public key as PKIX ("PUBLIC KEY").
func EncodePublicKey(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encoding public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: publicKeyBlock, Bytes: der}), nil
}

// EncodeCertPEM PEM-encodes a certificate.
func EncodeCertPEM(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: certificateBlock, Bytes: cert.Raw})
}

// ParseCertPEM parses the first certificate found in certPEM.
func ParseCertPEM(certPEM []byte) (*x509.Certificate, error) {
	certs, err := ParseCertsPEM(certPEM)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

// ParseCertsPEM parses every certificate in certPEM, in order. It fails if
// there is none.
func ParseCertsPEM(certPEM []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := certPEM
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != certificateBlock {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing certificate: %w", err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, errors.New("no certificate found in PEM data")
	}
	return certs, nil
}

// CertPool returns a pool holding every certificate of a PEM bundle.
func CertPool(bundlePEM []byte) (*x509.CertPool, error) {
	certs, err := ParseCertsPEM(bundlePEM)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// ParseKeyPair parses the certificate (the first one of CertPem) and the
// private key of kp and checks that they belong together.
func ParseKeyPair(kp *pb.KeyPair) (*x509.Certificate, crypto.Signer, error) {
	if kp == nil {
		return nil, nil, errors.New("nil key pair")
	}
	cert, err := ParseCertPEM(kp.GetCertPem())
	if err != nil {
		return nil, nil, err
	}
	key, err := ParseKeyPEM(kp.GetKeyPem())
	if err != nil {
		return nil, nil, err
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, nil, ErrKeyMismatch
	}
	return cert, key, nil
}

// publicKeysEqual reports whether a and b are the same public key.
func publicKeysEqual(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}

// checkPublicKey refuses public keys that are too weak or of an unknown kind.
func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return nil
		}
		return errors.New("unsupported ECDSA curve")
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits is too small", k.N.BitLen())
		}
		// What TLS accepts from a peer, and the common exponent.
		if k.N.BitLen() > 8192 || k.E != 65537 {
			return fmt.Errorf("RSA key of %d bits, exponent %d: want at most 8192 bits and exponent 65537", k.N.BitLen(), k.E)
		}
		return nil
	case ed25519.PublicKey:
		return nil
	}
	return fmt.Errorf("unsupported public key type %T", pub)
}
