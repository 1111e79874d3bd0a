package coordinator

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/client"
	"github.com/oneinfra/oneinfra/internal/testutil"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// register trades a token for a hypervisor certificate as an agent
// would, and returns the certificate with its key.
func register(ctx context.Context, s *Server, token, caHash, name string, spec *pb.HypervisorSpec) (*pb.KeyPair, error) {
	key, keyPEM, err := tlsutil.GenerateKey()
	if err != nil {
		return nil, err
	}
	csr, err := tlsutil.CreateCSR(key, name, nil)
	if err != nil {
		return nil, err
	}
	boot, err := client.DialTLS([]string{s.APIAddr()}, tlsutil.PinnedClientConfig(caHash, ""))
	if err != nil {
		return nil, err
	}
	defer boot.Close()
	resp, err := pb.NewBootstrapClient(boot).RegisterHypervisor(ctx, &pb.RegisterHypervisorRequest{Token: token, Name: name, Spec: spec, CsrPem: csr})
	if err != nil {
		return nil, err
	}
	return &pb.KeyPair{CertPem: resp.CertPem, KeyPem: keyPEM}, nil
}

// agentAs dials the coordinator with a hypervisor's certificate.
func agentAs(t *testing.T, s *Server, kp *pb.KeyPair) pb.AgentClient {
	t.Helper()
	conn, err := client.Dial(client.NewMembers([]string{s.APIAddr()}, nil), s.CAPEM(), kp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewAgentClient(conn)
}

// impostor serves the Operator and Bootstrap services with a certificate
// of the coordinator CA that is not a server's, counting the calls that
// reach it.
type impostor struct {
	addr  string
	calls atomic.Int32
}

func startImpostor(t *testing.T, kp *pb.KeyPair, caPEM []byte) *impostor {
	t.Helper()
	conf, err := tlsutil.ServerConfig(kp, caPEM, tls.VerifyClientCertIfGiven)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	im := &impostor{addr: ln.Addr().String()}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(conf)), grpc.UnknownServiceHandler(func(any, grpc.ServerStream) error {
		im.calls.Add(1)
		return nil
	}))
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	return im
}

