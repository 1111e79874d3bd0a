package addons

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/agent/controlplane"
	"github.com/oneinfra/oneinfra/agent/host"
	"github.com/oneinfra/oneinfra/internal/testutil"
	"github.com/oneinfra/oneinfra/internal/testutil/cluster"
	"github.com/oneinfra/oneinfra/internal/testutil/containerd"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	appsv1 "k8s.io/api/apps/v1"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// apiServer is a real etcd and kube-apiserver, started from _output/bin
// with the flags the agent gives them.
type apiServer struct {
	url   string
	caPEM []byte
	admin *rest.Config
	// addons has the add-ons' own identity, the ingress's AddonsCert:
	// what ApplyRBAC grants, and nothing more.
	addons *rest.Config
	cs     kubernetes.Interface
	// signer is the cluster's signing CA, which the API server trusts for
	// clients (the control-plane agent makes its own credentials with it).
	signer *pb.KeyPair
}

// startAPIServer starts etcd and kube-apiserver by hand (no containers)
// from a test cluster's assignment, and returns once the API is ready and
// kube-system exists.
func startAPIServer(t *testing.T) *apiServer {
	t.Helper()
	root, err := containerd.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "_output", "bin")
	for _, b := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			t.Fatalf("%s is missing (%v): run `make images`, which builds the Kubernetes and etcd binaries into _output/bin", filepath.Join(bin, b), err)
		}
	}
	p, as := cluster.Assignments(t, 1, cluster.HostIP(t))
	dir := t.TempDir()
	paths := host.Paths{Root: dir, Cluster: "demo", Component: as[0].Component.Metadata.Name}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	boot, err := controlplane.DecideBootstrap(ctx, as[0], paths, true)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := controlplane.Render(as[0], paths, boot)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plan.WriteFiles(); err != nil {
		t.Fatal(err)
	}
	for _, d := range plan.Dirs {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ pod, container int }{{0, 0}, {1, 0}} { // etcd, kube-apiserver
		argv := plan.Pods[c.pod].Containers[c.container].Command
		logPath := filepath.Join(dir, argv[0]+".log")
		logFile, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(filepath.Join(bin, argv[0]), argv[1:]...)
		cmd.Stdout, cmd.Stderr = logFile, logFile
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
			logFile.Close()
			if t.Failed() {
				b, _ := os.ReadFile(logPath)
				if len(b) > 4000 {
					b = b[len(b)-4000:]
				}
				t.Logf("last lines of %s:\n%s", argv[0], b)
			}
		})
	}

	admin := cluster.AdminCert(t, p)
	s := &apiServer{
		url:    fmt.Sprintf("https://127.0.0.1:%d", as[0].Component.Spec.Ports["apiserver"]),
		caPEM:  p.Cas[vocab.ClusterCA].CertPem,
		signer: p.Cas[vocab.SignerCA],
	}
	s.admin = &rest.Config{
		Host:            s.url,
		TLSClientConfig: rest.TLSClientConfig{CAData: s.caPEM, CertData: admin.CertPem, KeyData: admin.KeyPem},
		Timeout:         10 * time.Second,
	}
	if s.cs, err = kubernetes.NewForConfig(s.admin); err != nil {
		t.Fatal(err)
	}
	ingress := cluster.IngressCerts(t, p, "demo-ingress-0")
	kp := ingress.Certs[vocab.AddonsCert]
	s.addons = &rest.Config{
		Host:            s.url,
		TLSClientConfig: rest.TLSClientConfig{CAData: s.caPEM, CertData: kp.CertPem, KeyData: kp.KeyPem},
		Timeout:         10 * time.Second,
	}
	began := time.Now()
	testutil.Eventually(t, 60*time.Second, "the API server's /readyz", func() error {
		_, err := s.cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(context.Background())
		return err
	})
	testutil.Eventually(t, 20*time.Second, "namespace kube-system", func() error {
		_, err := s.cs.CoreV1().Namespaces().Get(context.Background(), "kube-system", metav1.GetOptions{})
		return err
	})
	t.Logf("API server ready in %s", time.Since(began).Round(time.Millisecond))
	return s
}

