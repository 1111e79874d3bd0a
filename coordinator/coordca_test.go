package coordinator

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/client"
	"github.com/oneinfra/oneinfra/internal/testutil"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/grpc"
)

// rotatingHolder is a holder of a coordinator certificate that does what
// agents and the CLI do in a coordinator CA rotation: it takes the CAs it
// is told to trust, renews a certificate not of the signing CA, and says
// the generation it holds. Every call it makes must work throughout.
type rotatingHolder struct {
	t       *testing.T
	servers []string
	mu      sync.Mutex
	trust   []byte
	kp      *pb.KeyPair
	conn    *grpc.ClientConn
	members *client.Members
	calls   atomic.Int32
	failed  atomic.Int32
	lastErr atomic.Pointer[error]
}

func newRotatingHolder(t *testing.T, servers []string, trust []byte, kp *pb.KeyPair) *rotatingHolder {
	h := &rotatingHolder{t: t, servers: servers, trust: trust, kp: kp}
	h.redial()
	t.Cleanup(func() { h.conn.Close() })
	return h
}

// redial connects with the current CAs and certificate.
func (h *rotatingHolder) redial() {
	h.members = client.NewMembers(h.servers, nil)
	conn, err := client.Dial(h.members, h.trust, h.kp)
	if err != nil {
		h.t.Fatal(err)
	}
	if h.conn != nil {
		h.conn.Close()
	}
	h.conn = conn
}

// call runs one call, counting it and its failure.
func (h *rotatingHolder) call(f func(ctx context.Context, conn *grpc.ClientConn) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h.calls.Add(1)
	if err := f(ctx, h.conn); err != nil {
		h.failed.Add(1)
		h.lastErr.Store(&err)
	}
}

// move takes t: the CAs, and a certificate of the signer made by renew.
func (h *rotatingHolder) move(t *pb.CoordinatorTrust, renew func(ctx context.Context, conn *grpc.ClientConn, csr []byte) (*pb.RenewCertificateResponse, error), cn string) {
	if t == nil {
		return
	}
	redial := string(t.CaPem) != string(h.trust)
	h.trust = t.CaPem
	cert, _ := tlsutil.ParseCertPEM(h.kp.CertPem)
	if !tlsutil.IssuedBy(cert, t.SignerPem) {
		key, keyPEM, _ := tlsutil.GenerateKey()
		csr, _ := tlsutil.CreateCSR(key, cn, nil)
		h.call(func(ctx context.Context, conn *grpc.ClientConn) error {
			resp, err := renew(ctx, conn, csr)
			if err == nil {
				h.kp, h.trust, redial = &pb.KeyPair{CertPem: resp.CertPem, KeyPem: keyPEM}, resp.CaPem, true
			}
			return err
		})
	}
	if redial {
		h.redial()
	}
}

