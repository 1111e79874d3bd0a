package coordinator

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/client"
	"github.com/oneinfra/oneinfra/internal/testutil"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// settle waits until the server has written nothing for a second, and
// returns its applied index.
func settle(t *testing.T, s *Server) uint64 {
	t.Helper()
	var index uint64
	testutil.Eventually(t, 30*time.Second, "no more writes", func() error {
		before := s.AppliedIndex()
		time.Sleep(time.Second)
		if index = s.AppliedIndex(); index != before {
			return fmt.Errorf("index %d, then %d", before, index)
		}
		return nil
	})
	return index
}

func TestAgentRequestLimit(t *testing.T) {
	ctx := context.Background()
	s, cfg := bootstrapOne(t, t.TempDir())
	op := pb.NewOperatorClient(adminConn(t, cfg.DataDir, s.APIAddr()))
	agent := registerHypervisor(t, s, op, "hv-a", false)
	registerHypervisor(t, s, op, "pub", true)
	if _, err := op.Apply(ctx, &pb.ApplyRequest{Resources: []*pb.Resource{{Kind: &pb.Resource_Cluster{Cluster: &pb.Cluster{
		Metadata: &pb.ObjectMeta{Name: "demo"}, Spec: &pb.ClusterSpec{ControlPlane: &pb.ControlPlaneSpec{Replicas: ptr(int32(1))}}}}}}}); err != nil {
		t.Fatal(err)
	}
	var component string
	testutil.Eventually(t, 10*time.Second, "placed on hv-a", func() error {
		for _, c := range s.State().ComponentsOnHypervisor(nil, "hv-a") {
			component = c.Metadata.Name
			return nil
		}
		return errors.New("nothing on hv-a")
	})
	request := func(message string) *pb.ReportStatusRequest {
		return &pb.ReportStatusRequest{Hypervisor: "hv-a", Time: timestamppb.Now(),
			Components: []*pb.ComponentReport{{Component: component, Status: &pb.ComponentStatus{State: vocab.StateRunning, Message: message}}}}
	}
	report := func(message string) error {
		_, err := agent.ReportStatus(ctx, request(message))
		return err
	}
	if err := report("first"); err != nil {
		t.Fatal(err)
	}
	index := settle(t, s)
	hv := s.State().Hypervisor(nil, "hv-a")
	comp := s.State().Component(nil, component)
	raftDB := filepath.Join(cfg.DataDir, "raft", "raft.db")
	dbBefore, err := os.Stat(raftDB)
	if err != nil {
		t.Fatal(err)
	}

	// Five 3 MiB reports are refused, naming the limit; nothing is written.
	big := request(strings.Repeat("x", 3<<20))
	for range 5 {
		_, err := agent.ReportStatus(ctx, big)
		if code(err) != codes.ResourceExhausted {
			t.Fatalf("a 3 MiB report: %v, want ResourceExhausted", err)
		}
		for _, want := range []string{"/oneinfra.v1.Agent/ReportStatus", fmt.Sprintf("request of %d bytes", proto.Size(big)), "limit of 262144 bytes (256 KiB)"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("refusal %q does not name %q", err, want)
			}
		}
	}
	time.Sleep(time.Second)
	dbAfter, err := os.Stat(raftDB)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("5 reports of 3 MiB refused: raft index %d → %d, raft.db %d → %d bytes", index, s.AppliedIndex(), dbBefore.Size(), dbAfter.Size())
	if got := s.AppliedIndex(); got != index {
		t.Errorf("raft index moved from %d to %d", index, got)
	}
	if dbAfter.Size() != dbBefore.Size() {
		t.Errorf("raft.db grew from %d to %d bytes", dbBefore.Size(), dbAfter.Size())
	}
	if got := s.State().Hypervisor(nil, "hv-a"); !proto.Equal(got, hv) {
		t.Errorf("hypervisor changed: %v, was %v", got, hv)
	}
	if got := s.State().Component(nil, component); !proto.Equal(got, comp) {
		t.Errorf("component changed: %v, was %v", got.Status, comp.Status)
	}

	// A normal report still works.
	if err := report("second"); err != nil {
		t.Fatalf("a normal report after the refused ones: %v", err)
	}
	if got := s.State().Component(nil, component).Status.Message; got != "second" {
		t.Errorf("component message %q, want second", got)
	}

	// The operator's calls are not an agent's: a request beyond 256 KiB
	// is read (and here refused for what it says).
	_, err = op.Apply(ctx, &pb.ApplyRequest{CreateOnly: true, Resources: []*pb.Resource{{Source: strings.Repeat("s", 1<<20),
		Kind: &pb.Resource_Cluster{Cluster: &pb.Cluster{Metadata: &pb.ObjectMeta{Name: "demo"}, Spec: &pb.ClusterSpec{}}}}}})
	if code(err) != codes.FailedPrecondition {
		t.Errorf("a 1 MiB Apply: %v, want FailedPrecondition (already exists)", err)
	}
}

