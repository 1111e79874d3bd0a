package addons

import (
	"context"
	"fmt"
	discoveryv1 "k8s.io/api/discovery/v1"
	discoveryv1ac "k8s.io/client-go/applyconfigurations/discovery/v1"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"
	clientcmdv1 "k8s.io/client-go/tools/clientcmd/api/v1"
	"sigs.k8s.io/yaml"

	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
)

var testNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func testCA(t testing.TB) []byte {
	t.Helper()
	ca, err := tlsutil.NewCA("addons-test-ca", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca.CertPem
}

func validInputs(t testing.TB) Inputs {
	return Inputs{
		Cluster:      "demo",
		APIServer:    "https://10.200.0.1:6443",
		ClusterCAPEM: testCA(t),
		PodCIDR:      "10.244.0.0/16",
		ServiceCIDR:  "10.96.0.0/12",
		ClusterDNS:   "10.96.0.10",
		DNSDomain:    "cluster.local",
		Images:       map[string]string{"kube-proxy": "registry.k8s.io/kube-proxy:v1.37.2", "coredns": "registry.k8s.io/coredns/coredns:v1.12.0"},
		BootstrapTokens: []BootstrapToken{
			{ID: "abcdef", Secret: "0123456789abcdef", Expires: testNow.Add(24 * time.Hour), Description: "worker w1"},
			{ID: "zyx987", Secret: "fedcba9876543210"},
		},
	}
}

// find returns the rendered object of that kind and name.
func find[T object](t *testing.T, objs []object, kind, name string) T {
	t.Helper()
	for _, o := range objs {
		if deref(o.GetKind()) == kind && deref(o.GetName()) == name {
			typed, ok := o.(T)
			if !ok {
				t.Fatalf("%s %s is a %T", kind, name, o)
			}
			return typed
		}
	}
	t.Fatalf("no %s %s rendered", kind, name)
	var zero T
	return zero
}

func mustRender(t *testing.T, in Inputs) []object {
	t.Helper()
	if err := in.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	objs, err := render(in, testNow)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	return objs
}

func TestTokenSecret(t *testing.T) {
	in := validInputs(t)
	in.BootstrapTokens = append(in.BootstrapTokens, BootstrapToken{ID: "old000", Secret: "0000000000000000", Expires: testNow.Add(-time.Second)})
	objs := mustRender(t, in)

	s := find[*corev1ac.SecretApplyConfiguration](t, objs, "Secret", "bootstrap-token-abcdef")
	if deref(s.Namespace) != "kube-system" || s.Type == nil || *s.Type != corev1.SecretTypeBootstrapToken {
		t.Errorf("namespace %q type %v, want kube-system bootstrap.kubernetes.io/token", deref(s.Namespace), s.Type)
	}
	want := map[string]string{
		"token-id":                       "abcdef",
		"token-secret":                   "0123456789abcdef",
		"expiration":                     "2030-01-03T03:04:05Z",
		"usage-bootstrap-authentication": "true",
		"usage-bootstrap-signing":        "true",
		"auth-extra-groups":              "system:bootstrappers:oneinfra:worker",
		"description":                    "worker w1",
	}
	if len(s.Data) != len(want) {
		t.Errorf("data has keys %v, want %d keys", keys(s.Data), len(want))
	}
	for k, v := range want {
		if got := string(s.Data[k]); got != v {
			t.Errorf("data[%s] = %q, want %q", k, got, v)
		}
	}
	if s.Labels[ManagedByLabel] != "oneinfra" || s.Labels[ComponentLabel] != ComponentBootstrapToken {
		t.Errorf("labels %v lack the ones stale tokens are found by", s.Labels)
	}

	forever := find[*corev1ac.SecretApplyConfiguration](t, objs, "Secret", "bootstrap-token-zyx987")
	if _, ok := forever.Data["expiration"]; ok {
		t.Errorf("a token without Expires got an expiration %q", forever.Data["expiration"])
	}
	for _, o := range objs {
		if deref(o.GetName()) == "bootstrap-token-old000" {
			t.Errorf("an expired token was rendered")
		}
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestTLSBootstrapRBAC(t *testing.T) {
	objs := rbacObjects()
	for _, c := range []struct{ name, role, kind, subject string }{
		{"oneinfra:kubelet-bootstrap", "system:node-bootstrapper", "Group", "system:bootstrappers"},
		{"oneinfra:node-autoapprove-certificate-rotation", "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", "Group", "system:nodes"},
		{"oneinfra:node-proxier", "system:node-proxier", "ServiceAccount", "kube-proxy"},
		{"system:coredns", "system:coredns", "ServiceAccount", "coredns"},
		{vocab.KubeletServingApproverUser, vocab.KubeletServingApproverUser, "User", vocab.KubeletServingApproverUser},
	} {
		b := find[*rbacv1ac.ClusterRoleBindingApplyConfiguration](t, objs, "ClusterRoleBinding", c.name)
		if deref(b.RoleRef.Kind) != "ClusterRole" || deref(b.RoleRef.Name) != c.role {
			t.Errorf("%s binds %s %s, want ClusterRole %s", c.name, deref(b.RoleRef.Kind), deref(b.RoleRef.Name), c.role)
		}
		var subjects []string
		for _, s := range b.Subjects {
			subjects = append(subjects, deref(s.Kind)+" "+deref(s.Name))
		}
		if got := strings.Join(subjects, ", "); got != c.kind+" "+c.subject {
			t.Errorf("%s binds %s, want %s %s", c.name, got, c.kind, c.subject)
		}
	}
}

func TestKubeProxy(t *testing.T) {
	in := validInputs(t)
	in.PodCIDR = "10.123.0.0/16"
	objs := mustRender(t, in)

	cm := find[*corev1ac.ConfigMapApplyConfiguration](t, objs, "ConfigMap", "kube-proxy")
	var config struct {
		Kind             string
		Mode             string
		ClusterCIDR      string `json:"clusterCIDR"`
		ClientConnection struct{ Kubeconfig string }
		Conntrack        map[string]any
	}
	if err := yaml.Unmarshal([]byte(cm.Data["config.conf"]), &config); err != nil {
		t.Fatalf("config.conf: %v\n%s", err, cm.Data["config.conf"])
	}
	if config.Kind != "KubeProxyConfiguration" || config.Mode != "iptables" || config.ClusterCIDR != "10.123.0.0/16" {
		t.Errorf("config.conf: kind %q mode %q clusterCIDR %q, want KubeProxyConfiguration iptables 10.123.0.0/16",
			config.Kind, config.Mode, config.ClusterCIDR)
	}
	if v, ok := config.Conntrack["maxPerCore"]; !ok || v != float64(0) {
		t.Errorf("conntrack.maxPerCore = %v (present %v), want an explicit 0", v, ok)
	}
	if config.ClientConnection.Kubeconfig != "/var/lib/kube-proxy/kubeconfig.conf" {
		t.Errorf("clientConnection.kubeconfig = %q", config.ClientConnection.Kubeconfig)
	}

	var kc clientcmdv1.Config
	if err := yaml.Unmarshal([]byte(cm.Data["kubeconfig.conf"]), &kc); err != nil {
		t.Fatalf("kubeconfig.conf: %v", err)
	}
	if len(kc.Clusters) != 1 || kc.Clusters[0].Cluster.Server != in.APIServer ||
		string(kc.Clusters[0].Cluster.CertificateAuthorityData) != string(in.ClusterCAPEM) {
		t.Errorf("kubeconfig clusters %+v: want server %s and the cluster CA", kc.Clusters, in.APIServer)
	}
	if len(kc.AuthInfos) != 1 || kc.AuthInfos[0].AuthInfo.TokenFile != "/var/run/secrets/kubernetes.io/serviceaccount/token" {
		t.Errorf("kubeconfig users %+v: want the service account token file", kc.AuthInfos)
	}
	if kc.CurrentContext == "" || len(kc.Contexts) != 1 || kc.Contexts[0].Name != kc.CurrentContext {
		t.Errorf("kubeconfig has no usable current context: %q, %+v", kc.CurrentContext, kc.Contexts)
	}

	ds := find[*appsv1ac.DaemonSetApplyConfiguration](t, objs, "DaemonSet", "kube-proxy")
	pod := ds.Spec.Template.Spec
	c := pod.Containers[0]
	if deref(c.Image) != in.Images["kube-proxy"] {
		t.Errorf("image %q, want %q", deref(c.Image), in.Images["kube-proxy"])
	}
	if pod.HostNetwork == nil || !*pod.HostNetwork || c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
		t.Errorf("kube-proxy must be privileged in the host network")
	}
	if deref(pod.PriorityClassName) != "system-node-critical" || deref(pod.ServiceAccountName) != "kube-proxy" {
		t.Errorf("priority class %q, service account %q", deref(pod.PriorityClassName), deref(pod.ServiceAccountName))
	}
	if len(pod.Tolerations) != 1 || pod.Tolerations[0].Operator == nil || *pod.Tolerations[0].Operator != corev1.TolerationOpExists || pod.Tolerations[0].Key != nil {
		t.Errorf("tolerations %+v, want one that tolerates everything", pod.Tolerations)
	}
	wantCmd := "/usr/local/bin/kube-proxy --config=/var/lib/kube-proxy/config.conf --hostname-override=$(NODE_NAME)"
	if got := strings.Join(c.Command, " "); got != wantCmd {
		t.Errorf("command %q, want %q", got, wantCmd)
	}
	if len(c.Env) != 1 || deref(c.Env[0].Name) != "NODE_NAME" || deref(c.Env[0].ValueFrom.FieldRef.FieldPath) != "spec.nodeName" {
		t.Errorf("env %+v, want NODE_NAME from spec.nodeName", c.Env)
	}
	mounts := map[string]bool{}
	for _, m := range c.VolumeMounts {
		mounts[deref(m.MountPath)] = m.ReadOnly != nil && *m.ReadOnly
	}
	if ro, ok := mounts["/lib/modules"]; !ok || !ro {
		t.Errorf("/lib/modules must be mounted read-only: %v", mounts)
	}
	if _, ok := mounts["/run/xtables.lock"]; !ok {
		t.Errorf("/run/xtables.lock is not mounted: %v", mounts)
	}

	// A configuration change changes the pod template, so pods roll.
	in.PodCIDR = "10.124.0.0/16"
	other := find[*appsv1ac.DaemonSetApplyConfiguration](t, mustRender(t, in), "DaemonSet", "kube-proxy")
	if ds.Spec.Template.Annotations[configHashKey] == other.Spec.Template.Annotations[configHashKey] {
		t.Errorf("the pod template's config hash did not change with the pod CIDR")
	}
}

func TestCoreDNS(t *testing.T) {
	in := validInputs(t)
	in.ClusterDNS = "10.96.0.53"
	in.DNSDomain = "example.internal"
	objs := mustRender(t, in)

	svc := find[*corev1ac.ServiceApplyConfiguration](t, objs, "Service", "kube-dns")
	if deref(svc.Namespace) != "kube-system" || deref(svc.Spec.ClusterIP) != "10.96.0.53" {
		t.Errorf("Service %s/kube-dns cluster IP %q, want kube-system and 10.96.0.53", deref(svc.Namespace), deref(svc.Spec.ClusterIP))
	}
	var ports []string
	for _, p := range svc.Spec.Ports {
		ports = append(ports, fmt.Sprintf("%d/%s", *p.Port, *p.Protocol))
	}
	if got := strings.Join(ports, " "); got != "53/UDP 53/TCP 9153/TCP" {
		t.Errorf("Service ports %s", got)
	}
	if svc.Spec.Selector["k8s-app"] != "kube-dns" {
		t.Errorf("Service selector %v", svc.Spec.Selector)
	}

	cm := find[*corev1ac.ConfigMapApplyConfiguration](t, objs, "ConfigMap", "coredns")
	for _, line := range []string{"kubernetes example.internal in-addr.arpa ip6.arpa", "forward . /etc/resolv.conf", "cache 30", "health", "ready", "loop", "reload"} {
		if !strings.Contains(cm.Data["Corefile"], line) {
			t.Errorf("Corefile lacks %q:\n%s", line, cm.Data["Corefile"])
		}
	}

	d := find[*appsv1ac.DeploymentApplyConfiguration](t, objs, "Deployment", "coredns")
	c := d.Spec.Template.Spec.Containers[0]
	if deref(c.Image) != in.Images["coredns"] || *d.Spec.Replicas != 1 || strings.Join(c.Args, " ") != "-conf /etc/coredns/Corefile" {
		t.Errorf("coredns image %q replicas %d args %q", deref(c.Image), *d.Spec.Replicas, c.Args)
	}
	if deref(c.ReadinessProbe.HTTPGet.Path) != "/ready" || c.ReadinessProbe.HTTPGet.Port.IntValue() != 8181 ||
		deref(c.LivenessProbe.HTTPGet.Path) != "/health" || c.LivenessProbe.HTTPGet.Port.IntValue() != 8080 {
		t.Errorf("probes: readiness %+v liveness %+v", c.ReadinessProbe.HTTPGet, c.LivenessProbe.HTTPGet)
	}
	if d.Spec.Selector.MatchLabels["k8s-app"] != d.Spec.Template.Labels["k8s-app"] {
		t.Errorf("selector %v does not match the template's labels %v", d.Spec.Selector.MatchLabels, d.Spec.Template.Labels)
	}

	role := find[*rbacv1ac.ClusterRoleApplyConfiguration](t, rbacObjects(), "ClusterRole", "system:coredns")
	var rules []string
	for _, r := range role.Rules {
		rules = append(rules, fmt.Sprintf("%v %v %v", r.APIGroups, r.Resources, r.Verbs))
	}
	want := "[] [endpoints services pods namespaces] [list watch]; [discovery.k8s.io] [endpointslices] [list watch]"
	if got := strings.Join(rules, "; "); got != want {
		t.Errorf("ClusterRole rules %s, want %s", got, want)
	}
}

func TestEverythingLabelled(t *testing.T) {
	objs := mustRender(t, validInputs(t))
	if len(objs) != 11 { // 2 tokens, 3 kube-proxy, 4 CoreDNS objects, the kubernetes EndpointSlice and Endpoints
		t.Fatalf("%d objects rendered, want 11", len(objs))
	}
	for _, o := range objs {
		switch o.(type) {
		case *rbacv1ac.ClusterRoleApplyConfiguration, *rbacv1ac.ClusterRoleBindingApplyConfiguration, *rbacv1ac.RoleApplyConfiguration, *rbacv1ac.RoleBindingApplyConfiguration:
			t.Errorf("%s rendered with the add-ons: RBAC is applied apart, by the control plane", describe(o))
		}
	}
	rbac := rbacObjects()
	if len(rbac) != 12 { // 3 TLS bootstrap bindings, kube-proxy's binding, CoreDNS's role and binding, the CSR approver's, the add-ons' 2 roles and bindings
		t.Fatalf("%d RBAC objects, want 12", len(rbac))
	}
	objs = append(objs, rbac...)
	type labelled interface{ GetLabels() map[string]string }
	seen := map[string]bool{}
	for _, o := range objs {
		if seen[describe(o)] {
			t.Errorf("%s rendered twice", describe(o))
		}
		seen[describe(o)] = true
		var l map[string]string
		switch o := o.(type) {
		case *corev1ac.SecretApplyConfiguration:
			l = o.Labels
		case *corev1ac.ServiceAccountApplyConfiguration:
			l = o.Labels
		case *corev1ac.ConfigMapApplyConfiguration:
			l = o.Labels
		case *corev1ac.ServiceApplyConfiguration:
			l = o.Labels
		case *rbacv1ac.ClusterRoleApplyConfiguration:
			l = o.Labels
		case *rbacv1ac.ClusterRoleBindingApplyConfiguration:
			l = o.Labels
		case *rbacv1ac.RoleApplyConfiguration:
			l = o.Labels
		case *rbacv1ac.RoleBindingApplyConfiguration:
			l = o.Labels
		case *appsv1ac.DaemonSetApplyConfiguration:
			l = o.Labels
		case *appsv1ac.DeploymentApplyConfiguration:
			l = o.Labels
		case *discoveryv1ac.EndpointSliceApplyConfiguration:
			l = o.Labels
		case *corev1ac.EndpointsApplyConfiguration:
			l = o.Labels
		default:
			t.Errorf("unexpected %T", o)
		}
		if l[ManagedByLabel] != "oneinfra" {
			t.Errorf("%s is not labelled %s=oneinfra: %v", describe(o), ManagedByLabel, l)
		}
	}
}

// TestKubernetesEndpoints: pods reach the API at the nodes' API server
// URL (the ingress through the VPN), named as the kubernetes service's.
func TestKubernetesEndpoints(t *testing.T) {
	es := find[*discoveryv1ac.EndpointSliceApplyConfiguration](t, mustRender(t, validInputs(t)), "EndpointSlice", "kubernetes")
	if *es.Namespace != "default" || es.Labels[discoveryv1.LabelServiceName] != "kubernetes" || *es.AddressType != discoveryv1.AddressTypeIPv4 ||
		len(es.Endpoints) != 1 || es.Endpoints[0].Addresses[0] != "10.200.0.1" || !*es.Endpoints[0].Conditions.Ready ||
		len(es.Ports) != 1 || *es.Ports[0].Name != "https" || *es.Ports[0].Port != 6443 {
		t.Errorf("kubernetes EndpointSlice: %+v", es)
	}
	ep := find[*corev1ac.EndpointsApplyConfiguration](t, mustRender(t, validInputs(t)), "Endpoints", "kubernetes")
	if *ep.Namespace != "default" || ep.Labels[discoveryv1.LabelSkipMirror] != "true" || len(ep.Subsets) != 1 ||
		len(ep.Subsets[0].Addresses) != 1 || *ep.Subsets[0].Addresses[0].IP != "10.200.0.1" ||
		len(ep.Subsets[0].Ports) != 1 || *ep.Subsets[0].Ports[0].Name != "https" || *ep.Subsets[0].Ports[0].Port != 6443 {
		t.Errorf("kubernetes Endpoints: %+v", ep)
	}
}

func TestValidate(t *testing.T) {
	if err := validInputs(t).Validate(); err != nil {
		t.Fatalf("valid inputs refused: %v", err)
	}
	for _, c := range []struct {
		name   string
		mutate func(*Inputs)
		want   string
	}{
		{"no cluster", func(in *Inputs) { in.Cluster = "" }, "Inputs.Cluster: required"},
		{"http API server", func(in *Inputs) { in.APIServer = "http://10.0.0.1:6443" }, "Inputs.APIServer:"},
		{"API server without host", func(in *Inputs) { in.APIServer = "https://" }, "Inputs.APIServer:"},
		{"API server by name", func(in *Inputs) { in.APIServer = "https://api.example.com:6443" }, "Inputs.APIServer:"},
		{"API server without port", func(in *Inputs) { in.APIServer = "https://10.200.0.1" }, "Inputs.APIServer:"},
		{"CA not PEM", func(in *Inputs) { in.ClusterCAPEM = []byte("nope") }, "Inputs.ClusterCAPEM: not a PEM certificate"},
		{"bad pod CIDR", func(in *Inputs) { in.PodCIDR = "10.244.0.0/33" }, `Inputs.PodCIDR: "10.244.0.0/33" is not a CIDR`},
		{"no pod CIDR", func(in *Inputs) { in.PodCIDR = "" }, "Inputs.PodCIDR: required"},
		{"bad service CIDR", func(in *Inputs) { in.ServiceCIDR = "10.96.0.0" }, `Inputs.ServiceCIDR: "10.96.0.0" is not a CIDR`},
		{"overlapping CIDRs", func(in *Inputs) { in.PodCIDR = "10.96.0.0/16" }, "Inputs.PodCIDR: 10.96.0.0/16 overlaps ServiceCIDR"},
		{"DNS IP not an IP", func(in *Inputs) { in.ClusterDNS = "dns" }, `Inputs.ClusterDNS: "dns" is not an IP address`},
		{"DNS IP outside", func(in *Inputs) { in.ClusterDNS = "10.244.0.10" }, "Inputs.ClusterDNS: 10.244.0.10 is not in ServiceCIDR 10.96.0.0/12"},
		{"bad DNS domain", func(in *Inputs) { in.DNSDomain = "Cluster_Local" }, `Inputs.DNSDomain: "Cluster_Local"`},
		{"no kube-proxy image", func(in *Inputs) { delete(in.Images, "kube-proxy") }, `Inputs.Images["kube-proxy"]: required`},
		{"no coredns image", func(in *Inputs) { in.Images["coredns"] = " " }, `Inputs.Images["coredns"]: required`},
		{"bad token id", func(in *Inputs) { in.BootstrapTokens[1].ID = "ABCDEF" }, `Inputs.BootstrapTokens[1].ID: "ABCDEF" is not 6 characters`},
		{"repeated token id", func(in *Inputs) { in.BootstrapTokens[1].ID = "abcdef" }, `Inputs.BootstrapTokens[1].ID: "abcdef" is repeated`},
		{"bad token secret", func(in *Inputs) { in.BootstrapTokens[0].Secret = "0123456789ABCDEF" }, "Inputs.BootstrapTokens[0].Secret: not 16 characters"},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := validInputs(t)
			c.mutate(&in)
			err := in.Validate()
			if err == nil {
				t.Fatalf("accepted")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not contain %q", err, c.want)
			}
			for _, tok := range in.BootstrapTokens {
				if strings.Contains(err.Error(), tok.Secret) {
					t.Fatalf("error %q quotes a token secret", err)
				}
			}
			if _, err := applyCheck(in); err == nil {
				t.Fatalf("Apply accepted invalid inputs")
			}
		})
	}
}

