package e2e

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/testutil"
	"github.com/oneinfra/oneinfra/internal/testutil/s3server"
	"github.com/oneinfra/oneinfra/test/lab"
)

// TestSnapshotRestoreKeepsTenantData: no file of the coordinator's data
// dir, nor a `snapshot save` file, holds a private key in plain text. A
// snapshot from before a cluster existed, restored, says what it changes,
// leaves the older cluster Ready and the newer one's components orphaned:
// stopped, with their etcd data on their hypervisor, until each is
// deleted, which removes that data.
func TestSnapshotRestoreKeepsTenantData(t *testing.T) {
	backups := t.TempDir() // every lab host sees the machine's files
	s := startSystem(t, []lab.HostSpec{{Name: "hv-1"}, {Name: "pub-1", Public: true}}, 1, "--backup-target", "file://"+backups)
	if out, err := cli(s.config, "", "cluster", "create", "older", "--wait", "--timeout", "5m"); err != nil {
		t.Fatalf("cluster create: %v\n%s", err, out)
	}
	running := len(containers(t, s))
	checkBackups(t, s, "older", backups)
	snap := filepath.Join(s.dir, "coord.snap")
	if out, err := cli(s.config, "", "snapshot", "save", snap); err != nil {
		t.Fatalf("snapshot save: %v\n%s", err, out)
	}
	if out, err := cli(s.config, "", "cluster", "create", "newer", "--wait", "--timeout", "5m"); err != nil {
		t.Fatalf("cluster create: %v\n%s", err, out)
	}
	noPlainKeys(t, filepath.Join(s.dir, "coordinator", "c1"), snap)

	out, err := cli(s.config, "", "snapshot", "restore", snap)
	if err != nil {
		t.Fatalf("snapshot restore: %v\n%s", err, out)
	}
	for _, want := range []string{"cluster newer: not in the snapshot", "component newer-cp-0 (cluster newer) on hv-1", "restored at index"} {
		if !strings.Contains(out, want) {
			t.Errorf("snapshot restore says nothing of %q:\n%s", want, out)
		}
	}
	etcdData := filepath.Join(s.lab.Hosts["hv-1"].RootDir, "var/lib/oneinfra/clusters/newer/newer-cp-0")
	testutil.Eventually(t, 90*time.Second, "newer's components orphaned and stopped", func() error {
		out, err := cli(s.config, "", "get", "components")
		if err != nil {
			return err
		}
		if n := strings.Count(out, "Orphaned"); n != 2 {
			return fmt.Errorf("%d orphaned:\n%s", n, out)
		}
		if n := len(containers(t, s)); n != running {
			return fmt.Errorf("%d containers run, %d before the newer cluster", n, running)
		}
		return nil
	})
	if !holdsFile(etcdData, "db") {
		t.Fatalf("the orphaned replica's etcd data (%s) is gone", etcdData)
	}
	kc := writeKubeconfig(t, s, "older")
	if _, err := kubectl(kc, "get", "--raw", "/readyz"); err != nil {
		t.Errorf("the older cluster after the restore: %v", err)
	}
	if out, err := cli(s.config, "", "delete", "component", "older-cp-0"); err == nil {
		t.Errorf("deleting a cluster's component alone was accepted:\n%s", out)
	}
	for _, comp := range []string{"newer-cp-0", "newer-ingress-0"} {
		if out, err := cli(s.config, "", "delete", "component", comp, "--wait", "--timeout", "2m"); err != nil {
			t.Fatalf("delete component %s: %v\n%s", comp, err, out)
		}
	}
	if _, err := os.Stat(etcdData); !os.IsNotExist(err) {
		t.Errorf("a deleted orphan's data is still there (%v)", err)
	}
}