// TestCoordinatorCARotation rotates the CA of a three-server coordinator
// with an agent and an operator moving as it goes, and an operator who
// never runs a command holding stage 2 until revoked: no call of the
// moving holders fails, the old CA is trusted nowhere at the end, and a
// client of the old CA alone reaches no server.
func TestCoordinatorCARotation(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s1, cfg1 := bootstrapOne(t, dir)
	op1 := pb.NewOperatorClient(adminConn(t, cfg1.DataDir, s1.APIAddr()))
	tok, err := op1.CreateToken(ctx, &pb.CreateTokenRequest{Kind: TokenServer, Uses: 2})
	if err != nil {
		t.Fatal(err)
	}
	all := []*Server{s1}
	for _, id := range []string{"s2", "s3"} {
		cfg := testConfig(t, id, dir)
		cfg.Join, cfg.Token, cfg.CAHash = s1.APIAddr(), tok.Token, tok.CaHash
		all = append(all, startServer(t, cfg))
	}
	var addrs []string
	for _, s := range all {
		addrs = append(addrs, s.APIAddr())
	}
	testutil.Eventually(t, 30*time.Second, "three voters", func() error {
		resp, err := op1.Members(ctx, &pb.MembersRequest{})
		if err != nil || len(resp.Members) != 3 {
			return fmt.Errorf("%v members, %v", len(resp.GetMembers()), err)
		}
		return nil
	})
	oldCA := s1.CAPEM()
	oldHash, _ := tlsutil.CAHash(oldCA)
	hvTok, err := op1.CreateToken(ctx, &pb.CreateTokenRequest{Kind: TokenHypervisor})
	if err != nil {
		t.Fatal(err)
	}
	hvKP, err := register(ctx, s1, hvTok.Token, hvTok.CaHash, "hv-a", &pb.HypervisorSpec{Address: "10.0.0.1", PortRange: "30000-30099"})
	if err != nil {
		t.Fatal(err)
	}
	key, _, _ := tlsutil.GenerateKey()
	bobCSR, _ := tlsutil.CreateCSR(key, "bob", nil)
	if _, err := op1.CreateAdmin(ctx, &pb.CreateAdminRequest{Name: "bob", CsrPem: bobCSR}); err != nil {
		t.Fatal(err)
	}
	conf, err := client.Load(filepath.Join(cfg1.DataDir, AdminConfFile))
	if err != nil {
		t.Fatal(err)
	}

	// The agent reports as an agent does; the operator runs commands as
	// the CLI does, renewing when the header's generation moves.
	agent := newRotatingHolder(t, addrs, oldCA, hvKP)
	admin := newRotatingHolder(t, addrs, []byte(conf.CertificateAuthority), conf.KeyPair())
	var gen, adminGen uint64
	step := func() {
		var tr *pb.CoordinatorTrust
		agent.call(func(ctx context.Context, conn *grpc.ClientConn) error {
			resp, err := pb.NewAgentClient(conn).ReportStatus(ctx, &pb.ReportStatusRequest{Hypervisor: "hv-a", TrustGeneration: gen})
			tr = resp.GetTrust()
			return err
		})
		agent.move(tr, func(ctx context.Context, conn *grpc.ClientConn, csr []byte) (*pb.RenewCertificateResponse, error) {
			return pb.NewAgentClient(conn).RenewCertificate(ctx, &pb.RenewCertificateRequest{CsrPem: csr})
		}, "hv-a")
		gen = tr.GetGeneration()

		admin.call(func(ctx context.Context, conn *grpc.ClientConn) error {
			_, err := pb.NewOperatorClient(conn).Get(ctx, &pb.GetRequest{Kind: "clusters"})
			return err
		})
		if g, ok := admin.members.TrustGeneration(); ok && g != adminGen {
			admin.call(func(ctx context.Context, conn *grpc.ClientConn) error {
				key, keyPEM, _ := tlsutil.GenerateKey()
				csr, _ := tlsutil.CreateCSR(key, "admin", nil)
				resp, err := pb.NewOperatorClient(conn).RenewCredentials(ctx, &pb.RenewCertificateRequest{CsrPem: csr})
				if err == nil {
					admin.kp, admin.trust, adminGen = &pb.KeyPair{CertPem: resp.CertPem, KeyPem: keyPEM}, resp.CaPem, resp.TrustGeneration
					admin.redial()
				}
				return err
			})
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			step()
		}
	}()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()

	resp, err := op1.RotateCA(ctx, &pb.RotateCARequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r := resp.GetStatus().GetRotation(); r.GetStage() != caStageTrusting {
		t.Fatalf("rotate-ca: %v", resp)
	}
	if _, err := op1.RotateCA(ctx, &pb.RotateCARequest{}); code(err).String() != "FailedPrecondition" {
		t.Errorf("a second rotate-ca: %v", err)
	}
	status := func() *pb.CAStatusResponse { return caStatus(s1.State(), caRotationWaiting(s1.State(), time.Now())) }

	// Stage 2 waits for bob, who never runs a command, until revoked.
	testutil.Eventually(t, 60*time.Second, "stage 2 waiting for bob", func() error {
		st := status()
		if st.GetRotation().GetStage() != caStageHolders || len(st.GetRotation().GetWaiting()) != 1 || !strings.Contains(st.Rotation.Waiting[0], "operator bob") {
			return fmt.Errorf("%v", st)
		}
		return nil
	})
	// In stage 2 the new CA signs client certificates, the old one
	// serving ones; tokens pin the old one, which servers present.
	for role, want := range map[string]bool{vocab.RoleOperator: true, vocab.RoleHypervisor: true, vocab.RoleServer: false, vocab.RoleJoinEndpoint: false} {
		ca, err := signingCA(s1.State().Config(nil), role)
		if err != nil || (tlsutil.CertHash(mustCert(ca.CertPem)) != oldHash) != want {
			t.Errorf("in stage 2, %s certificates are signed by the new CA: %v, want %v (%v)", role, !want, want, err)
		}
	}
	if tok, err := op1.CreateToken(ctx, &pb.CreateTokenRequest{Kind: TokenHypervisor}); err != nil || tok.CaHash != oldHash {
		t.Errorf("a token in stage 2 pins %v (%v), not the CA servers present", tok.GetCaHash(), err)
	}
	// The first credentials still work in stage 2: servers present
	// certificates of the old CA until stage 3.
	if _, err := op1.RevokeAdmin(ctx, &pb.RevokeAdminRequest{Name: "bob"}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 60*time.Second, "the rotation done", func() error {
		if st := status(); st.GetRotation() != nil || st.GetCaHash() == oldHash {
			return fmt.Errorf("%v", st)
		}
		return nil
	})
	close(stop)
	wg.Wait()
	step() // the holders take what the end of the rotation says
	if n := agent.failed.Load() + admin.failed.Load(); n > 0 {
		t.Errorf("%d of %d calls failed during the rotation, last: %v", n, agent.calls.Load()+admin.calls.Load(), *firstNonNil(agent.lastErr.Load(), admin.lastErr.Load()))
	}
	t.Logf("calls during the rotation: %d, none failed", agent.calls.Load()+admin.calls.Load())

	// Every server trusts the new CA alone, and presents a certificate of
	// it; so do the holders that moved.
	st := status()
	for name, h := range map[string]*rotatingHolder{"agent": agent, "operator": admin} {
		certs, _ := tlsutil.ParseCertsPEM(h.trust)
		cert, _ := tlsutil.ParseCertPEM(h.kp.CertPem)
		if len(certs) != 1 || tlsutil.CertHash(certs[0]) != st.CaHash || cert.CheckSignatureFrom(certs[0]) != nil {
			t.Errorf("the %s holds %d CAs and a certificate of another", name, len(certs))
		}
	}
	for _, s := range all {
		certs, _ := tlsutil.ParseCertsPEM(s.CAPEM())
		if len(certs) != 1 || tlsutil.CertHash(certs[0]) != st.CaHash {
			t.Errorf("server %s trusts %d CAs, not the new one alone", s.cfg.ID, len(certs))
		}
		if s.creds.caHash() != st.CaHash {
			t.Errorf("server %s presents a certificate of %s", s.cfg.ID, s.creds.caHash())
		}
	}
	// A connection opened before with a certificate of the old CA works no
	// more; a client of the old CA alone reaches no server; the old
	// certificate is refused, even with the new CA.
	if _, err := op1.Get(ctx, &pb.GetRequest{Kind: "clusters"}); err == nil || !strings.Contains(err.Error(), "trusted no more") {
		t.Errorf("a connection made with a certificate of the old CA: %v", err)
	}
	for name, c := range map[string]struct {
		trust []byte
		kp    *pb.KeyPair
	}{"old CA": {oldCA, admin.kp}, "old certificate": {s1.CAPEM(), conf.KeyPair()}} {
		conn, err := client.Dial(client.NewMembers(addrs, nil), c.trust, c.kp)
		if err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		if _, err := pb.NewOperatorClient(conn).Get(cctx, &pb.GetRequest{Kind: "clusters"}); err == nil {
			t.Errorf("%s: a call worked", name)
		}
		cancel()
		conn.Close()
	}
	// Tokens pin the new CA, and registering with one works.
	tok2, err := pb.NewOperatorClient(admin.conn).CreateToken(ctx, &pb.CreateTokenRequest{Kind: TokenHypervisor})
	if err != nil || tok2.CaHash != st.CaHash {
		t.Fatalf("a token after the rotation: %v, %v", tok2, err)
	}
	if _, err := register(ctx, s1, tok2.Token, tok2.CaHash, "hv-b", &pb.HypervisorSpec{Address: "10.0.0.2", PortRange: "30100-30199"}); err != nil {
		t.Errorf("registering after the rotation: %v", err)
	}
}

func firstNonNil(errs ...*error) *error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	none := error(nil)
	return &none
}
