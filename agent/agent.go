// Package agent is the hypervisor agent: it registers with the coordinator,
// watches its assignments, runs them as CRI pods with their files, and
// reports what runs. See DESIGN.md in this folder.
package agent

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/oneinfra/oneinfra/agent/addons"
	"github.com/oneinfra/oneinfra/agent/cri"
	"github.com/oneinfra/oneinfra/agent/egress"
	"github.com/oneinfra/oneinfra/agent/host"
	"github.com/oneinfra/oneinfra/agent/vpn"
	"github.com/oneinfra/oneinfra/agent/wireguard"
	"github.com/oneinfra/oneinfra/internal/client"
	"github.com/oneinfra/oneinfra/internal/gossip"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Config is what `oneinfra-agent hypervisor` is told.
type Config struct {
	Name          string
	Address       string
	Coordinators  []string
	Token, CAHash string // first start only
	Public        bool
	PublicAddress string
	CRIEndpoint   string
	DataDir       string
	RootDir       string
	PortRange     string
	MetricsAddr   string
	// JoinAddr is where a public hypervisor serves the worker join
	// endpoint; default ":7445".
	JoinAddr string
	// WireGuardPrefix starts the names of the VPN endpoints' devices
	// (default "oi-"), e.g. to tell apart hosts that share
	// /var/run/wireguard, as a lab's do.
	WireGuardPrefix string
	// GossipAddr is IP:PORT of this hypervisor's gossip member; default
	// Address:7946. GossipJoin lists members to join (other agents,
	// coordinator servers' --gossip-addr).
	GossipAddr string
	GossipJoin []string
	// GossipLocal uses loopback gossip timings (tests).
	GossipLocal bool
	// Resync is how often everything is checked again without a change
	// from the coordinator (crashed containers, probes). Default 10s.
	Resync time.Duration
	Logger *slog.Logger
}

// pendingResync is how soon a Pending component, one being removed, or an
// ingress with an API server not up yet is looked at again: soon enough
// that a new control plane is reported ready within half a second of its
// API server (cluster creation waits on it).
const pendingResync = 500 * time.Millisecond

// heartbeat is the longest time between two reports, even unchanged.
const heartbeat = 30 * time.Second

// Agent is a running hypervisor agent.
type Agent struct {
	cfg     Config
	logger  *slog.Logger
	store   *store
	id      *identity
	conn    *client.Swappable // dialed again when the certificate is renewed
	members *client.Members
	api     pb.AgentClient
	runtime *cri.Runtime
	drivers map[string]driver

	// Public hypervisors only: clusters' VPN endpoints and the add-ons
	// applied through their ingresses.
	hub    *vpn.Hub
	egress *egress.Proxies // with hub: the clusters' API servers' way in
	addons map[string]*addons.Applier

	lastReport     *pb.ReportStatusRequest
	lastReportTime time.Time
	lastSync       atomic.Pointer[time.Time]
	gossip         atomic.Pointer[gossip.Member]
	metrics        *agentMetrics
	// events wait for the next report (only sync touches them).
	events []*pb.AgentEvent
	// joinCert is the join endpoint's serving certificate, once it has one.
	joinCert atomic.Pointer[tlsutil.Identity]
	// held is the digest of the assignments last fetched whole (a
	// WatchAssignments answer's): later watches wake only when they change.
	held atomic.Pointer[string]
	// identityErr says why the agent can no longer call the coordinator
	// (its certificate expired), for readiness; nil while it can.
	identityErr atomic.Pointer[error]
	// What the coordinator said to trust and be signed by (syncTrust): the
	// CA that signs, the trust generation held, and a wake for a renewal
	// that cannot wait.
	signer       atomic.Pointer[x509.Certificate]
	servingMoves atomic.Bool
	trustGen     atomic.Uint64
	renewNow     chan struct{}
}

// maxPendingEvents bounds the events kept for the next report; the oldest
// go first.
const maxPendingEvents = 16

// event tells the coordinator, in the next report, what the agent did by
// itself to a component.
func (a *Agent) event(component, typ, reason, message string) {
	a.events = append(a.events, &pb.AgentEvent{Component: component, Type: typ, Reason: reason, Message: message})
	a.events = a.events[max(0, len(a.events)-maxPendingEvents):]
}

