package tlsutil

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

func mustCA(t *testing.T, cn string) *pb.KeyPair {
	t.Helper()
	ca, err := NewCA(cn, 24*time.Hour, time.Now())
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	return ca
}

func mustIssue(t *testing.T, ca *pb.KeyPair, opts CertOptions) *pb.KeyPair {
	t.Helper()
	kp, err := Issue(ca, opts, time.Now())
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	return kp
}

func serverOpts() CertOptions {
	return CertOptions{
		CommonName: "server",
		DNSNames:   []string{"coord.example"},
		IPs:        []net.IP{net.ParseIP("127.0.0.1")},
		Usages:     []Usage{UsageServer},
		Validity:   time.Hour,
	}
}

func verifyLeaf(leafPEM, caPEM []byte, usage x509.ExtKeyUsage) error {
	leaf, err := ParseCertPEM(leafPEM)
	if err != nil {
		return err
	}
	roots, err := CertPool(caPEM)
	if err != nil {
		return err
	}
	_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}})
	return err
}

func TestNewCA(t *testing.T) {
	now := time.Now()
	ca, err := NewCA("test-ca", 10*365*24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ParseKeyPair(ca)
	if err != nil {
		t.Fatal(err)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		t.Error("certificate is not a CA")
	}
	if cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Error("CA lacks the certificate-signing key usage")
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		t.Errorf("CA is not self-signed: %v", err)
	}
	if cert.Subject.CommonName != "test-ca" {
		t.Errorf("CN = %q", cert.Subject.CommonName)
	}
	ek, ok := key.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		t.Errorf("key is %T, want ECDSA P-256", key)
	}
	if got := cert.NotAfter.Sub(now.Truncate(time.Second)); got < 10*365*24*time.Hour-time.Second || got > 10*365*24*time.Hour+time.Second {
		t.Errorf("validity = %v", got)
	}
	if !cert.NotBefore.Before(now) {
		t.Errorf("NotBefore %v is not before now %v", cert.NotBefore, now)
	}
	if _, err := NewCA("", time.Hour, now); err == nil {
		t.Error("NewCA accepted an empty common name")
	}
	if _, err := NewCA("x", 0, now); err == nil {
		t.Error("NewCA accepted a zero validity")
	}
}

func TestIssueVerifies(t *testing.T) {
	ca := mustCA(t, "ca")
	other := mustCA(t, "other")
	opts := CertOptions{
		CommonName:    "alice",
		Organizations: []string{"team"},
		DNSNames:      []string{"alice.example"},
		IPs:           []net.IP{net.ParseIP("10.0.0.1")},
		Usages:        []Usage{UsageClient},
		Validity:      time.Hour,
	}
	kp := mustIssue(t, ca, opts)
	if err := verifyLeaf(kp.CertPem, ca.CertPem, x509.ExtKeyUsageClientAuth); err != nil {
		t.Errorf("leaf does not verify against its CA: %v", err)
	}
	if err := verifyLeaf(kp.CertPem, other.CertPem, x509.ExtKeyUsageClientAuth); err == nil {
		t.Error("leaf verified against another CA")
	}
	if err := verifyLeaf(kp.CertPem, ca.CertPem, x509.ExtKeyUsageServerAuth); err == nil {
		t.Error("client-only leaf verified for server use")
	}
	cert, _, err := ParseKeyPair(kp)
	if err != nil {
		t.Fatal(err)
	}
	if cert.IsCA {
		t.Error("leaf is a CA")
	}
	if cert.Subject.CommonName != "alice" || strings.Join(cert.Subject.Organization, ",") != "team" {
		t.Errorf("subject = %v", cert.Subject)
	}
	if len(cert.DNSNames) != 1 || cert.DNSNames[0] != "alice.example" || len(cert.IPAddresses) != 1 || !cert.IPAddresses[0].Equal(net.ParseIP("10.0.0.1")) {
		t.Errorf("SANs = %v %v", cert.DNSNames, cert.IPAddresses)
	}
	if !bytes.Contains(kp.KeyPem, []byte("EC PRIVATE KEY")) {
		t.Error("leaf key is not a PEM EC private key")
	}
}

