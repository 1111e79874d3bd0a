package controlplane

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/agent/host"
	"github.com/oneinfra/oneinfra/internal/backup"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	bolt "go.etcd.io/bbolt"
)

// TestTakeBackup: a real etcd member's backup is stored sealed (no value
// in plain text), opens with the cluster's key into etcd's own database
// holding every key written, and the next one prunes it.
func TestTakeBackup(t *testing.T) {
	bin := binDir(t)
	_, as := testCluster(t, 1)
	ctx := context.Background()
	paths := host.Paths{Root: t.TempDir(), Cluster: "demo", Component: as[0].Component.Metadata.Name}
	startMember(t, bin, as[0], paths)
	cli := etcdAll(t, as[0])
	defer cli.Close()
	for i := range 1000 {
		if _, err := cli.Put(ctx, fmt.Sprintf("k-%d", i), "plain-text-value"); err != nil {
			t.Fatal(err)
		}
	}

	dir := t.TempDir()
	key := make([]byte, backup.KeySize)
	rand.Read(key)
	task := &pb.BackupTask{Id: "b1", Target: "file://" + dir, Object: "demo/b1.etcd.sealed", Key: key}
	start := time.Now()
	res := TakeBackup(ctx, as[0], task)
	if !res.Ok || res.Revision < 1000 || res.Size == 0 {
		t.Fatalf("backup: %+v", res)
	}
	t.Logf("backup of 1000 keys: %d bytes sealed, revision %d, in %s", res.Size, res.Revision, time.Since(start).Round(time.Millisecond))
	stored := filepath.Join(dir, task.Object)
	sealed, err := os.ReadFile(stored)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("plain-text-value")) {
		t.Fatal("the stored backup holds a value in plain text")
	}

	// It opens into etcd's database, every key in it.
	f, err := os.Open(stored)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	plain, err := backup.Open(f, key)
	if err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(t.TempDir(), "db")
	out, err := os.Create(db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, plain); err != nil {
		t.Fatal(err)
	}
	out.Close()
	bdb, err := bolt.Open(db, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatalf("the backup is not an etcd database: %v", err)
	}
	n := 0
	err = bdb.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("key"))
		if b == nil {
			return fmt.Errorf("no key bucket")
		}
		n = b.Stats().KeyN
		return nil
	})
	bdb.Close()
	if err != nil || n < 1000 {
		t.Fatalf("the backup's database holds %d revisions: %v", n, err)
	}

	// The next backup prunes it.
	next := &pb.BackupTask{Id: "b2", Target: task.Target, Object: "demo/b2.etcd.sealed", Key: key, Prune: []string{task.Object}}
	if res := TakeBackup(ctx, as[0], next); !res.Ok {
		t.Fatalf("second backup: %+v", res)
	}
	if _, err := os.Stat(stored); !os.IsNotExist(err) {
		t.Errorf("the pruned backup is still stored (%v)", err)
	}
	// A target that is not there fails the backup, saying why.
	bad := &pb.BackupTask{Id: "b3", Target: "file:///proc/none", Object: "demo/b3", Key: key}
	if res := TakeBackup(ctx, as[0], bad); res.Ok || res.Message == "" {
		t.Errorf("a backup to a missing target: %+v", res)
	}
}
