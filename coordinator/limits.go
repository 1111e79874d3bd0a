package coordinator

import (
	"context"
	"crypto/tls"
	"strings"

	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Bounds of the requests the API reads.
const (
	// maxRequest bounds every request (gRPC's default, made explicit): an
	// operator's Apply of a big manifest fits, and snapshots are streamed
	// in chunks of client.SnapshotChunkSize.
	maxRequest = 4 << 20
	// maxAgentRequest bounds a request to the Agent service (all its
	// methods are unary): whatever an agent reports is written to Raft.
	maxAgentRequest = 256 << 10
)

// trustedConn tells whether a connection's verified certificate has a
// role that some service requires (roleFor) and is neither revoked nor
// replaced: such connections, agents however many from one address, are
// not counted by connlimit; a worker's certificate, say, has no such role.
func (s *Server) trustedConn(cs tls.ConnectionState) bool {
	p := &peer.Peer{AuthInfo: credentials.TLSInfo{State: cs}}
	id := peerIdentity(peer.NewContext(context.Background(), p))
	for _, want := range roleFor {
		if want != "" && want == id.Role {
			return admit(s.State(), id) == nil
		}
	}
	return false
}

var agentMethods = "/" + pb.Agent_ServiceDesc.ServiceName + "/"

// limitAgentRequests refuses a request to the Agent service larger than
// maxAgentRequest before anything acts on it or forwards it.
func limitAgentRequests(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if strings.HasPrefix(info.FullMethod, agentMethods) {
		if n := proto.Size(req.(proto.Message)); n > maxAgentRequest {
			return nil, status.Errorf(codes.ResourceExhausted, "%s: request of %d bytes is larger than the limit of %d bytes (256 KiB) for agents", info.FullMethod, n, maxAgentRequest)
		}
	}
	return handler(ctx, req)
}
