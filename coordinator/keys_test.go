package coordinator

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/coordinator/pki"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/testutil"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
)

// keyRequests makes a key per name and returns a certificate request of
// each (as an agent does) and the public keys, by name.
func keyRequests(t testing.TB, names []string) (csrs, pubs map[string][]byte) {
	t.Helper()
	csrs, pubs = map[string][]byte{}, map[string][]byte{}
	for _, name := range names {
		key, _, err := tlsutil.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		if csrs[name], err = tlsutil.CreateCSR(key, name, nil); err != nil {
			t.Fatal(err)
		}
		if pubs[name], err = tlsutil.CSRPublicKey(csrs[name]); err != nil {
			t.Fatal(err)
		}
	}
	return csrs, pubs
}

// giveKeys does what an agent does with an assignment whose component has
// no spare key set at the coordinator: it submits a new one.
func giveKeys(ctx context.Context, t testing.TB, agent pb.AgentClient, hypervisor string, as *pb.Assignment) error {
	if as.Deleting || as.Orphaned || as.SpareKeys || len(as.KeyNames) == 0 {
		return nil
	}
	csrs, _ := keyRequests(t, as.KeyNames)
	_, err := agent.SubmitKeys(ctx, &pb.SubmitKeysRequest{Hypervisor: hypervisor, Component: as.Component.Metadata.Name, CsrPem: csrs})
	if code(err) == codes.FailedPrecondition {
		return nil // an assignment older than the coordinator's spare set
	}
	return err
}

// certsIssued reports whether an assignment has every certificate whose
// key its agent makes.
func certsIssued(as *pb.Assignment) bool {
	for _, name := range as.KeyNames {
		if as.Certs[name] == nil {
			return false
		}
	}
	return true
}

// issuedFor reports whether every certificate of certs is for the key of
// its name in pubs.
func issuedFor(certs map[string]*pb.KeyPair, pubs map[string][]byte) error {
	if len(certs) != len(pubs) {
		return fmt.Errorf("%d certificates for %d keys", len(certs), len(pubs))
	}
	for name, kp := range certs {
		if len(kp.KeyPem) != 0 {
			return fmt.Errorf("%s comes with a private key", name)
		}
		cert, err := tlsutil.ParseCertPEM(kp.CertPem)
		if err != nil {
			return err
		}
		if !bytes.Equal(cert.RawSubjectPublicKeyInfo, pubs[name]) {
			return fmt.Errorf("%s is not for the key given", name)
		}
	}
	return nil
}

