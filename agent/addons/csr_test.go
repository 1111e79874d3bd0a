package addons

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	certv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// servingCSR is a kubelet's CSR as a kubelet makes it: a serving one
// unless token is set (then its first client certificate, asked with that
// bootstrap token).
type servingCSR struct {
	name, node string   // the CSR's name; the node that asks (its user)
	token      string   // the bootstrap token ID it asks with
	cn         string   // subject CN; system:node:NODE when empty
	dns        []string // DNS SANs
	ips        []string // IP SANs
	usages     []certv1.KeyUsage
	allowed    bool
	pending    bool // left undecided
}

func (c servingCSR) request(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cn := c.cn
	if cn == "" {
		cn = nodeUserPrefix + c.node
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn, Organization: []string{nodesGroup}}, DNSNames: c.dns}
	for _, ip := range c.ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

var (
	kubeletServingUsages = []certv1.KeyUsage{certv1.UsageDigitalSignature, certv1.UsageKeyEncipherment, certv1.UsageServerAuth}
	kubeletClientUsages  = []certv1.KeyUsage{certv1.UsageDigitalSignature, certv1.UsageKeyEncipherment, certv1.UsageClientAuth}
)

// checkServingCSRs creates kubelets' CSRs as nodes and bootstrap tokens
// (the admin impersonates them) and reviews them as the approver: only a
// node's own name and VPN address are approved for serving, and only the
// node a token was handed to for a first client certificate. The approver
// may do nothing else.
func checkServingCSRs(t *testing.T, s *apiServer) {
	ctx := context.Background()
	nodes := map[string]Node{
		"w1": {Address: netip.MustParseAddr("10.200.0.2"), BootstrapTokenID: "abcdef"},
		"w2": {Address: netip.MustParseAddr("10.200.0.3"), BootstrapTokenID: "ghijkl"},
	}
	cases := []servingCSR{
		{name: "own", node: "w1", dns: []string{"w1"}, ips: []string{"10.200.0.2"}, usages: kubeletServingUsages, allowed: true},
		{name: "own-ip-only", node: "w2", ips: []string{"10.200.0.3"}, usages: kubeletServingUsages[2:], allowed: true},
		{name: "other-ip", node: "w1", dns: []string{"w1"}, ips: []string{"10.200.0.3"}, usages: kubeletServingUsages},
		{name: "other-name", node: "w1", dns: []string{"w2"}, usages: kubeletServingUsages},
		{name: "not-joined", node: "w9", dns: []string{"w9"}, usages: kubeletServingUsages, pending: true},
		{name: "mapped-ip", node: "w1", ips: []string{"::ffff:10.200.0.3"}, usages: kubeletServingUsages},
		{name: "upper-name", node: "w1", dns: []string{"W1"}, usages: kubeletServingUsages},
		{name: "client-usage", node: "w1", dns: []string{"w1"}, usages: append(kubeletServingUsages, certv1.UsageClientAuth)},
		{name: "no-names", node: "w1", usages: kubeletServingUsages},
		// First client certificates, asked with a bootstrap token.
		{name: "token-own", token: "abcdef", node: "w1", usages: kubeletClientUsages, allowed: true},
		{name: "token-other-node", token: "abcdef", node: "w2", usages: kubeletClientUsages},
		{name: "token-names", token: "ghijkl", node: "w2", dns: []string{"w2"}, usages: kubeletClientUsages},
		{name: "token-unknown", token: "zzzzzz", node: "w9", usages: kubeletClientUsages, pending: true},
	}
	for _, c := range cases {
		as := rest.CopyConfig(s.admin)
		as.Impersonate = rest.ImpersonationConfig{UserName: nodeUserPrefix + c.node, Groups: []string{nodesGroup, "system:authenticated"}}
		signer := certv1.KubeletServingSignerName
		if c.token != "" {
			as.Impersonate = rest.ImpersonationConfig{UserName: bootstrapUserPrefix + c.token, Groups: []string{bootstrappersGroup, TokenGroup, "system:authenticated"}}
			signer = certv1.KubeAPIServerClientKubeletSignerName
		}
		cs, err := kubernetes.NewForConfig(as)
		if err != nil {
			t.Fatal(err)
		}
		csr := &certv1.CertificateSigningRequest{
			ObjectMeta: metav1.ObjectMeta{Name: c.name},
			Spec:       certv1.CertificateSigningRequestSpec{Request: c.request(t), SignerName: signer, Usages: c.usages},
		}
		if _, err := cs.CertificatesV1().CertificateSigningRequests().Create(ctx, csr, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating CSR %s as node %s: %v", c.name, c.node, err)
		}
	}
	// A CSR of another signer, or a node's renewal of its client
	// certificate, is not the approver's to review.
	client := &certv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "client"},
		Spec: certv1.CertificateSigningRequestSpec{Request: servingCSR{node: "w1"}.request(t), SignerName: certv1.KubeAPIServerClientSignerName,
			Usages: []certv1.KeyUsage{certv1.UsageDigitalSignature, certv1.UsageClientAuth}},
	}
	if _, err := s.cs.CertificatesV1().CertificateSigningRequests().Create(ctx, client, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	kp, err := tlsutil.Issue(s.signer, tlsutil.CertOptions{
		CommonName: vocab.KubeletServingApproverUser, Usages: []tlsutil.Usage{tlsutil.UsageClient}, Validity: time.Hour,
	}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	approver := &rest.Config{Host: s.url, Timeout: 10 * time.Second,
		TLSClientConfig: rest.TLSClientConfig{CAData: s.caPEM, CertData: kp.CertPem, KeyData: kp.KeyPem}}
	decided, err := ReviewNodeCSRs(ctx, approver, nodes)
	if err != nil {
		t.Fatalf("ReviewNodeCSRs: %v", err)
	}
	for _, c := range cases {
		why, ok := decided[c.name]
		switch {
		case c.pending && ok:
			t.Errorf("CSR %s of a node not joined decided: %q", c.name, why)
		case c.pending:
			t.Logf("CSR %s: left pending", c.name)
		case !ok:
			t.Errorf("CSR %s not reviewed", c.name)
		case c.allowed && why != "":
			t.Errorf("CSR %s denied: %s", c.name, why)
		case !c.allowed && why == "":
			t.Errorf("CSR %s approved", c.name)
		default:
			t.Logf("CSR %s: %s", c.name, map[bool]string{true: "approved", false: "denied: " + why}[why == ""])
		}
		got, err := s.cs.CertificatesV1().CertificateSigningRequests().Get(ctx, c.name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := []certv1.RequestConditionType{certv1.CertificateDenied}
		switch {
		case c.allowed:
			want = []certv1.RequestConditionType{certv1.CertificateApproved}
		case c.pending:
			want = nil
		}
		var conds []certv1.RequestConditionType
		for _, cond := range got.Status.Conditions {
			conds = append(conds, cond.Type)
		}
		if !slices.Equal(conds, want) {
			t.Errorf("CSR %s stored with conditions %v, want %v", c.name, conds, want)
		}
	}
	if _, ok := decided["client"]; ok {
		t.Error("a kube-apiserver-client CSR was reviewed")
	}
	// Reviewing again decides nothing: every one is decided, but for the
	// unknown node's.
	if again, err := ReviewNodeCSRs(ctx, approver, nodes); err != nil || len(again) != 0 {
		t.Errorf("second review decided %v: %v", again, err)
	}
	// The approver may do nothing else.
	cs, err := kubernetes.NewForConfig(approver)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the approver listing Secrets: %v, want forbidden", err)
	}
	got, err := s.cs.CertificatesV1().CertificateSigningRequests().Get(ctx, "client", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got.Status.Conditions = append(got.Status.Conditions, certv1.CertificateSigningRequestCondition{Type: certv1.CertificateApproved, Status: "True", Reason: "Test"})
	if _, err := cs.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, "client", got, metav1.UpdateOptions{}); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "signer") {
		t.Errorf("the approver approving a kube-apiserver-client CSR: %v, want forbidden for the signer", err)
	}
}