// TestImpostorServers: certificates of the coordinator CA that are not a
// coordinator server's (a join endpoint's, a hypervisor's) serve nothing
// that the CLI, an agent or a joining server believes: each refuses at the
// handshake, naming the role, and the impostor gets no call (so no token).
func TestImpostorServers(t *testing.T) {
	ctx := context.Background()
	s, cfg := bootstrapOne(t, t.TempDir())
	op := pb.NewOperatorClient(adminConn(t, cfg.DataDir, s.APIAddr()))
	tok, err := op.CreateToken(ctx, &pb.CreateTokenRequest{Kind: TokenHypervisor})
	if err != nil {
		t.Fatal(err)
	}
	hv, err := register(ctx, s, tok.Token, tok.CaHash, "pub", &pb.HypervisorSpec{Address: "10.0.0.9", PortRange: "30000-30099", Public: true, PublicAddress: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	// A hypervisor's certificate is a client's only.
	cert, err := tlsutil.ParseCertPEM(hv.CertPem)
	if err != nil || len(cert.IPAddresses) != 0 || len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0].String() == "" {
		t.Fatalf("hypervisor certificate: %v %v", cert.ExtKeyUsage, err)
	}
	// The join endpoint's is a server's, for its own key and the
	// hypervisor's addresses as registered, never the caller's.
	key, keyPEM, _ := tlsutil.GenerateKey()
	csr, _ := tlsutil.CreateCSR(key, "pub", nil)
	je, err := agentAs(t, s, hv).IssueJoinCertificate(ctx, &pb.IssueJoinCertificateRequest{Hypervisor: "pub", CsrPem: csr})
	if err != nil {
		t.Fatal(err)
	}
	joinCert, _ := tlsutil.ParseCertPEM(je.CertPem)
	if got := fmt.Sprint(joinCert.IPAddresses); got != "[10.0.0.9 127.0.0.1]" || joinCert.Subject.Organization[0] != vocab.RoleJoinEndpoint {
		t.Errorf("join endpoint certificate: IPs %s, O %v", got, joinCert.Subject.Organization)
	}
	if _, err := agentAs(t, s, hv).IssueJoinCertificate(ctx, &pb.IssueJoinCertificateRequest{Hypervisor: "other", CsrPem: csr}); code(err) != codes.PermissionDenied {
		t.Errorf("a join certificate for another hypervisor: %v", err)
	}

	for name, kp := range map[string]*pb.KeyPair{"join endpoint": {CertPem: je.CertPem, KeyPem: keyPEM}, "hypervisor": hv} {
		im := startImpostor(t, kp, s.CAPEM())
		// The CLI, with the admin's credentials.
		conf, err := client.Load(filepath.Join(cfg.DataDir, AdminConfFile))
		if err != nil {
			t.Fatal(err)
		}
		conn, err := client.Dial(client.NewMembers([]string{im.addr}, nil), []byte(conf.CertificateAuthority), conf.KeyPair())
		if err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = pb.NewOperatorClient(conn).Get(cctx, &pb.GetRequest{Kind: "clusters"})
		cancel()
		conn.Close()
		if err == nil {
			t.Errorf("%s impostor: the CLI believed it", name)
		}
		// An agent registering (it pins the CA by hash).
		if _, err := registerAt(ctx, im.addr, tok.Token, tok.CaHash); err == nil || !strings.Contains(err.Error(), "server") {
			t.Errorf("%s impostor: an agent registered with it: %v", name, err)
		}
		// A joining server.
		jcfg := testConfig(t, "s9", t.TempDir())
		jcfg.Join, jcfg.Token, jcfg.CAHash = im.addr, "aaaaaa.bbbbbbbbbbbbbbbb", tok.CaHash
		jctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if srv, err := Start(jctx, jcfg); err == nil {
			srv.Kill()
			t.Errorf("%s impostor: a server joined through it", name)
		}
		cancel()
		if n := im.calls.Load(); n != 0 {
			t.Errorf("%s impostor: got %d calls", name, n)
		}
	}
}

// registerAt registers a hypervisor through addr, as the agent does.
func registerAt(ctx context.Context, addr, token, caHash string) (*pb.RegisterHypervisorResponse, error) {
	conn, err := client.DialTLS([]string{addr}, tlsutil.PinnedClientConfig(caHash, ""))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	key, _, _ := tlsutil.GenerateKey()
	csr, _ := tlsutil.CreateCSR(key, "hv-x", nil)
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return pb.NewBootstrapClient(conn).RegisterHypervisor(cctx, &pb.RegisterHypervisorRequest{Token: token, Name: "hv-x", CsrPem: csr,
		Spec: &pb.HypervisorSpec{Address: "10.0.0.1", PortRange: "30000-30099"}})
}

// TestTokens: single use by default, a bounded ttl, kinds, and names: a
// taken name is refused unless the token is bound to it, and then the old
// certificate stops working at once.
func TestTokens_Trust(t *testing.T) {
	ctx := context.Background()
	s, cfg := bootstrapOne(t, t.TempDir())
	op := pb.NewOperatorClient(adminConn(t, cfg.DataDir, s.APIAddr()))
	spec := func(i int) *pb.HypervisorSpec {
		return &pb.HypervisorSpec{Address: fmt.Sprintf("10.0.0.%d", i), PortRange: "30000-30099"}
	}
	if _, err := op.CreateToken(ctx, &pb.CreateTokenRequest{Kind: TokenHypervisor, TtlSeconds: 721 * 3600}); code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "--ttl") {
		t.Errorf("a 721h token: %v", err)
	}
	if _, err := op.CreateToken(ctx, &pb.CreateTokenRequest{Kind: TokenServer, Name: "x"}); code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "--name") {
		t.Errorf("a server token bound to a name: %v", err)
	}
	tok, err := op.CreateToken(ctx, &pb.CreateTokenRequest{Kind: TokenHypervisor})
	if err != nil {
		t.Fatal(err)
	}
	first, err := register(ctx, s, tok.Token, tok.CaHash, "hv-a", spec(1))
	if err != nil {
		t.Fatal(err)
	}
	// Used: refused with the reason.
	if _, err := register(ctx, s, tok.Token, tok.CaHash, "hv-b", spec(2)); code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "used up") {
		t.Errorf("a used token: %v", err)
	}
	// A worker token is not a hypervisor token.
	if _, err := op.Apply(ctx, &pb.ApplyRequest{Resources: []*pb.Resource{clusterResource("c")}}); err != nil {
		t.Fatal(err)
	}
	wt, err := op.CreateToken(ctx, &pb.CreateTokenRequest{Kind: TokenWorker, Cluster: "c"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := register(ctx, s, wt.Token, wt.CaHash, "hv-w", spec(3)); code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "not a hypervisor token") {
		t.Errorf("a worker token registering a hypervisor: %v", err)
	}
	// A name takeover with an unbound token is refused, and changes
	// nothing: the first certificate still works.
	other, _ := op.CreateToken(ctx, &pb.CreateTokenRequest{Kind: TokenHypervisor})
	if _, err := register(ctx, s, other.Token, other.CaHash, "hv-a", spec(9)); code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), "--name hv-a") {
		t.Errorf("taking over hv-a: %v", err)
	}
	agent := agentAs(t, s, first)
	if _, err := agent.GetAssignments(ctx, &pb.GetAssignmentsRequest{Hypervisor: "hv-a"}); err != nil {
		t.Fatalf("hv-a after a refused takeover: %v", err)
	}
	if h := s.State().Hypervisor(nil, "hv-a"); h.Spec.Address != "10.0.0.1" {
		t.Errorf("a refused takeover changed hv-a: %v", h.Spec)
	}
	// A token bound to another name registers only that one.
	boundB, _ := op.CreateToken(ctx, &pb.CreateTokenRequest{Kind: TokenHypervisor, Name: "hv-b"})
	if _, err := register(ctx, s, boundB.Token, boundB.CaHash, "hv-a", spec(9)); code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `"hv-b" only`) {
		t.Errorf("a token bound to hv-b registering hv-a: %v", err)
	}
	// A token bound to hv-a registers it again (a machine that lost its
	// identity); the old certificate stops working at once.
	bound, _ := op.CreateToken(ctx, &pb.CreateTokenRequest{Kind: TokenHypervisor, Name: "hv-a"})
	began := time.Now()
	second, err := register(ctx, s, bound.Token, bound.CaHash, "hv-a", spec(1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agent.GetAssignments(ctx, &pb.GetAssignmentsRequest{Hypervisor: "hv-a"}); code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("the replaced certificate: %v", err)
	}
	t.Logf("the replaced certificate refused %v after the new registration began", time.Since(began).Round(time.Millisecond))
	if _, err := agentAs(t, s, second).GetAssignments(ctx, &pb.GetAssignmentsRequest{Hypervisor: "hv-a"}); err != nil {
		t.Errorf("the new certificate: %v", err)
	}
	// Used tokens stay until they expire (a replay is refused as used up);
	// the leader prunes expired ones.
	short, err := op.CreateToken(ctx, &pb.CreateTokenRequest{Kind: TokenHypervisor, TtlSeconds: 1})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, "expired token pruned", func() error {
		if s.State().Token(nil, short.Info.Id) != nil {
			return fmt.Errorf("token %s still stored", short.Info.Id)
		}
		return nil
	})
	for _, id := range []string{tok.Info.Id, bound.Info.Id, other.Info.Id} {
		if s.State().Token(nil, id) == nil {
			t.Errorf("token %s pruned before it expired", id)
		}
	}
}

