package coordinator

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/coordinator/pki"
	"github.com/oneinfra/oneinfra/internal/testutil"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The stages of a rotation: what is trusted and what signs at each one.
func TestRotationStages(t *testing.T) {
	now := time.Now()
	p, err := pki.NewClusterPKI("demo", now)
	if err != nil {
		t.Fatal(err)
	}
	old := p.Cas[vocab.ClusterCA]
	oldLeaf, err := tlsutil.Issue(old, tlsutil.CertOptions{CommonName: "x", Usages: []tlsutil.Usage{tlsutil.UsageServer}, Validity: time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	verifies := func(p *pb.ClusterPKI, leaf *pb.KeyPair) bool {
		pool, err := tlsutil.CertPool(pki.Trust(p)[vocab.ClusterCA])
		if err != nil {
			t.Fatal(err)
		}
		_, err = mustParse(t, leaf.CertPem).Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		return err == nil
	}
	s1, err := pki.StartRotation(p, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.StartRotation(s1, now); err == nil {
		t.Error("a second rotation started while one is under way")
	}
	newCA := s1.Rotation.Next[vocab.ClusterCA]
	newLeaf, err := tlsutil.Issue(newCA, tlsutil.CertOptions{CommonName: "x", Usages: []tlsutil.Usage{tlsutil.UsageServer}, Validity: time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	s2 := pki.NextStage(s1, now)
	s3 := pki.NextStage(s2, now)
	done := pki.NextStage(s3, now)
	for _, c := range []struct {
		name            string
		p               *pb.ClusterPKI
		stage           uint32
		gen             uint64
		signer          *pb.KeyPair
		trustOld, trust bool
	}{
		{"before", p, 0, 0, old, true, false},
		{"stage 1", s1, pki.StageTrusting, 1, old, true, true},
		{"stage 2", s2, pki.StageReissuing, 2, newCA, true, true},
		{"stage 3", s3, pki.StageDropping, 3, newCA, false, true},
		{"done", done, 0, 3, newCA, false, true},
	} {
		if c.p.GetRotation().GetStage() != c.stage || c.p.GetTrustGeneration() != c.gen {
			t.Errorf("%s: stage %d, trust generation %d; want %d, %d", c.name, c.p.GetRotation().GetStage(), c.p.GetTrustGeneration(), c.stage, c.gen)
		}
		if got := c.p.Cas[vocab.ClusterCA]; string(got.CertPem) != string(c.signer.CertPem) {
			t.Errorf("%s: signs with the wrong CA", c.name)
		}
		if got := verifies(c.p, oldLeaf); got != c.trustOld {
			t.Errorf("%s: a leaf of the old CA verifies: %v, want %v", c.name, got, c.trustOld)
		}
		if got := verifies(c.p, newLeaf); got != c.trust {
			t.Errorf("%s: a leaf of the new CA verifies: %v, want %v", c.name, got, c.trust)
		}
	}
	if len(pki.Trust(p)) != len(pki.CANames()) || len(pki.Trust(done)) != len(pki.CANames()) {
		t.Errorf("trust bundles: %d before, %d after, want %d", len(pki.Trust(p)), len(pki.Trust(done)), len(pki.CANames()))
	}
}

// `cluster rotate-ca` on a three-replica cluster: each stage rolls the
// replicas one at a time through the ingress (watchRolling), waits for the
// nodes, and at the end every certificate is of the new CAs, which alone
// are trusted.
func TestClusterCARotation(t *testing.T) {
	s, op, _ := rollingLab(t, 3)
	ctx := context.Background()
	before := s.State().ClusterPKI(nil, "demo")
	// A node joined: the rotation waits for it at each stage.
	tok, err := op.CreateToken(ctx, &pb.CreateTokenRequest{Kind: TokenWorker, Cluster: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	peer := &pb.VPNPeer{Cluster: "demo", Name: "w1", Address: "10.200.0.2", PodCidr: "10.244.1.0/24", TokenId: tok.Info.Id, Joined: timestamppb.Now()}
	if _, err := s.raftApply(JoinWorkerType, &pb.JoinWorkerCommand{Peer: peer}); err != nil {
		t.Fatal(err)
	}
	checked := watchRolling(t, s)

	resp, err := op.RotateClusterCA(ctx, &pb.RotateClusterCARequest{Cluster: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Rotation.GetStage() != pki.StageTrusting {
		t.Fatalf("rotation begun at stage %d", resp.Rotation.GetStage())
	}
	if _, err := op.RotateClusterCA(ctx, &pb.RotateClusterCARequest{Cluster: "demo"}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("second rotate-ca: %v, want FailedPrecondition", err)
	}
	if _, err := op.RotateClusterCA(ctx, &pb.RotateClusterCARequest{Cluster: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("rotate-ca of no cluster: %v, want NotFound", err)
	}
	for gen := uint64(1); gen <= 3; gen++ {
		testutil.Eventually(t, 60*time.Second, fmt.Sprintf("only node w1 waits at trust generation %d", gen), func() error {
			st := s.State()
			p := st.ClusterPKI(nil, "demo")
			if p.TrustGeneration != gen {
				return fmt.Errorf("trust generation %d", p.TrustGeneration)
			}
			if w := rotationWaiting(st, "demo", p); !slices.Equal(w, []string{"node w1"}) {
				return fmt.Errorf("waiting for %q", w)
			}
			return nil
		})
		// The node says it holds the generation (through GetWorkerConfig).
		if _, err := s.raftApply(WorkerTrustType, &pb.WorkerTrustCommand{Cluster: "demo", Name: "w1", TrustGeneration: gen}); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 30*time.Second, "rotation done", func() error {
		if r := s.State().ClusterPKI(nil, "demo").GetRotation(); r != nil {
			return fmt.Errorf("stage %d", r.Stage)
		}
		return nil
	})
	st := s.State()
	after := st.ClusterPKI(nil, "demo")
	for _, name := range pki.CANames() {
		if string(after.Cas[name].CertPem) == string(before.Cas[name].CertPem) {
			t.Errorf("CA %s not replaced", name)
		}
	}
	for _, comp := range st.ComponentsOfCluster(nil, "demo") {
		if comp.Metadata.DeletionTimestamp != nil {
			continue
		}
		certs := st.ComponentCerts(nil, comp.Metadata.Name)
		as, err := s.assignments(st, nil, comp.Spec.Hypervisor, []string{comp.Metadata.Name})
		if err != nil {
			t.Fatal(err)
		}
		for name, ca := range as[0].CaCerts {
			if string(ca) != string(after.Cas[name].CertPem) {
				t.Errorf("%s trusts %s CAs other than the new one alone", comp.Metadata.Name, name)
			}
		}
		for name, kp := range certs.Certs {
			cert := mustParse(t, kp.CertPem)
			if !slices.ContainsFunc(pki.CANames(), func(ca string) bool { return cert.CheckSignatureFrom(mustParse(t, after.Cas[ca].CertPem)) == nil }) {
				t.Errorf("%s: %s is not of a new CA", comp.Metadata.Name, name)
			}
		}
	}
	var stages []string
	for _, e := range st.Events(nil, "demo") {
		if e.Reason == "RotatingCA" || e.Reason == "RotatedCA" {
			stages = append(stages, e.Reason+" "+strings.SplitN(e.Message, ",", 2)[0])
		}
	}
	want := []string{"RotatingCA CA rotation begun: stage 1", "RotatingCA CA rotation: stage 2", "RotatingCA CA rotation: stage 3", "RotatedCA CA rotation done: the cluster trusts only its new CAs (after"}
	if len(stages) != len(want) {
		t.Fatalf("rotation events %q", stages)
	}
	for i := range want {
		if !strings.HasPrefix(stages[i], want[i]) {
			t.Errorf("rotation event %d: %q, want %q", i, stages[i], want[i])
		}
	}
	var renewals int
	for _, e := range st.Events(nil, "demo") {
		if e.Reason == "RenewingCertificates" && strings.Contains(e.Message, "CA rotation") {
			renewals++
		}
	}
	if renewals != 3*3 {
		t.Errorf("%d replica renewals for the rotation, want 3 per stage", renewals)
	}
	t.Logf("%d states checked", checked())
}

// A cluster of two replicas cannot restart etcd members and keep a
// quorum: each stage moves its replicas, make before break, instead.
func TestTwoReplicaCARotationMoves(t *testing.T) {
	s, op, _ := rollingLab(t, 2)
	if _, err := op.RotateClusterCA(context.Background(), &pb.RotateClusterCARequest{Cluster: "demo"}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 90*time.Second, "rotation done", func() error {
		if r := s.State().ClusterPKI(nil, "demo").GetRotation(); r != nil {
			return fmt.Errorf("stage %d, waiting for %q", r.Stage, rotationWaiting(s.State(), "demo", s.State().ClusterPKI(nil, "demo")))
		}
		return nil
	})
	moves, restarts := 0, 0
	for _, e := range s.State().Events(nil, "demo") {
		switch {
		case e.Reason == "Replacing" && strings.Contains(e.Message, reasonCARotation):
			moves++
		case e.Reason == "RenewingCertificates":
			restarts++
		}
	}
	if moves != 3*2 || restarts != 0 {
		t.Errorf("%d moves and %d restarts for the rotation, want 2 moves per stage and no restart", moves, restarts)
	}
}
