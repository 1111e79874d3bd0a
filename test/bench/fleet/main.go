// Command fleet measures a three-server coordinator under a fleet of
// simulated agents: each registers with its own key and certificate,
// keeps a watch on its assignments and reports at the agents' real
// interval over gRPC with mutual TLS, as oneinfra-agent does. It prints
// the coordinator's CPU and memory at steady state, report commits per
// second, watch wakes, the time from a placement to its agent seeing it,
// and the time from the leader's death to the next accepted write, each
// figure beside its goal and a baseline measured in the same run.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/oneinfra/oneinfra/coordinator"
	"github.com/oneinfra/oneinfra/internal/client"
	"github.com/oneinfra/oneinfra/internal/testutil"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// heartbeat is the agents' report interval (agent.heartbeat).
const heartbeat = 30 * time.Second

func main() {
	agents := flag.Int("agents", envInt("AGENTS", 10000), "simulated agents (AGENTS)")
	coord := flag.String("coord", "bin/oneinfra-coord", "the oneinfra-coord binary (make build)")
	window := flag.Duration("window", 2*heartbeat, "how long steady state is measured")
	clusters := flag.Int("clusters", 100, "clusters created to time placements")
	rowsFile := flag.String("rows", "", "a file of rows the table starts with, one per line: measure, figure, goal, baseline, tab-separated (the lab's part of make bench)")
	flag.Parse()
	log.SetFlags(log.Ltime)
	b := &bench{coordBin: *coord}
	if *rowsFile != "" {
		rows, err := readRows(*rowsFile)
		if err != nil {
			log.Fatal(err)
		}
		b.rows = rows
	}
	dir, err := os.MkdirTemp("", "oneinfra-fleet-")
	if err != nil {
		log.Fatal(err)
	}
	b.dir = dir
	err = b.run(*agents, *window, *clusters)
	b.stop()
	if err != nil {
		log.Fatalf("%v (the servers' data and logs are in %s)", err, dir)
	}
	os.RemoveAll(dir)
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// bench is one run: the servers it started and the figures it took.
type bench struct {
	dir, coordBin string
	servers       []*server
	rows          []row
}

// row is one line of the table.
type row struct{ what, figure, goal, baseline string }

// readRows reads the rows of a -rows file.
func readRows(path string) ([]row, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("-rows: %w", err)
	}
	var rows []row
	for i, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 4 {
			return nil, fmt.Errorf("-rows: %s line %d: %d tab-separated fields, want 4 (measure, figure, goal, baseline)", path, i+1, len(f))
		}
		rows = append(rows, row{f[0], f[1], f[2], f[3]})
	}
	return rows, nil
}

func (b *bench) add(what, figure, goal, baseline string) {
	b.rows = append(b.rows, row{what, figure, goal, baseline})
	log.Printf("%s: %s", what, figure)
}

