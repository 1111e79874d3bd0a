package coordinator

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/coordinator/pki"
	"github.com/oneinfra/oneinfra/coordinator/state"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/testutil"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// rollingLab is a coordinator with fake agents on three private
// hypervisors and one public (returned by hypervisor), and a cluster of
// replicas replicas Ready.
func rollingLab(t *testing.T, replicas int32) (*Server, pb.OperatorClient, map[string]*fakeAgent) {
	t.Helper()
	ctx := context.Background()
	s, cfg := bootstrapOne(t, t.TempDir())
	op := pb.NewOperatorClient(adminConn(t, cfg.DataDir, s.APIAddr()))
	agents := map[string]*fakeAgent{}
	for i, name := range []string{"hv-a", "hv-b", "hv-c", "pub-1"} {
		spec := &pb.HypervisorSpec{Address: fmt.Sprintf("10.0.0.%d", i+1), PortRange: "30000-30099"}
		if name == "pub-1" {
			spec.Public, spec.PublicAddress = true, "203.0.113.1"
		}
		agents[name] = runFakeAgent(t, s, registerHypervisorSpec(t, s, op, name, spec), name, false)
	}
	if _, err := op.Apply(ctx, &pb.ApplyRequest{Resources: []*pb.Resource{{Source: "test", Kind: &pb.Resource_Cluster{Cluster: &pb.Cluster{
		Metadata: &pb.ObjectMeta{Name: "demo"}, Spec: &pb.ClusterSpec{ControlPlane: &pb.ControlPlaneSpec{Replicas: &replicas}},
	}}}}}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, "Ready", func() error {
		if c := s.State().Cluster(nil, "demo"); c.GetStatus().GetPhase() != resources.PhaseReady {
			return fmt.Errorf("phase %s", c.GetStatus().GetPhase())
		}
		return nil
	})
	return s, op, agents
}

// backdate issues every certificate of the cluster's components again,
// the same (for the same key) but as if eight months ago (2/3 of the
// default year), so that all are due now.
func backdate(t *testing.T, s *Server, cluster string) {
	t.Helper()
	backdateBy(t, s, cluster, 8*730*time.Hour)
}

// backdateBy is backdate as if issued age ago.
func backdateBy(t *testing.T, s *Server, cluster string, age time.Duration) {
	t.Helper()
	st := s.State()
	p := st.ClusterPKI(nil, cluster)
	past := time.Now().Add(-age)
	cmd := &pb.PlaceCommand{Cluster: cluster, Time: timestamppb.Now()}
	for _, comp := range st.ComponentsOfCluster(nil, cluster) {
		certs := proto.Clone(st.ComponentCerts(nil, comp.Metadata.Name)).(*pb.ComponentCerts)
		for name, kp := range certs.Certs {
			cert, err := tlsutil.ParseCertPEM(kp.CertPem)
			if err != nil {
				t.Fatal(err)
			}
			var ca *pb.KeyPair
			for _, c := range p.Cas {
				if ca == nil && bytes.Equal(cert.RawIssuer, mustParse(t, c.CertPem).RawSubject) {
					ca = c
				}
			}
			opts := tlsutil.CertOptions{CommonName: cert.Subject.CommonName, Organizations: cert.Subject.Organization,
				DNSNames: cert.DNSNames, IPs: cert.IPAddresses, Validity: pki.LeafValidity}
			for _, u := range cert.ExtKeyUsage {
				opts.Usages = append(opts.Usages, map[x509.ExtKeyUsage]tlsutil.Usage{x509.ExtKeyUsageServerAuth: tlsutil.UsageServer, x509.ExtKeyUsageClientAuth: tlsutil.UsageClient}[u])
			}
			certPEM, err := tlsutil.IssueFor(ca, cert.RawSubjectPublicKeyInfo, opts, past)
			if err != nil {
				t.Fatalf("%s %s: %v", comp.Metadata.Name, name, err)
			}
			certs.Certs[name] = &pb.KeyPair{CertPem: certPEM}
		}
		cmd.Certs = append(cmd.Certs, certs)
	}
	if _, err := s.raftApply(PlaceType, cmd); err != nil {
		t.Fatal(err)
	}
}