// TestComponentKeysFromAgents: a component's certificates are issued for
// the keys its agent gave, and only its own agent's, each key used once;
// every malformed, foreign or replayed submission is refused and changes
// nothing.
func TestComponentKeysFromAgents(t *testing.T) {
	ctx := context.Background()
	s, cfg := bootstrapOne(t, t.TempDir())
	op := pb.NewOperatorClient(adminConn(t, cfg.DataDir, s.APIAddr()))
	hvA := registerHypervisor(t, s, op, "hv-a", false)
	hvB := registerHypervisor(t, s, op, "hv-bb", false)
	if err := createCluster(ctx, op, "demo"); err != nil {
		t.Fatal(err)
	}
	var comp *pb.Component
	testutil.Eventually(t, 10*time.Second, "control plane placed", func() error {
		if comp = s.State().Component(nil, "demo-cp-0"); comp == nil {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	owner, other, ownerName := hvA, hvB, "hv-a"
	if comp.Spec.Hypervisor != "hv-a" {
		owner, other, ownerName = hvB, hvA, "hv-bb"
	}
	as := getAssignment(t, owner, ownerName, "demo-cp-0")
	delete(as.Certs, vocab.SignerCACert)
	if len(as.Certs) != 0 || as.SpareKeys || len(as.KeyNames) != len(pki.KeyNames(resources.RoleControlPlane)) {
		t.Fatalf("a new replica's assignment: %d certificates, spare %v, key names %v", len(as.Certs), as.SpareKeys, as.KeyNames)
	}
	names := as.KeyNames
	before := s.State().ComponentCerts(nil, "demo-cp-0")

	csrs, pubs := keyRequests(t, names)
	tamper := func(f func(map[string][]byte)) map[string][]byte {
		c := map[string][]byte{}
		for k, v := range csrs {
			c[k] = v
		}
		f(c)
		return c
	}
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weakCSR, err := tlsutil.CreateCSR(weak, "x", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what   string
		agent  pb.AgentClient
		hv     string
		csrs   map[string][]byte
		code   codes.Code
		substr string
	}{
		{"another hypervisor's component", other, map[pb.AgentClient]string{hvA: "hv-a", hvB: "hv-bb"}[other], csrs, codes.PermissionDenied, "is not on hypervisor"},
		{"acting for the owner", other, ownerName, csrs, codes.PermissionDenied, "may not act for"},
		{"a certificate missing", owner, ownerName, tamper(func(m map[string][]byte) { delete(m, vocab.SchedulerCert) }), codes.InvalidArgument, "no request for"},
		{"a certificate not its own", owner, ownerName, tamper(func(m map[string][]byte) { m["admin"] = csrs[vocab.SchedulerCert] }), codes.InvalidArgument, "not a certificate of the component"},
		{"one key twice", owner, ownerName, tamper(func(m map[string][]byte) { m[vocab.SchedulerCert] = csrs[vocab.APIServerCert] }), codes.InvalidArgument, "the same key as"},
		{"a forged signature", owner, ownerName, tamper(func(m map[string][]byte) {
			b := bytes.Clone(m[vocab.SchedulerCert])
			b[len(b)/2] ^= 1
			m[vocab.SchedulerCert] = b
		}), codes.InvalidArgument, "csr_pem[" + vocab.SchedulerCert + "]"},
		{"a weak key", owner, ownerName, tamper(func(m map[string][]byte) { m[vocab.SchedulerCert] = weakCSR }), codes.InvalidArgument, "too small"},
		{"an oversized request", owner, ownerName, tamper(func(m map[string][]byte) { m[vocab.SchedulerCert] = bytes.Repeat([]byte("A"), maxKeyRequest+1) }), codes.InvalidArgument, "over"},
	} {
		_, err := c.agent.SubmitKeys(ctx, &pb.SubmitKeysRequest{Hypervisor: c.hv, Component: "demo-cp-0", CsrPem: c.csrs})
		if code(err) != c.code || !bytes.Contains([]byte(err.Error()), []byte(c.substr)) {
			t.Errorf("%s: %v, want %v saying %q", c.what, err, c.code, c.substr)
		}
	}
	if !proto.Equal(before, s.State().ComponentCerts(nil, "demo-cp-0")) {
		t.Fatal("a refused submission changed the component's certificates")
	}

	if _, err := owner.SubmitKeys(ctx, &pb.SubmitKeysRequest{Hypervisor: ownerName, Component: "demo-cp-0", CsrPem: csrs}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "certificates issued for the keys", func() error {
		as = getAssignment(t, owner, ownerName, "demo-cp-0")
		delete(as.Certs, vocab.SignerCACert)
		return issuedFor(as.Certs, pubs)
	})
	if as.SpareKeys || len(as.KeyHashes) != len(names) {
		t.Errorf("after the first set: spare %v, %d key hashes, want none spare and %d", as.SpareKeys, len(as.KeyHashes), len(names))
	}
	// The keys are used: given again (a replay) they are refused.
	if _, err := owner.SubmitKeys(ctx, &pb.SubmitKeysRequest{Hypervisor: ownerName, Component: "demo-cp-0", CsrPem: csrs}); code(err) != codes.InvalidArgument {
		t.Errorf("keys given twice: %v, want InvalidArgument", err)
	}
	next, nextPubs := keyRequests(t, names)
	if _, err := owner.SubmitKeys(ctx, &pb.SubmitKeysRequest{Hypervisor: ownerName, Component: "demo-cp-0", CsrPem: next}); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.SubmitKeys(ctx, &pb.SubmitKeysRequest{Hypervisor: ownerName, Component: "demo-cp-0", CsrPem: tamper(func(map[string][]byte) {})}); code(err) != codes.FailedPrecondition {
		t.Errorf("a second spare set: %v, want FailedPrecondition", err)
	}
	cc := s.State().ComponentCerts(nil, "demo-cp-0")
	for name, pub := range nextPubs {
		if !bytes.Equal(cc.SpareKeys[name], pub) {
			t.Errorf("spare key %s not recorded", name)
		}
	}
	if err := issuedFor(cc.Certs, pubs); err != nil {
		t.Errorf("the spare set changed the certificates in use: %v", err)
	}
	for _, kp := range cc.Certs {
		if len(kp.KeyPem) > 0 {
			t.Error("the coordinator's state holds a component's private key")
		}
	}
}
