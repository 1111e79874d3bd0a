package coordinator

import (
	"context"
	"fmt"
	"time"

	"github.com/oneinfra/oneinfra/coordinator/pki"
	"github.com/oneinfra/oneinfra/coordinator/state"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Cluster CA rotation (`cluster rotate-ca`, see coordinator/pki's
// CARotation stages). A stage raises the cluster's trust generation; the
// components' certificate sets issued at an older one are issued again
// as renewals are (rolling.go: control-plane replicas one at a time
// through the ingress, the ingress in place), with the CAs of the new
// generation to trust; workers take the new bundles and, from stage 2,
// kubelet certificates of the new signing CA through their join endpoint
// (agent/worker). The leader moves to the next stage once every holder
// says it runs with the current generation (rotationWaiting).

// RotateClusterCA starts a CA rotation of a cluster.
func (a *operatorAPI) RotateClusterCA(ctx context.Context, req *pb.RotateClusterCARequest) (*pb.RotateClusterCAResponse, error) {
	s := a.s
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	st := s.State().View()
	c := st.Cluster(nil, req.Cluster)
	if c == nil || c.Metadata.DeletionTimestamp != nil {
		return nil, status.Errorf(codes.NotFound, "cluster %q not found", req.Cluster)
	}
	if c.GetStatus().GetRestore().GetState() == RestoreRestoring {
		return nil, status.Errorf(codes.FailedPrecondition, "cluster %s is being restored from a backup: rotate its CAs once it is Ready", req.Cluster)
	}
	p := st.ClusterPKI(nil, req.Cluster)
	if r := p.GetRotation(); r != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "cluster %s: a CA rotation is under way already (stage %d: %s)", req.Cluster, r.Stage, pki.StageName(r.Stage))
	}
	now := time.Now()
	next, err := pki.StartRotation(p, now)
	if err != nil {
		return nil, err
	}
	ev := state.Event(req.Cluster, "Normal", "RotatingCA", fmt.Sprintf("CA rotation begun: stage 1, %s", pki.StageName(pki.StageTrusting)), now)
	if _, err := s.raftApply(SetPKIType, &pb.SetPKICommand{Pki: next, ExpectTrustGeneration: p.GetTrustGeneration(), Events: []*pb.Event{ev}}); err != nil {
		return nil, err
	}
	after := s.State()
	return &pb.RotateClusterCAResponse{Rotation: rotationStatus(after, req.Cluster, after.ClusterPKI(nil, req.Cluster))}, nil
}

// rotationStatus is what describe shows of a cluster's CA rotation, or
// nil when none is under way.
func rotationStatus(st *state.Store, cluster string, p *pb.ClusterPKI) *pb.CARotationStatus {
	r := p.GetRotation()
	if r == nil {
		return nil
	}
	return &pb.CARotationStatus{Stage: r.Stage, Started: r.Started, StageSince: r.StageSince, Waiting: rotationWaiting(st, cluster, p)}
}

// rotationWaiting lists what of a cluster does not run with its trust
// generation yet: components (and why), and nodes.
func rotationWaiting(st *state.Store, cluster string, p *pb.ClusterPKI) []string {
	gen := p.GetTrustGeneration()
	var out []string
	for _, comp := range st.ComponentsOfCluster(nil, cluster) {
		if comp.Spec.Orphaned {
			continue
		}
		name := comp.Metadata.Name
		certs := st.ComponentCerts(nil, name)
		s := comp.GetStatus()
		switch {
		case comp.Metadata.DeletionTimestamp != nil:
			out = append(out, name+" (being removed)")
		case certs.GetTrustGeneration() < gen || renewing(certs):
			out = append(out, name+" (certificates to issue again)")
		case s.GetState() != vocab.StateRunning || s.GetTrustGeneration() < gen ||
			(comp.Spec.Role == resources.RoleControlPlane && s.GetCertGeneration() != certs.GetGeneration()):
			out = append(out, name+" (restarting with them)")
		}
	}
	for _, peer := range st.VPNPeers(nil, cluster) {
		if peer.TrustGeneration < gen {
			out = append(out, "node "+peer.Name)
		}
	}
	return out
}

// advanceRotation moves a cluster's CA rotation to its next stage (or
// ends it) once nothing waits for the current one.
func (s *Server) advanceRotation(cluster string, now time.Time) error {
	st := s.State()
	p := st.ClusterPKI(nil, cluster)
	r := p.GetRotation()
	if r == nil || len(rotationWaiting(st, cluster, p)) > 0 {
		return nil
	}
	next := pki.NextStage(p, now)
	msg := fmt.Sprintf("CA rotation done: the cluster trusts only its new CAs (after %s); kubeconfigs issued before it must be fetched again", now.Sub(r.Started.AsTime()).Round(time.Second))
	reason := "RotatedCA"
	if nr := next.GetRotation(); nr != nil {
		msg, reason = fmt.Sprintf("CA rotation: stage %d, %s", nr.Stage, pki.StageName(nr.Stage)), "RotatingCA"
	}
	_, err := s.raftApply(SetPKIType, &pb.SetPKICommand{Pki: next, ExpectTrustGeneration: p.TrustGeneration,
		Events: []*pb.Event{state.Event(cluster, "Normal", reason, msg, now)}})
	return err
}

// applySetPKI writes a cluster's PKI if its trust generation is still the
// one the command was decided on.
func (f *FSM) applySetPKI(txn *state.Txn, m proto.Message) error {
	cmd := m.(*pb.SetPKICommand)
	name := cmd.GetPki().GetCluster()
	old := txn.ClusterPKI(name)
	switch {
	case txn.Cluster(name) == nil || old == nil:
		return fmt.Errorf("cluster %q: %w", name, state.ErrNotFound)
	case old.GetTrustGeneration() != cmd.ExpectTrustGeneration:
		return fmt.Errorf("cluster %s: its PKI moved on (trust generation %d, not %d): %w", name, old.GetTrustGeneration(), cmd.ExpectTrustGeneration, state.ErrConflict)
	}
	// Only what a rotation changes: the rest (a backup key given meanwhile)
	// stays.
	next := proto.Clone(old).(*pb.ClusterPKI)
	next.Cas, next.Rotation, next.TrustGeneration = cmd.Pki.Cas, cmd.Pki.Rotation, cmd.Pki.TrustGeneration
	txn.ReplacePKI(next)
	txn.InsertEvents(cmd.Events)
	return nil
}

// applyWorkerTrust records the trust generations (the cluster's and the
// coordinator's) a node says it is at.
func (f *FSM) applyWorkerTrust(txn *state.Txn, m proto.Message) error {
	cmd := m.(*pb.WorkerTrustCommand)
	peer := txn.VPNPeer(cmd.Cluster, cmd.Name)
	if peer == nil {
		return fmt.Errorf("node %q of cluster %q: %w", cmd.Name, cmd.Cluster, state.ErrNotFound)
	}
	if peer.TrustGeneration < cmd.TrustGeneration || peer.CoordinatorTrustGeneration < cmd.CoordinatorTrustGeneration {
		peer = proto.Clone(peer).(*pb.VPNPeer)
		peer.TrustGeneration = max(peer.TrustGeneration, cmd.TrustGeneration)
		peer.CoordinatorTrustGeneration = max(peer.CoordinatorTrustGeneration, cmd.CoordinatorTrustGeneration)
		txn.UpsertVPNPeer(peer)
	}
	return nil
}
