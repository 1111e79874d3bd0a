package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/testutil"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

var (
	testPKIOnce sync.Once
	testPKI     *pb.ClusterPKI
	testPKIErr  error
)

// sharedPKI returns one PKI for the tests that only read it.
func sharedPKI(t *testing.T) *pb.ClusterPKI {
	t.Helper()
	testPKIOnce.Do(func() { testPKI, testPKIErr = NewClusterPKI("demo", time.Now()) })
	if testPKIErr != nil {
		t.Fatal(testPKIErr)
	}
	return testPKI
}

func testIdentity() ControlPlaneIdentity {
	return ControlPlaneIdentity{
		Component:           "demo-control-plane-0",
		HypervisorAddresses: []string{"10.0.0.11"},
		IngressAddresses:    []string{"203.0.113.5"},
		APIServerHost:       "https://api.demo.example:30443",
		ExtraSANs:           []string{"api.example.com", "198.51.100.7"},
		ServiceCIDR:         "10.96.0.0/12",
	}
}

func TestNewClusterPKI(t *testing.T) {
	now := time.Now()
	p := sharedPKI(t)
	if p.Cluster != "demo" {
		t.Errorf("cluster = %q", p.Cluster)
	}
	if len(p.Cas) != len(CANames()) {
		t.Errorf("%d CAs, want %d", len(p.Cas), len(CANames()))
	}
	seen := map[string]string{}
	for _, name := range CANames() {
		ca := p.Cas[name]
		if ca == nil {
			t.Errorf("CA %q missing", name)
			continue
		}
		cert, _, err := tlsutil.ParseKeyPair(ca)
		if err != nil {
			t.Errorf("CA %q: %v", name, err)
			continue
		}
		if !cert.IsCA || cert.CheckSignatureFrom(cert) != nil {
			t.Errorf("CA %q is not a self-signed CA", name)
		}
		if d := cert.NotAfter.Sub(now); d < CAValidity-time.Minute || d > CAValidity+time.Minute {
			t.Errorf("CA %q valid for %v", name, d)
		}
		h := tlsutil.CertHash(cert)
		if other, dup := seen[h]; dup {
			t.Errorf("CAs %q and %q share a key", name, other)
		}
		seen[h] = name
	}
	if len(p.EncryptionKey) != EncryptionKeySize || bytes.Equal(p.EncryptionKey, make([]byte, EncryptionKeySize)) {
		t.Errorf("encryption key = %x", p.EncryptionKey)
	}
	other, err := NewClusterPKI("other", now)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(other.EncryptionKey, p.EncryptionKey) || bytes.Equal(other.ServiceAccountKeyPem, p.ServiceAccountKeyPem) {
		t.Error("two clusters share secret keys")
	}
	if _, err := NewClusterPKI("", now); err == nil {
		t.Error("NewClusterPKI accepted an empty cluster name")
	}
}

func TestServiceAccountKeyPair(t *testing.T) {
	p := sharedPKI(t)
	priv, err := tlsutil.ParseKeyPEM(p.ServiceAccountKeyPem)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := priv.(*ecdsa.PrivateKey); !ok {
		t.Fatalf("service-account key is %T, want ECDSA", priv)
	}
	pubPEM, err := ServiceAccountPublicKeyPEM(p)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pubPEM)
	if block == nil || block.Type != "PUBLIC KEY" {
		t.Fatalf("public key PEM = %q", pubPEM)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	// A signature made with the private key verifies with the public key.
	digest := sha256.Sum256([]byte("token"))
	sig, err := priv.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest[:], sig) {
		t.Error("the service-account public key does not match the private key")
	}
	other, err := NewClusterPKI("other", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	otherPub, _ := ServiceAccountPublicKeyPEM(other)
	if bytes.Equal(otherPub, pubPEM) {
		t.Error("two clusters have the same service-account key")
	}
}

// leafWant is what a leaf certificate must be.
type leafWant struct {
	ca     string
	usages []x509.ExtKeyUsage
	cn     string
	orgs   []string
	// pub: the public key (PKIX DER) it must be issued for, without a
	// private key; nil for one that comes with its key.
	pub []byte
}

// testKeys makes a public key for each certificate of role, as an agent
// does.
func testKeys(t *testing.T, role string) map[string][]byte {
	pubs, _ := testutil.KeySet(t, KeyNames(role))
	return pubs
}

var (
	serverUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	clientUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	bothUsages  = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
)

