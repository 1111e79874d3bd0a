package join

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/connlimit"
	"github.com/oneinfra/oneinfra/internal/testutil"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// coordinator answers what the endpoint forwards; while hold is set, a
// Join waits until release is closed.
type coordinator struct {
	pb.AgentClient
	hold    atomic.Bool
	release chan struct{}
	waiting atomic.Int32
}

func (c *coordinator) JoinWorker(ctx context.Context, _ *pb.JoinWorkerRequest, _ ...grpc.CallOption) (*pb.WorkerConfig, error) {
	if c.hold.Load() {
		c.waiting.Add(1)
		defer c.waiting.Add(-1)
		select {
		case <-c.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return &pb.WorkerConfig{Cluster: "demo", Address: "10.200.0.2"}, nil
}

func (c *coordinator) GetWorkerConfig(_ context.Context, req *pb.GetWorkerConfigRequest, _ ...grpc.CallOption) (*pb.WorkerConfig, error) {
	return &pb.WorkerConfig{Cluster: req.Cluster, Address: "10.200.0.3"}, nil
}

// endpoint serves the join endpoint on a loopback port; it returns its
// address, the CA and a worker's certificate.
func endpoint(t *testing.T, coord *coordinator) (addr string, caPEM []byte, worker *pb.KeyPair) {
	t.Helper()
	now := time.Now()
	ca, err := tlsutil.NewCA("coordinator CA", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tlsutil.Issue(ca, tlsutil.CertOptions{CommonName: "pub", IPs: []net.IP{net.IPv4(127, 0, 0, 1)},
		Usages: []tlsutil.Usage{tlsutil.UsageServer}, Validity: time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	worker, err = tlsutil.Issue(ca, tlsutil.CertOptions{CommonName: "worker-1",
		Organizations: []string{vocab.RoleWorker, vocab.ClusterOrgPrefix + "demo"},
		Usages:        []tlsutil.Usage{tlsutil.UsageClient}, Validity: time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	trust, err := tlsutil.NewTrust(ca.CertPem)
	if err != nil {
		t.Fatal(err)
	}
	id, err := tlsutil.NewIdentity(cert, trust)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = Serve(ctx, ln, id, trust, &Server{Coordinator: coord, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String(), ca.CertPem, worker
}

// dial connects from the loopback address from, with cert unless nil.
func dial(t *testing.T, addr, from string, caPEM []byte, cert *pb.KeyPair) (pb.JoinClient, *grpc.ClientConn) {
	t.Helper()
	conf, err := tlsutil.ClientConfig(cert, caPEM, "")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(conf)),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
			return d.DialContext(ctx, "tcp", addr)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewJoinClient(conn), conn
}

func join(c pb.JoinClient) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Join(ctx, &pb.JoinWorkerRequest{Name: "worker-2"})
	return err
}

func config(c pb.JoinClient) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Config(ctx, &pb.GetWorkerConfigRequest{})
	return err
}

// TestSourceLimits floods the endpoint from one address without a
// certificate: handshakes that never end, connections, and calls beyond
// connlimit.Default are refused at once, while a joined worker from that
// address and a joiner from another one are served.
func TestSourceLimits(t *testing.T) {
	coord := &coordinator{release: make(chan struct{})}
	addr, caPEM, worker := endpoint(t, coord)
	limits := connlimit.Default

	// Connections that never start their handshake.
	n := limits.Handshakes + 200
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}}
	var raw []net.Conn
	for range n {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		raw = append(raw, c)
	}
	var held atomic.Int32
	var wg sync.WaitGroup
	for _, c := range raw {
		wg.Go(func() {
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
				held.Add(1)
			}
		})
	}
	wg.Wait()
	t.Logf("%d connections that never handshake: %d held (limit %d), %d closed at once", n, held.Load(), limits.Handshakes, n-int(held.Load()))
	if int(held.Load()) != limits.Handshakes {
		t.Errorf("%d held, want %d", held.Load(), limits.Handshakes)
	}
	other, _ := dial(t, addr, "127.0.0.2", caPEM, nil)
	if err := join(other); err != nil {
		t.Errorf("a joiner from another address during the flood: %v", err)
	}
	for _, c := range raw {
		c.Close()
	}

	// Connections without a certificate, once those are gone.
	var conns []*grpc.ClientConn
	testutil.Eventually(t, 10*time.Second, "a connection again", func() error {
		c, conn := dial(t, addr, "127.0.0.1", caPEM, nil)
		if err := join(c); err != nil {
			conn.Close()
			return err
		}
		conns = append(conns, conn)
		return nil
	})
	tries, refused := limits.Conns+20, 0
	for range tries {
		_, conn := dial(t, addr, "127.0.0.1", caPEM, nil)
		if testutil.Connected(conn) {
			conns = append(conns, conn)
		} else {
			refused++
		}
	}
	t.Logf("%d connections without a certificate: %d held (limit %d), %d refused", 1+tries, len(conns), limits.Conns, refused)
	if len(conns) != limits.Conns {
		t.Errorf("%d connections held, want %d", len(conns), limits.Conns)
	}
	w, _ := dial(t, addr, "127.0.0.1", caPEM, worker)
	if err := config(w); err != nil {
		t.Errorf("a joined worker from the flooding address: %v", err)
	}

	// Calls in flight over them: Joins the coordinator has not answered.
	coord.hold.Store(true)
	calls := limits.Streams + 40
	errs := make(chan error, calls)
	for i := range calls {
		c := pb.NewJoinClient(conns[i%len(conns)])
		go func() { errs <- join(c) }()
	}
	exhausted := 0
	for range calls - limits.Streams {
		if err := <-errs; status.Code(err) == codes.ResourceExhausted && strings.Contains(err.Error(), "calls in flight") {
			exhausted++
		} else {
			t.Errorf("a call beyond the limit: %v, want ResourceExhausted", err)
		}
	}
	testutil.Eventually(t, 5*time.Second, "the Joins within the limit forwarded", func() error {
		if got := coord.waiting.Load(); int(got) != limits.Streams {
			return fmt.Errorf("%d Joins reached the coordinator, want %d", got, limits.Streams)
		}
		return nil
	})
	t.Logf("%d Joins in flight at once without a certificate: %d forwarded (limit %d), %d refused", calls, coord.waiting.Load(), limits.Streams, exhausted)
	if err := config(w); err != nil {
		t.Errorf("a joined worker while calls are refused: %v", err)
	}
	close(coord.release)
	for range limits.Streams {
		if err := <-errs; err != nil {
			t.Errorf("a call within the limit: %v", err)
		}
	}

	// A request beyond 256 KiB is not read.
	c, _ := dial(t, addr, "127.0.0.2", caPEM, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Join(ctx, &pb.JoinWorkerRequest{Name: strings.Repeat("x", 300<<10)}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a 300 KiB Join: %v, want ResourceExhausted", err)
	}
}