func TestIssueRefusesBadOptions(t *testing.T) {
	ca := mustCA(t, "ca")
	for name, opts := range map[string]CertOptions{
		"no CN":       {Usages: []Usage{UsageClient}, Validity: time.Hour},
		"no usage":    {CommonName: "x", Validity: time.Hour},
		"no validity": {CommonName: "x", Usages: []Usage{UsageClient}},
		"bad usage":   {CommonName: "x", Usages: []Usage{Usage(42)}, Validity: time.Hour},
	} {
		if _, err := Issue(ca, opts, time.Now()); err == nil {
			t.Errorf("%s: Issue succeeded", name)
		}
	}
	leaf := mustIssue(t, ca, serverOpts())
	if _, err := Issue(leaf, serverOpts(), time.Now()); err == nil {
		t.Error("a leaf certificate was used as CA")
	}
}

func TestLeafDoesNotOutliveCA(t *testing.T) {
	now := time.Now()
	ca, err := NewCA("short", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	opts := serverOpts()
	opts.Validity = 365 * 24 * time.Hour
	kp, err := Issue(ca, opts, now)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := ParseCertPEM(ca.CertPem)
	leaf, _ := ParseCertPEM(kp.CertPem)
	if leaf.NotAfter.After(caCert.NotAfter) {
		t.Errorf("leaf NotAfter %v after CA NotAfter %v", leaf.NotAfter, caCert.NotAfter)
	}
}

func TestParseKeyPairMismatch(t *testing.T) {
	ca := mustCA(t, "ca")
	_, otherKey, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = ParseKeyPair(&pb.KeyPair{CertPem: ca.CertPem, KeyPem: otherKey})
	if !errors.Is(err, ErrKeyMismatch) {
		t.Errorf("err = %v, want ErrKeyMismatch", err)
	}
}

func TestKeyEncodingRoundTrip(t *testing.T) {
	key, keyPEM, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ParseKeyPEM(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !key.Equal(parsed) {
		t.Error("SEC 1 round trip changed the key")
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err = ParseKeyPEM(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	if !key.Equal(parsed) {
		t.Error("PKCS #8 parse changed the key")
	}
	if _, err := ParseKeyPEM([]byte("garbage")); err == nil {
		t.Error("ParseKeyPEM accepted garbage")
	}
}

func TestSignCSR(t *testing.T) {
	ca := mustCA(t, "ca")
	key, _, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	// The requester asks for more than it may have; the CA decides.
	csr, err := CreateCSR(key, "evil", []string{"system:masters"})
	if err != nil {
		t.Fatal(err)
	}
	opts := CertOptions{CommonName: "hypervisor:hv-1", Usages: []Usage{UsageClient}, Validity: time.Hour}
	certPEM, err := SignCSR(ca, csr, opts, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyLeaf(certPEM, ca.CertPem, x509.ExtKeyUsageClientAuth); err != nil {
		t.Errorf("signed certificate does not verify: %v", err)
	}
	cert, err := ParseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		t.Error("certificate is not for the requester's key")
	}
	if cert.Subject.CommonName != "hypervisor:hv-1" || len(cert.Subject.Organization) != 0 {
		t.Errorf("subject %v was taken from the CSR", cert.Subject)
	}
	// The requester's key and the certificate make a usable pair.
	keyPEM, _ := EncodeKey(key)
	if _, _, err := ParseKeyPair(&pb.KeyPair{CertPem: certPEM, KeyPem: keyPEM}); err != nil {
		t.Error(err)
	}
}

// csrSignedByOtherKey returns a CSR carrying pubKey's public key but signed
// by signer, which a CA must refuse.
func csrSignedByOtherKey(t *testing.T, pubKey, signer *ecdsa.PrivateKey) []byte {
	t.Helper()
	good, err := CreateCSR(pubKey, "victim", nil)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(good)
	parsed, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(parsed.RawTBSCertificateRequest)
	sig, err := ecdsa.SignASN1(rand.Reader, signer, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	der, err := asn1.Marshal(struct {
		Info asn1.RawValue
		Alg  pkix.AlgorithmIdentifier
		Sig  asn1.BitString
	}{
		Info: asn1.RawValue{FullBytes: parsed.RawTBSCertificateRequest},
		Alg:  pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}},
		Sig:  asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)},
	})
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestSignCSRRefusesForeignSignature(t *testing.T) {
	ca := mustCA(t, "ca")
	victim, _, _ := GenerateKey()
	attacker, _, _ := GenerateKey()
	opts := CertOptions{CommonName: "x", Usages: []Usage{UsageClient}, Validity: time.Hour}

	// Sanity: the same construction with the right key is accepted, so the
	// refusal below is about the signature and nothing else.
	if _, err := SignCSR(ca, csrSignedByOtherKey(t, victim, victim), opts, time.Now()); err != nil {
		t.Fatalf("self-signed hand-built CSR refused: %v", err)
	}
	if _, err := SignCSR(ca, csrSignedByOtherKey(t, victim, attacker), opts, time.Now()); err == nil {
		t.Error("CSR signed by a different key was accepted")
	}
}

func TestSignCSRRefusesGarbage(t *testing.T) {
	ca := mustCA(t, "ca")
	opts := CertOptions{CommonName: "x", Usages: []Usage{UsageClient}, Validity: time.Hour}
	if _, err := SignCSR(ca, []byte("not a csr"), opts, time.Now()); err == nil {
		t.Error("garbage accepted as CSR")
	}
	if _, err := SignCSR(ca, ca.CertPem, opts, time.Now()); err == nil {
		t.Error("a certificate accepted as CSR")
	}
}

// TestCSRBounds: a request larger than any allowed key needs, and keys
// too big or with an odd exponent (costly to check), are refused before
// their signature is checked.
func TestCSRBounds(t *testing.T) {
	if _, err := ParseCSR(bytes.Repeat([]byte("A"), maxCSR+1)); err == nil || !strings.Contains(err.Error(), "over") {
		t.Errorf("an oversized request: %v", err)
	}
	huge := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 9000), big.NewInt(1))
	for what, k := range map[string]*rsa.PublicKey{
		"9000-bit RSA": {N: huge, E: 65537},
		"exponent 3":   {N: new(big.Int).Rsh(huge, 9000-2048), E: 3},
		"1024-bit RSA": {N: new(big.Int).Rsh(huge, 9000-1024), E: 65537},
	} {
		if err := checkPublicKey(k); err == nil {
			t.Errorf("%s accepted", what)
		}
	}
	if err := checkPublicKey(&rsa.PublicKey{N: new(big.Int).Rsh(huge, 9000-4096), E: 65537}); err != nil {
		t.Errorf("4096-bit RSA refused: %v", err)
	}
}

