package coordinator

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/client"
	"github.com/oneinfra/oneinfra/internal/testutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/grpc"
)

// freePort returns a loopback address nobody listens on right now.
func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// testConfig is a server config on fresh loopback ports in dir.
func testConfig(t testing.TB, id, dir string) Config {
	return Config{
		ID: id, DataDir: filepath.Join(dir, id),
		APIAddr: freePort(t), RaftAddr: freePort(t), Advertise: "127.0.0.1",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

func startServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	s, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("starting %s: %v", cfg.ID, err)
	}
	t.Cleanup(s.Kill)
	return s
}

// bootstrapOne starts a bootstrapped server and waits for it to lead with
// its configuration written.
func bootstrapOne(t testing.TB, dir string) (*Server, Config) {
	t.Helper()
	cfg := testConfig(t, "s1", dir)
	cfg.Bootstrap = true
	s := startServer(t, cfg)
	testutil.Eventually(t, 20*time.Second, "bootstrap", func() error { return s.ready() })
	return s, cfg
}

// adminConn dials the given servers with the admin credentials that
// bootstrap wrote.
func adminConn(t testing.TB, dataDir string, servers ...string) *grpc.ClientConn {
	t.Helper()
	conf, err := client.Load(filepath.Join(dataDir, AdminConfFile))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := client.Dial(client.NewMembers(servers, nil), []byte(conf.CertificateAuthority), conf.KeyPair())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func clusterResource(name string) *pb.Resource {
	return &pb.Resource{Source: "test", Kind: &pb.Resource_Cluster{Cluster: &pb.Cluster{
		Metadata: &pb.ObjectMeta{Name: name}, Spec: &pb.ClusterSpec{},
	}}}
}

func createCluster(ctx context.Context, op pb.OperatorClient, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := op.Apply(ctx, &pb.ApplyRequest{Resources: []*pb.Resource{clusterResource(name)}})
	if err != nil {
		return fmt.Errorf("applying %s: %w", name, err)
	}
	return nil
}