// checkBackups: the cluster's first scheduled backup is taken once it is
// Ready; a Secret and a ConfigMap written (the API server encrypts only
// the Secret), `cluster backup --wait` takes another; no stored backup
// holds their value or a key in plain text.
func checkBackups(t *testing.T, s *system, cluster, dir string) {
	t.Helper()
	testutil.Eventually(t, 2*time.Minute, "the scheduled backup", func() error {
		out, err := cli(s.config, "", "cluster", "backups", cluster)
		if err != nil || !strings.Contains(out, "Done") || !strings.Contains(out, cluster+"-cp-0") {
			return fmt.Errorf("backups: %v\n%s", err, out)
		}
		return nil
	})
	kc := writeKubeconfig(t, s, cluster)
	for _, kind := range []string{"secret generic", "configmap"} {
		args := append(strings.Fields("create "+kind), "backed-up", "--from-literal=k=plain-text-value")
		if _, err := kubectl(kc, args...); err != nil {
			t.Fatal(err)
		}
	}
	started := time.Now()
	out, err := cli(s.config, "", "cluster", "backup", cluster, "--wait", "--timeout", "2m")
	if err != nil || !strings.Contains(out, "taken") {
		t.Fatalf("cluster backup --wait: %v\n%s", err, out)
	}
	t.Logf("cluster backup --wait: %s in %s", strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:]), time.Since(started).Round(100*time.Millisecond))
	id := regexp.MustCompile(`backup (\S+) taken`).FindStringSubmatch(out)[1]
	defer checkRestore(t, s, cluster, kc, id)
	list, _ := cli(s.config, "", "cluster", "backups", cluster)
	if strings.Count(list, "Done") < 2 {
		t.Errorf("cluster backups: want the scheduled and the asked one:\n%s", list)
	}
	d, _ := cli(s.config, "", "describe", "cluster", cluster)
	if !strings.Contains(d, "newest ") {
		t.Errorf("describe says nothing of the newest backup:\n%s", d)
	}
	objects := 0
	_ = filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		objects++
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte("plain-text-value")) || bytes.Contains(b, []byte("PRIVATE KEY")) {
			t.Errorf("backup %s holds plaintext", path)
		}
		return nil
	})
	if objects < 2 {
		t.Errorf("%d backups stored in %s, want 2 or more", objects, dir)
	}
}

// checkRestore: a Secret written after the backup id; the cluster
// restored from it is Ready with the Secrets of that time: the first is
// there, the one written after is not.
func checkRestore(t *testing.T, s *system, cluster, kc, id string) {
	t.Helper()
	if _, err := kubectl(kc, "create", "secret", "generic", "after-backup", "--from-literal=k=v"); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	out, err := cli(s.config, "", "cluster", "restore", cluster, "--backup", id, "--wait", "--timeout", "5m")
	if err != nil {
		d, _ := cli(s.config, "", "describe", "cluster", cluster)
		t.Fatalf("cluster restore: %v\n%s\n%s", err, out, d)
	}
	t.Logf("cluster restore --wait: Ready again %s after the call", time.Since(started).Round(100*time.Millisecond))
	backupsTime(t, kc, "backed-up", "after-backup")
}

// backupsTime waits until the cluster of kc has the Secret kept, backed up,
// and not the Secret lost, written after the backup.
func backupsTime(t *testing.T, kc, kept, lost string) {
	t.Helper()
	testutil.Eventually(t, time.Minute, "the Secrets of the backup's time", func() error {
		if _, err := kubectl(kc, "get", "secret", kept); err != nil {
			return fmt.Errorf("the Secret backed up: %v", err)
		}
		if out, err := kubectl(kc, "get", "secret", lost); err == nil || !strings.Contains(out, "NotFound") {
			return fmt.Errorf("the Secret written after the backup: %q %v", out, err)
		}
		return nil
	})
}

// noPlainKeys fails the test if a file under dataDir, but for the
// server's own TLS key and the bootstrap operator's admin.conf, or one of
// files, holds a PEM private key.
func noPlainKeys(t *testing.T, dataDir string, files ...string) {
	t.Helper()
	secret := []byte("PRIVATE KEY")
	err := filepath.WalkDir(dataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if rel, _ := filepath.Rel(dataDir, path); rel != "tls/server.key" && rel != "admin.conf" {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, secret) {
			t.Errorf("%s holds a private key in plain text", f)
		}
	}
	t.Logf("%d coordinator files checked: no private key in plain text", len(files))
}

