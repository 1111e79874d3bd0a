package ingress

// Tests with Debian's haproxy 2.6 binary, run directly (no container) with
// the pod's command, in front of fake API servers on loopback. They fail,
// not skip, when haproxy is missing.

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/agent/host"
	"github.com/oneinfra/oneinfra/coordinator/pki"
	"github.com/oneinfra/oneinfra/internal/testutil"
	testcluster "github.com/oneinfra/oneinfra/internal/testutil/cluster"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/proto"
)

// haproxyBinary finds Debian's haproxy, or fails the test saying how to
// install it.
func haproxyBinary(t testing.TB) string {
	t.Helper()
	if bin, err := exec.LookPath("haproxy"); err == nil {
		return bin
	}
	for _, bin := range []string{"/usr/sbin/haproxy", "/usr/local/sbin/haproxy"} {
		if _, err := os.Stat(bin); err == nil {
			return bin
		}
	}
	t.Fatal("haproxy is not installed: the ingress tests run the real binary; install Debian's package (apt-get install -y haproxy, version 2.6)")
	return ""
}

// apiServer is a fake kube-apiserver: TLS with a serving certificate of a
// cluster CA, /readyz answering "ok" (or failing on demand), /who
// answering its name. Client certificates of the client CA are verified
// when given, like the API server does.
type apiServer struct {
	name string
	addr string
	srv  *http.Server

	failing  atomic.Bool
	hits     atomic.Int64
	mu       sync.Mutex
	checkCNs map[string]int // /readyz requests by client certificate CN ("" anonymous)
}

func startAPIServer(t *testing.T, p *pb.ClusterPKI, name, host string) *apiServer {
	t.Helper()
	certs := testcluster.ControlPlaneCerts(t, p, pki.ControlPlaneIdentity{
		Component: name, HypervisorAddresses: []string{host}, IngressAddresses: []string{"127.0.0.1"}, ServiceCIDR: "10.96.0.0/12",
	})
	kp := certs.Certs[vocab.APIServerCert]
	cert, err := tls.X509KeyPair(kp.CertPem, kp.KeyPem)
	if err != nil {
		t.Fatal(err)
	}
	clients, err := tlsutil.CertPool(p.Cas[vocab.ClientCA].CertPem)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	s := &apiServer{name: name, addr: ln.Addr().String(), checkCNs: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		cn := ""
		if len(r.TLS.PeerCertificates) > 0 {
			cn = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		s.mu.Lock()
		s.checkCNs[cn]++
		s.mu.Unlock()
		if s.failing.Load() {
			http.Error(w, "[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "ok")
	})
	mux.HandleFunc("/who", func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		io.WriteString(w, name)
	})
	// Handshakes that haproxy aborts (the impostor's) are expected.
	s.srv = &http.Server{Handler: mux, ErrorLog: log.New(io.Discard, "", 0), TLSConfig: &tls.Config{
		Certificates: []tls.Certificate{cert}, ClientCAs: clients, ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS12,
	}}
	go s.srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { s.srv.Close() })
	return s
}

func (s *apiServer) endpoint() *pb.Endpoint { return s.endpointAs(s.name) }

func (s *apiServer) endpointAs(name string) *pb.Endpoint {
	host, port, _ := net.SplitHostPort(s.addr)
	n, _ := strconv.Atoi(port)
	return ep(name, host, uint32(n))
}

func (s *apiServer) checks() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for k, v := range s.checkCNs {
		out[k] = v
	}
	return out
}

// syncBuffer collects haproxy's output.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// runHAProxy runs the container of the plan's pod as a process: its
// command, its working directory, the host's haproxy binary. It is stopped
// (with every worker, by process group) at the test's end.
func runHAProxy(t *testing.T, plan *host.Plan) *syncBuffer {
	t.Helper()
	bin := haproxyBinary(t)
	c := plan.Pods[0].Containers[0]
	if c.Command[0] != "haproxy" {
		t.Fatalf("the container runs %q, not haproxy", c.Command[0])
	}
	cmd := exec.Command(bin, append(c.Command[1:], c.Args...)...)
	cmd.Dir = c.WorkingDir
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM) // the master stops its workers
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			t.Errorf("haproxy did not stop on SIGTERM")
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // leftover workers of the group, if any
		<-exited
		if t.Failed() {
			t.Logf("haproxy output:\n%s", logs.String())
		}
	})
	return logs
}

// client connects to the frontend as an API client does, trusting the
// cluster CA.
type client struct {
	t    *testing.T
	addr string
	tls  *tls.Config
}

