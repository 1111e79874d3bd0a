package coordinator

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/client"
	"github.com/oneinfra/oneinfra/internal/testutil"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/grpc/codes"
)

// TestRenewals: each holder of a coordinator certificate renews it for a
// new key of its own, for the same role and name whatever it asks, and
// goes on with it; the old one works until it expires.
func TestRenewals(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t, "s1", t.TempDir())
	cfg.Bootstrap = true
	cfg.CertValidity = time.Hour
	s := startServer(t, cfg)
	testutil.Eventually(t, 20*time.Second, "bootstrap", func() error { return s.ready() })
	conf, err := client.Load(filepath.Join(cfg.DataDir, AdminConfFile))
	if err != nil {
		t.Fatal(err)
	}
	op := pb.NewOperatorClient(adminConn(t, cfg.DataDir, s.APIAddr()))
	csr := func(cn string) ([]byte, []byte) {
		key, keyPEM, err := tlsutil.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		c, err := tlsutil.CreateCSR(key, cn, []string{"system:masters", "oneinfra:server"})
		if err != nil {
			t.Fatal(err)
		}
		return c, keyPEM
	}

	// The operator: a new key, the same role and name, whatever the CSR
	// asks (here, groups it has no right to).
	req, keyPEM := csr("admin")
	resp, err := op.RenewCredentials(ctx, &pb.RenewCertificateRequest{CsrPem: req})
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := tlsutil.ParseCertPEM(resp.CertPem)
	if cert.Subject.CommonName != "admin" || strings.Join(cert.Subject.Organization, ",") != "oneinfra:admin" || time.Until(cert.NotAfter) > 61*time.Minute {
		t.Errorf("renewed operator certificate: %v, until %v", cert.Subject, cert.NotAfter)
	}
	renewed, err := client.Dial(client.NewMembers([]string{s.APIAddr()}, nil), resp.CaPem, &pb.KeyPair{CertPem: resp.CertPem, KeyPem: keyPEM})
	if err != nil {
		t.Fatal(err)
	}
	defer renewed.Close()
	if _, err := pb.NewOperatorClient(renewed).Get(ctx, &pb.GetRequest{Kind: "clusters"}); err != nil {
		t.Errorf("the renewed credentials: %v", err)
	}
	if _, err := op.Get(ctx, &pb.GetRequest{Kind: "clusters"}); err != nil {
		t.Errorf("the old credentials before they expire: %v", err)
	}
	// Another name, or the same key again, is refused.
	other, _ := csr("mallory")
	if _, err := op.RenewCredentials(ctx, &pb.RenewCertificateRequest{CsrPem: other}); code(err) != codes.InvalidArgument {
		t.Errorf("renewing for another name: %v", err)
	}
	oldKey, _ := tlsutil.ParseKeyPEM([]byte(conf.ClientKey))
	same, _ := tlsutil.CreateCSR(oldKey, "admin", nil)
	if _, err := op.RenewCredentials(ctx, &pb.RenewCertificateRequest{CsrPem: same}); code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "new key") {
		t.Errorf("renewing with the same key: %v", err)
	}

	// A hypervisor's agent.
	tok, _ := op.CreateToken(ctx, &pb.CreateTokenRequest{Kind: TokenHypervisor})
	hv, err := register(ctx, s, tok.Token, tok.CaHash, "hv-a", &pb.HypervisorSpec{Address: "10.0.0.1", PortRange: "30000-30099"})
	if err != nil {
		t.Fatal(err)
	}
	req, _ = csr("hv-a")
	hvResp, err := agentAs(t, s, hv).RenewCertificate(ctx, &pb.RenewCertificateRequest{CsrPem: req})
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := tlsutil.ParseCertPEM(hvResp.CertPem); c.Subject.CommonName != "hv-a" || strings.Join(c.Subject.Organization, ",") != "oneinfra:hypervisor" || len(c.IPAddresses) != 0 {
		t.Errorf("renewed hypervisor certificate: %v %v", c.Subject, c.IPAddresses)
	}

	// The server itself: a new certificate, presented from the next
	// handshake, the API still answering.
	before := serialOf(s.creds.cert.Leaf())
	if err := s.renewOwn(); err != nil {
		t.Fatal(err)
	}
	if after := serialOf(s.creds.cert.Leaf()); after == before {
		t.Error("the server's certificate did not change")
	}
	fresh := pb.NewOperatorClient(adminConn(t, cfg.DataDir, s.APIAddr()))
	if _, err := fresh.Get(ctx, &pb.GetRequest{Kind: "clusters"}); err != nil {
		t.Errorf("a new connection after the server's renewal: %v", err)
	}
	if kept, err := loadCreds(cfg.DataDir); err != nil || serialOf(kept.cert.Leaf()) == before {
		t.Errorf("the renewed server certificate is not kept on disk: %v", err)
	}
}