// TestServerMembership: a server certificate counts only while its server
// is a member: one that got its certificate and never joined may only
// join; a removed one is refused at once; identities forwarded by either
// are not believed.
func TestServerMembership(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s1, cfg1 := bootstrapOne(t, dir)
	op := pb.NewOperatorClient(adminConn(t, cfg1.DataDir, s1.APIAddr()))
	tok, err := op.CreateToken(ctx, &pb.CreateTokenRequest{Kind: TokenServer, Uses: 2})
	if err != nil {
		t.Fatal(err)
	}
	// A server certificate, for a server that never joins.
	key, keyPEM, _ := tlsutil.GenerateKey()
	csr, _ := tlsutil.CreateCSR(key, "ghost", nil)
	boot, err := client.DialTLS([]string{s1.APIAddr()}, tlsutil.PinnedClientConfig(tok.CaHash, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer boot.Close()
	js, err := pb.NewBootstrapClient(boot).JoinServer(ctx, &pb.JoinServerRequest{Token: tok.Token, Id: "ghost", RaftAddress: "127.0.0.1:1", ApiAddress: "127.0.0.1:2", CsrPem: csr})
	if err != nil {
		t.Fatal(err)
	}
	ghost := &pb.KeyPair{CertPem: js.CertPem, KeyPem: keyPEM}
	conn, err := client.Dial(client.NewMembers([]string{s1.APIAddr()}, nil), js.CaPem, ghost)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	asAdmin := metadata.AppendToOutgoingContext(ctx, forwardedFor, identity{Role: vocab.RoleOperator, Name: "admin"}.forwarded())
	if _, err := pb.NewOperatorClient(conn).CreateToken(asAdmin, &pb.CreateTokenRequest{Kind: TokenHypervisor}); code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "not a member") {
		t.Errorf("a never-joined server forwarding an operator call: %v", err)
	}
	if _, err := pb.NewPeerClient(conn).Status(ctx, &pb.PeerStatusRequest{}); code(err) != codes.PermissionDenied {
		t.Errorf("a never-joined server calling a peer: %v", err)
	}

	// A real second server joins; then it is removed.
	cfg2 := testConfig(t, "s2", dir)
	cfg2.Join, cfg2.Token, cfg2.CAHash = s1.APIAddr(), tok.Token, tok.CaHash
	s2 := startServer(t, cfg2)
	testutil.Eventually(t, 30*time.Second, "two members", func() error {
		if n := len(s1.State().Servers(nil)); n != 2 {
			return fmt.Errorf("%d members", n)
		}
		return nil
	})
	creds2, err := loadCreds(cfg2.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := client.Dial(client.NewMembers([]string{s1.APIAddr()}, nil), s1.CAPEM(), creds2.cert.KeyPair())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := pb.NewPeerClient(c2).Status(ctx, &pb.PeerStatusRequest{}); err != nil {
		t.Fatalf("a member calling a peer: %v", err)
	}
	if _, err := op.RemoveMember(ctx, &pb.RemoveMemberRequest{Id: "nope"}); code(err) != codes.NotFound {
		t.Errorf("removing a server that is no member: %v", err)
	}
	began := time.Now()
	if _, err := op.RemoveMember(ctx, &pb.RemoveMemberRequest{Id: "s2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := pb.NewPeerClient(c2).Status(ctx, &pb.PeerStatusRequest{}); code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("a removed server calling a peer: %v", err)
	}
	t.Logf("members remove: the removed server refused %v after the call began", time.Since(began).Round(time.Millisecond))
	s2.Kill()
	if _, err := op.RemoveMember(ctx, &pb.RemoveMemberRequest{Id: "s1"}); code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "last member") {
		t.Errorf("removing the last member: %v", err)
	}
}

// TestOperators: named operators with their own credentials, revoked at
// once; the last one cannot be revoked; every call teaches the client the
// members; kubeconfigs live --ttl and are recorded.
func TestOperators(t *testing.T) {
	ctx := context.Background()
	s, cfg := bootstrapOne(t, t.TempDir())
	op := pb.NewOperatorClient(adminConn(t, cfg.DataDir, s.APIAddr()))
	key, keyPEM, _ := tlsutil.GenerateKey()
	csr, _ := tlsutil.CreateCSR(key, "alice", nil)
	if _, err := op.CreateAdmin(ctx, &pb.CreateAdminRequest{Name: "Alice", CsrPem: csr}); code(err) != codes.InvalidArgument {
		t.Errorf("an operator name that is not a DNS label: %v", err)
	}
	if _, err := op.CreateAdmin(ctx, &pb.CreateAdminRequest{Name: "bob", CsrPem: csr}); code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "CN") {
		t.Errorf("a CSR for another name: %v", err)
	}
	resp, err := op.CreateAdmin(ctx, &pb.CreateAdminRequest{Name: "alice", CsrPem: csr})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.CreateAdmin(ctx, &pb.CreateAdminRequest{Name: "alice", CsrPem: csr}); code(err) != codes.AlreadyExists {
		t.Errorf("alice twice: %v", err)
	}
	members := client.NewMembers([]string{s.APIAddr()}, nil)
	learned := make(chan map[string]string, 1)
	members.OnChange(func(_ []string, ids map[string]string) { learned <- ids })
	conn, err := client.Dial(members, resp.CaPem, &pb.KeyPair{CertPem: resp.CertPem, KeyPem: keyPEM})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	alice := pb.NewOperatorClient(conn)
	if _, err := alice.Get(ctx, &pb.GetRequest{Kind: "clusters"}); err != nil {
		t.Fatalf("alice: %v", err)
	}
	select {
	case ids := <-learned:
		if ids[s.APIAddr()] != "s1" {
			t.Errorf("learned members %v", ids)
		}
	default:
		t.Error("a call taught the client no members")
	}
	list, err := op.ListAdmins(ctx, &pb.ListAdminsRequest{})
	if err != nil || len(list.Certificates) != 2 || list.Certificates[0].Name != "admin" || list.Certificates[1].Name != "alice" ||
		list.Certificates[1].IssuedBy != "oneinfra:admin/admin" {
		t.Fatalf("admin list: %v %v", list, err)
	}
	// A kubeconfig lives --ttl and is recorded with who asked.
	if err := createCluster(ctx, op, "c"); err != nil {
		t.Fatal(err)
	}
	registerHypervisor(t, s, op, "hv-a", false)
	registerHypervisor(t, s, op, "pub", true)
	var kc []byte
	testutil.Eventually(t, 10*time.Second, "kubeconfig", func() (err error) {
		kc, err = client.AdminKubeconfig(ctx, alice, "c", 3600)
		return err
	})
	var rec *pb.IssuedCert
	for _, c := range s.State().AllIssued(nil) {
		if c.Role == roleKubeconfig {
			rec = c
		}
	}
	if rec == nil || rec.Cluster != "c" || rec.Name != "alice" || rec.IssuedBy != "oneinfra:admin/alice" || time.Until(rec.NotAfter.AsTime()) > 61*time.Minute || len(kc) == 0 {
		t.Errorf("kubeconfig record: %v", rec)
	}
	if _, err := client.AdminKubeconfig(ctx, alice, "c", 9000*3600); code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "--ttl") {
		t.Errorf("a kubeconfig outliving the certificates: %v", err)
	}
	// Revocation works at once, and never of the last operator.
	began := time.Now()
	if r, err := op.RevokeAdmin(ctx, &pb.RevokeAdminRequest{Name: "alice"}); err != nil || r.Revoked != 1 {
		t.Fatalf("revoking alice: %v %v", r, err)
	}
	if _, err := alice.Get(ctx, &pb.GetRequest{Kind: "clusters"}); code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("alice after her revocation: %v", err)
	}
	t.Logf("admin revoke: refused %v after the call began", time.Since(began).Round(time.Millisecond))
	if _, err := op.RevokeAdmin(ctx, &pb.RevokeAdminRequest{Name: "admin"}); code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "no operator") {
		t.Errorf("revoking the last operator: %v", err)
	}
	// Deleting a hypervisor revokes its certificate at once.
	hvTok, _ := op.CreateToken(ctx, &pb.CreateTokenRequest{Kind: TokenHypervisor})
	kp, err := register(ctx, s, hvTok.Token, hvTok.CaHash, "spare", &pb.HypervisorSpec{Address: "10.0.0.77", PortRange: "30000-30099"})
	if err != nil {
		t.Fatal(err)
	}
	spare := agentAs(t, s, kp)
	if _, err := spare.GetAssignments(ctx, &pb.GetAssignmentsRequest{Hypervisor: "spare"}); err != nil {
		t.Fatal(err)
	}
	if _, err := op.Delete(ctx, &pb.DeleteRequest{Kind: "hypervisors", Name: "spare"}); err != nil {
		t.Fatal(err)
	}
	if _, err := spare.GetAssignments(ctx, &pb.GetAssignmentsRequest{Hypervisor: "spare"}); code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("a deleted hypervisor's agent: %v", err)
	}
}