func (b *bench) run(agents int, window time.Duration, clusters int) error {
	ctx := context.Background()
	op, caHash, err := b.startCoordinator(ctx)
	if err != nil {
		return err
	}
	writeBase, err := writeLatency(ctx, op, 200)
	if err != nil {
		return err
	}

	f := &fleet{}
	began := time.Now()
	if err := f.register(ctx, op, caHash, agents); err != nil {
		return err
	}
	b.add("registration", fmt.Sprintf("%d agents in %s (%.0f/s)", agents, time.Since(began).Round(time.Second), float64(agents)/time.Since(began).Seconds()), "", "")
	began = time.Now()
	if err := f.connect(ctx); err != nil {
		return err
	}
	log.Printf("%d agents connected in %s; settling for one heartbeat", agents, time.Since(began).Round(time.Second))
	time.Sleep(heartbeat + 5*time.Second)

	// Steady state: every agent watching and reporting.
	cpu0, wakes0, reports0, spurious0 := b.cpu(), b.wakes(), f.reports.Load(), f.spurious.Load()
	t0 := time.Now()
	time.Sleep(window)
	secs := time.Since(t0).Seconds()
	cores := (b.cpu() - cpu0) / secs
	var rss []string
	var total float64
	for _, s := range b.servers {
		mib := s.rssMiB()
		total += mib
		rss = append(rss, fmt.Sprintf("%s %.0f", s.id, mib))
	}
	minutes := secs / 60
	b.add(fmt.Sprintf("coordinator CPU, %d agents reporting every %s", agents, heartbeat), fmt.Sprintf("%.2f cores (3 servers)", cores), "< 1 core", "")
	b.add("coordinator memory (RSS)", fmt.Sprintf("%.0f MiB (%s)", total, strings.Join(rss, ", ")), "< 1024 MiB", "")
	b.add("report commits", fmt.Sprintf("%.0f/s", float64(f.reports.Load()-reports0)/secs), "", fmt.Sprintf("%.0f/s expected (N/%s)", float64(agents)/heartbeat.Seconds(), heartbeat))
	wakes := b.wakes() - wakes0
	spurious := f.spurious.Load() - spurious0
	b.add("watch wakes on the servers", fmt.Sprintf("%.3f per agent per minute", wakes/float64(agents)/minutes), "0 from others' writes", "")
	b.add("watch answers with no change", fmt.Sprintf("%d in %s", spurious, time.Duration(secs*float64(time.Second)).Round(time.Second)), "0", "")
	if f.errors.Load() > 0 {
		log.Printf("%d failed calls, last: %v", f.errors.Load(), f.lastErr.Load())
	}

	// Placements: each cluster's components seen by their agents.
	lat, rate, err := f.placements(ctx, op, clusters)
	if err != nil {
		return err
	}
	b.add("cluster applied → its agents see their components", fmt.Sprintf("p50 %s, p99 %s (%.0f× a commit's), max %s (%d components)",
		pct(lat, 50), pct(lat, 99), float64(pct(lat, 99))/float64(max(pct(writeBase, 99), time.Millisecond)), pct(lat, 100), len(lat)), "p99 < 1s",
		fmt.Sprintf("a write's commit p50 %s, p99 %s", pct(writeBase, 50), pct(writeBase, 99)))
	b.add("placements", fmt.Sprintf("%.1f clusters/s", rate), "", "")

	failover, err := b.failover(ctx)
	if err != nil {
		return err
	}
	t := coordinator.DefaultRaftTimings
	b.add("leader killed → next write accepted", fmt.Sprintf("%s (%.1f× the heartbeat timeout)", failover.Round(time.Millisecond), failover.Seconds()/t.Heartbeat.Seconds()), "< 2s",
		fmt.Sprintf("heartbeat timeout %s", t.Heartbeat))
	b.print()
	if wakes > 0 || spurious > 0 {
		// Nothing was placed while steady: every wake came of other
		// agents' reports.
		return fmt.Errorf("agents' reports woke watches of other agents: %.0f wakes on the servers, %d answers", wakes, spurious)
	}
	return nil
}

func (b *bench) print() {
	fmt.Println()
	w := []int{0, 0, 0, 0}
	for _, r := range append([]row{{"measure", "figure", "goal", "baseline (same run)"}}, b.rows...) {
		for i, c := range []string{r.what, r.figure, r.goal, r.baseline} {
			w[i] = max(w[i], utf8.RuneCountInString(c))
		}
	}
	pad := func(c string, n int) string { return c + strings.Repeat(" ", n-utf8.RuneCountInString(c)) }
	line := func(r row) {
		fmt.Printf("| %s | %s | %s | %s |\n", pad(r.what, w[0]), pad(r.figure, w[1]), pad(r.goal, w[2]), pad(r.baseline, w[3]))
	}
	line(row{"measure", "figure", "goal", "baseline (same run)"})
	line(row{strings.Repeat("-", w[0]), strings.Repeat("-", w[1]), strings.Repeat("-", w[2]), strings.Repeat("-", w[3])})
	for _, r := range b.rows {
		line(r)
	}
}