// The attacker of TestUnauthenticatedFlood runs in a process of its own
// (TestFloodAttacker), so that the memory this one measures is the
// server's.
const (
	floodAddrEnv   = "ONEINFRA_TEST_FLOOD_ADDR"
	floodCAHashEnv = "ONEINFRA_TEST_FLOOD_CA_HASH"
)

// floodReport is what the attacker did and how the server answered.
type floodReport struct {
	RawConns, RawHeld         int
	GRPCConns, GRPCConnsReady int
	Bootstraps, Watches       int
	BootstrapCodes            map[string]int
	WatchCodes                map[string]int
	WatchesHeld               int
}

// memory is the server process's live heap (after GC) and goroutine
// stacks, its goroutines and its RSS.
type memory struct {
	heap       uint64
	goroutines int
	rss        string
}

func measure() memory {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	rss := "?"
	if kib, err := testutil.RSSKiB("self"); err == nil {
		rss = fmt.Sprintf("%d kB", kib)
	}
	return memory{heap: m.HeapAlloc + m.StackInuse, goroutines: runtime.NumGoroutine(), rss: rss}
}

func (m memory) String() string {
	return fmt.Sprintf("heap and stacks %.1f MiB, %d goroutines, RSS %s", float64(m.heap)/(1<<20), m.goroutines, m.rss)
}

// healthWithout checks the server's health from ip without a certificate.
func healthWithout(s *Server, caHash, ip string) error {
	conn, err := client.DialTLS([]string{s.APIAddr()}, tlsutil.PinnedClientConfig(caHash, ""), testutil.DialFrom(net.ParseIP(ip)))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

// floodLimit is how much the server's live heap and stacks may grow while
// it holds everything the flood left it (without connlimit: 220 MiB).
const floodLimit = 16 << 20

func TestUnauthenticatedFlood(t *testing.T) {
	ctx := context.Background()
	s, cfg := bootstrapOne(t, t.TempDir())
	op := pb.NewOperatorClient(adminConn(t, cfg.DataDir, s.APIAddr()))
	caHash, err := tlsutil.CAHash(s.CAPEM())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.Version(ctx, &pb.VersionRequest{}); err != nil {
		t.Fatal(err)
	}
	before := measure()

	attacker := exec.Command(os.Args[0], "-test.run=^TestFloodAttacker$", "-test.v")
	attacker.Env = append(os.Environ(), floodAddrEnv+"="+s.APIAddr(), floodCAHashEnv+"="+caHash)
	attacker.Stderr = os.Stderr
	stdin, err := attacker.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := attacker.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := attacker.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = attacker.Process.Kill(); _ = attacker.Wait() })
	var report floodReport
	lines := bufio.NewScanner(stdout)
	for lines.Scan() {
		if j, ok := strings.CutPrefix(lines.Text(), "HOLDING "); ok {
			if err := json.Unmarshal([]byte(j), &report); err != nil {
				t.Fatal(err)
			}
			break
		}
		t.Log("attacker: " + lines.Text())
	}
	if report.RawConns == 0 {
		t.Fatal("the attacker ended before its flood")
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()

	// Holding all it could, from 127.0.0.1 without a certificate.
	during := measure()
	t.Logf("flood from 127.0.0.1: %d connections that never handshake, %d held; %d gRPC connections, %d connected; "+
		"%d Bootstrap calls: %v; %d health watches: %v, %d held open",
		report.RawConns, report.RawHeld, report.GRPCConns, report.GRPCConnsReady,
		report.Bootstraps, report.BootstrapCodes, report.Watches, report.WatchCodes, report.WatchesHeld)
	t.Logf("server before the flood: %v; holding what it left: %v", before, during)
	if during.heap > before.heap+floodLimit {
		t.Errorf("the live heap and stacks grew by %.1f MiB under the flood, more than %d MiB", float64(during.heap-before.heap)/(1<<20), floodLimit>>20)
	}
	if report.GRPCConnsReady > 16 || report.WatchesHeld > 32 || report.RawHeld > 256 {
		t.Errorf("the flood holds more than connlimit.Default allows: %+v", report)
	}

	// Clients are served meanwhile: the operator from the same address,
	// a machine registering from another one; a call without a
	// certificate from the flooding address is refused.
	if _, err := op.Version(ctx, &pb.VersionRequest{}); err != nil {
		t.Errorf("the operator during the flood: %v", err)
	}
	tok, err := op.CreateToken(ctx, &pb.CreateTokenRequest{Kind: TokenHypervisor})
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := tlsutil.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := tlsutil.CreateCSR(key, "hv-2", nil)
	if err != nil {
		t.Fatal(err)
	}
	boot, err := client.DialTLS([]string{s.APIAddr()}, tlsutil.PinnedClientConfig(caHash, ""), testutil.DialFrom(net.ParseIP("127.0.0.2")))
	if err != nil {
		t.Fatal(err)
	}
	defer boot.Close()
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := pb.NewBootstrapClient(boot).RegisterHypervisor(rctx, &pb.RegisterHypervisorRequest{Token: tok.Token, Name: "hv-2",
		Spec: &pb.HypervisorSpec{Address: "10.0.0.2", PortRange: "30000-30099"}, CsrPem: csr}); err != nil {
		t.Errorf("registering from 127.0.0.2 during the flood: %v", err)
	}
	if err := healthWithout(s, caHash, "127.0.0.1"); err == nil {
		t.Error("a call without a certificate from the flooding address was served")
	}

	// Once the attacker is gone, its address is served again.
	stdin.Close()
	if err := attacker.Wait(); err != nil {
		t.Errorf("attacker: %v", err)
	}
	testutil.Eventually(t, 20*time.Second, "127.0.0.1 served again", func() error { return healthWithout(s, caHash, "127.0.0.1") })
	t.Logf("server after the flood: %v", measure())
}

