package tlsutil

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"

	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// ClockSkew is how far before "now" a new certificate's NotBefore is set,
// so that machines whose clocks run a little behind accept it at once.
const ClockSkew = 5 * time.Minute

// Usage is an extended key usage a leaf certificate is issued for.
type Usage int

// Leaf certificate usages.
const (
	// UsageServer is TLS server authentication.
	UsageServer Usage = iota + 1
	// UsageClient is TLS client authentication.
	UsageClient
)

// String returns "server" or "client".
func (u Usage) String() string {
	switch u {
	case UsageServer:
		return "server"
	case UsageClient:
		return "client"
	}
	return fmt.Sprintf("Usage(%d)", int(u))
}

// CertOptions is what the issuing CA puts in a leaf certificate. When a
// certificate is issued from a CSR, these options, not the CSR, decide the
// subject, the names and the usages.
type CertOptions struct {
	// CommonName is the subject CN (the Kubernetes user name). Required.
	CommonName string
	// Organizations are the subject O values (the Kubernetes groups).
	Organizations []string
	// DNSNames are the DNS subject alternative names.
	DNSNames []string
	// IPs are the IP subject alternative names.
	IPs []net.IP
	// Usages are the extended key usages; at least one is required.
	Usages []Usage
	// Validity is how long the certificate is valid from now. Required.
	// It is cut short so as not to outlive the CA.
	Validity time.Duration
}

// NewCA makes a self-signed certificate authority with a new ECDSA P-256
// key, valid from now (less ClockSkew) for validity.
func NewCA(commonName string, validity time.Duration, now time.Time) (*pb.KeyPair, error) {
	if commonName == "" {
		return nil, errors.New("CA common name is required")
	}
	if validity <= 0 {
		return nil, errors.New("CA validity must be positive")
	}
	key, keyPEM, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-ClockSkew).UTC(),
		NotAfter:              now.Add(validity).UTC(),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("creating CA certificate %q: %w", commonName, err)
	}
	return &pb.KeyPair{
		CertPem: pem.EncodeToMemory(&pem.Block{Type: certificateBlock, Bytes: der}),
		KeyPem:  keyPEM,
	}, nil
}

// Issue makes a new ECDSA P-256 key and a leaf certificate for it signed
// by ca.
func Issue(ca *pb.KeyPair, opts CertOptions, now time.Time) (*pb.KeyPair, error) {
	key, keyPEM, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	certPEM, err := sign(ca, key.Public(), opts, now)
	if err != nil {
		return nil, err
	}
	return &pb.KeyPair{CertPem: certPEM, KeyPem: keyPEM}, nil
}

// IssueFor makes a leaf certificate signed by ca for a key its holder
// made: pubDER is the PKIX public key (as in SubjectPublicKeyInfo). It
// returns the PEM certificate; no private key is involved but the CA's.
func IssueFor(ca *pb.KeyPair, pubDER []byte, opts CertOptions, now time.Time) ([]byte, error) {
	pub, err := x509.ParsePKIXPublicKey(pubDER)
	if err != nil {
		return nil, fmt.Errorf("certificate %q: public key: %w", opts.CommonName, err)
	}
	return sign(ca, pub, opts, now)
}

// PublicKeyHash is the hex SHA-256 of a PKIX DER public key (a
// certificate's RawSubjectPublicKeyInfo): how a key holder finds the
// private key of a certificate issued for it.
func PublicKeyHash(pubDER []byte) string {
	sum := sha256.Sum256(pubDER)
	return hex.EncodeToString(sum[:])
}

// CSRPublicKey is the PKIX DER public key of a PEM certificate request
// whose signature verifies (the requester holds the private key), if it
// is of a kind and strength a certificate may have.
func CSRPublicKey(csrPEM []byte) ([]byte, error) {
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	return csr.RawSubjectPublicKeyInfo, nil
}