// server is one oneinfra-coord serve process.
type server struct {
	id, api, metrics string
	cmd              *exec.Cmd
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func (b *bench) startServer(id string, extra ...string) (*server, error) {
	s := &server{id: id, api: freeAddr(), metrics: freeAddr()}
	data := filepath.Join(b.dir, id)
	logf, err := os.Create(filepath.Join(b.dir, id+".log"))
	if err != nil {
		return nil, err
	}
	args := append([]string{"serve", "--id", id, "--data-dir", data, "--api-addr", s.api, "--raft-addr", freeAddr(),
		"--metrics-addr", s.metrics, "--advertise", "127.0.0.1"}, extra...)
	s.cmd = exec.Command(b.coordBin, args...)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	b.servers = append(b.servers, s)
	return s, waitFor(60*time.Second, id+" ready", func() error {
		resp, err := http.Get("http://" + s.metrics + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})
}

// startCoordinator bootstraps one server, joins two, and returns an
// operator client with the admin credentials and the CA's hash.
func (b *bench) startCoordinator(ctx context.Context) (pb.OperatorClient, string, error) {
	s1, err := b.startServer("s1", "--bootstrap")
	if err != nil {
		return nil, "", err
	}
	conf, err := client.Load(filepath.Join(b.dir, "s1", coordinator.AdminConfFile))
	if err != nil {
		return nil, "", err
	}
	conn, err := client.Dial(client.NewMembers([]string{s1.api}, nil), []byte(conf.CertificateAuthority), conf.KeyPair())
	if err != nil {
		return nil, "", err
	}
	op := pb.NewOperatorClient(conn)
	tok, err := op.CreateToken(ctx, &pb.CreateTokenRequest{Kind: coordinator.TokenServer, Uses: 2})
	if err != nil {
		return nil, "", err
	}
	tokFile := filepath.Join(b.dir, "server-token")
	if err := os.WriteFile(tokFile, []byte(tok.Token), 0o600); err != nil {
		return nil, "", err
	}
	for _, id := range []string{"s2", "s3"} {
		if _, err := b.startServer(id, "--join", s1.api, "--token-file", tokFile, "--ca-hash", tok.CaHash); err != nil {
			return nil, "", err
		}
	}
	err = waitFor(60*time.Second, "three voters", func() error {
		resp, err := op.Members(ctx, &pb.MembersRequest{})
		if err != nil {
			return err
		}
		voters := 0
		for _, m := range resp.Members {
			if m.Reachable && m.Suffrage == "Voter" {
				voters++
			}
		}
		if voters != 3 {
			return fmt.Errorf("%d reachable voters", voters)
		}
		return nil
	})
	return op, tok.CaHash, err
}

func (b *bench) stop() {
	for _, s := range b.servers {
		if s.cmd.ProcessState == nil {
			s.cmd.Process.Kill()
			s.cmd.Wait()
		}
	}
}

// cpu is the CPU seconds the live servers have used.
func (b *bench) cpu() float64 {
	var total float64
	for _, s := range b.servers {
		if s.cmd.ProcessState != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
		if err != nil {
			continue
		}
		// Fields after the command's closing parenthesis; utime and
		// stime are the 14th and 15th of the line.
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
		utime, _ := strconv.ParseFloat(fields[11], 64)
		stime, _ := strconv.ParseFloat(fields[12], 64)
		total += (utime + stime) / 100 // USER_HZ
	}
	return total
}

func (s *server) rssMiB() float64 {
	kib, _ := testutil.RSSKiB(strconv.Itoa(s.cmd.Process.Pid))
	return float64(kib) / 1024
}

// wakes sums the servers' assignment watch wakes.
func (b *bench) wakes() float64 {
	var total float64
	for _, s := range b.servers {
		if s.cmd.ProcessState != nil {
			continue
		}
		resp, err := http.Get("http://" + s.metrics + "/metrics")
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "oneinfra_coordinator_assignment_watch_wakes_total "); ok {
				n, _ := strconv.ParseFloat(v, 64)
				total += n
			}
		}
		resp.Body.Close()
	}
	return total
}

