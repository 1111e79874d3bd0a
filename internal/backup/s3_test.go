package backup

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/oneinfra/oneinfra/internal/testutil/s3server"
)

// TestS3Target: against a real S3 server (SeaweedFS), a sealed backup of
// more than one part streams in and back whole; a missing object and
// wrong keys are errors; a deleted one is gone.
func TestS3Target(t *testing.T) {
	ctx := context.Background()
	srv := s3server.Start(t)
	creds, err := LoadCredentials(srv.CredentialsFile(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	target, err := ParseTarget(srv.Target("backups", "127.0.0.1"), creds)
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, KeySize)
	rand.Read(key)
	plain := make([]byte, s3PartSize+5<<20)
	rand.Read(plain)
	pr, pw := io.Pipe()
	go func() {
		w, err := Seal(pw, key)
		if err == nil {
			if _, err = w.Write(plain); err == nil {
				err = w.Close()
			}
		}
		pw.CloseWithError(err)
	}()
	n, err := target.Put(ctx, "c1/b1", pr)
	if err != nil || n < int64(len(plain)) {
		t.Fatalf("Put: %d, %v", n, err)
	}
	rc, err := target.Get(ctx, "c1/b1")
	if err != nil {
		t.Fatal(err)
	}
	r, err := Open(rc, key)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if want := sha256.Sum256(plain); !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatal("what came back is not what went in")
	}
	if _, err := target.Get(ctx, "c1/none"); err == nil {
		t.Error("getting a missing object worked")
	}
	if err := target.Delete(ctx, "c1/b1"); err != nil {
		t.Fatal(err)
	}
	if _, err := target.Get(ctx, "c1/b1"); err == nil {
		t.Error("a deleted object is still there")
	}
	wrong, _ := ParseTarget(srv.Target("backups", "127.0.0.1"), Credentials{AccessKeyID: creds.AccessKeyID, SecretAccessKey: "wrong"})
	if _, err := wrong.Put(ctx, "c1/x", bytes.NewReader([]byte("x"))); err == nil {
		t.Error("wrong keys were accepted")
	}
}

func TestLoadCredentials(t *testing.T) {
	dir := t.TempDir()
	write := func(body string, mode os.FileMode) string {
		p := filepath.Join(dir, "c")
		os.Remove(p)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if c, err := LoadCredentials(write("# keys\nAWS_ACCESS_KEY_ID=a\n\nAWS_SECRET_ACCESS_KEY=b=c\n", 0o600)); err != nil || c.AccessKeyID != "a" || c.SecretAccessKey != "b=c" {
		t.Errorf("LoadCredentials: %+v %v", c, err)
	}
	for body, mode := range map[string]os.FileMode{
		"AWS_ACCESS_KEY_ID=a\nAWS_SECRET_ACCESS_KEY=b\n": 0o644,
		"AWS_ACCESS_KEY_ID=a\n":                          0o600,
		"user=a\n":                                       0o600,
	} {
		if _, err := LoadCredentials(write(body, mode)); err == nil {
			t.Errorf("%q mode %v accepted", body, mode)
		}
	}
}