// A call with a certificate whose record this server has not applied yet
// (the leader just issued it) waits for the record rather than refusing
// it; one whose holder has no records, or that was recorded, never waits.
func TestStateWithRecord(t *testing.T) {
	s, _ := bootstrapOne(t, t.TempDir())
	held := s.State().IssuedTo(nil, vocab.RoleOperator, "admin")
	if len(held) == 0 {
		t.Fatal("the bootstrap operator has no certificate record")
	}
	began := time.Now()
	if st := s.stateWithRecord(context.Background(), identity{Role: vocab.RoleOperator, Name: "admin", Serial: held[0].Serial}); st.Issued(nil, held[0].Serial) == nil {
		t.Error("a recorded certificate's record is missing")
	}
	s.stateWithRecord(context.Background(), identity{Role: vocab.RoleOperator, Name: "nobody", Serial: "abc"})
	if d := time.Since(began); d > time.Second {
		t.Errorf("calls that need no record waited %s", d)
	}
	late := proto.Clone(held[0]).(*pb.IssuedCert)
	late.Serial = "feedbeef"
	applied := make(chan error, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		_, err := s.raftApply(IssueCertsType, &pb.IssueCertsCommand{Certs: []*pb.IssuedCert{late}})
		applied <- err
	}()
	defer func() {
		if err := <-applied; err != nil {
			t.Error(err)
		}
	}()
	began = time.Now()
	st := s.stateWithRecord(context.Background(), identity{Role: vocab.RoleOperator, Name: "admin", Serial: late.Serial})
	if st.Issued(nil, late.Serial) == nil {
		t.Fatalf("no record after %s", time.Since(began))
	}
	if err := admit(st, identity{Role: vocab.RoleOperator, Name: "admin", Serial: late.Serial}); err != nil {
		t.Errorf("admitting the late-recorded certificate: %v", err)
	}
	t.Logf("the late record arrived after %s", time.Since(began).Round(time.Millisecond))
}
