package addons

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/oneinfra/oneinfra/internal/vocab"
	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Kubelets get and rotate their certificates through CSRs, and a
// control-plane replica's agent reviews those the controller-manager must
// not approve by itself, as vocab.KubeletServingApproverUser, which may do
// nothing else:
//
//   - A kubelet's first client certificate (signer
//     kubernetes.io/kube-apiserver-client-kubelet, asked with its
//     bootstrap token): approved only when the token is the one oneinfra
//     handed that very node at its join, and the CSR asks for exactly the
//     node's client identity (CN system:node:NAME, O system:nodes, no
//     names, client auth usages). A token cannot get another node's
//     identity. Renewals, asked as system:node:NAME for itself, are the
//     controller-manager's to approve (selfnodeclient).
//   - Its serving certificates (serverTLSBootstrap, signer
//     kubernetes.io/kubelet-serving, which the controller-manager never
//     approves): approved only when asked by system:node:NAME (in
//     system:nodes) for a joined node, subject CN system:node:NAME and O
//     system:nodes, naming only NAME and the node's VPN address, usages
//     only server auth with digital signature and key encipherment. The API
//     server verifies kubelets against the signing CA, so a node cannot
//     serve as another.
//
// Any other is denied, with the reason, except one of a node (or token)
// this replica does not know, which is left pending: it may have joined
// since (the controller-manager drops pending CSRs after a day).

const (
	nodeUserPrefix      = "system:node:"
	bootstrapUserPrefix = "system:bootstrap:"
	reasonApproved      = "OneinfraNode"
	reasonNotAllowed    = "OneinfraNotAllowed"
)

// Node is what a replica knows of a joined node.
type Node struct {
	// Address is its VPN address.
	Address netip.Addr
	// BootstrapTokenID is the ID of the bootstrap token it was handed.
	BootstrapTokenID string
}

// servingApproverRBAC lets vocab.KubeletServingApproverUser read CSRs and
// approve those of the kubelet-serving signer, and nothing more.
func servingApproverRBAC() []object {
	return []object{
		rbacv1ac.ClusterRole(vocab.KubeletServingApproverUser).WithLabels(labels(componentTLS)).WithRules(
			rbacv1ac.PolicyRule().WithAPIGroups("certificates.k8s.io").WithResources("certificatesigningrequests").WithVerbs("get", "list", "watch"),
			rbacv1ac.PolicyRule().WithAPIGroups("certificates.k8s.io").WithResources("certificatesigningrequests/approval").WithVerbs("update"),
			rbacv1ac.PolicyRule().WithAPIGroups("certificates.k8s.io").WithResources("signers").
				WithResourceNames(certv1.KubeletServingSignerName, certv1.KubeAPIServerClientKubeletSignerName).WithVerbs("approve"),
		),
		clusterRoleBinding(vocab.KubeletServingApproverUser, componentTLS, vocab.KubeletServingApproverUser, user(vocab.KubeletServingApproverUser)),
	}
}

// ReviewNodeCSRs approves or denies, with cfg (the approver's
// credentials), every pending CSR of a kubelet's first client certificate
// and of its serving certificates; nodes are the cluster's joined nodes
// by name. It returns what it decided, by CSR name: "" for approved, else
// why denied.
func ReviewNodeCSRs(ctx context.Context, cfg *rest.Config, nodes map[string]Node) (map[string]string, error) {
	cs, err := clientFor(cfg)
	if err != nil {
		return nil, err
	}
	return reviewNodeCSRs(ctx, cs, nodes)
}

func reviewNodeCSRs(ctx context.Context, cs kubernetes.Interface, nodes map[string]Node) (map[string]string, error) {
	decided := map[string]string{}
	var errs []error
	for signer, check := range map[string]func(*certv1.CertificateSigningRequest, map[string]Node) error{
		certv1.KubeletServingSignerName:             allowedServingCSR,
		certv1.KubeAPIServerClientKubeletSignerName: allowedBootstrapCSR,
	} {
		list, err := cs.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{FieldSelector: "spec.signerName=" + signer})
		if err != nil {
			errs = append(errs, fmt.Errorf("listing %s CSRs: %w", signer, err))
			continue
		}
		for i := range list.Items {
			csr := &list.Items[i]
			if decidedAlready(csr) || (signer == certv1.KubeAPIServerClientKubeletSignerName && !strings.HasPrefix(csr.Spec.Username, bootstrapUserPrefix)) {
				continue // decided, or a renewal: the controller-manager's
			}
			err := check(csr, nodes)
			if errors.Is(err, errNotJoined) {
				continue
			}
			cond := certv1.CertificateSigningRequestCondition{
				Type: certv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: reasonApproved,
				Message: "the node's own identity, as oneinfra joined it",
			}
			why := ""
			if err != nil {
				why = err.Error()
				cond.Type, cond.Reason, cond.Message = certv1.CertificateDenied, reasonNotAllowed, why
			}
			csr.Status.Conditions = append(csr.Status.Conditions, cond)
			if _, err := cs.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, csr.Name, csr, metav1.UpdateOptions{}); err != nil {
				errs = append(errs, fmt.Errorf("%s CSR %s: %w", strings.ToLower(string(cond.Type)), csr.Name, err))
				continue
			}
			decided[csr.Name] = why
		}
	}
	return decided, errors.Join(errs...)
}