// checkLeaf checks that kp verifies against exactly the CA it should, with
// exactly the usages and identity it should have.
func checkLeaf(t *testing.T, p *pb.ClusterPKI, name string, kp *pb.KeyPair, want leafWant) *x509.Certificate {
	t.Helper()
	if kp == nil {
		t.Errorf("%s: missing", name)
		return nil
	}
	if want.pub != nil && len(kp.KeyPem) != 0 {
		t.Errorf("%s: comes with a private key", name)
	}
	cert, err := tlsutil.ParseCertPEM(kp.CertPem)
	if err != nil {
		t.Errorf("%s: %v", name, err)
		return nil
	}
	if want.pub != nil && !bytes.Equal(cert.RawSubjectPublicKeyInfo, want.pub) {
		t.Errorf("%s: not issued for the key given", name)
	}
	if cert.IsCA {
		t.Errorf("%s: is a CA", name)
	}
	for _, caName := range CANames() {
		pool, err := tlsutil.CertPool(p.Cas[caName].CertPem)
		if err != nil {
			t.Fatal(err)
		}
		_, err = cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		if caName == want.ca && err != nil {
			t.Errorf("%s: does not verify against the %s CA: %v", name, caName, err)
		}
		if caName != want.ca && err == nil {
			t.Errorf("%s: verifies against the %s CA, want only %s", name, caName, want.ca)
		}
	}
	got := slices.Clone(cert.ExtKeyUsage)
	slices.Sort(got)
	wantUsages := slices.Clone(want.usages)
	slices.Sort(wantUsages)
	if !slices.Equal(got, wantUsages) {
		t.Errorf("%s: usages %v, want %v", name, cert.ExtKeyUsage, want.usages)
	}
	if cert.Subject.CommonName != want.cn {
		t.Errorf("%s: CN %q, want %q", name, cert.Subject.CommonName, want.cn)
	}
	if !slices.Equal(cert.Subject.Organization, want.orgs) {
		t.Errorf("%s: O %q, want %q", name, cert.Subject.Organization, want.orgs)
	}
	if d := time.Until(cert.NotAfter); d < LeafValidity-time.Minute || d > LeafValidity+time.Minute {
		t.Errorf("%s: valid for %v, want %v", name, d, LeafValidity)
	}
	return cert
}

