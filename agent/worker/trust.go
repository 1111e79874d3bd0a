package worker

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/oneinfra/oneinfra/internal/renewal"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	certv1 "k8s.io/api/certificates/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/certificate"
	"k8s.io/client-go/util/certificate/csr"
)

// A cluster's CA rotation reaches its nodes through their configuration
// (WorkerConfig.trust_generation): new CA bundles, which the worker
// writes where the kubelet reads them (its bootstrap kubeconfig, its
// client CA, and the kubeconfig the kubelet wrote itself), and the
// signing CA its kubelet's certificates must come from. A kubelet whose
// client or serving certificate is of another CA gets new ones, for keys
// made here, through CSRs asked with its own credentials (approved as
// its own rotations are), written where the kubelet keeps them. The
// kubelet then restarts, and the worker says at its next configuration
// request that it holds the generation.

// Names of the kubelet's certificate pairs in its --cert-dir (the
// kubelet's own file store names).
const (
	kubeletClientPair  = "kubelet-client"
	kubeletServingPair = "kubelet-server"
)

// csrTimeout bounds the wait for a CSR's certificate (approved in
// seconds), during which the tunnel is not looked after.
const csrTimeout = 30 * time.Second

// syncTrust brings the kubelet's CA bundles and certificates to wc's
// trust generation. It reports whether the kubelet must restart for
// them, and whether it holds the generation once it has.
func (w *Worker) syncTrust(ctx context.Context, wc *pb.WorkerConfig) (restart, holds bool, err error) {
	restart, err = w.rewriteKubeconfigCA(wc.GetClusterCaPem())
	if err != nil {
		return false, false, fmt.Errorf("kubelet kubeconfig: %w", err)
	}
	if len(wc.GetSignerCaPem()) == 0 {
		return restart, true, nil
	}
	signer, err := tlsutil.ParseCertPEM(wc.GetSignerCaPem())
	if err != nil {
		return restart, false, fmt.Errorf("signing CA: %w", err)
	}
	ip, err := nodeIP(wc)
	if err != nil {
		return restart, false, err
	}
	holds = true
	for _, pair := range []string{kubeletClientPair, kubeletServingPair} {
		store, err := certificate.NewFileStore(pair, w.cfg.path(kubeletCertDir), w.cfg.path(kubeletCertDir), "", "")
		if err != nil {
			return restart, false, err
		}
		current, err := store.Current()
		var noCert *certificate.NoCertKeyError
		switch {
		case errors.As(err, &noCert):
			// Not asked for yet: the kubelet asks the signing CA of now.
			continue
		case err != nil:
			return restart, false, fmt.Errorf("%s certificate: %w", pair, err)
		case current.Leaf != nil && current.Leaf.CheckSignatureFrom(signer) == nil:
			continue
		}
		w.logger.Info("the kubelet's certificate is of another CA (CA rotation): asking for a new one", "certificate", pair)
		certPEM, keyPEM, err := w.askKubeletCert(ctx, pair, ip)
		if err != nil {
			return restart, false, fmt.Errorf("new %s certificate: %w", pair, err)
		}
		// The controller-manager that signed it may not sign with the new
		// CA yet: kept only once it does (asked again at the next refresh).
		if cert, err := tlsutil.ParseCertPEM(certPEM); err != nil || cert.CheckSignatureFrom(signer) != nil {
			holds = false
			continue
		}
		if _, err := store.Update(certPEM, keyPEM); err != nil {
			return restart, false, fmt.Errorf("writing the %s certificate: %w", pair, err)
		}
		restart = true
	}
	return restart, holds, nil
}

// rewriteKubeconfigCA makes the kubeconfig the kubelet wrote at its TLS
// bootstrap trust caPEM, and reports whether it changed it; there is
// nothing to do before the bootstrap.
func (w *Worker) rewriteKubeconfigCA(caPEM []byte) (bool, error) {
	path := w.cfg.path(kubeletKubeconfig)
	cfg, err := clientcmd.LoadFromFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	changed := false
	for _, cl := range cfg.Clusters {
		if string(cl.CertificateAuthorityData) != string(caPEM) {
			cl.CertificateAuthorityData, cl.CertificateAuthority = caPEM, ""
			changed = true
		}
	}
	if !changed {
		return false, nil
	}
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return false, err
	}
	return true, tlsutil.WriteFileAtomic(path, data, 0o600)
}

// askKubeletCert has a kubelet certificate (client or serving, by pair)
// issued for a new key, through a CSR asked as the node with the
// kubelet's credentials, and returns it with the key.
func (w *Worker) askKubeletCert(ctx context.Context, pair string, ip string) ([]byte, []byte, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", w.cfg.path(kubeletKubeconfig))
	if err != nil {
		return nil, nil, err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: "system:node:" + w.cfg.Name, Organization: []string{"system:nodes"}}}
	signerName := certv1.KubeAPIServerClientKubeletSignerName
	usages := []certv1.KeyUsage{certv1.UsageDigitalSignature, certv1.UsageClientAuth}
	if pair == kubeletServingPair {
		tmpl.DNSNames, tmpl.IPAddresses = []string{w.cfg.Name}, []net.IP{net.ParseIP(ip)}
		signerName = certv1.KubeletServingSignerName
		usages = []certv1.KeyUsage{certv1.UsageDigitalSignature, certv1.UsageServerAuth}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, csrTimeout)
	defer cancel()
	name, uid, err := csr.RequestCertificate(cs, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), "", signerName, nil, usages, key)
	if err != nil {
		return nil, nil, err
	}
	certPEM, err := csr.WaitForCertificate(ctx, cs, name, uid)
	if err != nil {
		return nil, nil, fmt.Errorf("CSR %s: %w", name, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

// syncCoordinatorTrust takes the coordinator's CAs a configuration gives
// (a coordinator CA rotation), for the join endpoints' certificates, and
// renews the worker's certificate through endpoint when it is due or not
// of the CA that signs now. The next configuration request says the
// generation held.
func (w *Worker) syncCoordinatorTrust(ctx context.Context, t *pb.CoordinatorTrust, endpoint string) {
	if t != nil && len(t.CaPem) > 0 && string(t.CaPem) != string(w.state.caPEM) {
		if _, err := tlsutil.CertPool(t.CaPem); err != nil {
			w.logger.Warn("the coordinator's CAs are unusable; keeping the ones held", "err", err)
			return
		}
		next := *w.state
		next.caPEM = t.CaPem
		if err := next.save(w.cfg); err != nil {
			w.logger.Warn("keeping the coordinator's CAs; trying again at the next refresh", "err", err)
			return
		}
		w.state = &next
		w.logger.Info("the worker trusts the coordinator's CAs", "trust_generation", t.Generation)
	}
	due := renewal.DuePEM(w.state.cert.GetCertPem(), time.Now())
	if cert, err := tlsutil.ParseCertPEM(w.state.cert.GetCertPem()); err == nil && len(t.GetSignerPem()) > 0 && !tlsutil.IssuedBy(cert, t.SignerPem) {
		due = true
	}
	if due {
		w.renewCertificate(ctx, endpoint)
	}
	if t != nil {
		w.state.coordAt = t.Generation
	}
}