func mustParse(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	cert, err := tlsutil.ParseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// serial is the serial number of a component's named certificate in use.
func serial(t *testing.T, st *state.Store, component, name string) string {
	t.Helper()
	cert, err := tlsutil.ParseCertPEM(st.ComponentCerts(nil, component).GetCerts()[name].GetCertPem())
	if err != nil {
		t.Fatalf("%s %s: %v", component, name, err)
	}
	return cert.SerialNumber.String()
}

// checkRolling checks the rolling renewal in one state: at most one
// replica renews at a time; a replica's assignment carries its renewed
// set only while no ingress is assigned the replica or has it up; while
// one renews, every other one is up in the ingress.
func checkRolling(s *Server, st *state.Store) error {
	var renewingNow []string
	ingressAPIs := map[string]bool{}
	up := map[string]bool{}
	for _, comp := range st.ComponentsOfCluster(nil, "demo") {
		if comp.Spec.Role != resources.RoleIngress || comp.Metadata.DeletionTimestamp != nil {
			continue
		}
		as, err := s.assignments(st, nil, comp.Spec.Hypervisor, []string{comp.Metadata.Name})
		if err != nil {
			return err
		}
		for _, api := range as[0].ApiServers {
			ingressAPIs[api.Name] = true
		}
		for _, b := range comp.GetStatus().GetBackends() {
			up[b] = true
		}
	}
	var cps []*pb.Component
	for _, comp := range st.ComponentsOfCluster(nil, "demo") {
		if comp.Spec.Role == resources.RoleControlPlane && comp.Metadata.DeletionTimestamp == nil {
			cps = append(cps, comp)
		}
	}
	for _, comp := range cps {
		certs := st.ComponentCerts(nil, comp.Metadata.Name)
		if !renewing(certs) {
			continue
		}
		renewingNow = append(renewingNow, comp.Metadata.Name)
		if ingressAPIs[comp.Metadata.Name] {
			return fmt.Errorf("%s renews and the ingress is still assigned it", comp.Metadata.Name)
		}
		as, err := s.assignments(st, nil, comp.Spec.Hypervisor, []string{comp.Metadata.Name})
		if err != nil {
			return err
		}
		if as[0].CertGeneration == certs.Generation+1 && up[comp.Metadata.Name] {
			return fmt.Errorf("%s is handed its renewed certificates while the ingress has it up", comp.Metadata.Name)
		}
	}
	if len(renewingNow) > 1 {
		return fmt.Errorf("%v renew at once", renewingNow)
	}
	for _, sum := range certificateSummaries(st, st.Cluster(nil, "demo"), st.ComponentsOfCluster(nil, "demo"), time.Now()) {
		if slices.Contains(renewingNow, sum.Component) && sum.Renewal == "" {
			return fmt.Errorf("describe shows no renewal of %s: %v (certs generation %d, renewed %d, released %v)", sum.Component, sum, st.ComponentCerts(nil, sum.Component).GetGeneration(), len(st.ComponentCerts(nil, sum.Component).GetRenewed()), st.ComponentCerts(nil, sum.Component).GetReleased())
		}
	}
	for _, comp := range cps {
		if len(renewingNow) == 1 && comp.Metadata.Name != renewingNow[0] && !up[comp.Metadata.Name] {
			return fmt.Errorf("%s renews while %s is not up in the ingress", renewingNow[0], comp.Metadata.Name)
		}
	}
	return nil
}

// watchRolling runs checkRolling on the state every few milliseconds
// until the test ends, and fails the test at the first state that breaks
// it; it returns how many states it checked so far.
func watchRolling(t *testing.T, s *Server) func() int {
	ctx, cancel := context.WithCancel(context.Background())
	var n atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if err := checkRolling(s, s.State().View()); err != nil {
				t.Error(err)
				return
			}
			n.Add(1)
			sleep(ctx, 5*time.Millisecond)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return func() int { return int(n.Load()) }
}

// A three-replica cluster whose certificates are due renews them one
// replica at a time: the ingress drops the replica, the replica runs its
// new generation, the ingress takes it back, then the next one goes; the
// ingress's certificates are issued again in place.
func TestRollingCertRenewal(t *testing.T) {
	s, _, _ := rollingLab(t, 3)
	st := s.State()
	var replicas []string
	for _, comp := range st.ComponentsOfCluster(nil, "demo") {
		if comp.Spec.Role == resources.RoleControlPlane {
			replicas = append(replicas, comp.Metadata.Name)
		}
	}
	ingress := resources.ComponentName("demo", resources.RoleIngress, 0)
	before := map[string]string{ingress: serial(t, st, ingress, vocab.IngressHealthCert)}
	for _, r := range replicas {
		before[r] = serial(t, st, r, vocab.APIServerCert)
	}

	checked := watchRolling(t, s)
	backdate(t, s, "demo")
	testutil.Eventually(t, 60*time.Second, "every replica renewed", func() error {
		st := s.State()
		for _, r := range replicas {
			if certs := st.ComponentCerts(nil, r); certs.GetGeneration() != 1 || renewing(certs) {
				return fmt.Errorf("%s at generation %d, renewing %v", r, certs.GetGeneration(), renewing(certs))
			}
		}
		return nil
	})
	st = s.State()
	for name, old := range before {
		cert := vocab.APIServerCert
		if name == ingress {
			cert = vocab.IngressHealthCert
		}
		if now := serial(t, st, name, cert); now == old {
			t.Errorf("%s: %s serial %s unchanged", name, cert, old)
		}
	}
	// /metrics has the new expiry.
	tracked := trackedCerts(st)
	for _, r := range replicas {
		want := mustParse(t, st.ComponentCerts(nil, r).Certs[vocab.APIServerCert].CertPem).NotAfter
		if !slices.ContainsFunc(tracked, func(c trackedCert) bool {
			return c.owner == "component/"+r && c.name == vocab.APIServerCert && c.notAfter.Equal(want)
		}) {
			t.Errorf("no tracked certificate %s of %s expires %s", vocab.APIServerCert, r, want)
		}
	}
	// The events tell the order: each replica renewed before the next
	// one starts.
	var order, cpOrder []string
	for _, e := range st.Events(nil, "demo") {
		if e.Reason != "RenewingCertificates" && e.Reason != "CertificatesRenewed" {
			continue
		}
		for _, name := range append([]string{ingress}, replicas...) {
			if strings.Contains(e.Message, name+" ") {
				order = append(order, e.Reason+" "+name)
				if name != ingress {
					cpOrder = append(cpOrder, e.Reason+" "+name)
				}
			}
		}
	}
	if len(cpOrder) != 2*len(replicas) || len(order) != len(cpOrder)+1 {
		t.Fatalf("renewal events %q, want one start and one end per replica and one for the ingress", order)
	}
	for i := 0; i < len(cpOrder); i += 2 {
		name := strings.Fields(cpOrder[i])[1]
		if cpOrder[i] != "RenewingCertificates "+name || cpOrder[i+1] != "CertificatesRenewed "+name {
			t.Errorf("renewal events %q: %q not followed by its end", cpOrder, cpOrder[i])
		}
	}
	t.Logf("%d states checked; events %q", checked(), order)

	// Nothing is due any more: planning again changes no certificate.
	if err := s.reconcileClusters(time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, r := range replicas {
		if certs := s.State().ComponentCerts(nil, r); certs.Generation != 1 || renewing(certs) {
			t.Errorf("%s renewed again: generation %d", r, certs.Generation)
		}
	}
}

// A due replica whose agent gives no keys for its next certificates holds
// back no other: the others renew, it waits, and renews once keys come.
func TestRenewalGoesOnWithoutOneAgentsKeys(t *testing.T) {
	s, _, agents := rollingLab(t, 3)
	replicas, _ := componentsOf(s, "demo", resources.RoleControlPlane)
	generations := func(want map[string]int) error {
		for _, r := range replicas {
			if certs := s.State().ComponentCerts(nil, r.Metadata.Name); int(certs.GetGeneration()) != want[r.Metadata.Name] || renewing(certs) {
				return fmt.Errorf("%s at generation %d (renewing %v), want %d", r.Metadata.Name, certs.GetGeneration(), renewing(certs), want[r.Metadata.Name])
			}
		}
		return nil
	}
	spares := func() error {
		for _, r := range replicas {
			if len(s.State().ComponentCerts(nil, r.Metadata.Name).GetSpareKeys()) == 0 {
				return fmt.Errorf("%s has no spare keys", r.Metadata.Name)
			}
		}
		return nil
	}
	testutil.Eventually(t, 15*time.Second, "spare keys of every replica", spares)
	// A first round uses the spare keys; the private agents give no more.
	for _, r := range replicas {
		agents[r.Spec.Hypervisor].withhold.Store(true)
	}
	backdate(t, s, "demo")
	want := map[string]int{}
	for _, r := range replicas {
		want[r.Metadata.Name] = 1
	}
	testutil.Eventually(t, 60*time.Second, "every replica renewed once", func() error { return generations(want) })
	// The replica that went first would go first again (they tie): its
	// agent still gives nothing, the others' do.
	var first *pb.Component
	for _, e := range s.State().Events(nil, "demo") {
		for _, r := range replicas {
			if first == nil && e.Reason == "RenewingCertificates" && strings.Contains(e.Message, r.Metadata.Name+" ") {
				first = r
			}
		}
	}
	for _, r := range replicas {
		agents[r.Spec.Hypervisor].withhold.Store(r == first)
	}
	backdateBy(t, s, "demo", 11*730*time.Hour) // a month left: a blocked renewal warns

	for _, r := range replicas {
		if r != first {
			want[r.Metadata.Name] = 2
		}
	}
	testutil.Eventually(t, 60*time.Second, "the others renewed again", func() error { return generations(want) })
	blocked := false
	for _, e := range s.State().Events(nil, "demo") {
		blocked = blocked || (e.Reason == "RenewalBlocked" && strings.Contains(e.Message, first.Metadata.Name+" ") && strings.Contains(e.Message, first.Spec.Hypervisor+" gives the keys"))
	}
	if !blocked {
		t.Errorf("no RenewalBlocked event says %s waits for the keys of %s", first.Metadata.Name, first.Spec.Hypervisor)
	}
	agents[first.Spec.Hypervisor].withhold.Store(false)
	want[first.Metadata.Name] = 2
	testutil.Eventually(t, 60*time.Second, first.Metadata.Name+" renewed once its keys came", func() error { return generations(want) })
}

// A single replica has no other API server to serve while it restarts:
// its due certificates move it as a drain would, make before break.
func TestSingleReplicaRenewsByMoving(t *testing.T) {
	s, _, _ := rollingLab(t, 1)
	old := resources.ComponentName("demo", resources.RoleControlPlane, 0)
	backdate(t, s, "demo")
	testutil.Eventually(t, 60*time.Second, "the replica moved", func() error {
		live, deleting := componentsOf(s, "demo", resources.RoleControlPlane)
		if len(live) == 0 && slices.ContainsFunc(deleting, func(c *pb.Component) bool { return c.Metadata.Name == old }) {
			t.Fatalf("the old replica is being removed with no other one live")
		}
		if s.State().Component(nil, old) != nil || len(live) != 1 {
			var ev []string
			for _, e := range s.State().Events(nil, "demo") {
				ev = append(ev, e.Reason+": "+e.Message)
			}
			return fmt.Errorf("live on %v, %d deleting; %q", hostsOf(live), len(deleting), ev)
		}
		return nil
	})
	live, _ := componentsOf(s, "demo", resources.RoleControlPlane)
	for _, comp := range live {
		if _, due := newDueCheck(s.State().ClusterPKI(nil, "demo"), time.Now()).soonest(s.State().ComponentCerts(nil, comp.Metadata.Name).GetCerts()); due {
			t.Errorf("replacement %s has certificates due", comp.Metadata.Name)
		}
	}
	found := false
	for _, e := range s.State().Events(nil, "demo") {
		found = found || (e.Reason == "Replacing" && strings.Contains(e.Message, "("+reasonCertsDue+")"))
	}
	if !found {
		t.Errorf("no Replacing event says %q", reasonCertsDue)
	}
}
