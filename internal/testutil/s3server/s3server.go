// Package s3server runs a real S3-compatible object store for tests:
// SeaweedFS's `weed server -s3`, built by `make images` into _output/bin.
package s3server

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/oneinfra/oneinfra/internal/testutil"
	"github.com/oneinfra/oneinfra/internal/testutil/containerd"
)

// Server is a running store with one bucket.
type Server struct {
	// Port is its S3 API's, on every address of the machine (Endpoint:
	// on loopback); Bucket exists.
	Port             int
	Endpoint, Bucket string
	// AccessKeyID and SecretAccessKey are the one identity it admits.
	AccessKeyID, SecretAccessKey string
	// Dir holds what it stores.
	Dir string
}

// Start runs a store until the test ends, its S3 API on every address of
// the machine (lab hosts reach it at the lab's address), and makes its
// bucket.
func Start(t *testing.T) *Server {
	t.Helper()
	root, err := containerd.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "_output/bin/weed")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s: %v (make images builds it)", bin, err)
	}
	s := &Server{Bucket: "oneinfra", AccessKeyID: "oneinfra-test", SecretAccessKey: "test-secret-" + strconv.FormatInt(time.Now().UnixNano(), 36), Dir: t.TempDir()}
	conf := filepath.Join(s.Dir, "s3.json")
	identities := fmt.Sprintf(`{"identities":[{"name":"oneinfra","credentials":[{"accessKey":%q,"secretKey":%q}],"actions":["Admin","Read","Write","List","Tagging"]}]}`,
		s.AccessKeyID, s.SecretAccessKey)
	if err := os.WriteFile(conf, []byte(identities), 0o600); err != nil {
		t.Fatal(err)
	}
	// Every service on a port of its own (gRPC on port+10000, as weed
	// does), none of the defaults: tests run beside other processes.
	ports := freePorts(t, 4)
	s.Port = ports[3]
	s.Endpoint = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port))
	data := filepath.Join(s.Dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "server", "-ip=127.0.0.1", "-ip.bind=0.0.0.0", "-dir="+data,
		"-master.port="+strconv.Itoa(ports[0]), "-volume.port="+strconv.Itoa(ports[1]), "-filer.port="+strconv.Itoa(ports[2]),
		"-s3", "-s3.port="+strconv.Itoa(ports[3]), "-s3.config="+conf, "-volume.max=8", "-master.volumeSizeLimitMB=64")
	testutil.StartProcess(t, "weed", cmd)
	client, err := minio.New(s.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(s.AccessKeyID, s.SecretAccessKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 90*time.Second, "the S3 server's bucket", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if ok, err := client.BucketExists(ctx, s.Bucket); err != nil || ok {
			return err
		}
		return client.MakeBucket(ctx, s.Bucket, minio.MakeBucketOptions{})
	})
	return s
}

// Target is the --backup-target URL of prefix in the bucket, reached at
// host.
func (s *Server) Target(prefix, host string) string {
	return fmt.Sprintf("s3://%s/%s?endpoint=%s&insecure=true", s.Bucket, prefix, net.JoinHostPort(host, strconv.Itoa(s.Port)))
}

// CredentialsFile writes a --backup-credentials file (0600) in dir.
func (s *Server) CredentialsFile(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "s3.credentials")
	body := fmt.Sprintf("AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n", s.AccessKeyID, s.SecretAccessKey)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// freePorts are n ports free, each with port+10000 free too.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var out []int
	for len(out) < n {
		ln, err := net.Listen("tcp", ":0")
		if err != nil {
			t.Fatal(err)
		}
		p := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if p+10000 > 65535 {
			continue
		}
		if ln2, err := net.Listen("tcp", ":"+strconv.Itoa(p+10000)); err == nil {
			ln2.Close()
			out = append(out, p)
		}
	}
	return out
}
