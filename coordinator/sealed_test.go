package coordinator

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/coordinator/keyring"
	"github.com/oneinfra/oneinfra/internal/client"
	"github.com/oneinfra/oneinfra/internal/testutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/grpc/codes"
)

// saveSnapshot is `snapshot save` through op.
func saveSnapshot(t *testing.T, op pb.OperatorClient) []byte {
	t.Helper()
	data, err := client.SaveSnapshot(context.Background(), op)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// restoreSnapshot is `snapshot restore [--force]` through op.
func restoreSnapshot(op pb.OperatorClient, data []byte, force bool) error {
	_, err := client.RestoreSnapshot(context.Background(), op, data, &pb.SnapshotChunk{Force: force})
	return err
}

// TestStateSealedOnDisk: a joined server gets the keyring; no file of
// either server's data dir (raft.db, Raft snapshots) holds a private key
// in plain text, but for the server's own TLS key and the bootstrap
// operator's admin.conf; nor does a `snapshot save` file. Keyrings and
// snapshot files are 0600.
func TestStateSealedOnDisk(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s1, cfg1 := bootstrapOne(t, dir)
	op1 := pb.NewOperatorClient(adminConn(t, cfg1.DataDir, s1.APIAddr()))
	tok, err := op1.CreateToken(ctx, &pb.CreateTokenRequest{Kind: TokenServer})
	if err != nil {
		t.Fatal(err)
	}
	cfg2 := testConfig(t, "s2", dir)
	cfg2.Join, cfg2.Token, cfg2.CAHash = s1.APIAddr(), tok.Token, tok.CaHash
	s2 := startServer(t, cfg2)
	if err := createCluster(ctx, op1, "sealed"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the cluster on s2", func() error {
		if s2.State().Cluster(nil, "sealed") == nil {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	for _, s := range []*Server{s1, s2} {
		if err := s.raft.Snapshot().Error(); err != nil {
			t.Fatalf("%s: snapshot: %v", s.cfg.ID, err)
		}
	}
	secret := []byte("PRIVATE KEY")
	if !bytes.Contains(mustMarshal(t, s1.State().Snapshot()), secret) {
		t.Fatal("the state holds no private key to look for")
	}
	if saved := saveSnapshot(t, op1); bytes.Contains(saved, secret) {
		t.Error("a `snapshot save` file holds a private key in plain text")
	}

	var rings [][]byte
	for _, cfg := range []Config{cfg1, cfg2} {
		ring, err := os.ReadFile(filepath.Join(cfg.DataDir, keyring.FileName))
		if err != nil {
			t.Fatalf("%s: %v", cfg.ID, err)
		}
		rings = append(rings, ring)
		snapshots := 0
		err = filepath.WalkDir(cfg.DataDir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(cfg.DataDir, path)
			fi, err := d.Info()
			if err != nil {
				return err
			}
			if private := rel == keyring.FileName || strings.HasPrefix(rel, "raft/"); private && fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: %s has mode %v, want 0600", cfg.ID, rel, fi.Mode().Perm())
			}
			if strings.HasPrefix(rel, "raft/snapshots/") {
				snapshots++
			}
			if rel == filepath.Join("tls", serverKeyFile) || rel == AdminConfFile {
				return nil
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if bytes.Contains(b, secret) {
				t.Errorf("%s: %s holds a private key in plain text", cfg.ID, rel)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if snapshots == 0 {
			t.Errorf("%s: no Raft snapshot files to check", cfg.ID)
		}
	}
	if !bytes.Equal(rings[0], rings[1]) {
		t.Error("the joined server's keyring is not the bootstrap server's")
	}
}

// TestSnapshotOfAnotherCoordinator: a snapshot of another coordinator is
// refused, unless --force on servers holding its keyring; with another
// keyring it cannot be opened at all.
func TestSnapshotOfAnotherCoordinator(t *testing.T) {
	ctx := context.Background()
	a, cfgA := bootstrapOne(t, t.TempDir())
	opA := pb.NewOperatorClient(adminConn(t, cfgA.DataDir, a.APIAddr()))
	if err := createCluster(ctx, opA, "from-a"); err != nil {
		t.Fatal(err)
	}
	saved := saveSnapshot(t, opA)

	// B is a new coordinator started with A's keyring, as after losing
	// every server of A.
	dirB := t.TempDir()
	ring, err := os.ReadFile(filepath.Join(cfgA.DataDir, keyring.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dirB, "s1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dirB, "s1", keyring.FileName), ring, 0o600); err != nil {
		t.Fatal(err)
	}
	b, cfgB := bootstrapOne(t, dirB)
	opB := pb.NewOperatorClient(adminConn(t, cfgB.DataDir, b.APIAddr()))
	if err := restoreSnapshot(opB, saved, false); code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "another coordinator") {
		t.Fatalf("restoring another coordinator's snapshot without --force: %v", err)
	}
	if got := b.State().Clusters(nil); len(got) != 0 {
		t.Fatalf("a refused restore changed the state: %d clusters", len(got))
	}
	if err := restoreSnapshot(opB, saved, true); err != nil {
		t.Fatalf("with --force: %v", err)
	}
	if b.State().Cluster(nil, "from-a") == nil {
		t.Error("the forced restore did not bring A's cluster")
	}

	// C has a keyring of its own.
	c, cfgC := bootstrapOne(t, t.TempDir())
	opC := pb.NewOperatorClient(adminConn(t, cfgC.DataDir, c.APIAddr()))
	if err := restoreSnapshot(opC, saved, true); code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "keyring") {
		t.Fatalf("restoring a snapshot sealed with another keyring: %v", err)
	}
}