// CreateCSR makes a PEM certificate signing request for key. The names in
// it are informative only: SignCSR takes nothing but the public key.
func CreateCSR(key crypto.Signer, commonName string, orgs []string) ([]byte, error) {
	tmpl := &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: commonName, Organization: orgs},
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("creating certificate request: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: csrBlock, Bytes: der}), nil
}

// ParseCSR parses a PEM certificate signing request and checks its
// signature, which proves that the requester holds the private key.
func ParseCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	if len(csrPEM) > maxCSR {
		return nil, fmt.Errorf("certificate request of %d bytes, over %d", len(csrPEM), maxCSR)
	}
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != csrBlock {
		return nil, errors.New("no certificate request found in PEM data")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing certificate request: %w", err)
	}
	// The key first: checking a signature with an outsized key would cost
	// the coordinator minutes.
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request signature: %w", err)
	}
	return csr, nil
}

// maxCSR bounds a PEM certificate request: one for the largest key
// allowed (RSA 8192) takes under 4 KiB.
const maxCSR = 16 << 10

// SignCSR issues a leaf certificate, signed by ca, for the public key of a
// PEM certificate signing request. The request's signature must verify;
// its subject, names and extensions are ignored: opts decide them.
func SignCSR(ca *pb.KeyPair, csrPEM []byte, opts CertOptions, now time.Time) ([]byte, error) {
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	return sign(ca, csr.PublicKey, opts, now)
}

// sign makes a leaf certificate for pub signed by ca.
func sign(ca *pb.KeyPair, pub crypto.PublicKey, opts CertOptions, now time.Time) ([]byte, error) {
	if opts.CommonName == "" {
		return nil, errors.New("certificate common name is required")
	}
	if opts.Validity <= 0 {
		return nil, fmt.Errorf("certificate %q: validity must be positive", opts.CommonName)
	}
	if len(opts.Usages) == 0 {
		return nil, fmt.Errorf("certificate %q: at least one usage is required", opts.CommonName)
	}
	if err := checkPublicKey(pub); err != nil {
		return nil, fmt.Errorf("certificate %q: %w", opts.CommonName, err)
	}
	caCert, caKey, err := ParseKeyPair(ca)
	if err != nil {
		return nil, fmt.Errorf("certificate %q: CA: %w", opts.CommonName, err)
	}
	if !caCert.IsCA {
		return nil, fmt.Errorf("certificate %q: issuer %q is not a CA", opts.CommonName, caCert.Subject.CommonName)
	}
	var ext []x509.ExtKeyUsage
	for _, u := range opts.Usages {
		switch u {
		case UsageServer:
			ext = append(ext, x509.ExtKeyUsageServerAuth)
		case UsageClient:
			ext = append(ext, x509.ExtKeyUsageClientAuth)
		default:
			return nil, fmt.Errorf("certificate %q: unknown usage %v", opts.CommonName, u)
		}
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(opts.Validity)
	if notAfter.After(caCert.NotAfter) {
		notAfter = caCert.NotAfter
	}
	keyUsage := x509.KeyUsageDigitalSignature
	if _, isRSA := pub.(*rsa.PublicKey); isRSA {
		keyUsage |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:   opts.CommonName,
			Organization: append([]string(nil), opts.Organizations...),
		},
		DNSNames:              append([]string(nil), opts.DNSNames...),
		IPAddresses:           append([]net.IP(nil), opts.IPs...),
		NotBefore:             now.Add(-ClockSkew).UTC(),
		NotAfter:              notAfter.UTC(),
		KeyUsage:              keyUsage,
		ExtKeyUsage:           ext,
		BasicConstraintsValid: true,
		IsCA:                  false,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, pub, caKey)
	if err != nil {
		return nil, fmt.Errorf("signing certificate %q: %w", opts.CommonName, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: certificateBlock, Bytes: der}), nil
}

// newSerial returns a random positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("generating serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}
