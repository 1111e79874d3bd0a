package egress

import (
	"bufio"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
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

// TestProxy: the cluster's API servers (their kubelet-client certificate)
// reach what is in the cluster's networks, and nothing else; nobody else
// gets through.
func TestProxy(t *testing.T) {
	serverCA, _ := tlsutil.NewCA("cluster", time.Hour, time.Now())
	clientCA, _ := tlsutil.NewCA("kubelet-client", time.Hour, time.Now())
	otherCA, _ := tlsutil.NewCA("other", time.Hour, time.Now())
	clientPool, _ := tlsutil.CertPool(clientCA.CertPem)
	serverPool, _ := tlsutil.CertPool(serverCA.CertPem)

	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	go func() {
		for {
			c, err := backend.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()

	port := freePort(t)
	ps := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer ps.Close()
	err = ps.Ensure("demo", Config{
		Address: netip.MustParseAddr("127.0.0.1"), ListenPort: port,
		Networks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/24")},
		Cert:     issue(t, serverCA, "oneinfra:egress-proxy", tlsutil.UsageServer), ClientCAs: clientPool, ClientCN: "kube-apiserver-kubelet-client",
	})
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	connect := func(client *tls.Certificate, target string) (string, net.Conn, error) {
		conf := &tls.Config{RootCAs: serverPool, ServerName: "127.0.0.1"}
		if client != nil {
			conf.Certificates = []tls.Certificate{*client}
		}
		conn, err := tls.Dial("tcp", addr, conf)
		if err != nil {
			return "", nil, err
		}
		if _, err := io.WriteString(conn, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n"); err != nil {
			conn.Close()
			return "", nil, err
		}
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			conn.Close()
			return "", nil, err
		}
		return resp.Status, conn, nil
	}

	api := issue(t, clientCA, "kube-apiserver-kubelet-client", tlsutil.UsageClient)
	status, conn, err := connect(&api, backend.Addr().String())
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
	} {
		status, conn, err := connect(&api, c.target)
		if err == nil {
			conn.Close()
		}
		if !strings.HasPrefix(status, c.status) {
			t.Errorf("%s: %q %v, want %s", c.what, status, err, c.status)
		}
	}
	other := issue(t, clientCA, "system:node:w-1", tlsutil.UsageClient)
	foreign := issue(t, otherCA, "kube-apiserver-kubelet-client", tlsutil.UsageClient)
	for what, cert := range map[string]*tls.Certificate{"no certificate": nil, "another name": &other, "another CA": &foreign} {
		if status, conn, err := connect(cert, backend.Addr().String()); err == nil {
			conn.Close()
			t.Errorf("%s: got through (%s)", what, status)
		}
	}
}
