package coordinator

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/oneinfra/oneinfra/coordinator/state"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Restoring a cluster from one of its backups: `cluster restore` records
// a new restore generation in the cluster's status (Restoring); every
// replica's assignment then asks for it (Assignment.restore: the backup,
// and the member set all replicas start as); each agent stops the
// replica's pods, keeps its etcd data aside, restores the backup with
// etcd's own restore and starts again, and reports the generation its
// data is of; once every replica runs on it, the restore is Done.

// Restore states.
const (
	RestoreRestoring = "Restoring"
	RestoreDone      = "Done"
)

// RestoreCluster replaces a cluster's etcd data with a backup's.
func (a *operatorAPI) RestoreCluster(ctx context.Context, req *pb.RestoreClusterRequest) (*pb.RestoreClusterResponse, error) {
	s := a.s
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	st := s.State().View()
	c, err := s.backedUpCluster(st, req.Cluster)
	if err != nil {
		return nil, err
	}
	if r := c.GetStatus().GetRestore(); r.GetState() == RestoreRestoring {
		return nil, status.Errorf(codes.FailedPrecondition, "cluster %s is being restored from backup %s already", req.Cluster, r.Backup)
	}
	if err := restorable(st, req.Cluster, req.Backup); err != nil {
		return nil, err
	}
	if _, err := s.raftApply(RestoreType, &pb.RestoreCommand{Cluster: req.Cluster, Backup: req.Backup, Time: timestamppb.Now()}); err != nil {
		return nil, err
	}
	return &pb.RestoreClusterResponse{Restore: s.State().Cluster(nil, req.Cluster).GetStatus().GetRestore()}, nil
}

// restorable says why a cluster's backup cannot be restored, or nil.
func restorable(st *state.Store, cluster, id string) error {
	for _, b := range st.Backups(nil, cluster) {
		if b.Id != id {
			continue
		}
		if b.State != BackupDone {
			return invalid("--backup: backup %s of cluster %s is %s, not taken", id, cluster, b.State)
		}
		return nil
	}
	return status.Errorf(codes.NotFound, "--backup: cluster %s has no backup %q (see `cluster backups %s`)", cluster, id, cluster)
}

// applyRestore starts a restore: the next generation, Restoring.
func (f *FSM) applyRestore(txn *state.Txn, m proto.Message) error {
	cmd := m.(*pb.RestoreCommand)
	c := txn.Cluster(cmd.Cluster)
	b := txn.Backup(cmd.Cluster, cmd.Backup)
	switch {
	case c == nil:
		return fmt.Errorf("cluster %q: %w", cmd.Cluster, state.ErrNotFound)
	case b == nil || b.State != BackupDone:
		return fmt.Errorf("backup %q of cluster %s: %w", cmd.Backup, cmd.Cluster, state.ErrNotFound)
	}
	c = proto.Clone(c).(*pb.Cluster)
	if c.Status == nil {
		c.Status = &pb.ClusterStatus{}
	}
	c.Status.Restore = &pb.ClusterRestore{Backup: b.Id, Generation: c.Status.GetRestore().GetGeneration() + 1, State: RestoreRestoring,
		Requested: cmd.Time, Revision: b.Revision, Taken: b.Finished, Reason: "requested"}
	txn.UpsertCluster(c)
	txn.InsertEvents([]*pb.Event{state.Event(c.Metadata.Name, "Normal", "Restoring",
		fmt.Sprintf("restoring etcd from backup %s (etcd revision %d, taken %s): every replica stops and starts again on its data",
			b.Id, b.Revision, b.GetFinished().AsTime().UTC().Format(time.RFC3339)), cmd.Time.AsTime())})
	return nil
}

// restoreTask is what a replica's assignment asks of a restore in
// progress, or nil: the backup, and the member set of the cluster's
// replicas, the same for all of them.
func (s *Server) restoreTask(st *state.Store, c *pb.Cluster, p *pb.ClusterPKI, peers []*pb.Component, hypervisors map[string]*pb.Hypervisor) *pb.RestoreTask {
	r := c.GetStatus().GetRestore()
	if r.GetState() != RestoreRestoring || s.cfg.BackupTarget == "" {
		return nil
	}
	var members []string
	for _, peer := range peers {
		if h := hypervisors[peer.Spec.Hypervisor]; peer.Spec.Role == resources.RoleControlPlane && peer.Metadata.DeletionTimestamp == nil && h != nil {
			members = append(members, fmt.Sprintf("%s=https://%s:%d", peer.Metadata.Name, h.Spec.Address, peer.Spec.Ports["etcd-peer"]))
		}
	}
	return &pb.RestoreTask{
		Generation:     r.Generation,
		Backup:         s.backupTask(c.Metadata.Name, r.Backup, p),
		InitialCluster: strings.Join(members, ","),
		Token:          fmt.Sprintf("%s-restore-%d", c.Metadata.Name, r.Generation),
	}
}

// finishRestore marks the restore in status Done, with an event, once
// every replica runs on its data.
func finishRestore(st *pb.ClusterStatus, cluster string, cp []*pb.Component, now time.Time) *pb.Event {
	r := st.GetRestore()
	if r.GetState() != RestoreRestoring || len(cp) == 0 {
		return nil
	}
	for _, comp := range cp {
		if comp.GetStatus().GetRestoreGeneration() < r.Generation || comp.GetStatus().GetState() != vocab.StateRunning {
			return nil
		}
	}
	r = proto.Clone(r).(*pb.ClusterRestore)
	r.State, r.Finished = RestoreDone, timestamppb.New(now)
	st.Restore = r
	return state.Event(cluster, "Normal", "Restored",
		fmt.Sprintf("etcd restored from backup %s (etcd revision %d) in %s", r.Backup, r.Revision, now.Sub(r.Requested.AsTime()).Round(time.Second)), now)
}
