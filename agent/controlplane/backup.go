package controlplane

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"

	"github.com/oneinfra/oneinfra/internal/backup"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// TakeBackup takes the backup task asks for: a snapshot of this replica's
// etcd member through its client API, sealed with the task's key as it
// streams into the target, read back and checked against what was sent,
// then the pruned backups deleted. It never holds the snapshot in memory.
func TakeBackup(ctx context.Context, as *pb.Assignment, task *pb.BackupTask) *pb.BackupResult {
	res := &pb.BackupResult{Id: task.Id}
	if err := takeBackup(ctx, as, task, res); err != nil {
		res.Message = err.Error()
		return res
	}
	res.Ok = true
	return res
}

func takeBackup(ctx context.Context, as *pb.Assignment, task *pb.BackupTask, res *pb.BackupResult) error {
	target, err := taskTarget(task)
	if err != nil {
		return err
	}
	m, err := self(as)
	if err != nil {
		return err
	}
	endpoint := m.clientURL()
	cli, err := etcdClient(as, []string{endpoint})
	if err != nil {
		return err
	}
	defer cli.Close()
	st, err := cli.Status(ctx, endpoint)
	if err != nil {
		return fmt.Errorf("etcd member %s: %w", m.name, err)
	}
	res.Revision = st.Header.Revision
	snap, err := cli.Snapshot(ctx)
	if err != nil {
		return fmt.Errorf("etcd snapshot of %s: %w", m.name, err)
	}
	defer snap.Close()

	// The snapshot streams through the sealer into the target; its hash
	// is taken on the way.
	sent := sha256.New()
	pr, pw := io.Pipe()
	go func() {
		w, err := backup.Seal(pw, task.Key)
		if err == nil {
			if _, err = io.Copy(w, io.TeeReader(snap, sent)); err == nil {
				err = w.Close()
			}
		}
		pw.CloseWithError(err)
	}()
	if res.Size, err = target.Put(ctx, task.Object, pr); err != nil {
		pr.CloseWithError(err)
		return fmt.Errorf("storing backup %s: %w", task.Object, err)
	}

	stored, err := target.Get(ctx, task.Object)
	if err != nil {
		return fmt.Errorf("reading backup %s back: %w", task.Object, err)
	}
	defer stored.Close()
	plain, err := backup.Open(stored, task.Key)
	if err != nil {
		return fmt.Errorf("checking backup %s: %w", task.Object, err)
	}
	read := sha256.New()
	if _, err := io.Copy(read, plain); err != nil {
		return fmt.Errorf("checking backup %s: %w", task.Object, err)
	}
	if !bytes.Equal(read.Sum(nil), sent.Sum(nil)) {
		return fmt.Errorf("checking backup %s: what was stored is not what etcd sent", task.Object)
	}
	for _, old := range task.Prune {
		if err := target.Delete(ctx, old); err != nil {
			return fmt.Errorf("deleting backup %s (retention): %w", old, err)
		}
	}
	return nil
}

// taskTarget is the target a task names, with its credentials.
func taskTarget(task *pb.BackupTask) (backup.Target, error) {
	return backup.ParseTarget(task.GetTarget(), backup.Credentials{AccessKeyID: task.GetAccessKeyId(), SecretAccessKey: task.GetSecretAccessKey()})
}