// driver runs the components of one role on this host.
type driver interface {
	// plan says what the component needs on this host.
	plan(ctx context.Context, as *pb.Assignment, paths host.Paths) (*host.Plan, error)
	// synced runs after the component's pods were reconciled, with whether
	// its files changed; it adds what it observes (conditions) to status.
	synced(ctx context.Context, as *pb.Assignment, paths host.Paths, filesChanged bool, pods []cri.PodStatus, status *pb.ComponentStatus)
	// removing runs before the component's pods and files are removed.
	removing(ctx context.Context, as *pb.Assignment, paths host.Paths) error
}

// New opens the agent's state, registers it on its first start, and
// connects to containerd and the coordinator.
func New(ctx context.Context, cfg Config) (*Agent, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 10 * time.Second
	}
	switch {
	case !resources.IsDNS1123Label(cfg.Name):
		return nil, fmt.Errorf("--name: %q is not a valid hypervisor name (a DNS-1123 label)", cfg.Name)
	case cfg.Address == "":
		return nil, errors.New("--address: required")
	case len(cfg.Coordinators) == 0:
		return nil, errors.New("--coordinator: required")
	case cfg.Public && cfg.PublicAddress == "":
		return nil, errors.New("--public-address: required with --public")
	}
	a := &Agent{cfg: cfg, logger: cfg.Logger.With("hypervisor", cfg.Name), metrics: newAgentMetrics(), renewNow: make(chan struct{}, 1)}
	var err error
	if cfg.Public {
		// Made first: a bad prefix is refused before anything else is done.
		if a.hub, err = vpn.NewHub(filepath.Join(cfg.DataDir, "wireguard"), wireguard.Choose(wireguard.ProbeKernel), cfg.WireGuardPrefix); err != nil {
			return nil, fmt.Errorf("--wireguard-prefix: %w", err)
		}
		a.egress = egress.New(a.logger)
		a.addons = map[string]*addons.Applier{}
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("--data-dir: %w", err)
	}
	if a.store, err = openStore(cfg.DataDir); err != nil {
		return nil, err
	}
	if err := a.ensureIdentity(ctx); err != nil {
		a.store.close()
		return nil, err
	}
	conf, err := a.id.tlsConfig()
	if err != nil {
		a.store.close()
		return nil, err
	}
	a.members = a.knownMembers()
	conn, err := client.DialMembers(a.members, conf, client.PreferServing())
	if err != nil {
		a.store.close()
		return nil, err
	}
	a.conn = client.NewSwappable(conn)
	a.api = pb.NewAgentClient(a.conn)
	a.runtime, err = cri.Connect(ctx, cfg.CRIEndpoint, cri.Options{
		LogDir: filepath.Join(cfg.RootDir, "var/log/oneinfra/pods"), Logger: a.logger,
	})
	if err != nil {
		a.Close()
		return nil, fmt.Errorf("--cri-endpoint: %w", err)
	}
	a.drivers = newDrivers(a)
	return a, nil
}

// Close releases the agent's connections and state file.
func (a *Agent) Close() {
	if a.hub != nil {
		a.egress.Close()
		a.hub.Close()
	}
	if a.runtime != nil {
		a.runtime.Close()
	}
	if a.conn != nil {
		a.conn.Close()
	}
	a.store.close()
}

func (a *Agent) ensureIdentity(ctx context.Context) error {
	id, err := loadIdentity(a.cfg.DataDir)
	if err == nil {
		a.id = id
		return nil
	}
	id, resp, err := register(ctx, a.cfg)
	if err != nil {
		return err
	}
	if err := id.write(a.cfg.DataDir); err != nil {
		return err
	}
	servers := resp.Servers
	if err := a.store.setMeta("servers", strings.Join(servers, ",")); err != nil {
		return err
	}
	if len(resp.GossipKey) > 0 {
		if err := a.store.setMeta(metaGossipKey, hex.EncodeToString(resp.GossipKey)); err != nil {
			return err
		}
	}
	a.id = id
	a.logger.Info("registered with the coordinator", "servers", servers)
	return nil
}

// knownMembers are the coordinator servers the agent knows, with their
// IDs once a member listed them; every call teaches it the members again,
// and they are kept for the next start.
func (a *Agent) knownMembers() *client.Members {
	var ids map[string]string
	_ = json.Unmarshal([]byte(a.store.meta(metaServerIDs)), &ids)
	m := client.NewMembers(a.servers(), ids)
	m.OnChange(func(addrs []string, ids map[string]string) {
		b, _ := json.Marshal(ids)
		if err := errors.Join(a.store.setMeta("servers", strings.Join(addrs, ",")), a.store.setMeta(metaServerIDs, string(b))); err != nil {
			a.logger.Warn("keeping the coordinator's members", "err", err)
		}
	})
	return m
}

