package coordinator

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/testutil"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// joinReq makes a worker's join request with a fresh WireGuard key.
func joinReq(t *testing.T, token, name string) *pb.JoinWorkerRequest {
	t.Helper()
	wg, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := tlsutil.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := tlsutil.CreateCSR(key, name, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &pb.JoinWorkerRequest{Token: token, Name: name, PublicKey: wg.PublicKey().String(), CsrPem: csr}
}

// TestWorkerJoin drives the join flow a public agent forwards: token
// rules, allocation, idempotent retries, removal freeing the address, and
// what the ingress and control plane are told.
func TestWorkerJoin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, cfg := bootstrapOne(t, t.TempDir())
	op := pb.NewOperatorClient(adminConn(t, cfg.DataDir, s.APIAddr()))
	registerHypervisor(t, s, op, "hv-a", false)
	pub := registerHypervisor(t, s, op, "pub", true)
	vpn := &pb.Resource{Source: "test", Kind: &pb.Resource_Cluster{Cluster: &pb.Cluster{
		Metadata: &pb.ObjectMeta{Name: "edge"}, Spec: &pb.ClusterSpec{Vpn: &pb.VPNSpec{Enabled: true, Cidr: "10.200.7.0/29"}}}}}
	if _, err := op.Apply(ctx, &pb.ApplyRequest{Resources: []*pb.Resource{vpn, clusterResource("novpn")}}); err != nil {
		t.Fatal(err)
	}
	token := func(cluster string) string {
		tok, err := op.CreateToken(ctx, &pb.CreateTokenRequest{Kind: TokenWorker, Cluster: cluster})
		if err != nil {
			t.Fatal(err)
		}
		return tok.Token
	}
	tok := token("edge")

	// Before the endpoint reports its key, joins wait (FailedPrecondition).
	if _, err := pub.JoinWorker(ctx, joinReq(t, tok, "w-1")); code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "not up yet") {
		t.Fatalf("join before the endpoint is up: %v", err)
	}
	var ingress *pb.Component
	testutil.Eventually(t, 10*time.Second, "ingress placed", func() error {
		for _, c := range s.State().ComponentsOfCluster(nil, "edge") {
			if c.Spec.Role == resources.RoleIngress {
				ingress = c
				return nil
			}
		}
		return fmt.Errorf("no ingress")
	})
	hubKey, _ := wgtypes.GeneratePrivateKey()
	if _, err := pub.ReportStatus(ctx, &pb.ReportStatusRequest{Hypervisor: "pub", Components: []*pb.ComponentReport{{
		Component: ingress.Metadata.Name, Status: &pb.ComponentStatus{State: "Running", WireguardPublicKey: hubKey.PublicKey().String()}}}}); err != nil {
		t.Fatal(err)
	}

	req1 := joinReq(t, tok, "w-1")
	c1, err := pub.JoinWorker(ctx, req1)
	if err != nil {
		t.Fatal(err)
	}
	wantEndpoint := fmt.Sprintf("203.0.113.5:%d", ingress.Spec.Ports["wireguard"])
	if c1.Address != "10.200.7.2/29" || c1.EndpointAddress != "10.200.7.1" || c1.Endpoint != wantEndpoint ||
		c1.EndpointPublicKey != hubKey.PublicKey().String() || c1.PodCidr != "10.244.0.0/24" || c1.ClusterDns != "10.96.0.10" ||
		!strings.HasPrefix(c1.ApiServer, "https://10.200.7.1:") || len(c1.CertPem) == 0 || len(c1.ClusterCaPem) == 0 ||
		len(c1.KubeletClientCaPem) == 0 || !strings.Contains(c1.BootstrapToken, ".") ||
		strings.Join(c1.AllowedIps, ",") != "10.200.7.0/29,10.244.0.0/16" || strings.Join(c1.JoinEndpoints, ",") != "203.0.113.5:7445" {
		t.Fatalf("first worker's config: %v", c1)
	}
	cert, err := tlsutil.ParseCertPEM(c1.CertPem)
	if err != nil || cert.Subject.CommonName != "w-1" || strings.Join(cert.Subject.Organization, ",") != "oneinfra:worker,oneinfra:cluster:edge" {
		t.Fatalf("worker certificate: %v %v", cert.Subject, err)
	}
	// A lost answer: the same name and keys get the same allocation.
	again, err := pub.JoinWorker(ctx, req1)
	if err != nil || again.Address != c1.Address || again.BootstrapToken != c1.BootstrapToken {
		t.Fatalf("join retried: %v %v", again, err)
	}
	// A forged re-join, with only the node's WireGuard public key (its
	// certificate request signed by another key), gets nothing.
	forged := joinReq(t, tok, "w-1")
	forged.PublicKey = req1.PublicKey
	if got, err := pub.JoinWorker(ctx, forged); code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), "node's own key") || got != nil {
		t.Errorf("forged re-join: %v %v", got, err)
	}
	// Another public hypervisor relays no join of a cluster whose ingress
	// it does not run, and reads no node's configuration.
	other := registerHypervisor(t, s, op, "pub-2", true)
	if _, err := other.JoinWorker(ctx, joinReq(t, tok, "w-o")); code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "does not run the VPN endpoint") {
		t.Errorf("join relayed by another public hypervisor: %v", err)
	}
	if _, err := other.GetWorkerConfig(ctx, configReq(t, "edge", c1.CertPem)); code(err) != codes.PermissionDenied {
		t.Errorf("config read by another public hypervisor: %v", err)
	}
	// The same name with another key is refused.
	if _, err := pub.JoinWorker(ctx, joinReq(t, tok, "w-1")); code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), "already joined") {
		t.Errorf("name reused: %v", err)
	}
	c2, err := pub.JoinWorker(ctx, joinReq(t, tok, "w-2"))
	if err != nil || c2.Address != "10.200.7.3/29" || c2.PodCidr != "10.244.1.0/24" {
		t.Fatalf("second worker: %v %v", c2, err)
	}

	// Token rules: another cluster's, a non-VPN cluster's, revoked, expired, malformed.
	if _, err := pub.JoinWorker(ctx, joinReq(t, token("novpn"), "w-x")); code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "has no VPN") {
		t.Errorf("non-VPN cluster: %v", err)
	}
	revoked, err := op.CreateToken(ctx, &pb.CreateTokenRequest{Kind: TokenWorker, Cluster: "edge"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.RevokeToken(ctx, &pb.RevokeTokenRequest{Id: revoked.Info.Id}); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.JoinWorker(ctx, joinReq(t, revoked.Token, "w-r")); code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("revoked token: %v", err)
	}
	hvTok, _ := op.CreateToken(ctx, &pb.CreateTokenRequest{Kind: TokenHypervisor})
	if _, err := pub.JoinWorker(ctx, joinReq(t, hvTok.Token, "w-h")); code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "not a worker token") {
		t.Errorf("hypervisor token: %v", err)
	}
	if _, err := pub.JoinWorker(ctx, joinReq(t, tok, "Bad_Name")); code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "--name") {
		t.Errorf("bad name: %v", err)
	}

	// The ingress gets the peers; the control plane the gateway.
	for _, as := range assignmentsOf(t, s, "pub") {
		if v := as.Vpn; as.Component.Spec.Cluster != "edge" {
			if v != nil {
				t.Errorf("a cluster without VPN has a VPN assignment: %v", v)
			}
		} else if v == nil || len(v.Peers) != 2 || v.EndpointAddress != "10.200.7.1" || strings.Join(v.Routes, ",") != "10.200.7.0/29,10.244.0.0/16" {
			t.Errorf("ingress VPN assignment: %v", v)
		}
	}
	// The control plane gets the nodes' names, addresses and bootstrap
	// token IDs (it approves their kubelets' certificates), nothing secret.
	for _, as := range assignmentsOf(t, s, "hv-a") {
		v := as.Vpn
		if as.Component.Spec.Cluster != "edge" {
			continue
		}
		if v == nil || v.Gateway != "10.0.0.3" || v.Cidr != "10.200.7.0/29" || len(v.Peers) != 2 {
			t.Errorf("control-plane VPN assignment: %v", v)
			continue
		}
		for _, p := range v.Peers {
			if p.Address == "" || p.BootstrapTokenId == "" || p.BootstrapTokenSecret != "" || p.PublicKey != "" || p.TokenId != "" {
				t.Errorf("control-plane VPN peer %v: want its name, address and bootstrap token ID only", p)
			}
		}
	}

	// The operator sees the peers with what the endpoint reports.
	hs := time.Now().Add(-5 * time.Second).Truncate(time.Second)
	if _, err := pub.ReportStatus(ctx, &pb.ReportStatusRequest{Hypervisor: "pub", Components: []*pb.ComponentReport{{
		Component: ingress.Metadata.Name, Status: &pb.ComponentStatus{State: "Running", WireguardPublicKey: hubKey.PublicKey().String(),
			VpnPeers: []*pb.PeerStatus{{PublicKey: req1.PublicKey, LastHandshake: timestamppb.New(hs), Endpoint: "198.51.100.9:4242"}}}}}}); err != nil {
		t.Fatal(err)
	}
	peers, err := op.ListPeers(ctx, &pb.ListPeersRequest{Cluster: "edge"})
	if err != nil || len(peers.Peers) != 2 || peers.Peers[0].Name != "w-1" || !peers.Peers[0].LastHandshake.AsTime().Equal(hs) ||
		peers.Peers[0].Endpoint != "198.51.100.9:4242" || peers.Peers[1].LastHandshake != nil {
		t.Fatalf("peers: %v %v", peers, err)
	}

	// Removal frees the address: the next node gets it again.
	if _, err := op.RemovePeer(ctx, &pb.RemovePeerRequest{Cluster: "edge", Name: "w-1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := op.RemovePeer(ctx, &pb.RemovePeerRequest{Cluster: "edge", Name: "w-1"}); code(err) != codes.NotFound {
		t.Errorf("removing twice: %v", err)
	}
	// Its certificate is revoked at once.
	if _, err := pub.GetWorkerConfig(ctx, configReq(t, "edge", c1.CertPem)); code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("config of a removed node: %v", err)
	}
	// Joins per token are limited, before anything else is checked: the
	// first token has been used a few times already; a burst of joins
	// (bad ones, that take no address) soon hits the limit.
	limited := 0
	for range 12 {
		if _, err := pub.JoinWorker(ctx, joinReq(t, tok, "Bad_Name")); code(err) == codes.ResourceExhausted {
			limited++
			if !strings.Contains(err.Error(), "try again in") {
				t.Errorf("rate-limited join: %v", err)
			}
		}
	}
	if limited == 0 {
		t.Error("12 joins at once with one token: none rate-limited")
	}
	tok = token("edge")
	c3, err := pub.JoinWorker(ctx, joinReq(t, tok, "w-3"))
	if err != nil || c3.Address != "10.200.7.2/29" || c3.PodCidr != "10.244.0.0/24" {
		t.Fatalf("address not reused: %v %v", c3, err)
	}
	// A /29 has 5 node addresses (.2-.6): two more fit, then it is full.
	for _, n := range []string{"w-4", "w-5", "w-6"} {
		if _, err := pub.JoinWorker(ctx, joinReq(t, tok, n)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pub.JoinWorker(ctx, joinReq(t, tok, "w-7")); err == nil || !strings.Contains(err.Error(), "10.200.7.0/29") {
		t.Errorf("full VPN CIDR: %v", err)
	}
	got, err := pub.GetWorkerConfig(ctx, configReq(t, "edge", c2.CertPem))
	if err != nil || got.Address != c2.Address || len(got.CertPem) != 0 || got.BootstrapToken != "" {
		t.Errorf("config refresh: %v %v", got, err)
	}
	// A node's name with another node's certificate serial is refused.
	wrong := configReq(t, "edge", c2.CertPem)
	wrong.Name = "w-3"
	if _, err := pub.GetWorkerConfig(ctx, wrong); code(err) == codes.OK {
		t.Error("config of w-3 with w-2's certificate")
	}
	if n := len(s.State().VPNPeers(nil, "edge")); n != 5 {
		t.Errorf("%d peers in the state", n)
	}
}

// configReq is what a join endpoint forwards for a worker calling with
// the certificate certPEM.
func configReq(t *testing.T, cluster string, certPEM []byte) *pb.GetWorkerConfigRequest {
	t.Helper()
	cert, err := tlsutil.ParseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &pb.GetWorkerConfigRequest{Cluster: cluster, Name: cert.Subject.CommonName, Serial: serialOf(cert)}
}

func assignmentsOf(t *testing.T, s *Server, hv string) []*pb.Assignment {
	t.Helper()
	as, err := s.assignments(s.State(), nil, hv, nil)
	if err != nil {
		t.Fatal(err)
	}
	return as
}
