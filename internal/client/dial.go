package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	_ "google.golang.org/grpc/health" // client-side health checking, for PreferServing
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
)

var resolverSeq atomic.Uint64

// Dial connects to the servers m knows with a client certificate,
// verifying them against caPEM (see DialMembers). The connection moves to
// another server when the one in use fails; calls that should ride over
// that use grpc.WaitForReady.
func Dial(m *Members, caPEM []byte, cert *pb.KeyPair) (*grpc.ClientConn, error) {
	conf, err := tlsutil.ClientConfig(cert, caPEM, "")
	if err != nil {
		return nil, err
	}
	return DialMembers(m, conf, grpc.WithChainUnaryInterceptor(retryUnavailable))
}

// ServingService is the gRPC health service a coordinator server reports
// SERVING while it knows a leader: it can serve calls.
const ServingService = "oneinfra.v1.Coordinator"

// PreferServing makes a connection spread its calls over the servers that
// report ServingService SERVING, and only those: a server cut off from its
// peers (it answers, but cannot reach a leader) gets none, and one that
// comes back gets calls again. Calls fail while no server serves.
func PreferServing() grpc.DialOption {
	return grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}],"healthCheckConfig":{"serviceName":"` + ServingService + `"}}`)
}

// DialTLS connects to any of the given coordinator servers, and only
// those (what calls say of the members changes nothing: a server
// forwarding to the leader must reach the leader), with the given TLS
// configuration; each server's certificate is checked against its own
// host name, and must be a coordinator server's (not another role's the
// CA signs). Unlike Dial, calls fail at once when no server is reachable,
// unless opts say otherwise.
func DialTLS(servers []string, conf *tls.Config, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	return DialMembers(&Members{addrs: servers, fixed: true}, conf, opts...)
}

// DialMembers is DialTLS to the servers m knows: where m knows the server
// ID at an address, only that server's certificate is accepted there, and
// every response teaches m the members (the servers dialed follow).
func DialMembers(m *Members, conf *tls.Config, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	servers := m.Addrs()
	if len(servers) == 0 {
		return nil, fmt.Errorf("no coordinator server to dial")
	}
	for _, s := range servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return nil, fmt.Errorf("server address %q: %w", s, err)
		}
	}
	conf = conf.Clone()
	conf.VerifyConnection = chainVerify(conf.VerifyConnection, tlsutil.PeerRole(vocab.RoleServer, vocab.Roles))
	scheme := fmt.Sprintf("oneinfra%d", resolverSeq.Add(1))
	r := manual.NewBuilderWithScheme(scheme)
	r.InitialState(resolver.State{Addresses: resolverAddresses(servers)})
	m.mu.Lock()
	m.resolver = r
	m.mu.Unlock()
	return grpc.NewClient(scheme+":///coordinator", append([]grpc.DialOption{
		grpc.WithResolvers(r),
		grpc.WithTransportCredentials(&memberCreds{TransportCredentials: credentials.NewTLS(conf), m: m}),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"pick_first":{"shuffleAddressList":true}}]}`),
		grpc.WithConnectParams(grpcConnectParams),
		grpc.WithChainUnaryInterceptor(m.unary),
		grpc.WithChainStreamInterceptor(m.stream),
	}, opts...)...)
}

// resolverAddresses gives each address its host as the name its
// certificate must be valid for.
func resolverAddresses(servers []string) []resolver.Address {
	var addrs []resolver.Address
	for _, s := range servers {
		host, _, _ := net.SplitHostPort(s)
		addrs = append(addrs, resolver.Address{Addr: s, ServerName: host})
	}
	return addrs
}

// chainVerify runs both verifications, first a (when set).
func chainVerify(a, b func(tls.ConnectionState) error) func(tls.ConnectionState) error {
	if a == nil {
		return b
	}
	return func(cs tls.ConnectionState) error {
		if err := a(cs); err != nil {
			return err
		}
		return b(cs)
	}
}

// retryUnavailable waits for a server and retries a call that found none
// (a server died, or the coordinator is electing a leader) until the
// call's deadline.
func retryUnavailable(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	opts = append([]grpc.CallOption{grpc.WaitForReady(true)}, opts...)
	for {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if status.Code(err) != codes.Unavailable {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// grpcConnectParams retry a lost server quickly, so that failover to
// another one takes about a second.
var grpcConnectParams = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 3 * time.Second},
	MinConnectTimeout: 3 * time.Second,
}