func newClient(t *testing.T, p *pb.ClusterPKI, port uint32) *client {
	cfg, err := tlsutil.ClientConfig(nil, p.Cas[vocab.ClusterCA].CertPem, "")
	if err != nil {
		t.Fatal(err)
	}
	return &client{t: t, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))), tls: cfg}
}

// who asks a new connection which API server answers.
func (c *client) who() (string, error) {
	hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: c.tls, DisableKeepAlives: true}}
	resp, err := hc.Get("https://" + c.addr + "/who")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// spread makes n connections and counts the answers by API server.
func (c *client) spread(t *testing.T, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for i := 0; i < n; i++ {
		name, err := c.who()
		if err != nil {
			t.Fatalf("connection %d through the ingress: %v", i, err)
		}
		got[name]++
	}
	return got
}

// conn is one long-lived connection through the ingress.
type conn struct {
	tc *tls.Conn
	r  *bufio.Reader
}

func (c *client) dial() *conn {
	c.t.Helper()
	tc, err := tls.Dial("tcp", c.addr, c.tls)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { tc.Close() })
	return &conn{tc: tc, r: bufio.NewReader(tc)}
}

// who writes a request on the connection and reads the answer.
func (c *conn) who() (string, error) {
	if _, err := io.WriteString(c.tc, "GET /who HTTP/1.1\r\nHost: kubernetes\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func serverStates(ctx context.Context, paths host.Paths) (map[string]ServerStatus, error) {
	servers, err := Servers(ctx, paths)
	if err != nil {
		return nil, err
	}
	out := map[string]ServerStatus{}
	for _, s := range servers {
		out[s.Name] = s
	}
	return out, nil
}

// waitStates waits until every named server is up (true) or down (false)
// and returns how long it took.
func waitStates(t *testing.T, paths host.Paths, timeout time.Duration, want map[string]bool) time.Duration {
	t.Helper()
	start := time.Now()
	testutil.Eventually(t, timeout, fmt.Sprintf("haproxy server states %v", want), func() error {
		got, err := serverStates(context.Background(), paths)
		if err != nil {
			return err
		}
		for name, up := range want {
			s, ok := got[name]
			if !ok {
				return fmt.Errorf("no server %s in %v", name, got)
			}
			if s.Up() != up {
				return fmt.Errorf("server %s is %s (%s: %s)", name, s.Status, s.Check, s.Detail)
			}
		}
		return nil
	})
	return time.Since(start)
}

func writePlan(t *testing.T, as *pb.Assignment, paths host.Paths) *host.Plan {
	t.Helper()
	plan := render(t, as, paths)
	if _, err := plan.WriteFiles(); err != nil {
		t.Fatal(err)
	}
	return plan
}

func freeLoopbackPort(t *testing.T) uint32 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint32(ln.Addr().(*net.TCPAddr).Port)
}

// dialLoop dials the frontend and completes a TLS handshake (which the
// API server behind answers) without pause until stopped, counting
// failures: a reload must refuse no connection.
func dialLoop(c *client) (stop func() (attempts int, failures []error)) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	var n int
	var errs []error
	wg.Add(1)
	go func() {
		defer wg.Done()
		d := &net.Dialer{Timeout: 2 * time.Second}
		for {
			select {
			case <-done:
				return
			default:
			}
			n++
			tc, err := tls.DialWithDialer(d, "tcp", c.addr, c.tls)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			tc.Close()
		}
	}()
	return func() (int, []error) {
		close(done)
		wg.Wait()
		return n, errs
	}
}

