package agent

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/oneinfra/oneinfra/agent/controlplane"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// backupTimeout bounds one etcd backup; the coordinator gives up on it
// later than that.
const backupTimeout = 10 * time.Minute

// backupRunner takes the etcd backups asked of the replicas in the
// background, each once, and keeps their results for the replicas'
// reports until the coordinator has recorded them (the task leaves the
// assignment).
type backupRunner struct {
	mu      sync.Mutex
	results map[string]*pb.BackupResult // by component/ID; nil: running
}

// report starts the backups asked of as not started yet and returns the
// results of those finished.
func (r *backupRunner) report(ctx context.Context, d *controlPlaneDriver, as *pb.Assignment) []*pb.BackupResult {
	name := as.Component.Metadata.Name
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.results == nil {
		r.results = map[string]*pb.BackupResult{}
	}
	asked := map[string]bool{}
	var out []*pb.BackupResult
	for _, task := range as.Backups {
		key := name + "/" + task.Id
		asked[key] = true
		res, started := r.results[key]
		switch {
		case res != nil:
			out = append(out, res)
		case !started:
			r.results[key] = nil
			go r.take(ctx, d, as, task, key)
		}
	}
	for key, res := range r.results {
		if res != nil && !asked[key] && strings.HasPrefix(key, name+"/") {
			delete(r.results, key)
		}
	}
	return out
}

func (r *backupRunner) take(ctx context.Context, d *controlPlaneDriver, as *pb.Assignment, task *pb.BackupTask, key string) {
	ctx, cancel := context.WithTimeout(ctx, backupTimeout)
	defer cancel()
	start := time.Now()
	res := controlplane.TakeBackup(ctx, as, task)
	if res.Ok {
		d.a.logger.Info("etcd backup taken", "component", as.Component.Metadata.Name, "backup", task.Id, "revision", res.Revision, "bytes", res.Size, "took", time.Since(start).Round(time.Millisecond))
	} else {
		d.a.logger.Warn("etcd backup failed", "component", as.Component.Metadata.Name, "backup", task.Id, "err", res.Message)
	}
	r.mu.Lock()
	r.results[key] = res
	r.mu.Unlock()
}
