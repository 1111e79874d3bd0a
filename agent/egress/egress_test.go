package egress

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/tlsutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func issue(t *testing.T, ca *pb.KeyPair, cn string, usage tlsutil.Usage) tls.Certificate {
	t.Helper()
	kp, err := tlsutil.Issue(ca, tlsutil.CertOptions{CommonName: cn, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Usages: []tlsutil.Usage{usage}, Validity: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(kp.CertPem, kp.KeyPem)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// fixture is a proxy at 127.0.0.1 for the networks 127.0.0.0/24 whose
// host owns the addresses own says, an echo server at 127.0.0.2 to reach
// through it, and the CAs of its certificates.
type fixture struct {
	ps                 *Proxies
	addr, backend      string
	serverPool         *x509.CertPool
	serverCA, clientCA *pb.KeyPair
}

func newFixture(t *testing.T, own func(netip.Addr) bool) *fixture {
	t.Helper()
	f := &fixture{}
	f.serverCA, _ = tlsutil.NewCA("cluster", time.Hour, time.Now())
	f.clientCA, _ = tlsutil.NewCA("kubelet-client", time.Hour, time.Now())
	clientPool, _ := tlsutil.CertPool(f.clientCA.CertPem)
	f.serverPool, _ = tlsutil.CertPool(f.serverCA.CertPem)
	backend, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { backend.Close() })
	go func() {
		for {
			c, err := backend.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	f.backend = backend.Addr().String()
	port := freePort(t)
	f.ps = New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	f.ps.own = own
	t.Cleanup(f.ps.Close)
	err = f.ps.Ensure("demo", Config{
		Address: netip.MustParseAddr("127.0.0.1"), ListenPort: port,
		Networks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/24")},
		Cert:     issue(t, f.serverCA, "oneinfra:egress-proxy", tlsutil.UsageServer), ClientCAs: clientPool, ClientCN: "kube-apiserver-kubelet-client",
	})
	if err != nil {
		t.Fatal(err)
	}
	f.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	return f
}

// connect sends a CONNECT to target with the client certificate, and
// returns the answer's status and the connection.
func (f *fixture) connect(client *tls.Certificate, target string) (string, *bufio.Reader, net.Conn, error) {
	conf := &tls.Config{RootCAs: f.serverPool, ServerName: "127.0.0.1"}
	if client != nil {
		conf.Certificates = []tls.Certificate{*client}
	}
	conn, err := tls.Dial("tcp", f.addr, conf)
	if err != nil {
		return "", nil, nil, err
	}
	if _, err := io.WriteString(conn, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n"); err != nil {
		conn.Close()
		return "", nil, nil, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return "", nil, nil, err
	}
	return resp.Status, br, conn, nil
}

// TestProxy: the cluster's API servers (their kubelet-client certificate)
// reach what is in the cluster's networks, and nothing else; nobody else
// gets through.
func TestProxy(t *testing.T) {
	// The host's own addresses, for this test: 127.0.0.3 (the real ones
	// are all of 127/8: TestOwnAddress).
	f := newFixture(t, func(a netip.Addr) bool { return a == netip.MustParseAddr("127.0.0.3") })
	otherCA, _ := tlsutil.NewCA("other", time.Hour, time.Now())
	api := issue(t, f.clientCA, "kube-apiserver-kubelet-client", tlsutil.UsageClient)
	status, _, conn, err := f.connect(&api, f.backend)
	if err != nil || !strings.HasPrefix(status, "200") {
		t.Fatalf("the API server's CONNECT: %q %v", status, err)
	}
	if _, err := io.WriteString(conn, "ping"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping" {
		t.Errorf("through the proxy: %q %v", buf, err)
	}
	conn.Close()

	for _, c := range []struct {
		what, target, status string
	}{
		{"outside the cluster's networks", "127.0.1.1:80", "403"},
		{"a name, not an address", "localhost:80", "400"},
		{"the proxy's own address", f.addr, "403"},
		{"an address of the host", "127.0.0.3:80", "403"},
		{"an address of the host, IPv4-mapped", "[::ffff:127.0.0.3]:80", "403"},
	} {
		status, _, conn, err := f.connect(&api, c.target)
		if err == nil {
			conn.Close()
		}
		if !strings.HasPrefix(status, c.status) {
			t.Errorf("%s: %q %v, want %s", c.what, status, err, c.status)
		}
	}
	other := issue(t, f.clientCA, "system:node:w-1", tlsutil.UsageClient)
	foreign := issue(t, otherCA, "kube-apiserver-kubelet-client", tlsutil.UsageClient)
	for what, cert := range map[string]*tls.Certificate{"no certificate": nil, "another name": &other, "another CA": &foreign} {
		if status, _, conn, err := f.connect(cert, f.backend); err == nil {
			conn.Close()
			t.Errorf("%s: got through (%s)", what, status)
		}
	}
}

// TestOwnAddress: loopback, unspecified and the interfaces' addresses are
// the host's; an address of nobody here is not.
func TestOwnAddress(t *testing.T) {
	own := []string{"127.0.0.1", "127.0.0.2", "::1", "0.0.0.0", "::"}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, ia := range addrs {
		if n, ok := ia.(*net.IPNet); ok {
			own = append(own, n.IP.String())
		}
	}
	for _, a := range own {
		if !ownAddress(netip.MustParseAddr(a)) {
			t.Errorf("%s: not the host's", a)
		}
	}
	if ownAddress(netip.MustParseAddr("192.0.2.1")) {
		t.Error("192.0.2.1 (TEST-NET-1) counted as the host's")
	}
}

// TestProxyLimits: connections beyond maxConns are closed at once, and a
// proxy removed closes its tunnels.
func TestProxyLimits(t *testing.T) {
	f := newFixture(t, func(netip.Addr) bool { return false })
	// A tunnel, then maxConns-1 idle connections fill the proxy.
	api := issue(t, f.clientCA, "kube-apiserver-kubelet-client", tlsutil.UsageClient)
	status, br, tunnel, err := f.connect(&api, f.backend)
	if err != nil || !strings.HasPrefix(status, "200") {
		t.Fatalf("CONNECT: %q %v", status, err)
	}
	defer tunnel.Close()
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	for range maxConns - 1 {
		c, err := net.Dial("tcp", f.addr)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	extra, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	_ = extra.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := extra.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("connection %d: read %v, want it closed at once (EOF)", maxConns+1, err)
	}

	// Removed, the proxy closes the tunnel.
	f.ps.RemoveExcept(nil)
	_ = tunnel.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := br.ReadByte(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the tunnel after its proxy was removed: read %v, want it closed", err)
	}
}
