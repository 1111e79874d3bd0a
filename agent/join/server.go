// Package join is the worker join endpoint a public hypervisor's agent
// serves (default port 7445). Workers pin the coordinator CA by its hash
// and reach it from anywhere; the endpoint forwards their requests to the
// coordinator over the agent's own channel, so workers never need to reach
// the coordinator.
//
// Join carries a worker token, which the coordinator checks. Config, which
// a joined worker calls to follow its endpoint, is authenticated by the
// client certificate Join gave the worker: the endpoint verifies it against
// the coordinator CA and tells the coordinator whom it is for.
package join

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"slices"
	"strings"

	"github.com/oneinfra/oneinfra/internal/connlimit"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Server implements pb.JoinServer by forwarding to the coordinator.
type Server struct {
	pb.UnimplementedJoinServer
	Coordinator pb.AgentClient
	Logger      *slog.Logger
}

// Join forwards a worker's join; the coordinator checks its token.
func (s *Server) Join(ctx context.Context, req *pb.JoinWorkerRequest) (*pb.WorkerConfig, error) {
	cfg, err := s.Coordinator.JoinWorker(ctx, req)
	if err != nil {
		s.Logger.Info("worker join refused", "node", req.Name, "from", remote(ctx), "err", status.Convert(err).Message())
		return nil, err
	}
	s.Logger.Info("worker joined", "node", req.Name, "cluster", cfg.Cluster, "address", cfg.Address, "from", remote(ctx))
	return cfg, nil
}

// Config returns a joined worker's current configuration.
func (s *Server) Config(ctx context.Context, in *pb.GetWorkerConfigRequest) (*pb.WorkerConfig, error) {
	req, err := worker(ctx)
	if err != nil {
		return nil, err
	}
	// Who it is comes from its certificate; what it holds is its word.
	req.TrustGeneration = in.GetTrustGeneration()
	req.CoordinatorTrustGeneration = in.GetCoordinatorTrustGeneration()
	return s.Coordinator.GetWorkerConfig(ctx, req)
}

// RenewCertificate renews a joined worker's certificate, for the key of
// its request: the current certificate is the proof, checked here and by
// the coordinator.
func (s *Server) RenewCertificate(ctx context.Context, req *pb.RenewCertificateRequest) (*pb.RenewCertificateResponse, error) {
	w, err := worker(ctx)
	if err != nil {
		return nil, err
	}
	return s.Coordinator.RenewWorkerCertificate(ctx, &pb.RenewWorkerCertificateRequest{Worker: w, CsrPem: req.CsrPem})
}

// worker reads who calls from its verified client certificate; the
// coordinator checks its serial against the revocations.
func worker(ctx context.Context) (*pb.GetWorkerConfigRequest, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no peer")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 {
		return nil, status.Error(codes.Unauthenticated, "a joined worker's client certificate is required (join first)")
	}
	cert := info.State.VerifiedChains[0][0]
	cluster, name, err := Identity(cert)
	if err != nil {
		return nil, err
	}
	return &pb.GetWorkerConfigRequest{Cluster: cluster, Name: name, Serial: cert.SerialNumber.Text(16)}, nil
}

// Identity reads the cluster and node a worker certificate was issued for.
func Identity(cert *x509.Certificate) (cluster, name string, err error) {
	orgs := cert.Subject.Organization
	if !slices.Contains(orgs, vocab.RoleWorker) {
		return "", "", status.Errorf(codes.PermissionDenied, "certificate %q is not a worker's", cert.Subject.CommonName)
	}
	for _, o := range orgs {
		if c, ok := strings.CutPrefix(o, vocab.ClusterOrgPrefix); ok {
			return c, cert.Subject.CommonName, nil
		}
	}
	return "", "", status.Errorf(codes.PermissionDenied, "worker certificate %q names no cluster", cert.Subject.CommonName)
}

func remote(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok {
		return p.Addr.String()
	}
	return ""
}

// maxRequest bounds a request the endpoint reads; the coordinator, which
// it forwards them to, refuses an agent's beyond 256 KiB anyway.
const maxRequest = 256 << 10

// Serve serves the endpoint on lis with its join endpoint certificate
// (from the coordinator CA; trust, its CAs, verifies workers'
// certificates) until ctx ends. A renewed certificate and new CAs are
// used from the next handshake on.
func Serve(ctx context.Context, lis net.Listener, cert *tlsutil.Identity, trust *tlsutil.Trust, srv *Server) error {
	conf := cert.ServerConfig(trust, tls.VerifyClientCertIfGiven)
	g := grpc.NewServer(append(connlimit.ServerOptions(credentials.NewTLS(conf), connlimit.Default, nil),
		grpc.MaxRecvMsgSize(maxRequest))...)
	pb.RegisterJoinServer(g, srv)
	go func() {
		<-ctx.Done()
		g.GracefulStop()
	}()
	return g.Serve(lis)
}