// failover kills the leader as a crash would and times the first write
// a survivor accepts, trying every 20ms.
func (b *bench) failover(ctx context.Context) (time.Duration, error) {
	conf, err := client.Load(filepath.Join(b.dir, "s1", coordinator.AdminConfFile))
	if err != nil {
		return 0, err
	}
	tlsConf, err := tlsutil.ClientConfig(conf.KeyPair(), []byte(conf.CertificateAuthority), "")
	if err != nil {
		return 0, err
	}
	ops := map[string]pb.OperatorClient{}
	for _, s := range b.servers {
		conn, err := client.DialTLS([]string{s.api}, tlsConf)
		if err != nil {
			return 0, err
		}
		defer conn.Close()
		ops[s.id] = pb.NewOperatorClient(conn)
		if _, err := ops[s.id].Members(ctx, &pb.MembersRequest{}); err != nil { // connected before the kill
			return 0, err
		}
	}
	resp, err := ops["s1"].Members(ctx, &pb.MembersRequest{})
	if err != nil {
		return 0, err
	}
	var leader *server
	for _, m := range resp.Members {
		for _, s := range b.servers {
			if m.Leader && m.Id == s.id {
				leader = s
			}
		}
	}
	if leader == nil {
		return 0, fmt.Errorf("no leader among %v", resp.Members)
	}
	var survivors []pb.OperatorClient
	for _, s := range b.servers {
		if s != leader {
			survivors = append(survivors, ops[s.id])
		}
	}
	killed := time.Now()
	if err := leader.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return 0, err
	}
	leader.cmd.Wait()
	// A write is tried every 50ms, each given 10s: the figure is when the
	// first is acknowledged, however long it was in flight.
	acked := make(chan time.Duration, 1)
	var mu sync.Mutex
	var errs []string // what the tries met, each code once
	met := map[codes.Code]bool{}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for i := 0; cctx.Err() == nil; i++ {
		go func(op pb.OperatorClient) {
			tctx, tcancel := context.WithTimeout(cctx, 10*time.Second)
			defer tcancel()
			_, err := op.CreateToken(tctx, &pb.CreateTokenRequest{Kind: coordinator.TokenHypervisor})
			if err == nil {
				select {
				case acked <- time.Since(killed):
				default:
				}
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if c := status.Code(err); !met[c] {
				met[c] = true
				errs = append(errs, fmt.Sprintf("at %s %v", time.Since(killed).Round(100*time.Millisecond), err))
			}
		}(survivors[i%len(survivors)])
		select {
		case d := <-acked:
			mu.Lock()
			log.Printf("leader %s killed; before a write was acknowledged the tries met: %s", leader.id, strings.Join(errs, "; "))
			mu.Unlock()
			return d, nil
		case <-time.After(50 * time.Millisecond):
		}
	}
	return 0, fmt.Errorf("no write accepted within a minute of the leader's death")
}

// writeLatency times n writes one after another (tokens created).
func writeLatency(ctx context.Context, op pb.OperatorClient, n int) ([]time.Duration, error) {
	var out []time.Duration
	for range n {
		t := time.Now()
		if _, err := op.CreateToken(ctx, &pb.CreateTokenRequest{Kind: coordinator.TokenHypervisor}); err != nil {
			return nil, err
		}
		out = append(out, time.Since(t))
	}
	return out, nil
}

// pct is the p-th percentile of ds.
func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := min(len(s)-1, (len(s)*p+99)/100-1)
	return s[max(i, 0)].Round(time.Millisecond)
}

