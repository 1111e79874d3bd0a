package coordinator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"time"

	memdb "github.com/hashicorp/go-memdb"
	"github.com/oneinfra/oneinfra/coordinator/pki"
	"github.com/oneinfra/oneinfra/coordinator/state"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Etcd backups: on each cluster's spec.backup schedule, or on `cluster
// backup`, the leader records a Pending backup asked of one Running
// replica; that replica's agent (Assignment.backups) takes an etcd
// snapshot of its member, seals it with the cluster's backup key, stores
// it in the --backup-target, reads it back to check it, deletes the
// backups retention drops, and reports; the FSM records it Done or Failed
// (with an event). A backup not reported within backupTimeout fails.

// Backup states.
const (
	BackupPending = "Pending"
	BackupDone    = "Done"
	BackupFailed  = "Failed"
)

const (
	// backupTimeout is how long an agent has to take a backup.
	backupTimeout = 15 * time.Minute
	// backupRetry is how soon a failed scheduled backup is tried again
	// (sooner if the schedule is shorter).
	backupRetry = 5 * time.Minute
)

// backupDue decides, from a cluster's backup records, whether a scheduled
// backup is due now; a pending one past backupTimeout is returned to be
// failed.
func backupDue(spec *pb.BackupSpec, records []*pb.Backup, now time.Time) (due bool, timedOut *pb.Backup) {
	if !spec.GetEnabled() {
		return false, nil
	}
	schedule, err := time.ParseDuration(spec.Schedule)
	if err != nil {
		return false, nil // validated on apply
	}
	var newest *pb.Backup
	for _, b := range records {
		if b.State == BackupPending {
			if now.Sub(b.Requested.AsTime()) > backupTimeout {
				return false, b
			}
			return false, nil
		}
		if newest == nil || b.Requested.AsTime().After(newest.Requested.AsTime()) {
			newest = b
		}
	}
	switch {
	case newest == nil:
		return true, nil
	case newest.State == BackupFailed:
		return !now.Before(newest.Requested.AsTime().Add(min(schedule, backupRetry))), nil
	}
	return !now.Before(newest.Requested.AsTime().Add(schedule)), nil
}

// backupPrune is what retention drops once a new backup is taken: of the
// finished records, all but the newest retain-1 taken ones and the newest
// failed one.
func backupPrune(records []*pb.Backup, retain uint32) []string {
	finished := slices.DeleteFunc(slices.Clone(records), func(b *pb.Backup) bool { return b.State == BackupPending })
	newestFirst(finished)
	var prune []string
	done, failed := 0, 0
	for _, b := range finished {
		switch {
		case b.State == BackupDone && done < int(retain)-1:
			done++
		case b.State == BackupFailed && failed < 1:
			failed++
		default:
			prune = append(prune, b.Id)
		}
	}
	return prune
}

// newestFirst sorts backups by the time they were asked for, newest
// first, and returns them.
func newestFirst(list []*pb.Backup) []*pb.Backup {
	sort.SliceStable(list, func(i, j int) bool { return list[i].Requested.AsTime().After(list[j].Requested.AsTime()) })
	return list
}

// newestTaken is the newest backup taken of list, or nil.
func newestTaken(list []*pb.Backup) *pb.Backup {
	for _, b := range newestFirst(list) {
		if b.State == BackupDone {
			return b
		}
	}
	return nil
}

// setBackupCondition sets the BackedUp condition from the newest
// finished backup, when backups are on and one has finished.
func setBackupCondition(st *pb.ClusterStatus, spec *pb.BackupSpec, list []*pb.Backup, now time.Time) {
	if !spec.GetEnabled() {
		return
	}
	for _, b := range newestFirst(list) {
		cond := &pb.Condition{Type: CondBackedUp, Status: "True", Reason: "BackedUp", LastTransitionTime: timestamppb.New(now),
			Message: fmt.Sprintf("backup %s taken at %s, etcd revision %d", b.Id, b.GetFinished().AsTime().UTC().Format(time.RFC3339), b.Revision)}
		switch b.State {
		case BackupPending:
			continue
		case BackupFailed:
			cond.Status, cond.Reason, cond.Message = "False", "BackupFailed", "backup "+b.Id+" failed: "+b.Message
		}
		st.Conditions = resources.SetCondition(st.Conditions, cond)
		return
	}
}