// metaServerIDs keeps the server ID at each coordinator address (JSON).
const metaServerIDs = "server-ids"

// servers are the coordinator servers the agent knows: the flag's and the
// ones the coordinator told at registration or since.
func (a *Agent) servers() []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range append(append([]string{}, a.cfg.Coordinators...), strings.Split(a.store.meta("servers"), ",")...) {
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// Run watches the assignments and keeps the host in line with them until
// ctx ends. Without a coordinator it keeps running what it has.
func (a *Agent) Run(ctx context.Context) error {
	if a.cfg.Public {
		if err := a.serveJoin(ctx); err != nil {
			return err
		}
	}
	gossipDone := make(chan struct{})
	go func() { defer close(gossipDone); a.runGossip(ctx) }()
	defer func() { <-gossipDone }()
	renewDone := make(chan struct{})
	go func() { defer close(renewDone); a.renewLoop(ctx) }()
	defer func() { <-renewDone }()
	watched := make(chan *pb.WatchAssignmentsResponse)
	go a.watch(ctx, watched)
	ticker := time.NewTicker(a.cfg.Resync)
	defer ticker.Stop()
	pending := a.sync(ctx)
	for {
		// A component on its way up or out is looked at again soon, so
		// that it is reported Running or removed without waiting for the
		// resync.
		var soon <-chan time.Time
		if pending {
			soon = time.After(pendingResync)
		}
		select {
		case <-ctx.Done():
			return nil
		case w := <-watched:
			if err := a.fetch(ctx, w); err != nil {
				a.logger.Warn("fetching assignments", "err", err)
				continue
			}
			a.held.Store(&w.Digest)
			pending = a.sync(ctx)
		case <-ticker.C:
			pending = a.sync(ctx)
		case <-soon:
			pending = a.sync(ctx)
		}
	}
}

// watch long-polls the coordinator for changes to this hypervisor's
// assignments (past the last index seen, at first).
func (a *Agent) watch(ctx context.Context, out chan<- *pb.WatchAssignmentsResponse) {
	index, _ := strconv.ParseUint(a.store.meta("index"), 10, 64)
	backoff := time.Second
	for ctx.Err() == nil {
		digest := ""
		if d := a.held.Load(); d != nil {
			digest = *d
		}
		cctx, cancel := context.WithTimeout(ctx, 70*time.Second)
		resp, err := a.api.WatchAssignments(cctx, &pb.WatchAssignmentsRequest{Hypervisor: a.cfg.Name, MinIndex: index, WaitMs: 60000, KnownDigest: digest})
		cancel()
		if err != nil {
			if status.Code(err) == codes.Unauthenticated {
				// Revoked, replaced or expired: no retry mends that.
				refused := fmt.Errorf("the coordinator refuses the agent's certificate: %s", status.Convert(err).Message())
				if prev := a.identityErr.Load(); prev == nil || (*prev).Error() != refused.Error() {
					a.logger.Error("the agent cannot call the coordinator; running what is cached", "err", refused)
				}
				a.identityErr.Store(&refused)
			}
			if ctx.Err() == nil {
				a.metrics.watchErrors.Inc()
				a.logger.Warn("watching assignments; running what is cached", "err", err, "retry", backoff)
				sleep(ctx, backoff)
				backoff = min(2*backoff, 15*time.Second)
			}
			continue
		}
		backoff = time.Second
		a.identityErr.Store(nil)
		select {
		case out <- resp:
		case <-ctx.Done():
			return
		}
		index = resp.Index
	}
}

// fetch gets the assignments whose hash changed and forgets those gone.
func (a *Agent) fetch(ctx context.Context, w *pb.WatchAssignmentsResponse) error {
	cached, err := a.store.assignments()
	if err != nil {
		return err
	}
	listed := map[string]bool{}
	var changed []string
	for _, ref := range w.Assignments {
		listed[ref.Component] = true
		if c, ok := cached[ref.Component]; !ok || c.Hash != ref.Hash {
			changed = append(changed, ref.Component)
		}
	}
	var drop []string
	for name := range cached {
		if !listed[name] {
			drop = append(drop, name)
		}
	}
	var put []*pb.Assignment
	if len(changed) > 0 {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		resp, err := a.api.GetAssignments(cctx, &pb.GetAssignmentsRequest{Hypervisor: a.cfg.Name, Components: changed})
		if err != nil {
			return err
		}
		for _, as := range resp.Assignments {
			if want := refHash(w.Assignments, as.Component.GetMetadata().GetName()); as.Hash != want {
				// Another server, behind the one that answered the
				// watch (or one change further): asked again.
				return fmt.Errorf("assignment %s: got content %s, the watch said %s", as.Component.GetMetadata().GetName(), as.Hash, want)
			}
		}
		put = resp.Assignments
	}
	if err := a.store.putAssignments(put, drop); err != nil {
		return err
	}
	return a.store.setMeta("index", strconv.FormatUint(w.Index, 10))
}

// refHash is the hash refs give the named component's assignment.
func refHash(refs []*pb.AssignmentRef, name string) string {
	for _, r := range refs {
		if r.Component == name {
			return r.Hash
		}
	}
	return ""
}

// sync reconciles every assigned component and reports; it returns
// whether a component is still Pending or being removed, an ingress has
// an API server not up (a drain waits for it to say so), or a backup is
// being taken.
func (a *Agent) sync(ctx context.Context) bool {
	start := time.Now()
	defer func() {
		now := time.Now()
		a.metrics.syncs.Inc()
		a.metrics.syncSeconds.Observe(now.Sub(start).Seconds())
		a.metrics.lastSyncUnix.Set(float64(now.Unix()))
		a.lastSync.Store(&now)
	}()
	assignments, err := a.store.assignments()
	if err != nil {
		a.logger.Error("reading cached assignments", "err", err)
		return false
	}
	byCluster := map[string][]*pb.Assignment{}
	for _, as := range assignments {
		byCluster[as.Component.Spec.Cluster] = append(byCluster[as.Component.Spec.Cluster], as)
	}
	report := &pb.ReportStatusRequest{Hypervisor: a.cfg.Name}
	for cluster, list := range byCluster {
		sort.Slice(list, func(i, j int) bool { return list[i].Component.Metadata.Name < list[j].Component.Metadata.Name })
		reports, removed := a.syncCluster(ctx, cluster, list)
		report.Components = append(report.Components, reports...)
		report.Removed = append(report.Removed, removed...)
	}
	a.removeStrayClusters(ctx, byCluster)
	if a.hub != nil {
		// An orphaned ingress keeps no VPN device.
		keep := map[string]bool{}
		for _, as := range assignments {
			if !as.Orphaned {
				keep[as.Component.Spec.Cluster] = true
			}
		}
		a.hub.RemoveExcept(keep)
		a.egress.RemoveExcept(keep)
	}
	a.metrics.components.Reset()
	pending := false
	for _, r := range report.Components {
		a.metrics.components.WithLabelValues(assignments[r.Component].GetComponent().GetSpec().GetRole(), r.Status.State).Inc()
		// A backup asked and not yet reported is looked at soon too.
		pending = pending || r.Status.State == vocab.StatePending || r.Status.State == vocab.StateRemoving || settling(assignments[r.Component], r.Status) ||
			len(r.Status.Backups) < len(assignments[r.Component].GetBackups())
	}
	a.report(ctx, report)
	return pending
}

// settling reports whether a running ingress lacks one of its assigned API
// servers among those its haproxy has up.
func settling(as *pb.Assignment, st *pb.ComponentStatus) bool {
	if as.GetComponent().GetSpec().GetRole() != resources.RoleIngress || st.State != vocab.StateRunning {
		return false
	}
	for _, api := range as.ApiServers {
		if !slices.Contains(st.Backends, api.Name) {
			return true
		}
	}
	return false
}

// syncCluster reconciles one cluster's components on this host.
func (a *Agent) syncCluster(ctx context.Context, cluster string, list []*pb.Assignment) ([]*pb.ComponentReport, []string) {
	type entry struct {
		as      *pb.Assignment
		paths   host.Paths
		drv     driver
		changed bool
		err     error
		pods    []cri.PodStatus
	}
	var entries []*entry
	var pods []cri.Pod
	for _, as := range list {
		paths, err := host.NewPaths(a.cfg.RootDir, cluster, as.Component.Metadata.Name)
		e := &entry{as: as, paths: paths}
		entries = append(entries, e)
		if err != nil {
			// Nothing of it is written, run or removed.
			e.err = fmt.Errorf("assignment refused: %w", err)
			continue
		}
		if e.drv = a.drivers[as.Component.Spec.Role]; e.drv == nil {
			e.err = fmt.Errorf("unknown role %q", as.Component.Spec.Role)
			continue
		}
		if as.Orphaned {
			// No pods: it stops, its files stay (until it is deleted).
			continue
		}
		if e.as, e.err = a.withKeys(ctx, as, paths); e.err != nil && !as.Deleting {
			continue
		}
		as = e.as
		if as.Deleting {
			// The component's pods keep running until its role lets it
			// go (an etcd member must leave its cluster first).
			if e.err = e.drv.removing(ctx, as, e.paths); e.err == nil {
				continue
			}
		}
		plan, err := e.drv.plan(ctx, as, e.paths)
		if err == nil {
			e.changed, err = plan.WriteFiles()
		}
		if err != nil {
			e.err = errors.Join(e.err, err)
			continue
		}
		pods = append(pods, plan.Pods...)
	}
	statuses, err := a.runtime.Reconcile(ctx, cluster, pods)
	if err != nil {
		a.logger.Warn("reconciling pods", "cluster", cluster, "err", err)
	} else {
		// Reconcile removed the pods of components no longer assigned
		// here (labelled ours, of this cluster); their files go too.
		keep := map[string]bool{}
		for _, as := range list {
			keep[as.Component.Metadata.Name] = true
		}
		for _, name := range removeStrayComponentDirs(a.cfg.RootDir, cluster, keep) {
			_ = a.store.setDecision(name, nil)
			a.logger.Info("removed the files of a component no longer assigned here", "cluster", cluster, "component", name)
		}
	}
	for _, st := range statuses {
		for _, e := range entries {
			if e.as.Component.Metadata.Name == st.Component {
				e.pods = append(e.pods, st)
			}
		}
	}
	var reports []*pb.ComponentReport
	var removed []string
	for _, e := range entries {
		name := e.as.Component.Metadata.Name
		if e.as.Deleting && e.err == nil && err == nil {
			if rerr := e.paths.Remove(); rerr != nil {
				e.err = rerr
			} else {
				removed = append(removed, name)
				_ = a.store.setDecision(name, nil)
				continue
			}
		}
		status := componentStatus(e.as, e.pods, e.err)
		if e.err == nil && !e.as.Deleting && !e.as.Orphaned {
			e.drv.synced(ctx, e.as, e.paths, e.changed, e.pods, status)
			// Running pods are not enough: a false condition (an etcd
			// learner not promoted, the API not answering through the
			// ingress) keeps the component Pending, saying why.
			for _, c := range status.Conditions {
				if c.Status != "True" && status.State == vocab.StateRunning {
					status.State, status.Message = vocab.StatePending, c.Type+": "+c.Message
				}
			}
		}
		reports = append(reports, &pb.ComponentReport{Component: name, Status: status})
	}
	return reports, removed
}

// componentStatus sums up a component's pods for the coordinator.
func componentStatus(as *pb.Assignment, pods []cri.PodStatus, err error) *pb.ComponentStatus {
	if as.Deleting {
		msg := "removing"
		if err != nil {
			msg = "removing: " + err.Error()
		}
		return &pb.ComponentStatus{State: vocab.StateRemoving, Message: msg}
	}
	if as.Orphaned {
		return &pb.ComponentStatus{State: vocab.StateOrphaned,
			Message: "stopped: the coordinator's state (restored from a snapshot) does not have it; its files are kept until it is deleted"}
	}
	if errors.Is(err, host.ErrWaiting) {
		return &pb.ComponentStatus{State: vocab.StatePending, Message: err.Error()}
	}
	if err != nil {
		return &pb.ComponentStatus{State: vocab.StateFailed, Message: err.Error()}
	}
	state := vocab.StateRunning
	var why []string
	for _, p := range pods {
		switch p.State {
		case cri.PodRunning:
			continue
		case cri.PodFailed:
			state = vocab.StateFailed
		default:
			if state == vocab.StateRunning {
				state = vocab.StatePending
			}
		}
		why = append(why, podMessage(p))
	}
	if len(pods) == 0 {
		state, why = vocab.StatePending, []string{"no pod yet"}
	}
	return &pb.ComponentStatus{State: state, Message: strings.Join(why, "; ")}
}

// podMessage tells why a pod is not running, with a failed container's
// last log lines.
func podMessage(p cri.PodStatus) string {
	msg := fmt.Sprintf("pod %s: %s", p.Name, p.State)
	if p.Reason != "" {
		msg += " (" + p.Reason + ")"
	}
	if p.Message != "" {
		msg += ": " + p.Message
	}
	for _, c := range p.Containers {
		if len(c.LogTail) > 0 {
			tail := c.LogTail[max(0, len(c.LogTail)-3):]
			msg += fmt.Sprintf("; %s last log: %s", c.Name, strings.Join(tail, " | "))
		}
	}
	return msg
}

// removeStrayComponentDirs removes the config, data and key dirs under root of
// the cluster's components not in keep (a component moved off this host
// while it was dead), and returns their names. Only dirs named as the
// agent names them (host.NewPaths) are touched, in the cluster's dirs.
func removeStrayComponentDirs(root, cluster string, keep map[string]bool) []string {
	dirs, err := host.ClusterDirs(root, cluster)
	if err != nil {
		return nil
	}
	var removed []string
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if !e.IsDir() || keep[e.Name()] {
				continue
			}
			paths, err := host.NewPaths(root, cluster, e.Name())
			if err != nil {
				continue
			}
			if err := paths.Remove(); err == nil && !slices.Contains(removed, e.Name()) {
				removed = append(removed, e.Name())
			}
		}
	}
	sort.Strings(removed)
	return removed
}