// goldenCA was made with `openssl req -x509 -newkey ec -pkeyopt
// ec_paramgen_curve:P-256`; goldenHash with `openssl x509 -pubkey -noout |
// openssl pkey -pubin -outform der | sha256sum`.
const (
	goldenCA = `-----BEGIN CERTIFICATE-----
MIIBfDCCASOgAwIBAgIUMxFsHmOKVgLyyCNiaMOg9V/vxXAwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJZ29sZGVuLWNhMB4XDTI2MTEyMzIyMjc1MFoXDTM2MTEyMDIy
Mjc1MFowFDESMBAGA1UEAwwJZ29sZGVuLWNhMFkwEwYHKoZIzj0CAQYIKoZIzj0D
AQcDQgAElIQz3Do2P/2oo1Erjh30so2G5y7Zd3yg41tiljcWEpO86P8XNoXI7HRG
KrHMHVG6dQkyAFtRId6uwsuCSnMYeKNTMFEwHQYDVR0OBBYEFJWfHOLSj8jrQP9e
0cHmGwdbMi+AMB8GA1UdIwQYMBaAFJWfHOLSj8jrQP9e0cHmGwdbMi+AMA8GA1Ud
EwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIgSUoxQf4Trh6Dh/TiC+USwHFl
/PtVlHYttVWxRe5v08kCIHNYPOC1M42ZGzvkguWnvCee9WdiZx2muRKW/iBmGSpX
-----END CERTIFICATE-----
`
	goldenHash = "sha256:5ea1d13a0b05f61365732f69b86150bd1f8eb1528d79bf6f158e39c53c13e0f4"
)

func TestCAHashGolden(t *testing.T) {
	got, err := CAHash([]byte(goldenCA))
	if err != nil {
		t.Fatal(err)
	}
	if got != goldenHash {
		t.Errorf("CAHash = %s, want %s", got, goldenHash)
	}
	if err := ValidateCAHash(got); err != nil {
		t.Error(err)
	}
}