// decidedAlready reports whether a CSR was approved or denied.
func decidedAlready(csr *certv1.CertificateSigningRequest) bool {
	return slices.ContainsFunc(csr.Status.Conditions, func(c certv1.CertificateSigningRequestCondition) bool {
		return c.Type == certv1.CertificateApproved || c.Type == certv1.CertificateDenied
	})
}

// errNotJoined is the CSR of a node this replica does not know (yet).
var errNotJoined = errors.New("not joined to this cluster")

// The key usages a kubelet's serving and client certificates may have.
var (
	servingUsages = []certv1.KeyUsage{certv1.UsageDigitalSignature, certv1.UsageKeyEncipherment, certv1.UsageServerAuth}
	clientUsages  = []certv1.KeyUsage{certv1.UsageDigitalSignature, certv1.UsageKeyEncipherment, certv1.UsageClientAuth}
)

// checkUsages says why usages are not some of allowed, with required.
func checkUsages(usages, allowed []certv1.KeyUsage, required certv1.KeyUsage) error {
	for _, u := range usages {
		if !slices.Contains(allowed, u) {
			return fmt.Errorf("usage %q is not one of %v", u, allowed)
		}
	}
	if !slices.Contains(usages, required) {
		return fmt.Errorf("usages %v lack %q", usages, required)
	}
	return nil
}

// nodeRequest parses and checks the signature of a CSR's request, and
// checks its subject is node's: CN system:node:NODE, O system:nodes.
func nodeRequest(csr *certv1.CertificateSigningRequest, node string) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode(csr.Spec.Request)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("the request is not a PEM CERTIFICATE REQUEST")
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("the request: %w", err)
	}
	if err := req.CheckSignature(); err != nil {
		return nil, fmt.Errorf("the request's signature: %w", err)
	}
	if req.Subject.CommonName != nodeUserPrefix+node || !slices.Equal(req.Subject.Organization, []string{nodesGroup}) {
		return nil, fmt.Errorf("subject %q, want CN %s%s and O %s", req.Subject.String(), nodeUserPrefix, node, nodesGroup)
	}
	if len(req.EmailAddresses) > 0 || len(req.URIs) > 0 {
		return nil, errors.New("it names e-mail addresses or URIs")
	}
	return req, nil
}

// allowedBootstrapCSR says why csr is not the first client certificate
// request of the node its bootstrap token was handed to, or nil.
func allowedBootstrapCSR(csr *certv1.CertificateSigningRequest, nodes map[string]Node) error {
	spec := csr.Spec
	id, ok := strings.CutPrefix(spec.Username, bootstrapUserPrefix)
	if !ok || !slices.Contains(spec.Groups, bootstrappersGroup) {
		return fmt.Errorf("requested by %q (groups %v), not with a bootstrap token", spec.Username, spec.Groups)
	}
	node := ""
	for name, n := range nodes {
		if n.BootstrapTokenID == id {
			node = name
		}
	}
	if node == "" {
		return fmt.Errorf("bootstrap token %s: %w", id, errNotJoined)
	}
	if err := checkUsages(spec.Usages, clientUsages, certv1.UsageClientAuth); err != nil {
		return err
	}
	req, err := nodeRequest(csr, node)
	if err != nil {
		return fmt.Errorf("bootstrap token %s was handed to node %s: %w", id, node, err)
	}
	if len(req.DNSNames) > 0 || len(req.IPAddresses) > 0 {
		return errors.New("it names DNS names or IP addresses, which a client certificate has none of")
	}
	return nil
}

// allowedServingCSR says why csr is not a serving certificate request its
// requester's node may have, or nil.
func allowedServingCSR(csr *certv1.CertificateSigningRequest, nodes map[string]Node) error {
	spec := csr.Spec
	node, ok := strings.CutPrefix(spec.Username, nodeUserPrefix)
	if !ok || !slices.Contains(spec.Groups, nodesGroup) {
		return fmt.Errorf("requested by %q (groups %v), not by a node", spec.Username, spec.Groups)
	}
	n, ok := nodes[node]
	if !ok {
		return fmt.Errorf("node %q: %w", node, errNotJoined)
	}
	if err := checkUsages(spec.Usages, servingUsages, certv1.UsageServerAuth); err != nil {
		return err
	}
	req, err := nodeRequest(csr, node)
	if err != nil {
		return err
	}
	for _, dns := range req.DNSNames {
		if dns != node {
			return fmt.Errorf("DNS name %q is not the node's name %q", dns, node)
		}
	}
	for _, ip := range req.IPAddresses {
		if a, ok := netip.AddrFromSlice(ip); !ok || a.Unmap() != n.Address {
			return fmt.Errorf("IP address %s is not node %s's VPN address %s", ip, node, n.Address)
		}
	}
	if len(req.DNSNames)+len(req.IPAddresses) == 0 {
		return errors.New("it names no DNS name or IP address")
	}
	return nil
}