// TestFloodAttacker floods the server TestUnauthenticatedFlood names, from
// 127.0.0.1 without a certificate, prints what it got, and holds it until
// its stdin closes.
func TestFloodAttacker(t *testing.T) {
	addr := os.Getenv(floodAddrEnv)
	if addr == "" {
		t.Skip("TestUnauthenticatedFlood runs it")
	}
	conf := tlsutil.PinnedClientConfig(os.Getenv(floodCAHashEnv), "")
	r := floodReport{RawConns: 2000, GRPCConns: 64, Bootstraps: 10000, Watches: 20000,
		BootstrapCodes: map[string]int{}, WatchCodes: map[string]int{}}

	// Connections that never finish their handshake: half send nothing,
	// half the start of a ClientHello.
	var raw []net.Conn
	for i := range r.RawConns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			_, _ = c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00})
		}
		raw = append(raw, c)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range raw {
		wg.Go(func() {
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
				mu.Lock()
				r.RawHeld++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, c := range raw {
		c.Close()
	}

	// gRPC connections, and calls over those that connect.
	var conns []*grpc.ClientConn
	for range r.GRPCConns {
		conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(conf)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if testutil.Connected(conn) {
			conns = append(conns, conn)
		}
	}
	r.GRPCConnsReady = len(conns)
	if len(conns) == 0 {
		t.Fatal("no connection")
	}
	ctx := context.Background()
	count := func(codes map[string]int, err error) {
		mu.Lock()
		codes[status.Code(err).String()]++
		mu.Unlock()
	}
	work := make(chan int)
	for range 256 {
		wg.Go(func() {
			for i := range work {
				c := pb.NewBootstrapClient(conns[i%len(conns)])
				_, err := c.RegisterHypervisor(ctx, &pb.RegisterHypervisorRequest{Token: "abcdef.0123456789abcdef", Name: fmt.Sprint("hv-", i)})
				count(r.BootstrapCodes, err)
			}
		})
	}
	for i := range r.Bootstraps {
		work <- i
	}
	close(work)
	wg.Wait()
	var held []context.CancelFunc // the watches that stay open
	work = make(chan int)
	for range 256 {
		wg.Go(func() {
			for i := range work {
				wctx, cancel := context.WithCancel(ctx)
				w, err := healthpb.NewHealthClient(conns[i%len(conns)]).Watch(wctx, &healthpb.HealthCheckRequest{})
				if err == nil {
					_, err = w.Recv()
				}
				count(r.WatchCodes, err)
				if err != nil {
					cancel()
					continue
				}
				mu.Lock()
				held = append(held, cancel)
				mu.Unlock()
			}
		})
	}
	for i := range r.Watches {
		work <- i
	}
	close(work)
	wg.Wait()
	r.WatchesHeld = len(held)

	j, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("HOLDING %s\n", j)
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, cancel := range held {
		cancel()
	}
}