func TestCAHashStableAndIndependent(t *testing.T) {
	ca := mustCA(t, "ca")
	h1, err := CAHash(ca.CertPem)
	if err != nil {
		t.Fatal(err)
	}
	h2, _ := CAHash(ca.CertPem)
	if h1 != h2 {
		t.Errorf("CAHash not stable: %s %s", h1, h2)
	}
	// Recompute from the public key itself, not from the raw field.
	cert, _ := ParseCertPEM(ca.CertPem)
	der, err := x509.MarshalPKIXPublicKey(cert.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	if want := "sha256:" + hex.EncodeToString(sum[:]); h1 != want {
		t.Errorf("CAHash = %s, want %s", h1, want)
	}
	other := mustCA(t, "ca")
	if h3, _ := CAHash(other.CertPem); h3 == h1 {
		t.Error("two CAs have the same hash")
	}
}

func TestCAHashMatchesOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed")
	}
	ca := mustCA(t, "ca")
	want, err := CAHash(ca.CertPem)
	if err != nil {
		t.Fatal(err)
	}
	pub := exec.Command(openssl, "x509", "-pubkey", "-noout")
	pub.Stdin = bytes.NewReader(ca.CertPem)
	pubPEM, err := pub.Output()
	if err != nil {
		t.Fatalf("openssl x509: %v", err)
	}
	der := exec.Command(openssl, "pkey", "-pubin", "-outform", "der")
	der.Stdin = bytes.NewReader(pubPEM)
	spki, err := der.Output()
	if err != nil {
		t.Fatalf("openssl pkey: %v", err)
	}
	sum := sha256.Sum256(spki)
	if got := "sha256:" + hex.EncodeToString(sum[:]); got != want {
		t.Errorf("openssl hash %s, CAHash %s", got, want)
	}
}

func TestValidateCAHash(t *testing.T) {
	for _, bad := range []string{"", "sha256:", "md5:" + strings.Repeat("a", 64), "sha256:" + strings.Repeat("z", 64), "sha256:" + strings.Repeat("a", 62)} {
		if ValidateCAHash(bad) == nil {
			t.Errorf("ValidateCAHash(%q) = nil", bad)
		}
	}
	if err := ValidateCAHash("SHA256:" + strings.Repeat("AB", 32)); err != nil {
		t.Errorf("upper case refused: %v", err)
	}
}

// handshake runs a TLS handshake over loopback and one byte each way, and
// returns the client's view and both sides' errors.
func handshake(t *testing.T, srvCfg, cliCfg *tls.Config) (tls.ConnectionState, error, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvErr <- err
			return
		}
		defer c.Close()
		tc := tls.Server(c, srvCfg)
		_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			srvErr <- err
			return
		}
		buf := make([]byte, 1)
		if _, err := tc.Read(buf); err != nil {
			srvErr <- err
			return
		}
		_, err = tc.Write(buf)
		srvErr <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tc := tls.Client(c, cliCfg)
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	cliErr := tc.Handshake()
	if cliErr == nil {
		if _, cliErr = tc.Write([]byte{1}); cliErr == nil {
			_, cliErr = tc.Read(make([]byte, 1))
		}
	}
	state := tc.ConnectionState()
	_ = tc.Close()
	return state, cliErr, <-srvErr
}