// applyCheck is what Apply and Applier.Apply do before any request.
func applyCheck(in Inputs) (bool, error) {
	var a Applier
	return a.Apply(context.Background(), nil, in)
}

func TestTokenPrintsWithoutSecret(t *testing.T) {
	in := validInputs(t)
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		out := fmt.Sprintf(format, in)
		if format == "%s" {
			out = fmt.Sprint(in.BootstrapTokens[0])
		}
		if strings.Contains(out, "0123456789abcdef") || strings.Contains(out, "fedcba9876543210") {
			t.Errorf("%s of Inputs shows a token secret: %s", format, out)
		}
		if !strings.Contains(out, "abcdef") {
			t.Errorf("%s of Inputs does not name the token: %s", format, out)
		}
	}
}

func TestInputsHash(t *testing.T) {
	in := validInputs(t)
	h := func(host string, in Inputs, now time.Time) [32]byte {
		sum, err := inputsHash(host, in, now)
		if err != nil {
			t.Fatal(err)
		}
		return sum
	}
	base := h("https://a", in, testNow)
	if base != h("https://a", validInputsCopy(in), testNow) {
		t.Errorf("the same inputs hash differently")
	}
	if base == h("https://b", in, testNow) {
		t.Errorf("another API server hashes the same")
	}
	changed := validInputsCopy(in)
	changed.Images["coredns"] = "other"
	if base == h("https://a", changed, testNow) {
		t.Errorf("another image hashes the same")
	}
	if base != h("https://a", in, testNow.Add(time.Hour)) {
		t.Errorf("the hash changed with time while no token expired")
	}
	if base == h("https://a", in, testNow.Add(25*time.Hour)) {
		t.Errorf("a token expiring does not change the hash")
	}
}

func validInputsCopy(in Inputs) Inputs {
	out := in
	out.Images = map[string]string{}
	for k, v := range in.Images {
		out.Images[k] = v
	}
	out.BootstrapTokens = append([]BootstrapToken(nil), in.BootstrapTokens...)
	return out
}
