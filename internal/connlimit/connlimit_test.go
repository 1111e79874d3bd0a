package connlimit

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/testutil"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

func TestSource(t *testing.T) {
	for addr, want := range map[string]string{
		"192.0.2.7:443":                  "192.0.2.7",
		"[::ffff:192.0.2.7]:443":         "192.0.2.7",
		"[2001:db8:1:2:3:4:5:6]:443":     "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1]:1":       "2001:db8:1:2::/64",
		"[fe80::1%eth0]:443":             "fe80::/64",
		"not-an-ip":                      "not-an-ip",
		"[2001:db8:1:3:3:4:5:6]:443":     "2001:db8:1:3::/64",
		"[2001:db8:1:2:3:4:5:6%lo]:7445": "2001:db8:1:2::/64",
	} {
		if got := source(fakeAddr(addr)); got != want {
			t.Errorf("source(%s) = %s, want %s", addr, got, want)
		}
	}
}

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }

// testServer serves the health service on a loopback port with
// ServerOptions(limits) and extra options; it returns its address and a
// client certificate it trusts.
func testServer(t *testing.T, limits Limits, trusted func(tls.ConnectionState) bool, extra ...grpc.ServerOption) (addr string, caPEM []byte, clientCert *pb.KeyPair) {
	t.Helper()
	now := time.Now()
	ca, err := tlsutil.NewCA("test CA", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := tlsutil.Issue(ca, tlsutil.CertOptions{CommonName: "server", IPs: []net.IP{net.IPv4(127, 0, 0, 1)},
		Usages: []tlsutil.Usage{tlsutil.UsageServer}, Validity: time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	clientCert, err = tlsutil.Issue(ca, tlsutil.CertOptions{CommonName: "client", Organizations: []string{"test:client"},
		Usages: []tlsutil.Usage{tlsutil.UsageClient}, Validity: time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	conf, err := tlsutil.ServerConfig(serverCert, ca.CertPem, tls.VerifyClientCertIfGiven)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(append(ServerOptions(credentials.NewTLS(conf), limits, trusted), extra...)...)
	healthpb.RegisterHealthServer(g, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	return ln.Addr().String(), ca.CertPem, clientCert
}

// dialer connects from the loopback address from.
func dialer(from string) func(context.Context, string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		return d.DialContext(ctx, "tcp", addr)
	}
}

// dial makes a gRPC connection from the loopback address from, with cert
// as client certificate unless it is nil.
func dial(t *testing.T, addr, from string, caPEM []byte, cert *pb.KeyPair) *healthClient {
	t.Helper()
	conf, err := tlsutil.ClientConfig(cert, caPEM, "")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(conf)), grpc.WithContextDialer(dialer(from)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &healthClient{HealthClient: healthpb.NewHealthClient(conn), conn: conn}
}

type healthClient struct {
	healthpb.HealthClient
	conn *grpc.ClientConn
}

func check(c *healthClient) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

// openRaw opens n TCP connections from the loopback address from that
// never start their handshake, and tells how many the server holds (the
// others it closes at once).
func openRaw(t *testing.T, addr, from string, n int) (conns []net.Conn, held int) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	for range n {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns = append(conns, c)
	}
	return conns, countHeld(conns, 2*time.Second)
}

// countHeld tells how many of conns the server keeps open for wait.
func countHeld(conns []net.Conn, wait time.Duration) int {
	var mu sync.Mutex
	var wg sync.WaitGroup
	held := 0
	for _, c := range conns {
		wg.Go(func() {
			c.SetReadDeadline(time.Now().Add(wait))
			_, err := c.Read(make([]byte, 1))
			if errors.Is(err, os.ErrDeadlineExceeded) {
				mu.Lock()
				held++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return held
}

func TestHandshakesPerSource(t *testing.T) {
	limits := Limits{Handshakes: 4, Conns: 2, Streams: 8}
	addr, caPEM, cert := testServer(t, limits, nil, grpc.ConnectionTimeout(4*time.Second))

	// Handshakes that never finish count against their source: beyond
	// the limit a connection is closed at once, whoever it is.
	raw, held := openRaw(t, addr, "127.0.0.1", 20)
	t.Logf("20 connections that never handshake: %d held, %d closed at once", held, 20-held)
	if held != limits.Handshakes {
		t.Fatalf("%d of 20 held, want %d", held, limits.Handshakes)
	}
	if err := check(dial(t, addr, "127.0.0.1", caPEM, cert)); status.Code(err) != codes.Unavailable {
		t.Errorf("a call from the full source: %v, want Unavailable", err)
	}
	if err := check(dial(t, addr, "127.0.0.2", caPEM, nil)); err != nil {
		t.Errorf("a call from another source: %v", err)
	}
	// The handshake timeout closes them and gives their counts back.
	if held := countHeld(raw, 6*time.Second); held != 0 {
		t.Errorf("%d connections still held after the handshake timeout", held)
	}
	testutil.Eventually(t, 10*time.Second, "served again", func() error { return check(dial(t, addr, "127.0.0.1", caPEM, nil)) })
}

func TestConnsPerSource(t *testing.T) {
	limits := Limits{Handshakes: 8, Conns: 2, Streams: 8}
	addr, caPEM, cert := testServer(t, limits, nil)
	var open []*grpc.ClientConn
	for range limits.Conns {
		c := dial(t, addr, "127.0.0.1", caPEM, nil)
		if err := check(c); err != nil {
			t.Fatal(err)
		}
		open = append(open, c.conn)
	}
	if err := check(dial(t, addr, "127.0.0.1", caPEM, nil)); status.Code(err) != codes.Unavailable {
		t.Errorf("one connection too many without a certificate: %v, want Unavailable", err)
	}
	// Another source, and connections with a certificate, are not counted.
	if err := check(dial(t, addr, "127.0.0.2", caPEM, nil)); err != nil {
		t.Errorf("a connection from another source: %v", err)
	}
	for i := range 3 * limits.Conns {
		if err := check(dial(t, addr, "127.0.0.1", caPEM, cert)); err != nil {
			t.Errorf("connection %d with a certificate: %v", i, err)
		}
	}
	// A connection that closes gives its count back.
	open[0].Close()
	testutil.Eventually(t, 5*time.Second, "a connection again", func() error { return check(dial(t, addr, "127.0.0.1", caPEM, nil)) })
}

func TestTrustedDecides(t *testing.T) {
	// A verified certificate that trusted refuses counts like none.
	addr, caPEM, cert := testServer(t, Limits{Handshakes: 8, Conns: 1, Streams: 8}, func(cs tls.ConnectionState) bool {
		return len(cs.VerifiedChains) > 0 && slices.Contains(cs.VerifiedChains[0][0].Subject.Organization, "test:other")
	})
	if err := check(dial(t, addr, "127.0.0.1", caPEM, cert)); err != nil {
		t.Fatal(err)
	}
	if err := check(dial(t, addr, "127.0.0.1", caPEM, cert)); status.Code(err) != codes.Unavailable {
		t.Errorf("a second connection with an untrusted certificate: %v, want Unavailable", err)
	}
}

func TestStreamsPerSource(t *testing.T) {
	limits := Limits{Handshakes: 8, Conns: 4, Streams: 3}
	addr, caPEM, cert := testServer(t, limits, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watch := func(c *healthClient) (context.CancelFunc, error) {
		ctx, cancel := context.WithCancel(ctx)
		w, err := c.Watch(ctx, &healthpb.HealthCheckRequest{})
		if err == nil {
			_, err = w.Recv()
		}
		if err != nil {
			cancel()
		}
		return cancel, err
	}

	// Calls in flight count per source, over all its connections.
	a, b := dial(t, addr, "127.0.0.1", caPEM, nil), dial(t, addr, "127.0.0.1", caPEM, nil)
	var stops []context.CancelFunc
	for i := range limits.Streams {
		stop, err := watch([]*healthClient{a, b}[i%2])
		if err != nil {
			t.Fatalf("watch %d: %v", i, err)
		}
		stops = append(stops, stop)
	}
	for _, c := range []*healthClient{a, b} {
		if _, err := watch(c); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "3 calls in flight") {
			t.Errorf("one call too many: %v, want ResourceExhausted naming the limit", err)
		}
		if err := check(c); status.Code(err) != codes.ResourceExhausted {
			t.Errorf("a unary call too many: %v, want ResourceExhausted", err)
		}
	}
	// Another source, and calls with a certificate, are not counted.
	if _, err := watch(dial(t, addr, "127.0.0.2", caPEM, nil)); err != nil {
		t.Errorf("a call from another source: %v", err)
	}
	trusted := dial(t, addr, "127.0.0.1", caPEM, cert)
	for i := range 20 {
		if _, err := watch(trusted); err != nil {
			t.Fatalf("call %d with a certificate: %v", i, err)
		}
	}
	// A call that ends gives its count back.
	stops[0]()
	testutil.Eventually(t, 5*time.Second, "a call again", func() error {
		stop, err := watch(a)
		if err == nil {
			stop()
		}
		return err
	})
}

// TestTLSListener: connections that never finish their handshake hold a
// few slots of their source only, never block Accept, and a real client
// from another source is served meanwhile.
func TestTLSListener(t *testing.T) {
	now := time.Now()
	ca, _ := tlsutil.NewCA("test CA", time.Hour, now)
	serverCert, _ := tlsutil.Issue(ca, tlsutil.CertOptions{CommonName: "server", IPs: []net.IP{net.IPv4(127, 0, 0, 1)},
		Usages: []tlsutil.Usage{tlsutil.UsageServer}, Validity: time.Hour}, now)
	conf, err := tlsutil.ServerConfig(serverCert, ca.CertPem, tls.NoClientCert)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := TLSListener(raw, conf, 3)
	defer ln.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	addr := ln.Addr().String()
	_, held := openRaw(t, addr, "127.0.0.5", 10)
	if held != 3 {
		t.Errorf("%d of 10 connections that never handshake held, want 3", held)
	}
	client, err := tlsutil.ClientConfig(nil, ca.CertPem, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.6")}, Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, client)
	if err != nil {
		t.Fatalf("a real client during the flood: %v", err)
	}
	defer c.Close()
	select {
	case s := <-accepted:
		s.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("a handshaken connection was not accepted while others hung in their handshake")
	}
}

// TestTLSListenerClosed: once closed, Accept answers an error, never a nil
// connection without one (Raft's transport would use it).
func TestTLSListenerClosed(t *testing.T) {
	for range 200 {
		raw, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln := TLSListener(raw, &tls.Config{}, 3)
		ln.Close()
		if c, err := ln.Accept(); c != nil || err == nil {
			t.Fatalf("Accept after Close: %v, %v", c, err)
		}
	}
}