// What the API server refuses before any review is refused by the review
// too: a subject of another node, a request that is not one, a CSR of
// another signer's shape.
func TestAllowedServingCSR(t *testing.T) {
	nodes := map[string]Node{"w1": {Address: netip.MustParseAddr("10.200.0.2"), BootstrapTokenID: "abcdef"}}
	csr := func(c servingCSR) *certv1.CertificateSigningRequest {
		return &certv1.CertificateSigningRequest{Spec: certv1.CertificateSigningRequestSpec{
			Request: c.request(t), SignerName: certv1.KubeletServingSignerName, Usages: c.usages,
			Username: nodeUserPrefix + c.node, Groups: []string{nodesGroup},
		}}
	}
	good := csr(servingCSR{node: "w1", dns: []string{"w1"}, ips: []string{"10.200.0.2"}, usages: kubeletServingUsages})
	if err := allowedServingCSR(good, nodes); err != nil {
		t.Fatalf("a node's own CSR: %v", err)
	}
	for name, bad := range map[string]func(*certv1.CertificateSigningRequest){
		"another node's subject": func(c *certv1.CertificateSigningRequest) {
			c.Spec.Request = servingCSR{node: "w1", cn: "system:node:w2", dns: []string{"w1"}}.request(t)
		},
		"not PEM":         func(c *certv1.CertificateSigningRequest) { c.Spec.Request = []byte("hello") },
		"an e-mail SAN":   func(c *certv1.CertificateSigningRequest) { c.Spec.Request = withEmail(t, "w1") },
		"not in nodes":    func(c *certv1.CertificateSigningRequest) { c.Spec.Groups = []string{"system:authenticated"} },
		"no usages":       func(c *certv1.CertificateSigningRequest) { c.Spec.Usages = nil },
		"a user, no node": func(c *certv1.CertificateSigningRequest) { c.Spec.Username = "alice" },
	} {
		c := good.DeepCopy()
		bad(c)
		if err := allowedServingCSR(c, nodes); err == nil {
			t.Errorf("%s: allowed", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

// withEmail is a node's serving CSR that also names an e-mail address.
func withEmail(t *testing.T, node string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: nodeUserPrefix + node, Organization: []string{nodesGroup}},
		DNSNames: []string{node}, EmailAddresses: []string{"root@" + node},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}
