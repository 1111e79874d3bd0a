package keystore

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/coordinator/pki"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// TestKeysStayAndComplete: keys are made here (0600), certificates issued
// for their requests are completed with them, a certificate for a key
// made elsewhere is refused, and unused keys go once past the grace.
func TestKeysStayAndComplete(t *testing.T) {
	dir := Dir(filepath.Join(t.TempDir(), "keys"))
	names := pki.KeyNames(resources.RoleIngress)
	csrs, err := dir.New("demo-ingress-0", names)
	if err != nil {
		t.Fatal(err)
	}
	p, err := pki.NewClusterPKI("demo", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pubs := map[string][]byte{}
	for name, csr := range csrs {
		if pubs[name], err = tlsutil.CSRPublicKey(csr); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	issued, err := pki.IngressCerts(p, "demo-ingress-0", nil, pubs, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	full, err := dir.Complete(issued.Certs)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if _, _, err := tlsutil.ParseKeyPair(full[name]); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if len(issued.Certs[name].KeyPem) != 0 {
			t.Errorf("%s: Complete changed its input", name)
		}
	}
	entries, _ := os.ReadDir(string(dir))
	for _, e := range entries {
		if info, _ := e.Info(); info.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", e.Name(), info.Mode().Perm())
		}
	}
	if info, _ := os.Stat(string(dir)); info.Mode().Perm() != 0o700 {
		t.Errorf("key dir mode %v, want 0700", info.Mode().Perm())
	}

	// A certificate for a key this host never made cannot be completed.
	foreign, err := tlsutil.Issue(p.Cas[vocab.ClientCA], tlsutil.CertOptions{CommonName: "x", Usages: []tlsutil.Usage{tlsutil.UsageClient}, Validity: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dir.Complete(map[string]*pb.KeyPair{"x": {CertPem: foreign.CertPem}}); !errors.Is(err, ErrNoKey) {
		t.Errorf("a foreign certificate: %v, want ErrNoKey", err)
	}

	// Within the grace nothing goes; past it only the keys not kept.
	keep := tlsutil.PublicKeyHash(pubs[vocab.AddonsCert])
	if err := dir.Prune([]string{keep}, time.Hour, time.Now()); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(string(dir)); len(entries) != len(names) {
		t.Errorf("%d keys left within the grace, want %d", len(entries), len(names))
	}
	if err := dir.Prune([]string{keep}, time.Hour, time.Now().Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(string(dir)); len(entries) != 1 || entries[0].Name() != keep+keySuffix {
		t.Errorf("after the grace: %v, want only the kept key", entries)
	}
	if _, err := dir.Complete(map[string]*pb.KeyPair{vocab.AddonsCert: issued.Certs[vocab.AddonsCert]}); err != nil {
		t.Errorf("the kept key: %v", err)
	}
}