func TestControlPlaneCerts(t *testing.T) {
	p := sharedPKI(t)
	id := testIdentity()
	keys := testKeys(t, resources.RoleControlPlane)
	cc, err := ControlPlaneCerts(p, id, keys, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if cc.Component != id.Component {
		t.Errorf("component = %q", cc.Component)
	}
	want := map[string]leafWant{
		vocab.APIServerCert:              {vocab.ClusterCA, serverUsage, "kube-apiserver", nil, nil},
		vocab.APIServerKubeletClientCert: {vocab.KubeletClientCA, clientUsage, "kube-apiserver-kubelet-client", nil, nil},
		vocab.APIServerEtcdClientCert:    {vocab.EtcdClientCA, clientUsage, "kube-apiserver-etcd-client", nil, nil},
		vocab.EtcdServerCert:             {vocab.EtcdServerCA, bothUsages, id.Component, nil, nil},
		vocab.EtcdPeerCert:               {vocab.EtcdPeerCA, bothUsages, id.Component, nil, nil},
		vocab.FrontProxyClientCert:       {vocab.FrontProxyCA, clientUsage, "front-proxy-client", nil, nil},
		vocab.ControllerManagerCert:      {vocab.ClientCA, clientUsage, "system:kube-controller-manager", nil, nil},
		vocab.SchedulerCert:              {vocab.ClientCA, clientUsage, "system:kube-scheduler", nil, nil},
	}
	if len(cc.Certs) != len(want) {
		t.Errorf("%d certificates, want %d", len(cc.Certs), len(want))
	}
	certs := map[string]*x509.Certificate{}
	for name, w := range want {
		w.pub = keys[name]
		certs[name] = checkLeaf(t, p, name, cc.Certs[name], w)
	}
	delete(keys, vocab.SchedulerCert)
	if _, err := ControlPlaneCerts(p, id, keys, time.Now()); !errors.Is(err, ErrNoKeys) {
		t.Errorf("without the scheduler's key: %v, want ErrNoKeys", err)
	}

	if api := certs[vocab.APIServerCert]; api != nil {
		for _, host := range []string{
			"10.96.0.1", // kubernetes service IP
			"api.demo.example", "api.example.com", "198.51.100.7",
			"10.0.0.11", "203.0.113.5",
			"kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local", "localhost", "127.0.0.1",
		} {
			if err := api.VerifyHostname(host); err != nil {
				t.Errorf("apiserver certificate not valid for %s: %v", host, err)
			}
		}
		if api.VerifyHostname("evil.example") == nil {
			t.Error("apiserver certificate valid for an unrelated name")
		}
	}
	if etcd := certs[vocab.EtcdServerCert]; etcd != nil {
		for _, host := range []string{"10.0.0.11", "localhost", "127.0.0.1"} {
			if err := etcd.VerifyHostname(host); err != nil {
				t.Errorf("etcd-server certificate not valid for %s: %v", host, err)
			}
		}
		if etcd.VerifyHostname("203.0.113.5") == nil {
			t.Error("etcd-server certificate valid for the public ingress")
		}
	}
	if peer := certs[vocab.EtcdPeerCert]; peer != nil {
		if err := peer.VerifyHostname("10.0.0.11"); err != nil {
			t.Errorf("etcd-peer certificate not valid for the hypervisor: %v", err)
		}
	}
}

func TestControlPlaneCertsOptions(t *testing.T) {
	p := sharedPKI(t)
	id := testIdentity()
	id.ServiceCIDR = "fd00:10:96::/108"
	id.DNSDomain = "corp.internal"
	id.APIServerHost = "[fd00::5]:6443"
	id.HypervisorAddresses = []string{"hv-1.internal", "10.0.0.11"}
	cc, err := ControlPlaneCerts(p, id, testKeys(t, resources.RoleControlPlane), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	api, err := tlsutil.ParseCertPEM(cc.Certs[vocab.APIServerCert].CertPem)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"fd00:10:96::1", "kubernetes.default.svc.corp.internal", "fd00::5", "hv-1.internal"} {
		if err := api.VerifyHostname(host); err != nil {
			t.Errorf("apiserver certificate not valid for %s: %v", host, err)
		}
	}
	if api.VerifyHostname("kubernetes.default.svc.cluster.local") == nil {
		t.Error("apiserver certificate valid for the default domain when another was given")
	}
	peer, _ := tlsutil.ParseCertPEM(cc.Certs[vocab.EtcdPeerCert].CertPem)
	if err := peer.VerifyHostname("hv-1.internal"); err != nil {
		t.Errorf("etcd-peer certificate: %v", err)
	}
}

func TestControlPlaneCertsRefusesBadIdentity(t *testing.T) {
	p := sharedPKI(t)
	for name, mutate := range map[string]func(*ControlPlaneIdentity){
		"no component":       func(id *ControlPlaneIdentity) { id.Component = "" },
		"no hypervisor":      func(id *ControlPlaneIdentity) { id.HypervisorAddresses = nil },
		"no service CIDR":    func(id *ControlPlaneIdentity) { id.ServiceCIDR = "" },
		"bad service CIDR":   func(id *ControlPlaneIdentity) { id.ServiceCIDR = "10.96.0.0/33" },
		"service CIDR /32":   func(id *ControlPlaneIdentity) { id.ServiceCIDR = "10.96.0.0/32" },
		"bad extra SAN":      func(id *ControlPlaneIdentity) { id.ExtraSANs = []string{"a b"} },
		"empty hypervisor":   func(id *ControlPlaneIdentity) { id.HypervisorAddresses = []string{""} },
		"slash in extra SAN": func(id *ControlPlaneIdentity) { id.ExtraSANs = []string{"10.0.0.0/8"} },
	} {
		id := testIdentity()
		mutate(&id)
		if _, err := ControlPlaneCerts(p, id, testKeys(t, resources.RoleControlPlane), time.Now()); err == nil {
			t.Errorf("%s: ControlPlaneCerts succeeded", name)
		}
	}
	broken := &pb.ClusterPKI{Cluster: "broken", Cas: map[string]*pb.KeyPair{vocab.ClusterCA: p.Cas[vocab.ClusterCA]}}
	if _, err := ControlPlaneCerts(broken, testIdentity(), testKeys(t, resources.RoleControlPlane), time.Now()); err == nil {
		t.Error("ControlPlaneCerts succeeded without every CA")
	}
}

func TestIngressCerts(t *testing.T) {
	p := sharedPKI(t)
	keys := testKeys(t, resources.RoleIngress)
	ic, err := IngressCerts(p, "demo-ingress", []string{"10.200.0.1"}, keys, LeafValidity, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if ic.Component != "demo-ingress" || len(ic.Certs) != 3 {
		t.Errorf("ingress certs = %s, %d certificates", ic.Component, len(ic.Certs))
	}
	checkLeaf(t, p, vocab.IngressHealthCert, ic.Certs[vocab.IngressHealthCert], leafWant{vocab.ClientCA, clientUsage, "oneinfra:ingress-health", nil, keys[vocab.IngressHealthCert]})
	checkLeaf(t, p, vocab.AddonsCert, ic.Certs[vocab.AddonsCert], leafWant{vocab.ClientCA, clientUsage, "oneinfra:addons", nil, keys[vocab.AddonsCert]})
	if egress := checkLeaf(t, p, vocab.EgressProxyCert, ic.Certs[vocab.EgressProxyCert], leafWant{vocab.ClusterCA, serverUsage, "oneinfra:egress-proxy", nil, keys[vocab.EgressProxyCert]}); egress != nil {
		if egress.VerifyHostname("10.200.0.1") != nil || egress.VerifyHostname("10.200.0.2") == nil {
			t.Errorf("egress proxy certificate names %v, want the VPN endpoint's address only", egress.IPAddresses)
		}
	}
	if _, err := IngressCerts(p, "", nil, keys, LeafValidity, time.Now()); err == nil {
		t.Error("IngressCerts accepted an empty component")
	}
}

// TestOnlyAdminAndAddonsAreMasters: no component certificate but the
// ingress's add-ons one is in system:masters.
func TestOnlyAdminIsMaster(t *testing.T) {
	p := sharedPKI(t)
	cc, err := ControlPlaneCerts(p, testIdentity(), testKeys(t, resources.RoleControlPlane), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ic, err := IngressCerts(p, "demo-ingress", nil, testKeys(t, resources.RoleIngress), LeafValidity, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	leaves := map[string]*pb.KeyPair{}
	for n, kp := range cc.Certs {
		leaves[n] = kp
	}
	for n, kp := range ic.Certs {
		leaves[n] = kp
	}
	for name, kp := range leaves {
		cert, err := tlsutil.ParseCertPEM(kp.CertPem)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(cert.Subject.Organization, vocab.MastersGroup) {
			t.Errorf("%s is in %s", name, vocab.MastersGroup)
		}
	}

	pub := testKeys(t, resources.RoleIngress)[vocab.AddonsCert]
	admin, err := AdminKubeconfigCert(p, pub, LeafValidity, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	checkLeaf(t, p, "admin", &pb.KeyPair{CertPem: admin}, leafWant{vocab.ClientCA, clientUsage, "oneinfra-admin", []string{"system:masters"}, pub})
}

func TestAPIServerClientCABundle(t *testing.T) {
	p := sharedPKI(t)
	bundle, err := APIServerClientCABundle(p)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := tlsutil.CertPool(bundle)
	if err != nil {
		t.Fatal(err)
	}
	opts := tlsutil.CertOptions{CommonName: "system:node:w1", Organizations: []string{"system:nodes"}, Usages: []tlsutil.Usage{tlsutil.UsageClient}, Validity: time.Hour}
	for _, ca := range []string{vocab.ClientCA, vocab.SignerCA} {
		kp, err := tlsutil.Issue(p.Cas[ca], opts, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		cert, _ := tlsutil.ParseCertPEM(kp.CertPem)
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: clientUsage}); err != nil {
			t.Errorf("client from the %s CA refused by the bundle: %v", ca, err)
		}
	}
	kp, _ := tlsutil.Issue(p.Cas[vocab.EtcdClientCA], opts, time.Now())
	cert, _ := tlsutil.ParseCertPEM(kp.CertPem)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: clientUsage}); err == nil {
		t.Error("the bundle trusts the etcd client CA")
	}
	if strings.Contains(string(bundle), "PRIVATE KEY") {
		t.Error("the bundle holds a private key")
	}
}

func TestCA(t *testing.T) {
	p := sharedPKI(t)
	if _, err := CA(p, "nope"); err == nil {
		t.Error("CA returned an unknown CA")
	}
	pemBytes, err := CACertPEM(p, vocab.ClusterCA)
	if err != nil || !bytes.Equal(pemBytes, p.Cas[vocab.ClusterCA].CertPem) {
		t.Errorf("CACertPEM: %v", err)
	}
}