func mustServerConfig(t *testing.T, cert *pb.KeyPair, caPEM []byte, auth tls.ClientAuthType) *tls.Config {
	t.Helper()
	cfg, err := ServerConfig(cert, caPEM, auth)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestPinnedClientConfig(t *testing.T) {
	ca := mustCA(t, "coordinator-ca")
	hash, _ := CAHash(ca.CertPem)
	srv := mustServerConfig(t, mustIssue(t, ca, serverOpts()), ca.CertPem, tls.NoClientCert)

	state, cliErr, srvErr := handshake(t, srv, PinnedClientConfig(hash, "127.0.0.1"))
	if cliErr != nil || srvErr != nil {
		t.Fatalf("pinned handshake failed: client %v, server %v", cliErr, srvErr)
	}
	got, err := FindPinnedCA(hash, state.PeerCertificates)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(EncodeCertPEM(got), ca.CertPem) {
		t.Error("FindPinnedCA did not return the coordinator CA")
	}
	var raw [][]byte
	for _, c := range state.PeerCertificates {
		raw = append(raw, c.Raw)
	}
	if len(raw) != 2 {
		t.Errorf("server presented %d certificates, want leaf and CA", len(raw))
	}
	if got, err := PinnedCA(hash, raw); err != nil || !bytes.Equal(EncodeCertPEM(got), ca.CertPem) {
		t.Errorf("PinnedCA did not return the coordinator CA: %v", err)
	}
	if _, err := PinnedCA(hash, raw[:1]); !errors.Is(err, ErrCAHashMismatch) {
		t.Errorf("PinnedCA without the CA: %v, want ErrCAHashMismatch", err)
	}

	// Upper-case hex is the same hash; an empty server name skips the
	// name check.
	if _, cliErr, _ := handshake(t, srv, PinnedClientConfig(strings.ToUpper(hash), "")); cliErr != nil {
		t.Errorf("upper-case hash refused: %v", cliErr)
	}
	if _, cliErr, _ := handshake(t, srv, PinnedClientConfig(hash, "coord.example")); cliErr != nil {
		t.Errorf("DNS server name refused: %v", cliErr)
	}
}

func TestPinnedClientConfigRefuses(t *testing.T) {
	ca := mustCA(t, "coordinator-ca")
	hash, _ := CAHash(ca.CertPem)
	other := mustCA(t, "other-ca")
	otherHash, _ := CAHash(other.CertPem)
	good := mustIssue(t, ca, serverOpts())

	// A server whose chain is leaf + CA, built by hand.
	chainConfig := func(leaf *pb.KeyPair, chain ...*pb.KeyPair) *tls.Config {
		tc, err := tls.X509KeyPair(leaf.CertPem, leaf.KeyPem)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range chain {
			x, _ := ParseCertPEM(c.CertPem)
			tc.Certificate = append(tc.Certificate, x.Raw)
		}
		return &tls.Config{Certificates: []tls.Certificate{tc}}
	}
	impostorLeaf := mustIssue(t, other, serverOpts())
	clientOnly := mustIssue(t, ca, CertOptions{CommonName: "c", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Usages: []Usage{UsageClient}, Validity: time.Hour})

	cases := []struct {
		name       string
		srv        *tls.Config
		hash, host string
	}{
		{"wrong hash", mustServerConfig(t, good, ca.CertPem, tls.NoClientCert), otherHash, "127.0.0.1"},
		{"malformed hash", mustServerConfig(t, good, ca.CertPem, tls.NoClientCert), "sha256:00", "127.0.0.1"},
		{"CA not sent", chainConfig(good), hash, "127.0.0.1"},
		{"wrong server name", mustServerConfig(t, good, ca.CertPem, tls.NoClientCert), hash, "elsewhere.example"},
		// The impostor replays the real CA certificate, but its leaf is
		// signed by another CA.
		{"leaf from another CA", chainConfig(impostorLeaf, ca), hash, "127.0.0.1"},
		{"leaf from another CA, both CAs sent", chainConfig(impostorLeaf, other, ca), hash, "127.0.0.1"},
		{"leaf not for servers", chainConfig(clientOnly, ca), hash, "127.0.0.1"},
	}
	for _, tc := range cases {
		if _, cliErr, _ := handshake(t, tc.srv, PinnedClientConfig(tc.hash, tc.host)); cliErr == nil {
			t.Errorf("%s: pinned handshake succeeded", tc.name)
		}
	}
}

func TestServerSendsCAInChain(t *testing.T) {
	ca := mustCA(t, "ca")
	cfg := mustServerConfig(t, mustIssue(t, ca, serverOpts()), ca.CertPem, tls.NoClientCert)
	chain := cfg.Certificates[0].Certificate
	if len(chain) != 2 {
		t.Fatalf("chain has %d certificates, want 2", len(chain))
	}
	caCert, _ := ParseCertPEM(ca.CertPem)
	if !bytes.Equal(chain[1], caCert.Raw) {
		t.Error("second certificate of the chain is not the CA")
	}
	if cfg.MinVersion != tls.VersionTLS13 {
		t.Error("minimum version is not TLS 1.3")
	}
	// A bundle with an unrelated CA first still yields leaf + issuer.
	other := mustCA(t, "other")
	bundle := append(append([]byte{}, other.CertPem...), ca.CertPem...)
	cfg = mustServerConfig(t, mustIssue(t, ca, serverOpts()), bundle, tls.NoClientCert)
	if chain := cfg.Certificates[0].Certificate; len(chain) != 2 || !bytes.Equal(chain[1], caCert.Raw) {
		t.Errorf("chain from bundle has %d certificates or the wrong CA", len(chain))
	}
}

func TestMutualTLS(t *testing.T) {
	ca := mustCA(t, "ca")
	other := mustCA(t, "other")
	srv := mustServerConfig(t, mustIssue(t, ca, serverOpts()), ca.CertPem, tls.RequireAndVerifyClientCert)
	clientOpts := CertOptions{CommonName: "admin", Usages: []Usage{UsageClient}, Validity: time.Hour}

	cli, err := ClientConfig(mustIssue(t, ca, clientOpts), ca.CertPem, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if _, cliErr, srvErr := handshake(t, srv, cli); cliErr != nil || srvErr != nil {
		t.Fatalf("mTLS handshake failed: client %v, server %v", cliErr, srvErr)
	}

	foreign, err := ClientConfig(mustIssue(t, other, clientOpts), ca.CertPem, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, srvErr := handshake(t, srv, foreign); srvErr == nil {
		t.Error("server accepted a client certificate from another CA")
	}

	anonymous, err := ClientConfig(nil, ca.CertPem, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, srvErr := handshake(t, srv, anonymous); srvErr == nil {
		t.Error("server accepted a client without certificate")
	}

	distrustful, err := ClientConfig(nil, other.CertPem, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	open := mustServerConfig(t, mustIssue(t, ca, serverOpts()), ca.CertPem, tls.NoClientCert)
	if _, cliErr, _ := handshake(t, open, distrustful); cliErr == nil {
		t.Error("client accepted a server from a CA it does not trust")
	}

	if _, err := ServerConfig(mustIssue(t, ca, serverOpts()), nil, tls.RequireAndVerifyClientCert); err == nil {
		t.Error("ServerConfig verifies client certificates without a CA")
	}
	if _, err := ClientConfig(nil, nil, "x"); err == nil {
		t.Error("ClientConfig without a CA")
	}
}

func TestWriteFileAtomic(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)

	dir := t.TempDir()
	path := filepath.Join(dir, "a", "b", "key.pem")
	if err := WriteFileAtomic(path, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", st.Mode().Perm())
	}
	parent, _ := os.Stat(filepath.Dir(path))
	if parent.Mode().Perm() != 0o700 {
		t.Errorf("parent mode = %v, want 0700", parent.Mode().Perm())
	}

	// Overwrite a file that was world-readable: the new one has the new mode.
	if err := os.WriteFile(path, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(path, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	st, _ = os.Stat(path)
	if string(data) != "two" || st.Mode().Perm() != 0o600 {
		t.Errorf("after overwrite: %q, %v", data, st.Mode().Perm())
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}

	if err := WriteFileAtomic(filepath.Join(dir, "cert.pem"), []byte("c"), 0o644); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(dir, "cert.pem")); st.Mode().Perm() != 0o644 {
		t.Errorf("mode = %v, want 0644", st.Mode().Perm())
	}
}

func TestPeerRole(t *testing.T) {
	now := time.Now()
	ca, err := NewCA("ca", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(orgs ...string) tls.ConnectionState {
		kp, err := Issue(ca, CertOptions{CommonName: "x", Organizations: orgs, Usages: []Usage{UsageServer}, Validity: time.Hour}, now)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := ParseCertPEM(kp.CertPem)
		return tls.ConnectionState{PeerCertificates: []*x509.Certificate{c}}
	}
	roles := []string{"r:server", "r:other"}
	check := PeerRole("r:server", roles)
	if err := check(leaf("r:server")); err != nil {
		t.Errorf("the role: %v", err)
	}
	for name, cs := range map[string]tls.ConnectionState{
		"another role": leaf("r:other"), "both roles": leaf("r:server", "r:other"), "no role": leaf(), "no certificate": {},
	} {
		if err := check(cs); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// IssuerOf answers from what it remembers of the current bundle only: once
// the bundle drops the CA, a certificate it signed has no issuer, even one
// asked about before.
func TestIssuerOfFollowsTheBundle(t *testing.T) {
	old, next := mustCA(t, "old"), mustCA(t, "next")
	leaf, _, err := ParseKeyPair(mustIssue(t, old, CertOptions{CommonName: "hv-1", Usages: []Usage{UsageClient}, Validity: time.Hour}))
	if err != nil {
		t.Fatal(err)
	}
	trust, err := NewTrust(append(append([]byte(nil), old.CertPem...), next.CertPem...))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // asked, then remembered
		if ca := trust.IssuerOf(leaf); ca == nil || ca.Subject.CommonName != "old" {
			t.Fatalf("issuer of a leaf of the old CA with both trusted: %v", ca)
		}
	}
	if err := trust.Set(next.CertPem); err != nil {
		t.Fatal(err)
	}
	if ca := trust.IssuerOf(leaf); ca != nil {
		t.Fatalf("the old CA dropped, the leaf's issuer is still %s", ca.Subject.CommonName)
	}
}