// removeStrayClusters removes our pods and files of clusters this host has
// no assignment for any more (a component moved away while it was down).
// A cluster label that is not a cluster name is left alone: it names no
// dir of ours.
func (a *Agent) removeStrayClusters(ctx context.Context, assigned map[string][]*pb.Assignment) {
	clusters, err := a.runtime.Clusters(ctx)
	if err != nil {
		a.logger.Warn("listing pods", "err", err)
		return
	}
	for _, c := range clusters {
		if _, ok := assigned[c]; ok {
			continue
		}
		dirs, err := host.ClusterDirs(a.cfg.RootDir, c)
		if err != nil {
			a.logger.Warn("ignoring pods of a stray cluster", "err", err)
			continue
		}
		a.logger.Info("removing pods of a cluster no longer assigned here", "cluster", c)
		if err := a.runtime.RemoveCluster(ctx, c); err != nil {
			a.logger.Warn("removing stray pods", "cluster", c, "err", err)
			continue
		}
		for _, d := range dirs {
			_ = os.RemoveAll(d)
		}
	}
}

// report sends the components' status when it changed, or as a heartbeat.
func (a *Agent) report(ctx context.Context, req *pb.ReportStatusRequest) {
	sort.Slice(req.Components, func(i, j int) bool { return req.Components[i].Component < req.Components[j].Component })
	sort.Strings(req.Removed)
	req.Events = a.events
	req.TrustGeneration = a.trustGen.Load()
	if a.lastReport != nil && proto.Equal(withoutPeerStats(a.lastReport), withoutPeerStats(req)) && time.Since(a.lastReportTime) < heartbeat {
		return
	}
	sent := proto.Clone(req).(*pb.ReportStatusRequest)
	sent.Time = timestamppb.Now()
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	resp, err := a.api.ReportStatus(cctx, sent)
	if err != nil {
		a.metrics.reports.WithLabelValues("error").Inc()
		a.logger.Warn("reporting status", "err", err)
		return
	}
	a.syncTrust(resp.GetTrust())
	a.metrics.reports.WithLabelValues("ok").Inc()
	a.events = nil
	req.Events = nil
	a.lastReport, a.lastReportTime = req, time.Now()
}

// withoutPeerStats drops what changes all the time in what VPN endpoints
// observe of their peers (handshake times, bytes): that goes with the
// heartbeat. A peer's first handshake or new address is a change.
func withoutPeerStats(req *pb.ReportStatusRequest) *pb.ReportStatusRequest {
	c := proto.Clone(req).(*pb.ReportStatusRequest)
	for _, r := range c.Components {
		for _, p := range r.GetStatus().GetVpnPeers() {
			p.RxBytes, p.TxBytes = 0, 0
			if p.LastHandshake != nil {
				p.LastHandshake = &timestamppb.Timestamp{}
			}
		}
	}
	return c
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
