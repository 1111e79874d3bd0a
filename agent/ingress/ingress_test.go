package ingress

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"github.com/oneinfra/oneinfra/internal/testutil"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/agent/cri"
	"github.com/oneinfra/oneinfra/agent/host"
	"github.com/oneinfra/oneinfra/coordinator/pki"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

func freePort(t *testing.T) uint32 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint32(ln.Addr().(*net.TCPAddr).Port)
}

// backend is a fake API server with a certificate of the cluster CA.
type backend struct {
	*httptest.Server
	ready atomic.Bool
	hits  atomic.Int64
}

func newBackend(t *testing.T, p *pb.ClusterPKI, name string) *backend {
	certs, err := pki.ControlPlaneCerts(p, pki.ControlPlaneIdentity{Component: name, HypervisorAddresses: []string{"127.0.0.1"},
		ServiceCIDR: "10.96.0.0/12"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	kp := certs.Certs[pki.APIServerCert]
	cert, err := tls.X509KeyPair(kp.CertPem, kp.KeyPem)
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{}
	b.ready.Store(true)
	b.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			if !b.ready.Load() {
				http.Error(w, "not ready", http.StatusServiceUnavailable)
				return
			}
			fmt.Fprint(w, "ok")
			return
		}
		b.hits.Add(1)
		fmt.Fprint(w, name)
	}))
	b.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	b.StartTLS()
	t.Cleanup(b.Close)
	return b
}

func (b *backend) endpoint(name string) *pb.Endpoint {
	a := b.Listener.Addr().(*net.TCPAddr)
	return &pb.Endpoint{Name: name, Address: "127.0.0.1", Port: uint32(a.Port)}
}

func testAssignment(t *testing.T, p *pb.ClusterPKI, port uint32, servers ...*pb.Endpoint) *pb.Assignment {
	return &pb.Assignment{
		Component:  &pb.Component{Metadata: &pb.ObjectMeta{Name: "demo-ingress-0"}, Spec: &pb.ComponentSpec{Ports: map[string]uint32{"apiserver": port}}},
		CaCerts:    map[string][]byte{pki.ClusterCA: p.Cas[pki.ClusterCA].CertPem},
		ApiServers: servers,
		Images:     map[string]string{"haproxy": "docker.io/library/haproxy:2.6"},
	}
}

func TestRender(t *testing.T) {
	p, err := pki.NewClusterPKI("demo", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	paths := host.Paths{Root: "/r", Cluster: "demo", Component: "demo-ingress-0"}
	one := testAssignment(t, p, 30000, &pb.Endpoint{Name: "b", Address: "10.0.0.2", Port: 30001})
	two := testAssignment(t, p, 30000, &pb.Endpoint{Name: "b", Address: "10.0.0.2", Port: 30001}, &pb.Endpoint{Name: "a", Address: "10.0.0.1", Port: 30001})
	p1, err := Render(one, paths)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := Render(two, paths)
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(p2.Files[0].Data)
	for _, want := range []string{"bind :30000", "mode tcp", "option httpchk GET /readyz", "verify required ca-file /r/etc/oneinfra/clusters/demo/demo-ingress-0/cluster-ca.crt",
		"server a 10.0.0.1:30001\n    server b 10.0.0.2:30001"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	if cri.SpecHash(p1.Pods[0]) != cri.SpecHash(p2.Pods[0]) {
		t.Error("a change of backends changes the pod spec: haproxy would restart")
	}
	three := testAssignment(t, p, 30000)
	three.Images["haproxy"] = "mirror.example/haproxy:2.6"
	p3, _ := Render(three, paths)
	if cri.SpecHash(p1.Pods[0]) == cri.SpecHash(p3.Pods[0]) {
		t.Error("a new image does not change the pod spec")
	}
	if _, err := Render(testAssignment(t, p, 0), paths); err == nil {
		t.Error("an ingress without a port rendered")
	}
}

// TestHaproxy runs Debian's haproxy with the rendered configuration in
// front of two fake API servers.
func TestHaproxy(t *testing.T) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatal("haproxy is not installed: apt-get install -y haproxy")
	}
	p, err := pki.NewClusterPKI("demo", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b1, b2 := newBackend(t, p, "one"), newBackend(t, p, "two")
	port := freePort(t)
	paths := host.Paths{Root: t.TempDir(), Cluster: "demo", Component: "demo-ingress-0"}
	as := testAssignment(t, p, port, b1.endpoint("one"))
	plan, err := Render(as, paths)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plan.WriteFiles(); err != nil {
		t.Fatal(err)
	}
	c := plan.Pods[0].Containers[0]
	cmd := exec.Command(bin, c.Command[1:]...)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("haproxy log:\n%s", logs.String())
		}
	})
	ctx := context.Background()
	start := time.Now()
	testutil.Eventually(t, 10*time.Second, "the API through haproxy", func() error { return Probe(ctx, as, "127.0.0.1") })
	t.Logf("API reachable through haproxy %.2fs after start", time.Since(start).Seconds())

	// A wrong CA is refused.
	other, _ := pki.NewClusterPKI("other", time.Now())
	wrong := testAssignment(t, other, port)
	if err := Probe(ctx, wrong, "127.0.0.1"); err == nil {
		t.Error("probe trusted a server of another CA")
	}

	// A long-lived connection through haproxy survives a reload that adds
	// a backend.
	conn, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	get := func() (string, error) {
		if _, err := fmt.Fprintf(conn, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return "", err
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		var body strings.Builder
		_, err = bufio.NewReader(resp.Body).WriteTo(&body)
		return body.String(), err
	}
	if body, err := get(); err != nil || body != "one" {
		t.Fatalf("before reload: %q %v", body, err)
	}
	as2 := testAssignment(t, p, port, b1.endpoint("one"), b2.endpoint("two"))
	plan2, _ := Render(as2, paths)
	if changed, err := plan2.WriteFiles(); err != nil || !changed {
		t.Fatalf("rewriting the config: changed %v, %v", changed, err)
	}
	if err := Reload(ctx, paths); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if body, err := get(); err != nil || body != "one" {
		t.Fatalf("the connection did not survive the reload: %q %v", body, err)
	}
	// New connections now reach both backends; a backend failing /readyz
	// is taken out.
	testutil.Eventually(t, 15*time.Second, "both backends in use", func() error {
		b2.hits.Store(0)
		for i := 0; i < 6; i++ {
			fetch(t, port)
		}
		if b2.hits.Load() == 0 {
			return fmt.Errorf("the new backend got no traffic")
		}
		return nil
	})
	b1.ready.Store(false)
	testutil.Eventually(t, 15*time.Second, "the unready backend taken out", func() error {
		b1.hits.Store(0)
		for i := 0; i < 6; i++ {
			fetch(t, port)
		}
		if b1.hits.Load() != 0 {
			return fmt.Errorf("the unready backend still gets traffic")
		}
		return nil
	})
}

func fetch(t *testing.T, port uint32) {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := hc.Get("https://127.0.0.1:" + strconv.Itoa(int(port)) + "/x")
	if err == nil {
		resp.Body.Close()
	}
}
