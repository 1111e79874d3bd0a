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

// Kubelets rotate their serving certificates themselves
// (serverTLSBootstrap): each asks for one with a CSR of signer
// kubernetes.io/kubelet-serving, which the controller-manager signs once
// approved but never approves. A control-plane replica's agent reviews
// those CSRs as vocab.KubeletServingApproverUser, which may do nothing
// else, and approves one only when it asks for exactly what its node may
// serve as: requested by system:node:NAME (in system:nodes) for a node
// joined to the cluster, subject CN system:node:NAME and O system:nodes,
// names only NAME and the node's VPN address, usages only server auth
// with digital signature and key encipherment. Any other is denied, with
// the reason. The API server verifies kubelets against the signing CA,
// so a node cannot serve as another.

const (
	nodeUserPrefix   = "system:node:"
	reasonApproved   = "OneinfraNodeServing"
	reasonNotAllowed = "OneinfraNotAllowed"
)

// servingApproverRBAC lets vocab.KubeletServingApproverUser read CSRs and
// approve those of the kubelet-serving signer, and nothing more.
func servingApproverRBAC() []object {
	return []object{
		rbacv1ac.ClusterRole(vocab.KubeletServingApproverUser).WithLabels(labels(componentTLS)).WithRules(
			rbacv1ac.PolicyRule().WithAPIGroups("certificates.k8s.io").WithResources("certificatesigningrequests").WithVerbs("get", "list", "watch"),
			rbacv1ac.PolicyRule().WithAPIGroups("certificates.k8s.io").WithResources("certificatesigningrequests/approval").WithVerbs("update"),
			rbacv1ac.PolicyRule().WithAPIGroups("certificates.k8s.io").WithResources("signers").
				WithResourceNames(certv1.KubeletServingSignerName).WithVerbs("approve"),
		),
		clusterRoleBinding(vocab.KubeletServingApproverUser, componentTLS, vocab.KubeletServingApproverUser, user(vocab.KubeletServingApproverUser)),
	}
}

// ReviewServingCSRs approves or denies, with cfg (the approver's
// credentials), every pending kubelet-serving CSR; nodes are the
// cluster's joined nodes by name, with their VPN addresses. It returns
// what it decided, by CSR name: "" for approved, else why denied.
func ReviewServingCSRs(ctx context.Context, cfg *rest.Config, nodes map[string]netip.Addr) (map[string]string, error) {
	cs, err := clientFor(cfg)
	if err != nil {
		return nil, err
	}
	return reviewServingCSRs(ctx, cs, nodes)
}

func reviewServingCSRs(ctx context.Context, cs kubernetes.Interface, nodes map[string]netip.Addr) (map[string]string, error) {
	list, err := cs.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{
		FieldSelector: "spec.signerName=" + certv1.KubeletServingSignerName,
	})
	if err != nil {
		return nil, fmt.Errorf("listing kubelet-serving CSRs: %w", err)
	}
	decided := map[string]string{}
	var errs []error
	for i := range list.Items {
		csr := &list.Items[i]
		if decidedAlready(csr) {
			continue
		}
		cond := certv1.CertificateSigningRequestCondition{
			Type: certv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: reasonApproved,
		}
		why := ""
		if err := allowedServingCSR(csr, nodes); err != nil {
			why = err.Error()
			cond.Type, cond.Reason, cond.Message = certv1.CertificateDenied, reasonNotAllowed, why
		} else {
			cond.Message = "a serving certificate for node " + strings.TrimPrefix(csr.Spec.Username, nodeUserPrefix) + " at its VPN address"
		}
		csr.Status.Conditions = append(csr.Status.Conditions, cond)
		if _, err := cs.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, csr.Name, csr, metav1.UpdateOptions{}); err != nil {
			errs = append(errs, fmt.Errorf("%s CSR %s: %w", strings.ToLower(string(cond.Type)), csr.Name, err))
			continue
		}
		decided[csr.Name] = why
	}
	return decided, errors.Join(errs...)
}

// decidedAlready reports whether a CSR was approved or denied.
func decidedAlready(csr *certv1.CertificateSigningRequest) bool {
	return slices.ContainsFunc(csr.Status.Conditions, func(c certv1.CertificateSigningRequestCondition) bool {
		return c.Type == certv1.CertificateApproved || c.Type == certv1.CertificateDenied
	})
}

// allowedUsages are the key usages a kubelet serving certificate may have.
var allowedUsages = []certv1.KeyUsage{certv1.UsageDigitalSignature, certv1.UsageKeyEncipherment, certv1.UsageServerAuth}

// allowedServingCSR says why csr is not a serving certificate request its
// requester's node may have, or nil.
func allowedServingCSR(csr *certv1.CertificateSigningRequest, nodes map[string]netip.Addr) error {
	spec := csr.Spec
	node, ok := strings.CutPrefix(spec.Username, nodeUserPrefix)
	if !ok || !slices.Contains(spec.Groups, nodesGroup) {
		return fmt.Errorf("requested by %q (groups %v), not by a node", spec.Username, spec.Groups)
	}
	addr, ok := nodes[node]
	if !ok {
		return fmt.Errorf("node %q is not joined to this cluster", node)
	}
	for _, u := range spec.Usages {
		if !slices.Contains(allowedUsages, u) {
			return fmt.Errorf("usage %q is not one of a serving certificate (%v)", u, allowedUsages)
		}
	}
	if !slices.Contains(spec.Usages, certv1.UsageServerAuth) {
		return fmt.Errorf("usages %v lack %q", spec.Usages, certv1.UsageServerAuth)
	}
	block, _ := pem.Decode(spec.Request)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return errors.New("the request is not a PEM CERTIFICATE REQUEST")
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return fmt.Errorf("the request: %w", err)
	}
	if err := req.CheckSignature(); err != nil {
		return fmt.Errorf("the request's signature: %w", err)
	}
	if req.Subject.CommonName != spec.Username || !slices.Equal(req.Subject.Organization, []string{nodesGroup}) {
		return fmt.Errorf("subject %q, want CN %s and O %s", req.Subject.String(), spec.Username, nodesGroup)
	}
	if len(req.EmailAddresses) > 0 || len(req.URIs) > 0 {
		return errors.New("it names e-mail addresses or URIs")
	}
	for _, dns := range req.DNSNames {
		if dns != node {
			return fmt.Errorf("DNS name %q is not the node's name %q", dns, node)
		}
	}
	for _, ip := range req.IPAddresses {
		if a, ok := netip.AddrFromSlice(ip); !ok || a.Unmap() != addr {
			return fmt.Errorf("IP address %s is not node %s's VPN address %s", ip, node, addr)
		}
	}
	if len(req.DNSNames)+len(req.IPAddresses) == 0 {
		return errors.New("it names no DNS name or IP address")
	}
	return nil
}
