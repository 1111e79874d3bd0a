package worker

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/kubeconfig"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/certificate"
)

// A CA rotation reaching a node: the kubelet's own kubeconfig is made to
// trust the new bundle (once), a kubelet certificate of the signing CA
// holds the generation, and one of another CA is asked for again (here
// with no API server, so the ask fails, and the generation is not held).
func TestSyncTrust(t *testing.T) {
	c := testConfig(t, "127.0.0.1:1")
	w := &Worker{cfg: c, logger: testLogger(t), state: &state{}}
	oldCA, _ := newTestCA(t)
	newCA, _ := newTestCA(t)
	if err := os.MkdirAll(c.path(kubeletCertDir), 0o700); err != nil {
		t.Fatal(err)
	}
	kc, err := kubeconfig.WithToken("demo", "https://127.0.0.1:1", oldCA.CertPem, "u", "t")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.path(kubeletKubeconfig), kc, 0o600); err != nil {
		t.Fatal(err)
	}
	kubeletCert := func(ca *pb.KeyPair) {
		t.Helper()
		kp, err := tlsutil.Issue(ca, tlsutil.CertOptions{CommonName: "system:node:w1", Organizations: []string{"system:nodes"},
			Usages: []tlsutil.Usage{tlsutil.UsageClient}, Validity: time.Hour}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		store, err := certificate.NewFileStore(kubeletClientPair, c.path(kubeletCertDir), c.path(kubeletCertDir), "", "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.Update(kp.CertPem, kp.KeyPem); err != nil {
			t.Fatal(err)
		}
	}
	kubeletCert(oldCA)
	bundle := append(append([]byte{}, oldCA.CertPem...), newCA.CertPem...)
	wc := &pb.WorkerConfig{Address: "10.200.0.2/24", ClusterCaPem: bundle, SignerCaPem: oldCA.CertPem, TrustGeneration: 1}

	restart, holds, err := w.syncTrust(context.Background(), wc)
	if err != nil || !restart || !holds {
		t.Fatalf("stage 1: restart %v, holds %v, err %v; want a restart for the new bundle", restart, holds, err)
	}
	cfg, err := clientcmd.LoadFromFile(c.path(kubeletKubeconfig))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Clusters["demo"].CertificateAuthorityData; string(got) != string(bundle) {
		t.Errorf("the kubelet's kubeconfig trusts %q, want the bundle", got)
	}
	if restart, holds, err := w.syncTrust(context.Background(), wc); err != nil || restart || !holds {
		t.Errorf("again: restart %v, holds %v, err %v; want nothing to do", restart, holds, err)
	}

	// Stage 2: the new CA signs; the kubelet's certificate is of the old.
	wc.SignerCaPem, wc.TrustGeneration = newCA.CertPem, 2
	_, holds, err = w.syncTrust(context.Background(), wc)
	if err == nil || holds || !strings.Contains(err.Error(), "new kubelet-client certificate") {
		t.Errorf("stage 2 with no API server: holds %v, err %v; want the ask for a new kubelet-client certificate to fail", holds, err)
	}
	kubeletCert(newCA)
	if _, holds, err := w.syncTrust(context.Background(), wc); err != nil || !holds {
		t.Errorf("stage 2 with a certificate of the new CA: holds %v, err %v", holds, err)
	}
}
