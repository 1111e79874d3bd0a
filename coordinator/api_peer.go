package coordinator

import (
	"context"
	"fmt"
	"strconv"

	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// peerAPI is what coordinator servers call on each other.
type peerAPI struct {
	pb.UnimplementedPeerServer
	s *Server
}

func (s *Server) peerStatus() *pb.PeerStatusResponse {
	commit, _ := strconv.ParseUint(s.raft.Stats()["commit_index"], 10, 64)
	return &pb.PeerStatusResponse{
		Id: s.cfg.ID, State: s.raft.State().String(),
		LastIndex: s.raft.LastIndex(), AppliedIndex: s.raft.AppliedIndex(), CommitIndex: commit,
		TrustGeneration: s.trustHeld.Load(),
	}
}

// Status reports this server's Raft state and indexes.
func (a *peerAPI) Status(ctx context.Context, req *pb.PeerStatusRequest) (*pb.PeerStatusResponse, error) {
	return a.s.peerStatus(), nil
}

// Join makes the calling server a voter. It runs on the leader.
func (a *peerAPI) Join(ctx context.Context, req *pb.PeerJoinRequest) (*pb.PeerJoinResponse, error) {
	if caller := callerOf(ctx); caller.Name != req.Id {
		return nil, fmt.Errorf("server %q may not join as %q: %w", caller.Name, req.Id, errDenied)
	}
	if err := a.s.addVoter(&pb.Server{Id: req.Id, RaftAddress: req.RaftAddress, ApiAddress: req.ApiAddress}); err != nil {
		return nil, err
	}
	a.s.logger.Info("server joined", "id", req.Id, "raft", req.RaftAddress)
	return &pb.PeerJoinResponse{}, nil
}

// Restore installs a snapshot another server received; it runs on the
// leader.
func (a *peerAPI) Restore(stream pb.Peer_RestoreServer) error {
	data, opts, err := receiveChunks(stream)
	if err != nil {
		return err
	}
	resp, err := a.s.restore(data, opts.Force, opts.DryRun)
	if err != nil {
		return err
	}
	return stream.SendAndClose(resp)
}
