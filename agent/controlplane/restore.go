package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/oneinfra/oneinfra/agent/host"
	"github.com/oneinfra/oneinfra/internal/backup"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"
)

// restoreRevisionBump is how far a restore moves etcd's revision past the
// backup's, marked compacted: clients (the API servers' watchers) never
// see a revision they already saw mean something else.
const restoreRevisionBump = 1_000_000_000

// Restore makes this replica's etcd data the backup's, with its pods
// stopped: the backup is fetched and opened into a file, etcd's own
// restore makes a member of r.InitialCluster from it, and that data dir
// replaces the member's, whose old one is kept beside it
// (etcd.before-restore-GENERATION). A restore cut short leaves the old
// data in place and is done again.
func Restore(ctx context.Context, as *pb.Assignment, paths host.Paths, r *pb.RestoreTask) error {
	m, err := self(as)
	if err != nil {
		return err
	}
	target, err := taskTarget(r.Backup)
	if err != nil {
		return err
	}
	dir := paths.DataDir()
	db := filepath.Join(dir, fmt.Sprintf("restore-%d.db", r.Generation))
	restored := filepath.Join(dir, fmt.Sprintf("etcd.restore-%d", r.Generation))
	kept := filepath.Join(dir, fmt.Sprintf("etcd.before-restore-%d", r.Generation))
	defer os.Remove(db)
	if err := fetchBackup(ctx, target, r.Backup, db); err != nil {
		return err
	}
	if err := os.RemoveAll(restored); err != nil { // a restore cut short
		return err
	}
	err = snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath: db, Name: m.name, OutputDataDir: restored,
		PeerURLs: []string{m.peerURL()}, InitialCluster: r.InitialCluster, InitialClusterToken: r.Token,
		RevisionBump: restoreRevisionBump, MarkCompacted: true,
	})
	if err != nil {
		return fmt.Errorf("restoring backup %s into etcd data: %w", r.Backup.GetId(), err)
	}
	live := filepath.Join(dir, "etcd")
	if _, err := os.Stat(kept); errors.Is(err, os.ErrNotExist) {
		if err := os.Rename(live, kept); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("keeping the etcd data aside: %w", err)
		}
	} else if err := os.RemoveAll(live); err != nil { // kept already: live is a restore's
		return err
	}
	if err := os.Rename(restored, live); err != nil {
		return fmt.Errorf("putting the restored etcd data in place: %w", err)
	}
	return nil
}

// fetchBackup writes the opened backup to path.
func fetchBackup(ctx context.Context, target backup.Target, task *pb.BackupTask, path string) error {
	rc, err := target.Get(ctx, task.GetObject())
	if err != nil {
		return fmt.Errorf("fetching backup %s: %w", task.GetId(), err)
	}
	defer rc.Close()
	plain, err := backup.Open(rc, task.GetKey())
	if err != nil {
		return fmt.Errorf("opening backup %s: %w", task.GetId(), err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, plain); err != nil {
		f.Close()
		return fmt.Errorf("opening backup %s: %w", task.GetId(), err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