// TestHAProxy runs the rendered configuration with the real haproxy in
// front of fake API servers: traffic, health checks verified against the
// cluster CA, reloads that keep connections and server states, a rejected
// configuration, and Probe.
func TestHAProxy(t *testing.T) {
	haproxyBinary(t)
	ctx := context.Background()
	// A long cluster name makes the master socket's absolute path longer
	// than a socket address holds (see dialUnix).
	cluster := "a-cluster-with-a-name-long-enough-for-the-socket-path"
	p, err := pki.NewClusterPKI(cluster, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	certs := testcluster.IngressCerts(t, p, cluster+"-ingress-0")
	other, _ := newPKI(t, "other")
	paths := host.Paths{Root: t.TempDir(), Cluster: cluster, Component: certs.Component}
	if n := len(paths.Config(MasterSocket)); n <= maxSocketPath {
		t.Fatalf("the socket path is %d bytes: the test means to exceed %d", n, maxSocketPath)
	}

	a := startAPIServer(t, p, "cp-a", "127.0.0.1")
	b := startAPIServer(t, p, "cp-b", "127.0.0.1")
	// An impostor: a real API server certificate, of another cluster.
	impostor := startAPIServer(t, other, "impostor", "127.0.0.1")
	port := freeLoopbackPort(t)
	as := assignment(p, certs, port, a.endpoint(), b.endpoint(), impostor.endpoint())
	plan := writePlan(t, as, paths)

	start := time.Now()
	logs := runHAProxy(t, plan)
	c := newClient(t, p, port)
	testutil.Eventually(t, 10*time.Second, "Probe through haproxy", func() error { return Probe(ctx, as, "127.0.0.1") })
	t.Logf("haproxy started: Probe ok after %s", time.Since(start).Round(time.Millisecond))
	d := waitStates(t, paths, 10*time.Second, map[string]bool{"cp-a": true, "cp-b": true, "impostor": false})
	t.Logf("impostor down %s later", d.Round(time.Millisecond))

	t.Run("health checks verify the cluster CA with the health certificate", func(t *testing.T) {
		st, err := serverStates(ctx, paths)
		if err != nil {
			t.Fatal(err)
		}
		if s := st["impostor"]; s.Check != "L6RSP" || !strings.Contains(s.Detail, "SSL") {
			t.Errorf("impostor: %s %s %q, want a certificate failure", s.Status, s.Check, s.Detail)
		}
		if n := impostor.checks(); len(n) > 0 {
			t.Errorf("the impostor answered /readyz %v: haproxy sent the check to an untrusted server", n)
		}
		for _, s := range []*apiServer{a, b} {
			got := s.checks()
			if got[vocab.IngressHealthUser] == 0 || got[""] > 0 {
				t.Errorf("%s: /readyz requests by client CN %v, want all from %s", s.name, got, vocab.IngressHealthUser)
			}
		}
	})

	t.Run("traffic reaches every healthy API server", func(t *testing.T) {
		got := c.spread(t, 20)
		if got["cp-a"] == 0 || got["cp-b"] == 0 || got["impostor"] > 0 || len(got) != 2 {
			t.Errorf("20 connections went to %v", got)
		}
	})

	t.Run("Probe", func(t *testing.T) {
		if err := Probe(ctx, as, "127.0.0.1"); err != nil {
			t.Fatal(err)
		}
		wrong := proto.Clone(as).(*pb.Assignment)
		wrong.CaCerts[vocab.ClusterCA] = other.Cas[vocab.ClusterCA].CertPem
		err := Probe(ctx, wrong, "127.0.0.1")
		var unknown x509.UnknownAuthorityError
		if err == nil || !errors.As(err, &unknown) {
			t.Errorf("Probe with another cluster's CA: %v, want an unknown authority error", err)
		}
		closed := proto.Clone(as).(*pb.Assignment)
		closed.Component.Spec.Ports["apiserver"] = freeLoopbackPort(t)
		if err := Probe(ctx, closed, "127.0.0.1"); err == nil {
			t.Errorf("Probe of a port nobody listens on succeeded")
		}
	})

	t.Run("an API server failing readyz is taken out", func(t *testing.T) {
		b.failing.Store(true)
		d := waitStates(t, paths, 10*time.Second, map[string]bool{"cp-b": false})
		t.Logf("cp-b down %s after its /readyz failed", d.Round(time.Millisecond))
		if got := c.spread(t, 20); got["cp-a"] != 20 {
			t.Errorf("20 connections with cp-b down went to %v", got)
		}
		a.failing.Store(true)
		waitStates(t, paths, 10*time.Second, map[string]bool{"cp-a": false})
		if err := Probe(ctx, as, "127.0.0.1"); err == nil {
			t.Errorf("Probe succeeded with every API server down")
		} else {
			t.Logf("Probe with every API server down: %v", err)
		}
		a.failing.Store(false)
		b.failing.Store(false)
		d = waitStates(t, paths, 10*time.Second, map[string]bool{"cp-a": true, "cp-b": true})
		t.Logf("both back up %s after /readyz recovered", d.Round(time.Millisecond))
		testutil.Eventually(t, 5*time.Second, "Probe after recovery", func() error { return Probe(ctx, as, "127.0.0.1") })
	})

	// The long-lived connection of the reload tests, and which API server
	// it reached.
	long := c.dial()
	first, err := long.who()
	if err != nil {
		t.Fatal(err)
	}
	keep := map[string]*apiServer{"cp-a": b, "cp-b": a}[first] // the API server that stays
	cp := startAPIServer(t, p, "cp-c", "127.0.0.2")
	moved := startAPIServer(t, p, "moved", "127.0.0.2")

	t.Run("a reload that removes the connection's API server keeps the connection", func(t *testing.T) {
		// cp-c is added while it does not serve yet (as a replica whose
		// informers have not synced): it must get no connection before
		// its checks pass.
		cp.failing.Store(true)
		as2 := assignment(p, certs, port, keep.endpoint(), cp.endpoint(), impostor.endpoint())
		plan2 := render(t, as2, paths)
		changed, err := plan2.WriteFiles()
		if err != nil || !changed {
			t.Fatalf("writing the new configuration: changed %v, %v", changed, err)
		}
		stop := dialLoop(c)
		time.Sleep(100 * time.Millisecond)
		start := time.Now()
		if err := Reload(ctx, paths); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		time.Sleep(100 * time.Millisecond)
		n, failures := stop()
		t.Logf("reload took %s; %d connections during it, %d refused", took.Round(time.Millisecond), n, len(failures))
		if len(failures) > 0 || n < 3 {
			t.Errorf("connections during the reload: %d of %d failed: %v", len(failures), n, failures)
		}
		if b, err := os.ReadFile(paths.Config(ServerStateFile)); err != nil || string(b) != EmptyServerState {
			t.Errorf("the server state file after the reload: %q %v, want it empty again", b, err)
		}

		if got, err := long.who(); err != nil || got != first {
			t.Fatalf("the long-lived connection after the reload: %q, %v; want an answer from %s", got, err, first)
		}
		procs, err := showProc(ctx, paths.Config(MasterSocket))
		if err != nil || len(procs.workers) != 1 || len(procs.oldWorkers) != 1 {
			t.Errorf("show proc: %+v %v; want one worker and the old one serving the long connection", procs, err)
		}
		st, err := serverStates(ctx, paths)
		if err != nil || len(st) != 3 || st[first].Name != "" {
			t.Errorf("servers after the reload: %v %v; want cp-c, %s and impostor", st, err, keep.name)
		}
		if st["cp-c"].Up() {
			t.Errorf("cp-c, new and not ready, is %s right after the reload: a new server must start down", st["cp-c"].Status)
		}
		if got := c.spread(t, 20); got["cp-c"] > 0 {
			t.Errorf("cp-c, not ready, got %d of 20 connections after the reload: %v", got["cp-c"], got)
		}
		time.Sleep(3 * time.Second) // checks run; it still fails them
		if got := c.spread(t, 20); got["cp-c"] > 0 {
			t.Errorf("cp-c, still not ready, got %d of 20 connections: %v", got["cp-c"], got)
		}
		cp.failing.Store(false)
		d := waitStates(t, paths, 10*time.Second, map[string]bool{"cp-c": true})
		t.Logf("cp-c up %s after it became ready", d.Round(time.Millisecond))
		got := c.spread(t, 20)
		if got[first] > 0 || got[keep.name] == 0 || got["cp-c"] == 0 {
			t.Errorf("20 new connections went to %v; want %s and cp-c only", got, keep.name)
		}
		if got, err := long.who(); err != nil || got != first {
			t.Errorf("the long-lived connection, again: %q, %v", got, err)
		}
	})

	t.Run("a reload keeps down servers down, and a moved one down until checked", func(t *testing.T) {
		cp.failing.Store(true)
		waitStates(t, paths, 10*time.Second, map[string]bool{"cp-c": false})
		// The API server that stays moves: same name, a new address.
		as3 := assignment(p, certs, port, moved.endpointAs(keep.name), cp.endpoint(), impostor.endpoint())
		writePlan(t, as3, paths)
		moved.failing.Store(true)
		keepHits := keep.hits.Load()
		start := time.Now()
		if err := Reload(ctx, paths); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		// cp-c was down and stays down, and the server at its new address,
		// not ready yet, is new to haproxy: down until its checks pass.
		st, err := serverStates(ctx, paths)
		if err != nil || st["cp-c"].Up() || st[keep.name].Up() {
			t.Errorf("after the reload: cp-c %+v, %s %+v, %v; want both down", st["cp-c"], keep.name, st[keep.name], err)
		}
		if n := moved.hits.Load(); n > 0 {
			t.Errorf("the new address of %s, not ready, got %d connections", keep.name, n)
		}
		moved.failing.Store(false)
		d := waitStates(t, paths, 10*time.Second, map[string]bool{keep.name: true})
		got := c.spread(t, 20)
		t.Logf("reload took %s; %s up at its new address %s later; the next 20 connections went to %v", took.Round(time.Millisecond), keep.name, d.Round(time.Millisecond), got)
		if got["moved"] != 20 {
			t.Errorf("20 connections went to %v; want all to the new address of %s (cp-c is down)", got, keep.name)
		}
		if keep.hits.Load() != keepHits {
			t.Errorf("the old address of %s still gets connections", keep.name)
		}
		if st, err := serverStates(ctx, paths); err != nil || st["cp-c"].Up() {
			t.Errorf("cp-c after the reload: %+v %v", st["cp-c"], err)
		}
		cp.failing.Store(false)
	})

	t.Run("a rejected configuration leaves the running one", func(t *testing.T) {
		good, err := os.ReadFile(paths.Config(ConfigFile))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(paths.Config(ConfigFile), append(good, "  no-such-keyword 1\n"...), 0o644); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err = Reload(ctx, paths)
		if !errors.Is(err, ErrConfigRejected) {
			t.Fatalf("Reload of a broken configuration: %v, want ErrConfigRejected", err)
		}
		t.Logf("Reload of a broken configuration, %s: %v", time.Since(start).Round(time.Millisecond), err)
		if err := Probe(ctx, as, "127.0.0.1"); err != nil {
			t.Errorf("the ingress stopped serving after a rejected reload: %v", err)
		}
		if err := os.WriteFile(paths.Config(ConfigFile), good, 0o644); err != nil {
			t.Fatal(err)
		}
		start = time.Now()
		if err := Reload(ctx, paths); err != nil {
			t.Errorf("Reload of the good configuration again: %v", err)
		}
		t.Logf("Reload of the good configuration again: %s", time.Since(start).Round(time.Millisecond))
		if got, err := long.who(); err != nil || got != first {
			t.Errorf("the long-lived connection after three reloads: %q, %v", got, err)
		}
	})

	t.Run("old workers leave with their last connection", func(t *testing.T) {
		long.tc.Close()
		testutil.Eventually(t, 10*time.Second, "no old worker", func() error {
			procs, err := showProc(ctx, paths.Config(MasterSocket))
			if err != nil {
				return err
			}
			if len(procs.oldWorkers) > 0 || len(procs.workers) != 1 {
				return fmt.Errorf("workers %v, old workers %v", procs.workers, procs.oldWorkers)
			}
			return nil
		})
	})

	if strings.Contains(logs.String(), "[ALERT]") && !strings.Contains(logs.String(), "no-such-keyword") {
		t.Errorf("haproxy alerts besides the rejected configuration:\n%s", logs.String())
	}
}

// TestReloadWithoutHAProxy: nothing to reload when nothing runs, even with
// a stale socket file.
func TestReloadWithoutHAProxy(t *testing.T) {
	paths := host.Paths{Root: t.TempDir(), Cluster: "demo", Component: "demo-ingress-0"}
	if err := Reload(context.Background(), paths); err != nil {
		t.Errorf("Reload without a config dir: %v", err)
	}
	if err := os.MkdirAll(paths.ConfigDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", paths.Config(MasterSocket))
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // leaves the socket file, nobody listening
	if err := Reload(context.Background(), paths); err != nil {
		t.Errorf("Reload with a stale socket: %v", err)
	}
	if _, err := Servers(context.Background(), paths); err == nil {
		t.Errorf("Servers without haproxy succeeded")
	}
}

// TestRenderedConfigIsValid has haproxy check rendered configurations
// with IPv6 and host name addresses, and none.
func TestRenderedConfigIsValid(t *testing.T) {
	bin := haproxyBinary(t)
	p, certs := newPKI(t, "demo")
	for name, servers := range map[string][]*pb.Endpoint{
		"mixed": {ep("demo-cp-0", "10.0.0.1", 30100), ep("demo-cp-1", "fd00::2", 30100), ep("demo-cp-2", "hv-3.example.invalid", 30100)},
		"none":  nil,
	} {
		paths := host.Paths{Root: t.TempDir(), Cluster: "demo", Component: "demo-ingress-0"}
		writePlan(t, assignment(p, certs, 30000, servers...), paths)
		out, err := exec.Command(bin, "-c", "-f", paths.Config(ConfigFile)).CombinedOutput()
		if err != nil {
			cfg, _ := os.ReadFile(paths.Config(ConfigFile))
			t.Errorf("%s: haproxy -c: %v\n%s\n%s", name, err, out, cfg)
		}
		warnings := strings.Count(string(out), "[WARNING]") - strings.Count(string(out), "could not resolve address")
		if warnings > 0 {
			t.Errorf("%s: haproxy -c warns:\n%s", name, out)
		}
	}
}