// backupReplica is the Running replica the backup is asked of, or nil.
func backupReplica(st *state.Store, cluster string) *pb.Component {
	alive := map[string]bool{}
	for _, h := range st.Hypervisors(nil) {
		alive[h.Metadata.Name] = h.GetStatus().GetHealth() == resources.HealthAlive
	}
	var out *pb.Component
	for _, c := range st.ComponentsOfCluster(nil, cluster) {
		if c.Spec.Role == resources.RoleControlPlane && c.Metadata.DeletionTimestamp == nil &&
			c.GetStatus().GetState() == vocab.StateRunning && alive[c.Spec.Hypervisor] && (out == nil || c.Metadata.Name < out.Metadata.Name) {
			out = c
		}
	}
	return out
}

// newBackup is the command asking for a backup of c now, or an error
// saying why none can be taken.
func (s *Server) newBackup(st *state.Store, c *pb.Cluster, reason string, now time.Time) (*pb.BackupCommand, error) {
	name := c.Metadata.Name
	replica := backupReplica(st, name)
	if replica == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "cluster %s has no Running control-plane replica to take a backup", name)
	}
	suffix := make([]byte, 2)
	if _, err := rand.Read(suffix); err != nil {
		return nil, err
	}
	id := now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(suffix)
	b := &pb.Backup{Cluster: name, Id: id, Component: replica.Metadata.Name, State: BackupPending, Reason: reason,
		Requested: timestamppb.New(now), Prune: backupPrune(st.Backups(nil, name), c.Spec.GetBackup().GetRetain())}
	cmd := &pb.BackupCommand{Backup: b}
	if len(st.ClusterPKI(nil, name).GetBackupKey()) == 0 {
		key, err := pki.NewBackupKey()
		if err != nil {
			return nil, err
		}
		cmd.BackupKey = key
	}
	return cmd, nil
}

// scheduleBackups asks for the backups due and fails the ones timed out.
func (s *Server) scheduleBackups(now time.Time) error {
	if s.cfg.BackupTarget == "" {
		return nil
	}
	st := s.State().View()
	for _, c := range st.Clusters(nil) {
		if c.Metadata.DeletionTimestamp != nil || c.GetStatus().GetPhase() == resources.PhasePending {
			continue
		}
		due, timedOut := backupDue(c.Spec.GetBackup(), st.Backups(nil, c.Metadata.Name), now)
		var cmd *pb.BackupCommand
		switch {
		case timedOut != nil:
			b := proto.Clone(timedOut).(*pb.Backup)
			b.State, b.Finished = BackupFailed, timestamppb.New(now)
			b.Message = fmt.Sprintf("not reported by %s's agent within %s", b.Component, backupTimeout)
			cmd = &pb.BackupCommand{Backup: b, Event: state.Event(c.Metadata.Name, "Warning", "BackupFailed", "backup "+b.Id+": "+b.Message, now)}
		case due:
			var err error
			if cmd, err = s.newBackup(st, c, "scheduled", now); err != nil {
				continue // no replica to ask now: asked again next round
			}
		default:
			continue
		}
		if _, err := s.raftApply(BackupType, cmd); err != nil {
			return fmt.Errorf("cluster %s: %w", c.Metadata.Name, err)
		}
	}
	return nil
}

// backupTasks are the pending backups asked of a control-plane replica.
func (s *Server) backupTasks(st *state.Store, ws memdb.WatchSet, comp *pb.Component, p *pb.ClusterPKI) []*pb.BackupTask {
	var out []*pb.BackupTask
	for _, b := range st.Backups(ws, comp.Spec.Cluster) {
		if b.State != BackupPending || b.Component != comp.Metadata.Name || s.cfg.BackupTarget == "" {
			continue
		}
		t := s.backupTask(b.Cluster, b.Id, p)
		for _, id := range b.Prune {
			t.Prune = append(t.Prune, backupObject(b.Cluster, id))
		}
		out = append(out, t)
	}
	return out
}

// backupTask names backup id of cluster in the target, with the key and
// the target's credentials.
func (s *Server) backupTask(cluster, id string, p *pb.ClusterPKI) *pb.BackupTask {
	return &pb.BackupTask{Id: id, Target: s.cfg.BackupTarget, Object: backupObject(cluster, id), Key: p.GetBackupKey(),
		AccessKeyId: s.backupCreds.AccessKeyID, SecretAccessKey: s.backupCreds.SecretAccessKey}
}

