package controlplane

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/backup"
	"github.com/oneinfra/oneinfra/internal/testutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestRestore: three real etcd members; 10,000 objects and a key written,
// backed up (the time and size are logged), another
// written; every member stopped and restored from the backup as one new
// member set: they start again as a cluster of three holding the first
// key and not the second, at a revision bumped past every one seen; each
// member's old data is kept beside.
func TestRestore(t *testing.T) {
	bin := binDir(t)
	_, as := testCluster(t, 3)
	ctx := context.Background()
	paths := memberPaths(t, as)
	var procs []*os.Process
	for i := range 3 {
		procs = append(procs, startMember(t, bin, as[i], paths(i)).Process)
	}
	cli := etcdAll(t, as[0])
	if _, err := cli.Put(ctx, "before", "kept"); err != nil {
		t.Fatal(err)
	}
	// 10,000 objects of 1 KiB, as many Kubernetes objects would be.
	value := strings.Repeat("x", 1024)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < 10000; i += 16 {
				if _, err := cli.Put(ctx, fmt.Sprintf("/registry/objects/%05d", i), value); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	key := make([]byte, backup.KeySize)
	rand.Read(key)
	task := &pb.BackupTask{Id: "b1", Target: "file://" + t.TempDir(), Object: "demo/b1", Key: key}
	began := time.Now()
	res := TakeBackup(ctx, as[1], task)
	if !res.Ok {
		t.Fatalf("backup: %+v", res)
	}
	t.Logf("backup of 10,001 objects: %s, %d bytes sealed", time.Since(began).Round(time.Millisecond), res.Size)
	if _, err := cli.Put(ctx, "after", "lost"); err != nil {
		t.Fatal(err)
	}
	seen, err := cli.Get(ctx, "after")
	if err != nil {
		t.Fatal(err)
	}
	cli.Close()

	var members []string
	for i := range 3 {
		m, _ := self(as[i])
		members = append(members, m.name+"="+m.peerURL())
	}
	r := &pb.RestoreTask{Generation: 1, Backup: task, InitialCluster: strings.Join(members, ","), Token: "demo-restore-1"}
	for i := range 3 {
		procs[i].Kill()
		procs[i].Wait()
		began := time.Now()
		if err := Restore(ctx, as[i], paths(i), r); err != nil {
			t.Fatalf("member %d: %v", i, err)
		}
		t.Logf("member %d restored in %s", i, time.Since(began).Round(time.Millisecond))
		if _, err := os.Stat(filepath.Join(paths(i).DataDir(), "etcd.before-restore-1", "member")); err != nil {
			t.Errorf("member %d: its old data is not kept: %v", i, err)
		}
	}
	for i := range 3 {
		plan, err := Render(as[i], paths(i), EtcdBootstrap{State: "existing", InitialCluster: r.InitialCluster})
		if err != nil {
			t.Fatal(err)
		}
		start(t, bin, plan.Pods[0].Containers[0])
	}
	cli = etcdAll(t, as[0])
	defer cli.Close()
	var got *clientv3.GetResponse
	testutil.Eventually(t, 60*time.Second, "the restored cluster", func() (err error) {
		got, err = cli.Get(ctx, "before")
		return err
	})
	if len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "kept" {
		t.Errorf("restored %q: %v", "before", got.Kvs)
	}
	if n, err := cli.Get(ctx, "/registry/objects/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || n.Count != 10000 {
		t.Errorf("restored objects: %v %v", n, err)
	}
	if got.Header.Revision <= seen.Header.Revision {
		t.Errorf("revision %d after the restore, not past %d seen before it", got.Header.Revision, seen.Header.Revision)
	}
	if after, err := cli.Get(ctx, "after"); err != nil || len(after.Kvs) != 0 {
		t.Errorf("a key written after the backup: %v %v", after, err)
	}
	list, err := cli.MemberList(ctx)
	if err != nil || len(list.Members) != 3 {
		t.Fatalf("members after the restore: %v %v", list, err)
	}
	for i := range 3 {
		testutil.Eventually(t, 30*time.Second, "member answers", func() error {
			m, _ := self(as[i])
			_, err := cli.Status(ctx, m.clientURL())
			return err
		})
	}
}

// etcdAll is a client of every member of as's cluster.
func etcdAll(t *testing.T, as *pb.Assignment) *clientv3.Client {
	t.Helper()
	cli, err := etcdClient(as, clientEndpoints(as, "", false))
	if err != nil {
		t.Fatal(err)
	}
	return cli
}