// as returns a client authenticated by a bearer token.
func (s *apiServer) as(t *testing.T, token string) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(&rest.Config{
		Host: s.url, BearerToken: token, Timeout: 10 * time.Second,
		TLSClientConfig: rest.TLSClientConfig{CAData: s.caPEM},
	})
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// whoAmI is the user the API server sees behind cs.
// firstError is the first of the errors err joins, or err.
func firstError(err error) error {
	if j, ok := err.(interface{ Unwrap() []error }); ok && len(j.Unwrap()) > 0 {
		return j.Unwrap()[0]
	}
	return err
}

func whoAmI(cs kubernetes.Interface) (authnv1.UserInfo, error) {
	r, err := cs.AuthenticationV1().SelfSubjectReviews().Create(context.Background(), &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return authnv1.UserInfo{}, err
	}
	return r.Status.UserInfo, nil
}

// TestAgainstAPIServer applies the add-ons to a real API server and checks
// what it stored, what the tokens and RBAC allow, the stale token
// deletion, the Applier's skipping and resync, and the naming of errors.
func TestAgainstAPIServer(t *testing.T) {
	s := startAPIServer(t)
	ctx := context.Background()
	expires := time.Now().Add(time.Hour).Truncate(time.Second)
	in := validInputs(t)
	in.ClusterCAPEM = s.caPEM
	in.BootstrapTokens = []BootstrapToken{
		{ID: "abcdef", Secret: "0123456789abcdef", Expires: expires, Description: "worker w1"},
		{ID: "ghijkl", Secret: "ghijklmnopqrstuv", Expires: expires},
	}
	// A bootstrap token Secret oneinfra did not make: never deleted.
	hand := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "bootstrap-token-hand00", Namespace: "kube-system"},
		Type:       corev1.SecretTypeBootstrapToken,
		StringData: map[string]string{"token-id": "hand00", "token-secret": "handhandhandhand", "usage-bootstrap-authentication": "true"},
	}
	if _, err := s.cs.CoreV1().Secrets("kube-system").Create(ctx, hand, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Without its RBAC, the add-ons identity may do nothing.
	if err := Apply(ctx, s.addons, in); err == nil || !apierrors.IsForbidden(errors.Unwrap(firstError(err))) && !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("Apply before the RBAC: %v, want forbidden", err)
	}
	// A binding an older oneinfra applied and no longer wants is deleted.
	old := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: droppedBindings[0]},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:certificates.k8s.io:certificatesigningrequests:nodeclient"},
		Subjects:   []rbacv1.Subject{{Kind: "Group", APIGroup: "rbac.authorization.k8s.io", Name: bootstrappersGroup}},
	}
	if _, err := s.cs.RbacV1().ClusterRoleBindings().Create(ctx, old, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	if err := ApplyRBAC(ctx, s.admin); err != nil {
		t.Fatalf("ApplyRBAC: %v", err)
	}
	if _, err := s.cs.RbacV1().ClusterRoleBindings().Get(ctx, droppedBindings[0], metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("ClusterRoleBinding %s after ApplyRBAC: %v, want not found", droppedBindings[0], err)
	}
	t.Logf("ApplyRBAC took %s", time.Since(began).Round(time.Millisecond))
	began = time.Now()
	if err := Apply(ctx, s.addons, in); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	t.Logf("first Apply took %s", time.Since(began).Round(time.Millisecond))
	began = time.Now()
	if err := Apply(ctx, s.addons, in); err != nil {
		t.Fatalf("second Apply: %v", err)
	}
	t.Logf("second Apply (no change) took %s", time.Since(began).Round(time.Millisecond))

	t.Run("objects", func(t *testing.T) { checkObjects(t, s, in) })
	t.Run("token authenticates", func(t *testing.T) {
		testutil.Eventually(t, 15*time.Second, "SelfSubjectReview with bootstrap token abcdef", func() error {
			u, err := whoAmI(s.as(t, "abcdef.0123456789abcdef"))
			if err != nil {
				return err
			}
			if u.Username != "system:bootstrap:abcdef" || !slices.Contains(u.Groups, "system:bootstrappers") || !slices.Contains(u.Groups, TokenGroup) {
				return fmt.Errorf("authenticated as %q in %v, want system:bootstrap:abcdef in system:bootstrappers and %s", u.Username, u.Groups, TokenGroup)
			}
			return nil
		})
		if _, err := whoAmI(s.as(t, "abcdef.0123456789abcdeX")); !apierrors.IsUnauthorized(err) {
			t.Errorf("a wrong token secret: got %v, want 401 Unauthorized", err)
		}
	})
	t.Run("rbac", func(t *testing.T) { checkRBAC(t, s) })
	t.Run("kubelet serving CSRs", func(t *testing.T) { checkServingCSRs(t, s) })

	t.Run("stale token deleted", func(t *testing.T) {
		less := validInputsCopy(in)
		less.BootstrapTokens = less.BootstrapTokens[:1]
		if err := Apply(ctx, s.addons, less); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		secrets := s.cs.CoreV1().Secrets("kube-system")
		if _, err := secrets.Get(ctx, "bootstrap-token-ghijkl", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("the removed token's Secret: got %v, want NotFound", err)
		}
		for _, name := range []string{"bootstrap-token-abcdef", "bootstrap-token-hand00"} {
			if _, err := secrets.Get(ctx, name, metav1.GetOptions{}); err != nil {
				t.Errorf("Secret %s: %v", name, err)
			}
		}
		testutil.Eventually(t, 15*time.Second, "the removed token refused", func() error {
			if _, err := whoAmI(s.as(t, "ghijkl.ghijklmnopqrstuv")); !apierrors.IsUnauthorized(err) {
				return fmt.Errorf("got %v, want 401 Unauthorized", err)
			}
			return nil
		})
		in = less
	})

	t.Run("applier", func(t *testing.T) { checkApplier(t, s, in) })
	t.Run("hand edit undone", func(t *testing.T) {
		dss := s.cs.AppsV1().DaemonSets("kube-system")
		ds, err := dss.Get(ctx, "kube-proxy", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ds.Spec.Template.Spec.Containers[0].Image = "edited:by-hand"
		if _, err := dss.Update(ctx, ds, metav1.UpdateOptions{FieldManager: "kubectl-edit"}); err != nil {
			t.Fatal(err)
		}
		if err := Apply(ctx, s.addons, in); err != nil {
			t.Fatalf("Apply over a conflicting field: %v", err)
		}
		if got := daemonSetImage(t, s); got != in.Images[vocab.ImageKubeProxy] {
			t.Errorf("kube-proxy image %q after Apply, want %q", got, in.Images[vocab.ImageKubeProxy])
		}
	})
	t.Run("refused object named, others applied", func(t *testing.T) {
		bad := validInputsCopy(in)
		bad.ClusterDNS = "10.96.0.11" // a Service's cluster IP is immutable
		bad.Images[vocab.ImageKubeProxy] = "registry.k8s.io/kube-proxy:v9.9.9"
		err := Apply(ctx, s.addons, bad)
		if err == nil || !strings.Contains(err.Error(), "applying Service kube-system/kube-dns: ") {
			t.Fatalf("Apply with a moved DNS IP: got %v, want an error naming Service kube-system/kube-dns", err)
		}
		if strings.Contains(err.Error(), "0123456789abcdef") {
			t.Errorf("the error quotes a token secret: %v", err)
		}
		t.Logf("error: %v", err)
		if got := daemonSetImage(t, s); got != bad.Images[vocab.ImageKubeProxy] {
			t.Errorf("kube-proxy image %q, want %q: a refused Service stopped the other objects", got, bad.Images[vocab.ImageKubeProxy])
		}
	})
}

func daemonSetImage(t *testing.T, s *apiServer) string {
	t.Helper()
	ds, err := s.cs.AppsV1().DaemonSets("kube-system").Get(context.Background(), "kube-proxy", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("DaemonSet kube-system/kube-proxy: %v", err)
	}
	return ds.Spec.Template.Spec.Containers[0].Image
}

// appliedByOneinfra checks an object's labels and that its fields are
// managed by a server-side apply of FieldManager.
func appliedByOneinfra(t *testing.T, what string, meta metav1.ObjectMeta) {
	t.Helper()
	if meta.Labels[ManagedByLabel] != "oneinfra" {
		t.Errorf("%s: labels %v lack %s=oneinfra", what, meta.Labels, ManagedByLabel)
	}
	for _, m := range meta.ManagedFields {
		if m.Manager == FieldManager && m.Operation == metav1.ManagedFieldsOperationApply {
			return
		}
	}
	t.Errorf("%s: no server-side apply by %q in its managed fields", what, FieldManager)
}

func checkObjects(t *testing.T, s *apiServer, in Inputs) {
	ctx := context.Background()
	core, rbac, apps := s.cs.CoreV1(), s.cs.RbacV1(), s.cs.AppsV1()

	secret, err := core.Secrets("kube-system").Get(ctx, "bootstrap-token-abcdef", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	appliedByOneinfra(t, "Secret bootstrap-token-abcdef", secret.ObjectMeta)
	if secret.Type != corev1.SecretTypeBootstrapToken || string(secret.Data["token-secret"]) != "0123456789abcdef" ||
		string(secret.Data["expiration"]) != in.BootstrapTokens[0].Expires.UTC().Format(time.RFC3339) ||
		string(secret.Data["auth-extra-groups"]) != TokenGroup || string(secret.Data["usage-bootstrap-authentication"]) != "true" {
		t.Errorf("Secret bootstrap-token-abcdef: type %s, data keys %v", secret.Type, keys(secret.Data))
	}

	for name, role := range map[string]string{
		"oneinfra:kubelet-bootstrap":                     "system:node-bootstrapper",
		"oneinfra:node-autoapprove-certificate-rotation": "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
		"oneinfra:node-proxier":                          "system:node-proxier",
		"system:coredns":                                 "system:coredns",
	} {
		b, err := rbac.ClusterRoleBindings().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Errorf("ClusterRoleBinding %s: %v", name, err)
			continue
		}
		appliedByOneinfra(t, "ClusterRoleBinding "+name, b.ObjectMeta)
		if b.RoleRef.Name != role {
			t.Errorf("ClusterRoleBinding %s binds %s, want %s", name, b.RoleRef.Name, role)
		}
	}

	cm, err := core.ConfigMaps("kube-system").Get(ctx, "kube-proxy", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	appliedByOneinfra(t, "ConfigMap kube-proxy", cm.ObjectMeta)
	if !strings.Contains(cm.Data["config.conf"], "clusterCIDR: "+in.PodCIDR) || !strings.Contains(cm.Data["kubeconfig.conf"], "server: "+in.APIServer) {
		t.Errorf("ConfigMap kube-proxy does not carry the pod CIDR and the API server:\n%s\n%s", cm.Data["config.conf"], cm.Data["kubeconfig.conf"])
	}
	for _, sa := range []string{"kube-proxy", "coredns"} {
		got, err := core.ServiceAccounts("kube-system").Get(ctx, sa, metav1.GetOptions{})
		if err != nil {
			t.Errorf("ServiceAccount %s: %v", sa, err)
			continue
		}
		appliedByOneinfra(t, "ServiceAccount "+sa, got.ObjectMeta)
	}

	ds, err := apps.DaemonSets("kube-system").Get(ctx, "kube-proxy", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	appliedByOneinfra(t, "DaemonSet kube-proxy", ds.ObjectMeta)
	checkKubeProxyPod(t, ds, in)

	d, err := apps.Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	appliedByOneinfra(t, "Deployment coredns", d.ObjectMeta)
	if c := d.Spec.Template.Spec.Containers[0]; c.Image != in.Images[vocab.ImageCoreDNS] || *d.Spec.Replicas != 1 ||
		c.ReadinessProbe.HTTPGet.Port.IntValue() != 8181 || c.LivenessProbe.HTTPGet.Port.IntValue() != 8080 {
		t.Errorf("Deployment coredns: image %q replicas %d", c.Image, *d.Spec.Replicas)
	}

	svc, err := core.Services("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	appliedByOneinfra(t, "Service kube-dns", svc.ObjectMeta)
	if svc.Spec.ClusterIP != in.ClusterDNS || len(svc.Spec.Ports) != 3 {
		t.Errorf("Service kube-dns: cluster IP %s with %d ports, want %s with 3", svc.Spec.ClusterIP, len(svc.Spec.Ports), in.ClusterDNS)
	}
	corefile, err := core.ConfigMaps("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(corefile.Data["Corefile"], "kubernetes cluster.local in-addr.arpa ip6.arpa") {
		t.Errorf("Corefile:\n%s", corefile.Data["Corefile"])
	}
}

func checkKubeProxyPod(t *testing.T, ds *appsv1.DaemonSet, in Inputs) {
	t.Helper()
	pod := ds.Spec.Template.Spec
	c := pod.Containers[0]
	switch {
	case c.Image != in.Images[vocab.ImageKubeProxy]:
		t.Errorf("kube-proxy image %q, want %q", c.Image, in.Images[vocab.ImageKubeProxy])
	case !pod.HostNetwork || c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged:
		t.Errorf("kube-proxy is not privileged in the host network")
	case pod.PriorityClassName != "system-node-critical":
		t.Errorf("kube-proxy priority class %q", pod.PriorityClassName)
	case len(pod.Tolerations) != 1 || pod.Tolerations[0].Operator != corev1.TolerationOpExists || pod.Tolerations[0].Key != "":
		t.Errorf("kube-proxy tolerations %+v", pod.Tolerations)
	case len(c.Env) != 1 || c.Env[0].ValueFrom == nil || c.Env[0].ValueFrom.FieldRef.FieldPath != "spec.nodeName":
		t.Errorf("kube-proxy env %+v", c.Env)
	}
}

// checkRBAC asks the API server's authorizers (SubjectAccessReview) what
// the bindings allow.
func checkRBAC(t *testing.T, s *apiServer) {
	bootstrapper := []string{"system:bootstrappers", TokenGroup, "system:authenticated"}
	for _, c := range []struct {
		user        string
		groups      []string
		verb, group string
		resource    string
		sub         string
		allowed     bool
		namespace   string
	}{
		{"system:bootstrap:abcdef", bootstrapper, "create", "certificates.k8s.io", "certificatesigningrequests", "", true, ""},
		{"system:bootstrap:abcdef", bootstrapper, "create", "certificates.k8s.io", "certificatesigningrequests", "nodeclient", false, ""},
		{"system:bootstrap:abcdef", bootstrapper, "list", "", "secrets", "", false, ""},
		{"system:node:w1", []string{"system:nodes", "system:authenticated"}, "create", "certificates.k8s.io", "certificatesigningrequests", "selfnodeclient", true, ""},
		{"system:serviceaccount:kube-system:kube-proxy", []string{"system:serviceaccounts", "system:serviceaccounts:kube-system"}, "watch", "discovery.k8s.io", "endpointslices", "", true, ""},
		{"system:serviceaccount:kube-system:coredns", []string{"system:serviceaccounts", "system:serviceaccounts:kube-system"}, "list", "", "namespaces", "", true, ""},
		{"system:serviceaccount:kube-system:coredns", []string{"system:serviceaccounts", "system:serviceaccounts:kube-system"}, "list", "", "secrets", "", false, ""},
		{vocab.APIServerKubeletClientUser, nil, "get", "", "nodes", "proxy", true, ""},
		// The add-ons identity: what Apply does, in its namespaces, and
		// nothing else.
		{vocab.AddonsUser, nil, "patch", "apps", "daemonsets", "", true, "kube-system"},
		{vocab.AddonsUser, nil, "delete", "", "secrets", "", true, "kube-system"},
		{vocab.AddonsUser, nil, "patch", "discovery.k8s.io", "endpointslices", "", true, "default"},
		{vocab.AddonsUser, nil, "patch", "", "endpoints", "", true, "default"},
		{vocab.AddonsUser, nil, "patch", "", "endpoints", "", false, "kube-system"},
		{vocab.AddonsUser, nil, "list", "", "secrets", "", false, "default"},
		{vocab.AddonsUser, nil, "patch", "apps", "daemonsets", "", false, "default"},
		{vocab.AddonsUser, nil, "create", "rbac.authorization.k8s.io", "clusterrolebindings", "", false, ""},
		{vocab.AddonsUser, nil, "patch", "rbac.authorization.k8s.io", "roles", "", false, "kube-system"},
		{vocab.AddonsUser, nil, "get", "", "nodes", "", false, ""},
		{vocab.AddonsUser, nil, "create", "", "pods", "", false, "kube-system"},
	} {
		sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
			User: c.user, Groups: c.groups,
			ResourceAttributes: &authzv1.ResourceAttributes{Verb: c.verb, Group: c.group, Resource: c.resource, Subresource: c.sub, Namespace: c.namespace},
		}}
		got, err := s.cs.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Status.Allowed != c.allowed {
			t.Errorf("%s %s %s %s/%s: allowed %v, want %v (%s)", c.user, c.verb, c.group, c.resource, c.sub, got.Status.Allowed, c.allowed, got.Status.Reason)
		}
	}
}

// checkApplier shows the Applier skipping unchanged Inputs, bringing back
// a deleted object once Resync passes, and applying changes at once.
func checkApplier(t *testing.T, s *apiServer, in Inputs) {
	ctx := context.Background()
	clock := time.Now()
	a := &Applier{Resync: time.Minute, now: func() time.Time { return clock }}
	step := func(want bool, what string) {
		t.Helper()
		began := time.Now()
		applied, err := a.Apply(ctx, s.addons, in)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if applied != want {
			t.Fatalf("%s: applied %v, want %v", what, applied, want)
		}
		t.Logf("%s: applied %v in %s", what, applied, time.Since(began).Round(time.Microsecond))
	}
	dss := s.cs.AppsV1().DaemonSets("kube-system")
	step(true, "first call")
	step(false, "same inputs")

	background := metav1.DeletePropagationBackground
	if err := dss.Delete(ctx, "kube-proxy", metav1.DeleteOptions{PropagationPolicy: &background}); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(30 * time.Second)
	step(false, "same inputs before Resync")
	if _, err := dss.Get(ctx, "kube-proxy", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("DaemonSet kube-proxy after a skipped apply: %v, want NotFound", err)
	}
	clock = clock.Add(31 * time.Second)
	step(true, "same inputs after Resync")
	if got := daemonSetImage(t, s); got != in.Images[vocab.ImageKubeProxy] {
		t.Errorf("DaemonSet kube-proxy came back with image %q", got)
	}

	// A change applies at once.
	if err := dss.Delete(ctx, "kube-proxy", metav1.DeleteOptions{PropagationPolicy: &background}); err != nil {
		t.Fatal(err)
	}
	in = validInputsCopy(in)
	in.Images[vocab.ImageKubeProxy] = "registry.k8s.io/kube-proxy:v1.37.3"
	step(true, "changed image")
	if got := daemonSetImage(t, s); got != "registry.k8s.io/kube-proxy:v1.37.3" {
		t.Errorf("DaemonSet kube-proxy image %q after a change", got)
	}
	step(false, "same inputs again")
	a.Reset()
	step(true, "after Reset")

	// A failed apply is retried on the next call.
	a.Reset()
	down := rest.CopyConfig(s.addons)
	down.Host = "https://127.0.0.1:1"
	if _, err := a.Apply(ctx, down, in); err == nil {
		t.Fatal("Apply through a closed port succeeded")
	}
	if applied, err := a.Apply(ctx, down, in); !applied || err == nil {
		t.Errorf("the call after a failed apply: applied %v err %v, want a new attempt", applied, err)
	}
}

func TestUnreachableAPIServer(t *testing.T) {
	cfg := &rest.Config{Host: "https://127.0.0.1:1", Timeout: 5 * time.Second}
	err := Apply(context.Background(), cfg, validInputs(t))
	if err == nil {
		t.Fatal("Apply through a closed port succeeded")
	}
	if !strings.HasPrefix(err.Error(), "applying Secret kube-system/bootstrap-token-abcdef: ") {
		t.Errorf("error %q does not name the first object", err)
	}
	if n := bytes.Count([]byte(err.Error()), []byte("applying ")); n != 1 {
		t.Errorf("%d objects tried after a transport error, want 1: %v", n, err)
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		t.Errorf("a transport error reported as an API status: %v", err)
	}
	if strings.Contains(err.Error(), "0123456789abcdef") {
		t.Errorf("the error quotes a token secret: %v", err)
	}
}