// holdsFile reports whether a file named name is somewhere under dir.
func holdsFile(dir, name string) bool {
	found := false
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == name {
			found = true
		}
		return nil
	})
	return found
}

// TestRebuildFromBackup: backups to a real S3 server (SeaweedFS),
// scheduled and asked for, and a restore from one (checkBackups); then a
// one-replica cluster's hypervisor is cut off for good and its disk wiped;
// the cluster is rebuilt on the other hypervisor from its newest backup
// and Ready again, with the Secret backed up and without the one written
// after (what was lost), as describe says. No stored object holds the
// Secret's value in plain text.
func TestRebuildFromBackup(t *testing.T) {
	store := s3server.Start(t)
	s := startSystem(t, []lab.HostSpec{{Name: "hv-1"}, {Name: "hv-2"}, {Name: "pub-1", Public: true}}, 1,
		"--backup-target", store.Target("tenants", lab.CoordinatorIP), "--backup-credentials", store.CredentialsFile(t, t.TempDir()),
		"--suspect-after", "40s", "--dead-after", "60s")
	if out, err := cli(s.config, "", "cluster", "create", "solo", "--wait", "--timeout", "5m"); err != nil {
		t.Fatalf("cluster create: %v\n%s", err, out)
	}
	checkBackups(t, s, "solo", store.Dir)
	var lost string
	for _, c := range components(t, s) {
		if c.Spec.Role == "control-plane" {
			lost = c.Spec.Hypervisor
		}
	}
	kc := writeKubeconfig(t, s, "solo")
	if _, err := kubectl(kc, "create", "configmap", "kept", "--from-literal=k=plain-text-value"); err != nil {
		t.Fatal(err)
	}
	if _, err := kubectl(kc, "create", "secret", "generic", "kept", "--from-literal=k=v"); err != nil {
		t.Fatal(err)
	}
	if out, err := cli(s.config, "", "cluster", "backup", "solo", "--wait", "--timeout", "2m"); err != nil {
		t.Fatalf("cluster backup: %v\n%s", err, out)
	}
	backedUp := time.Now()
	stored := 0
	_ = filepath.WalkDir(store.Dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err == nil && bytes.Contains(b, []byte("plain-text-value")) {
			t.Errorf("the S3 server's %s holds a value in plain text", path)
		}
		stored += len(b)
		return nil
	})
	t.Logf("the S3 server holds %d bytes", stored)
	if _, err := kubectl(kc, "create", "secret", "generic", "written-after", "--from-literal=k=v"); err != nil {
		t.Fatal(err)
	}

	// The replica's hypervisor is lost, its disk with it.
	if err := s.lab.Cut(lost); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	if err := os.RemoveAll(filepath.Join(s.lab.Hosts[lost].RootDir, "var/lib/oneinfra/clusters/solo")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 6*time.Minute, "solo Ready again elsewhere", func() error {
		out, err := cli(s.config, "", "get", "clusters")
		if err != nil || !strings.Contains(out, "Ready") {
			return fmt.Errorf("%v\n%s", err, out)
		}
		d, err := cli(s.config, "", "describe", "cluster", "solo")
		if err != nil || !strings.Contains(d, "Done (rebuild, asked") {
			return fmt.Errorf("%v\n%s", err, d)
		}
		return nil
	})
	t.Logf("rebuild: Ready again %s after the hypervisor was cut off (RTO, with --dead-after 60s); lost: what was written in the %s between the backup and the cut (RPO)", time.Since(cut).Round(time.Second), cut.Sub(backedUp).Round(100*time.Millisecond))
	d, _ := cli(s.config, "", "describe", "cluster", "solo")
	if !strings.Contains(d, "Rebuilding") || !strings.Contains(d, "what was written since is lost") {
		t.Errorf("describe does not tell the rebuild and what was lost:\n%s", d)
	}
	elsewhere := false
	for _, c := range components(t, s) {
		elsewhere = elsewhere || (c.Spec.Role == "control-plane" && c.Spec.Hypervisor != lost)
	}
	if !elsewhere {
		t.Errorf("no replica off the lost hypervisor %s", lost)
	}
	backupsTime(t, kc, "kept", "written-after")
}
