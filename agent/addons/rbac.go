package addons

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/oneinfra/oneinfra/internal/vocab"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// The add-ons' RBAC is applied apart from them, by a control-plane
// replica's agent with cluster-admin credentials it makes itself: the
// public hypervisor that applies the add-ons (Apply) then needs, and has,
// only the rights rbacObjects grant its identity (vocab.AddonsUser), never
// system:masters.

// rbacVersion changes whenever rbacObjects does, so that an RBAC applier
// applies the new rules at once.
const rbacVersion = "4"

// rbacObjects are every ClusterRole, Role and binding of the add-ons, in
// the order they are applied.
func rbacObjects() []object {
	objs := tlsBootstrapRBAC()
	objs = append(objs,
		clusterRoleBinding("oneinfra:node-proxier", componentKubeProxy, "system:node-proxier", serviceAccount("kube-proxy")),
		rbacv1ac.ClusterRole("system:coredns").WithLabels(labels(componentCoreDNS)).WithRules(
			rbacv1ac.PolicyRule().WithAPIGroups("").WithResources("endpoints", "services", "pods", "namespaces").WithVerbs("list", "watch"),
			rbacv1ac.PolicyRule().WithAPIGroups("discovery.k8s.io").WithResources("endpointslices").WithVerbs("list", "watch"),
		),
		clusterRoleBinding("system:coredns", componentCoreDNS, "system:coredns", serviceAccount("coredns")),
	)
	objs = append(objs, servingApproverRBAC()...)
	return append(objs, addonsRoles()...)
}

// write are the verbs of a server-side apply (a patch, or a create).
var write = []string{"get", "create", "patch", "update"}

// addonsRoles are exactly what Apply needs: in kube-system, the bootstrap
// token Secrets (listed and deleted too, when stale), kube-proxy's and
// CoreDNS's service accounts, configuration, workloads and Service; in
// default, the kubernetes Service's EndpointSlice and Endpoints. Nothing cluster-wide:
// no RBAC, no nodes, no other namespace.
func addonsRoles() []object {
	lib := labels(componentAddons)
	subject := user(vocab.AddonsUser)
	return []object{
		rbacv1ac.Role(addonsRole, systemNamespace).WithLabels(lib).WithRules(
			rbacv1ac.PolicyRule().WithAPIGroups("").WithResources("secrets").WithVerbs(append(write, "list", "delete")...),
			rbacv1ac.PolicyRule().WithAPIGroups("").WithResources("serviceaccounts", "configmaps", "services").WithVerbs(write...),
			rbacv1ac.PolicyRule().WithAPIGroups("apps").WithResources("daemonsets", "deployments").WithVerbs(write...),
		),
		rbacv1ac.RoleBinding(addonsRole, systemNamespace).WithLabels(lib).WithSubjects(subject).
			WithRoleRef(rbacv1ac.RoleRef().WithAPIGroup("rbac.authorization.k8s.io").WithKind("Role").WithName(addonsRole)),
		rbacv1ac.Role(addonsRole, "default").WithLabels(lib).WithRules(
			rbacv1ac.PolicyRule().WithAPIGroups("discovery.k8s.io").WithResources("endpointslices").WithVerbs(write...),
			rbacv1ac.PolicyRule().WithAPIGroups("").WithResources("endpoints").WithVerbs(write...),
		),
		rbacv1ac.RoleBinding(addonsRole, "default").WithLabels(lib).WithSubjects(subject).
			WithRoleRef(rbacv1ac.RoleRef().WithAPIGroup("rbac.authorization.k8s.io").WithKind("Role").WithName(addonsRole)),
	}
}

// addonsRole names the add-ons identity's Roles and their bindings.
const addonsRole = "oneinfra:addons"

// tlsBootstrapRBAC lets bootstrap tokens ask for node client certificates
// (which the control plane approves: csr.go), approves their renewals, and
// lets the API server use the kubelets' API.
func tlsBootstrapRBAC() []object {
	return []object{
		clusterRoleBinding("oneinfra:kubelet-bootstrap", componentTLS,
			"system:node-bootstrapper", group(bootstrappersGroup)),
		clusterRoleBinding("oneinfra:node-autoapprove-certificate-rotation", componentTLS,
			"system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", group(nodesGroup)),
		clusterRoleBinding("oneinfra:apiserver-kubelet-client", componentTLS,
			"system:kubelet-api-admin", user(vocab.APIServerKubeletClientUser)),
	}
}

func clusterRoleBinding(name, component, role string, subjects ...*rbacv1ac.SubjectApplyConfiguration) *rbacv1ac.ClusterRoleBindingApplyConfiguration {
	return rbacv1ac.ClusterRoleBinding(name).
		WithLabels(labels(component)).
		WithRoleRef(rbacv1ac.RoleRef().WithAPIGroup("rbac.authorization.k8s.io").WithKind("ClusterRole").WithName(role)).
		WithSubjects(subjects...)
}

func group(name string) *rbacv1ac.SubjectApplyConfiguration {
	return rbacv1ac.Subject().WithKind("Group").WithAPIGroup("rbac.authorization.k8s.io").WithName(name)
}

func user(name string) *rbacv1ac.SubjectApplyConfiguration {
	return rbacv1ac.Subject().WithKind("User").WithAPIGroup("rbac.authorization.k8s.io").WithName(name)
}

func serviceAccount(name string) *rbacv1ac.SubjectApplyConfiguration {
	return rbacv1ac.Subject().WithKind("ServiceAccount").WithNamespace(systemNamespace).WithName(name)
}

// ApplyRBAC applies the add-ons' RBAC (rbacObjects) with cfg, which must
// carry cluster-admin credentials.
func ApplyRBAC(ctx context.Context, cfg *rest.Config) error {
	cs, err := clientFor(cfg)
	if err != nil {
		return err
	}
	return applyRBAC(ctx, cs)
}

// droppedBindings are bindings oneinfra applied once and no longer wants:
// deleted where found. The controller-manager approved every bootstrap
// token's node client CSR through the first, for any node name.
var droppedBindings = []string{"oneinfra:node-autoapprove-bootstrap"}

func applyRBAC(ctx context.Context, cs kubernetes.Interface) error {
	opts := metav1.ApplyOptions{FieldManager: FieldManager, Force: true}
	var errs []error
	for _, name := range droppedBindings {
		if err := cs.RbacV1().ClusterRoleBindings().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting ClusterRoleBinding %s: %w", name, err))
			if !isStatus(err) {
				return errors.Join(errs...)
			}
		}
	}
	for _, o := range rbacObjects() {
		if err := applyObject(ctx, cs, o, opts); err != nil {
			errs = append(errs, fmt.Errorf("applying %s: %w", describe(o), err))
			if !isStatus(err) {
				return errors.Join(errs...)
			}
		}
	}
	return errors.Join(errs...)
}

// rbacHash digests what ApplyRBAC sends through host.
func rbacHash(host string) [sha256.Size]byte {
	return sha256.Sum256([]byte(host + "\x00rbac " + rbacVersion))
}