// backupObject is the name of a backup in the target.
func backupObject(cluster, id string) string { return cluster + "/" + id + ".etcd.sealed" }

// backedUpCluster is the cluster a backup or restore call names, as st
// has it, or why there is none to back up or restore: no backup target,
// no such cluster, or one being deleted.
func (s *Server) backedUpCluster(st *state.Store, name string) (*pb.Cluster, error) {
	if s.cfg.BackupTarget == "" {
		return nil, status.Error(codes.FailedPrecondition, "the coordinator has no backup target: start its servers with --backup-target")
	}
	c := st.Cluster(nil, name)
	if c == nil || c.Metadata.DeletionTimestamp != nil {
		return nil, status.Errorf(codes.NotFound, "cluster %q not found", name)
	}
	return c, nil
}

// BackupCluster asks for a backup of a cluster now (or returns the one
// pending).
func (a *operatorAPI) BackupCluster(ctx context.Context, req *pb.BackupClusterRequest) (*pb.BackupClusterResponse, error) {
	s := a.s
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	st := s.State().View()
	c, err := s.backedUpCluster(st, req.Cluster)
	if err != nil {
		return nil, err
	}
	for _, b := range st.Backups(nil, req.Cluster) {
		if b.State == BackupPending {
			return &pb.BackupClusterResponse{Backup: b}, nil
		}
	}
	cmd, err := s.newBackup(st, c, "requested", time.Now())
	if err != nil {
		return nil, err
	}
	if _, err := s.raftApply(BackupType, cmd); err != nil {
		return nil, err
	}
	return &pb.BackupClusterResponse{Backup: cmd.Backup}, nil
}

// ListBackups lists a cluster's backups, newest first.
func (a *operatorAPI) ListBackups(ctx context.Context, req *pb.ListBackupsRequest) (*pb.ListBackupsResponse, error) {
	st := a.s.State().View()
	if st.Cluster(nil, req.Cluster) == nil {
		return nil, status.Errorf(codes.NotFound, "cluster %q not found", req.Cluster)
	}
	return &pb.ListBackupsResponse{Backups: newestFirst(st.Backups(nil, req.Cluster))}, nil
}

// applyBackup records a backup asked for or given up on, giving the
// cluster its backup key first if it has none.
func (f *FSM) applyBackup(txn *state.Txn, m proto.Message) error {
	cmd := m.(*pb.BackupCommand)
	b := cmd.Backup
	if txn.Cluster(b.Cluster) == nil {
		return fmt.Errorf("cluster %q: %w", b.Cluster, state.ErrNotFound)
	}
	if len(cmd.BackupKey) > 0 {
		txn.SetBackupKey(b.Cluster, cmd.BackupKey)
	}
	txn.UpsertBackup(b)
	if cmd.Event != nil {
		txn.InsertEvents([]*pb.Event{cmd.Event})
	}
	return nil
}

// recordBackups applies what an agent reports of the backups asked of a
// component: a pending one becomes Done (and the ones it prunes go) or
// Failed, with an event.
func recordBackups(txn *state.Txn, comp *pb.Component, results []*pb.BackupResult, now *timestamppb.Timestamp) {
	for _, r := range results {
		b := txn.Backup(comp.Spec.Cluster, r.Id)
		if b == nil || b.State != BackupPending || b.Component != comp.Metadata.Name {
			continue
		}
		b = proto.Clone(b).(*pb.Backup)
		b.Finished = now
		if r.Ok {
			b.State, b.Revision, b.Size = BackupDone, r.Revision, r.Size
			for _, id := range b.Prune {
				txn.DeleteBackup(b.Cluster, id)
			}
			txn.InsertEvents([]*pb.Event{state.Event(b.Cluster, "Normal", "BackedUp",
				fmt.Sprintf("backup %s taken by %s: etcd revision %d, %d bytes", b.Id, b.Component, b.Revision, b.Size), now.AsTime())})
		} else {
			b.State, b.Message = BackupFailed, r.Message
			txn.InsertEvents([]*pb.Event{state.Event(b.Cluster, "Warning", "BackupFailed", "backup "+b.Id+": "+r.Message, now.AsTime())})
		}
		txn.UpsertBackup(b)
	}
}
