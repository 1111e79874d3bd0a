package worker

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

const testToken = "abcdef.0123456789abcdef"

// fakeJoin is a join endpoint: a real gRPC server over TLS with a
// certificate from a test coordinator CA.
type fakeJoin struct {
	pb.UnimplementedJoinServer
	ca     *pb.KeyPair
	caHash string
	addr   string

	mu        sync.Mutex
	joins     int
	configs   int
	joinErrs  []error // answered, in order, before joins succeed
	config    *pb.WorkerConfig
	joined    []*pb.JoinWorkerRequest
	configCNs []string
	onJoin    func(*pb.JoinWorkerRequest)
	renewals  int
	// A coordinator CA rotation: the CA that signs renewals (ca when
	// nil), the CAs client certificates are verified with (ca's when
	// empty), and the last Config request.
	signer     *pb.KeyPair
	clientCAs  []byte
	lastConfig *pb.GetWorkerConfigRequest
}

func newTestCA(t *testing.T) (*pb.KeyPair, string) {
	t.Helper()
	ca, err := tlsutil.NewCA("test-coordinator-ca", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	hash, err := tlsutil.CAHash(ca.CertPem)
	if err != nil {
		t.Fatal(err)
	}
	return ca, hash
}

// startFakeJoin serves a fakeJoin on listen (HOST:PORT, port 0 for any).
func startFakeJoin(t *testing.T, ca *pb.KeyPair, caHash, listen string, config *pb.WorkerConfig) *fakeJoin {
	t.Helper()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeJoin{ca: ca, caHash: caHash, addr: ln.Addr().String(), config: config}
	f.serve(t, ln)
	return f
}

func (f *fakeJoin) serve(t *testing.T, ln net.Listener) {
	t.Helper()
	host, _, _ := net.SplitHostPort(ln.Addr().String())
	cert, err := tlsutil.Issue(f.ca, tlsutil.CertOptions{CommonName: "join-endpoint", Organizations: []string{vocab.RoleJoinEndpoint}, IPs: []net.IP{net.ParseIP(host)},
		Usages: []tlsutil.Usage{tlsutil.UsageServer}, Validity: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	clientCAs := f.ca.CertPem
	if len(f.clientCAs) > 0 {
		clientCAs = f.clientCAs
	}
	conf, err := tlsutil.ServerConfig(cert, clientCAs, tls.VerifyClientCertIfGiven)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(conf)))
	pb.RegisterJoinServer(srv, f)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
}

func (f *fakeJoin) Join(_ context.Context, req *pb.JoinWorkerRequest) (*pb.WorkerConfig, error) {
	f.mu.Lock()
	f.joins++
	if len(f.joinErrs) > 0 {
		err := f.joinErrs[0]
		f.joinErrs = f.joinErrs[1:]
		f.mu.Unlock()
		return nil, err
	}
	f.joined = append(f.joined, proto.Clone(req).(*pb.JoinWorkerRequest))
	onJoin := f.onJoin
	wc := proto.Clone(f.config).(*pb.WorkerConfig)
	f.mu.Unlock()
	if req.Token != testToken {
		return nil, status.Error(codes.PermissionDenied, "unknown token")
	}
	cert, err := tlsutil.SignCSR(f.ca, req.CsrPem, tlsutil.CertOptions{CommonName: req.Name,
		Usages: []tlsutil.Usage{tlsutil.UsageClient}, Validity: time.Hour}, time.Now())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	wc.Name = req.Name
	wc.CertPem = cert
	if onJoin != nil {
		onJoin(req)
	}
	return wc, nil
}

// Config answers only callers with a client certificate from the CA.
func (f *fakeJoin) Config(ctx context.Context, req *pb.GetWorkerConfigRequest) (*pb.WorkerConfig, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no peer")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 {
		return nil, status.Error(codes.Unauthenticated, "a client certificate is required")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.configs++
	f.lastConfig = proto.Clone(req).(*pb.GetWorkerConfigRequest)
	cn := info.State.VerifiedChains[0][0].Subject.CommonName
	f.configCNs = append(f.configCNs, cn)
	wc := proto.Clone(f.config).(*pb.WorkerConfig)
	wc.Name = cn
	wc.CertPem = nil
	return wc, nil
}

func (f *fakeJoin) counts() (joins, configs int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.joins, f.configs
}

func (f *fakeJoin) setConfig(wc *pb.WorkerConfig) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.config = wc
}

// testWorkerConfig is what the fake answers, for a VPN 10.<n>.0.0/24.
func testWorkerConfig(t *testing.T, ca *pb.KeyPair, endpointKey, endpoint string) *pb.WorkerConfig {
	t.Helper()
	kubeletCA, err := tlsutil.NewCA("test-kubelet-client-ca", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &pb.WorkerConfig{
		Cluster:            "c1",
		Address:            "10.201.0.2/24",
		PodCidr:            "10.245.1.0/24",
		ClusterPodCidr:     "10.245.0.0/16",
		ServiceCidr:        "10.97.0.0/16",
		ClusterDns:         "10.97.0.10",
		EndpointPublicKey:  endpointKey,
		Endpoint:           endpoint,
		EndpointAddress:    "10.201.0.1",
		AllowedIps:         []string{"10.201.0.0/24", "10.245.0.0/16"},
		ApiServer:          "https://10.201.0.1:6443",
		ClusterCaPem:       ca.CertPem,
		KubeletClientCaPem: kubeletCA.CertPem,
		BootstrapToken:     "07401b.f395accd246ae52d",
	}
}

// RenewCertificate signs a new certificate, for callers with one from the
// CA, valid as long as joinValidity says.
func (f *fakeJoin) RenewCertificate(ctx context.Context, req *pb.RenewCertificateRequest) (*pb.RenewCertificateResponse, error) {
	p, _ := peer.FromContext(ctx)
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 {
		return nil, status.Error(codes.Unauthenticated, "a client certificate is required")
	}
	f.mu.Lock()
	signer := f.ca
	if f.signer != nil {
		signer = f.signer
	}
	f.renewals++
	f.mu.Unlock()
	cert, err := tlsutil.SignCSR(signer, req.CsrPem, tlsutil.CertOptions{CommonName: info.State.VerifiedChains[0][0].Subject.CommonName,
		Usages: []tlsutil.Usage{tlsutil.UsageClient}, Validity: time.Hour}, time.Now())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &pb.RenewCertificateResponse{CertPem: cert, CaPem: f.clientCAs}, nil
}