func waitFor(limit time.Duration, what string, f func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %w", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// fleet is the simulated agents.
type fleet struct {
	agents   []*agent
	reports  atomic.Int64 // reports committed
	spurious atomic.Int64 // watches answered early with nothing changed
	errors   atomic.Int64
	lastErr  atomic.Value

	mu   sync.Mutex
	seen map[string]time.Time // component → when its agent first saw it
}

// agent is one simulated hypervisor agent.
type agent struct {
	name string
	api  pb.AgentClient
}

func (f *fleet) fail(err error) {
	f.errors.Add(1)
	f.lastErr.Store(err.Error())
}

// register registers n hypervisors, one in ten public, each with a key
// it made and a certificate the coordinator signed.
func (f *fleet) register(ctx context.Context, op pb.OperatorClient, caHash string, n int) error {
	tok, err := op.CreateToken(ctx, &pb.CreateTokenRequest{Kind: coordinator.TokenHypervisor, Uses: uint32(n)})
	if err != nil {
		return err
	}
	resp, err := op.Members(ctx, &pb.MembersRequest{})
	if err != nil {
		return err
	}
	var addrs []string
	for _, m := range resp.Members {
		addrs = append(addrs, m.ApiAddress)
	}
	boot, err := client.DialTLS(addrs, tlsutil.PinnedClientConfig(caHash, ""))
	if err != nil {
		return err
	}
	defer boot.Close()
	bootAPI := pb.NewBootstrapClient(boot)
	f.agents = make([]*agent, n)
	return parallel(16, n, func(i int) error {
		name := fmt.Sprintf("hv-%05d", i)
		spec := &pb.HypervisorSpec{Address: fmt.Sprintf("10.%d.%d.%d", 100+i/65536, i/256%256, i%256), PortRange: "30000-30999"}
		if i%10 == 0 {
			spec.Public, spec.PublicAddress = true, fmt.Sprintf("198.18.%d.%d", i/256%256, i%256)
		}
		key, keyPEM, err := tlsutil.GenerateKey()
		if err != nil {
			return err
		}
		csr, err := tlsutil.CreateCSR(key, name, nil)
		if err != nil {
			return err
		}
		r, err := bootAPI.RegisterHypervisor(ctx, &pb.RegisterHypervisorRequest{Token: tok.Token, Name: name, Spec: spec, CsrPem: csr})
		if err != nil {
			return fmt.Errorf("registering %s: %w", name, err)
		}
		conf, err := tlsutil.ClientConfig(&pb.KeyPair{CertPem: r.CertPem, KeyPem: keyPEM}, r.CaPem, "")
		if err != nil {
			return err
		}
		// Each agent from an address of its own, as in a fleet (the
		// servers bound what one source may hold).
		conn, err := client.DialMembers(client.NewMembers(r.Servers, nil), conf, testutil.DialFrom(net.IPv4(127, 1, byte(i/250), byte(i%250+1))))
		if err != nil {
			return err
		}
		f.agents[i] = &agent{name: name, api: pb.NewAgentClient(conn)}
		return nil
	})
}

// connect starts every agent: a first report, then its watch and its
// heartbeats, spread over one interval.
func (f *fleet) connect(ctx context.Context) error {
	f.seen = map[string]time.Time{}
	err := parallel(64, len(f.agents), func(i int) error {
		a := f.agents[i]
		// Tried again as the agent does when the connection fails (a
		// handshake can time out while thousands connect at once).
		var err error
		for try := 0; try < 5; try++ {
			if _, err = a.api.ReportStatus(ctx, &pb.ReportStatusRequest{Hypervisor: a.name, Time: timestamppb.Now()}); status.Code(err) != codes.Unavailable {
				break
			}
			time.Sleep(time.Second)
		}
		if err != nil {
			return fmt.Errorf("%s: first report: %w", a.name, err)
		}
		f.reports.Add(1)
		go f.watch(ctx, a)
		go f.heartbeat(ctx, a)
		return nil
	})
	return err
}

func (f *fleet) heartbeat(ctx context.Context, a *agent) {
	time.Sleep(rand.N(heartbeat))
	for {
		if _, err := a.api.ReportStatus(ctx, &pb.ReportStatusRequest{Hypervisor: a.name, Time: timestamppb.Now()}); err != nil {
			f.fail(err)
		} else {
			f.reports.Add(1)
		}
		time.Sleep(heartbeat)
	}
}

// watch is the agent's loop: a blocking watch with the digest it holds,
// and the full assignments fetched when that changes.
func (f *fleet) watch(ctx context.Context, a *agent) {
	const wait = 60 * time.Second
	var index uint64
	var digest string
	for {
		began := time.Now()
		r, err := a.api.WatchAssignments(ctx, &pb.WatchAssignmentsRequest{Hypervisor: a.name, MinIndex: index, WaitMs: uint32(wait.Milliseconds()), KnownDigest: digest})
		if err != nil {
			f.fail(err)
			time.Sleep(time.Second)
			continue
		}
		if r.Digest == digest {
			if digest != "" && time.Since(began) < wait-time.Second {
				f.spurious.Add(1)
			}
			index = r.Index
			continue
		}
		now := time.Now()
		full, err := a.api.GetAssignments(ctx, &pb.GetAssignmentsRequest{Hypervisor: a.name})
		if err != nil {
			f.fail(err)
			continue
		}
		f.mu.Lock()
		for _, as := range full.Assignments {
			if _, ok := f.seen[as.Component.Metadata.Name]; !ok {
				f.seen[as.Component.Metadata.Name] = now
			}
		}
		f.mu.Unlock()
		index, digest = r.Index, r.Digest
	}
}

// placements creates n clusters of one replica, four at a time, and
// returns for each component the time from its cluster's apply being
// acknowledged (the leader then places it) to its agent seeing it, and the
// clusters placed per second.
func (f *fleet) placements(ctx context.Context, op pb.OperatorClient, n int) ([]time.Duration, float64, error) {
	applied := make([]time.Time, n)
	began := time.Now()
	err := parallel(4, n, func(i int) error {
		_, err := op.Apply(ctx, &pb.ApplyRequest{Resources: []*pb.Resource{{Source: "fleet", Kind: &pb.Resource_Cluster{Cluster: &pb.Cluster{
			Metadata: &pb.ObjectMeta{Name: fmt.Sprintf("bench-%04d", i)}, Spec: &pb.ClusterSpec{}}}}}})
		applied[i] = time.Now()
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	var lat []time.Duration
	var last time.Time
	err = waitFor(2*time.Minute, "every component seen by its agent", func() error {
		comps, err := op.Get(ctx, &pb.GetRequest{Kind: "components"})
		if err != nil {
			return err
		}
		lat, last = nil, time.Time{}
		f.mu.Lock()
		defer f.mu.Unlock()
		missing := 0
		for _, c := range comps.Components {
			i, err := strconv.Atoi(strings.TrimPrefix(c.Spec.Cluster, "bench-"))
			if err != nil || i >= n {
				continue
			}
			seen, ok := f.seen[c.Metadata.Name]
			if !ok {
				missing++
				continue
			}
			lat = append(lat, seen.Sub(applied[i]))
			if seen.After(last) {
				last = seen
			}
		}
		if missing > 0 || len(lat) < 2*n {
			return fmt.Errorf("%d components seen, %d not yet", len(lat), missing)
		}
		return nil
	})
	return lat, float64(n) / last.Sub(began).Seconds(), err
}

// parallel runs f(0..n-1) on at most width goroutines and returns the
// first error.
func parallel(width, n int, f func(i int) error) error {
	var next atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	for range width {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || first.Load() != nil {
					return
				}
				if err := f(i); err != nil {
					first.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	wg.Wait()
	if err, ok := first.Load().(error); ok {
		return err
	}
	return nil
}
