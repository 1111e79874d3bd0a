package addons

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"sort"
	"time"

	"github.com/oneinfra/oneinfra/internal/vocab"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	discoveryv1ac "k8s.io/client-go/applyconfigurations/discovery/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	clientcmdv1 "k8s.io/client-go/tools/clientcmd/api/v1"
	"sigs.k8s.io/yaml"
)

// Labels and names shared with the callers.
const (
	// FieldManager is the server-side apply field manager of every object.
	FieldManager = "oneinfra"
	// ManagedByLabel is on every object, with the value FieldManager.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	// ComponentLabel says which add-on an object belongs to
	// (ComponentBootstrapToken, "tls-bootstrap", "kube-proxy", "coredns").
	ComponentLabel = "app.kubernetes.io/component"
	// ComponentBootstrapToken marks the bootstrap token Secrets oneinfra
	// made: the ones Apply deletes when Inputs no longer has them.
	ComponentBootstrapToken = "bootstrap-token"
	// TokenGroup is the extra group of every bootstrap token's user.
	TokenGroup = "system:bootstrappers:oneinfra:worker"
)

const (
	systemNamespace     = "kube-system"
	tokenSecretPrefix   = "bootstrap-token-"
	bootstrappersGroup  = "system:bootstrappers"
	nodesGroup          = "system:nodes"
	componentTLS        = "tls-bootstrap"
	componentKubeProxy  = "kube-proxy"
	componentCoreDNS    = "coredns"
	componentAddons     = "addons"
	kubeProxyConfigDir  = "/var/lib/kube-proxy"
	kubeProxyConfigFile = "config.conf"
	kubeProxyKubeconfig = "kubeconfig.conf"
	saTokenFile         = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	configHashKey       = "oneinfra.io/config-hash"
	coreDNSConfigDir    = "/etc/coredns"
)

// object is one rendered apply configuration: a Secret, ServiceAccount,
// ConfigMap, Service, ClusterRole, ClusterRoleBinding, DaemonSet,
// Deployment or EndpointSlice.
type object interface {
	GetKind() *string
	GetName() *string
	GetNamespace() *string
}

// describe names an object in errors: "DaemonSet kube-system/kube-proxy",
// "ClusterRole system:coredns".
func describe(o object) string {
	name := deref(o.GetName())
	if ns := deref(o.GetNamespace()); ns != "" {
		name = ns + "/" + name
	}
	return deref(o.GetKind()) + " " + name
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// render makes every object of the cluster's add-ons from valid Inputs, in
// the order they are applied: what a workload refers to comes before it.
// Tokens expired at now are left out.
func render(in Inputs, now time.Time) ([]object, error) {
	var objs []object
	for _, t := range in.BootstrapTokens {
		if !t.Expires.IsZero() && !t.Expires.After(now) {
			continue
		}
		objs = append(objs, tokenSecretObject(t))
	}
	proxy, err := kubeProxy(in)
	if err != nil {
		return nil, err
	}
	objs = append(objs, proxy...)
	objs = append(objs, coreDNS(in)...)
	objs = append(objs, kubernetesEndpoints(in)...)
	return objs, nil
}

// kubernetesEndpoints point the kubernetes service (which pods reach the
// API by) at the API server URL of the nodes: the ingress, through the
// VPN. The API servers do not publish their own addresses, which nodes
// cannot reach (--endpoint-reconciler-type=none), so both records of it
// are written here: its EndpointSlice and, as conformance asks, its
// Endpoints, which the mirroring controller leaves alone (as it does the
// API servers' own).
func kubernetesEndpoints(in Inputs) []object {
	u, _ := url.Parse(in.APIServer) // validated
	ip, port, _ := apiAddress(u)
	family := discoveryv1.AddressTypeIPv4
	if ip.Is6() {
		family = discoveryv1.AddressTypeIPv6
	}
	slice := discoveryv1ac.EndpointSlice("kubernetes", "default").
		WithLabels(labels("apiserver", discoveryv1.LabelServiceName, "kubernetes", discoveryv1.LabelManagedBy, FieldManager)).
		WithAddressType(family).
		WithEndpoints(discoveryv1ac.Endpoint().WithAddresses(ip.String()).
			WithConditions(discoveryv1ac.EndpointConditions().WithReady(true))).
		WithPorts(discoveryv1ac.EndpointPort().WithName("https").WithPort(port).WithProtocol(corev1.ProtocolTCP))
	endpoints := corev1ac.Endpoints("kubernetes", "default").
		WithLabels(labels("apiserver", discoveryv1.LabelSkipMirror, "true")).
		WithSubsets(corev1ac.EndpointSubset().
			WithAddresses(corev1ac.EndpointAddress().WithIP(ip.String())).
			WithPorts(corev1ac.EndpointPort().WithName("https").WithPort(port).WithProtocol(corev1.ProtocolTCP)))
	return []object{slice, endpoints}
}

func labels(component string, extra ...string) map[string]string {
	l := map[string]string{ManagedByLabel: FieldManager, ComponentLabel: component}
	for i := 0; i+1 < len(extra); i += 2 {
		l[extra[i]] = extra[i+1]
	}
	return l
}

// tokenSecretName is the Secret of the bootstrap token id.
func tokenSecretName(id string) string { return tokenSecretPrefix + id }

func tokenSecretObject(t BootstrapToken) *corev1ac.SecretApplyConfiguration {
	data := map[string][]byte{
		"token-id":                       []byte(t.ID),
		"token-secret":                   []byte(t.Secret),
		"usage-bootstrap-authentication": []byte("true"),
		"usage-bootstrap-signing":        []byte("true"),
		"auth-extra-groups":              []byte(TokenGroup),
	}
	if !t.Expires.IsZero() {
		data["expiration"] = []byte(t.Expires.UTC().Format(time.RFC3339))
	}
	if t.Description != "" {
		data["description"] = []byte(t.Description)
	}
	return corev1ac.Secret(tokenSecretName(t.ID), systemNamespace).
		WithLabels(labels(ComponentBootstrapToken)).
		WithType(corev1.SecretTypeBootstrapToken).
		WithData(data)
}

// kubeProxyKubeconfigYAML is the kubeconfig kube-proxy reads: the API
// server through the VPN, the cluster CA, the service account's token.
func kubeProxyKubeconfigYAML(in Inputs) ([]byte, error) {
	cfg := clientcmdv1.Config{
		APIVersion: "v1",
		Kind:       "Config",
		Clusters: []clientcmdv1.NamedCluster{{Name: in.Cluster, Cluster: clientcmdv1.Cluster{
			Server: in.APIServer, CertificateAuthorityData: in.ClusterCAPEM,
		}}},
		AuthInfos: []clientcmdv1.NamedAuthInfo{{Name: "kube-proxy", AuthInfo: clientcmdv1.AuthInfo{TokenFile: saTokenFile}}},
		Contexts: []clientcmdv1.NamedContext{{Name: "kube-proxy@" + in.Cluster, Context: clientcmdv1.Context{
			Cluster: in.Cluster, AuthInfo: "kube-proxy",
		}}},
		CurrentContext: "kube-proxy@" + in.Cluster,
	}
	return yaml.Marshal(cfg)
}

// kubeProxyConfigYAML is kube-proxy's KubeProxyConfiguration. The conntrack
// zeros tell kube-proxy to leave nf_conntrack_max and the TCP timeouts
// alone: a worker may run where kube-proxy cannot set them.
func kubeProxyConfigYAML(in Inputs) ([]byte, error) {
	return yaml.Marshal(map[string]any{
		"apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
		"kind":       "KubeProxyConfiguration",
		"clientConnection": map[string]any{
			"kubeconfig": kubeProxyConfigDir + "/" + kubeProxyKubeconfig,
		},
		"mode":        "iptables",
		"clusterCIDR": in.PodCIDR,
		"conntrack": map[string]any{
			"maxPerCore":            0,
			"min":                   0,
			"tcpEstablishedTimeout": "0s",
			"tcpCloseWaitTimeout":   "0s",
		},
	})
}

// hashData is a short, stable digest of a ConfigMap's data.
func hashData(data map[string]string) string {
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%d:%s%d:%s", len(k), k, len(data[k]), data[k])
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func kubeProxy(in Inputs) ([]object, error) {
	kubeconfig, err := kubeProxyKubeconfigYAML(in)
	if err != nil {
		return nil, fmt.Errorf("rendering kube-proxy's kubeconfig: %w", err)
	}
	config, err := kubeProxyConfigYAML(in)
	if err != nil {
		return nil, fmt.Errorf("rendering kube-proxy's configuration: %w", err)
	}
	data := map[string]string{kubeProxyKubeconfig: string(kubeconfig), kubeProxyConfigFile: string(config)}
	podLabels := map[string]string{"k8s-app": "kube-proxy"}
	lib := labels(componentKubeProxy)
	container := corev1ac.Container().
		WithName("kube-proxy").
		WithImage(in.Images[vocab.ImageKubeProxy]).
		WithImagePullPolicy(corev1.PullIfNotPresent).
		WithCommand("/usr/local/bin/kube-proxy",
			"--config="+kubeProxyConfigDir+"/"+kubeProxyConfigFile,
			"--hostname-override=$(NODE_NAME)").
		WithEnv(corev1ac.EnvVar().WithName("NODE_NAME").WithValueFrom(
			corev1ac.EnvVarSource().WithFieldRef(corev1ac.ObjectFieldSelector().WithAPIVersion("v1").WithFieldPath("spec.nodeName")))).
		WithSecurityContext(corev1ac.SecurityContext().WithPrivileged(true)).
		WithVolumeMounts(
			corev1ac.VolumeMount().WithName("kube-proxy").WithMountPath(kubeProxyConfigDir).WithReadOnly(true),
			// iptables takes its lock here (read-write: it may create it).
			corev1ac.VolumeMount().WithName("xtables-lock").WithMountPath("/run/xtables.lock"),
			corev1ac.VolumeMount().WithName("lib-modules").WithMountPath("/lib/modules").WithReadOnly(true),
		)
	pod := corev1ac.PodSpec().
		WithHostNetwork(true).
		WithPriorityClassName("system-node-critical").
		WithServiceAccountName("kube-proxy").
		WithNodeSelector(map[string]string{"kubernetes.io/os": "linux"}).
		WithTolerations(corev1ac.Toleration().WithOperator(corev1.TolerationOpExists)).
		WithContainers(container).
		WithVolumes(
			corev1ac.Volume().WithName("kube-proxy").WithConfigMap(corev1ac.ConfigMapVolumeSource().WithName("kube-proxy")),
			corev1ac.Volume().WithName("xtables-lock").WithHostPath(
				corev1ac.HostPathVolumeSource().WithPath("/run/xtables.lock").WithType(corev1.HostPathFileOrCreate)),
			corev1ac.Volume().WithName("lib-modules").WithHostPath(
				corev1ac.HostPathVolumeSource().WithPath("/lib/modules")),
		)
	return []object{
		corev1ac.ServiceAccount("kube-proxy", systemNamespace).WithLabels(lib),
		corev1ac.ConfigMap("kube-proxy", systemNamespace).WithLabels(lib).WithData(data),
		appsv1ac.DaemonSet("kube-proxy", systemNamespace).
			WithLabels(labels(componentKubeProxy, "k8s-app", "kube-proxy")).
			WithSpec(appsv1ac.DaemonSetSpec().
				WithSelector(metav1ac.LabelSelector().WithMatchLabels(podLabels)).
				WithUpdateStrategy(appsv1ac.DaemonSetUpdateStrategy().WithType("RollingUpdate")).
				WithTemplate(corev1ac.PodTemplateSpec().
					WithLabels(labels(componentKubeProxy, "k8s-app", "kube-proxy")).
					WithAnnotations(map[string]string{configHashKey: hashData(data)}).
					WithSpec(pod))),
	}, nil
}

// corefile serves the cluster domain and the reverse zones from the API,
// and forwards the rest to the node's resolvers.
func corefile(domain string) string {
	return fmt.Sprintf(`.:53 {
    errors
    health {
        lameduck 5s
    }
    ready
    kubernetes %s in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf
    cache 30
    loop
    reload
    loadbalance
}
`, domain)
}

func coreDNS(in Inputs) []object {
	lib := labels(componentCoreDNS)
	podLabels := map[string]string{"k8s-app": "kube-dns"}
	port := func(name string, n int32, proto corev1.Protocol) *corev1ac.ContainerPortApplyConfiguration {
		return corev1ac.ContainerPort().WithName(name).WithContainerPort(n).WithProtocol(proto)
	}
	probe := func(path string, port int) *corev1ac.ProbeApplyConfiguration {
		return corev1ac.Probe().WithHTTPGet(corev1ac.HTTPGetAction().WithPath(path).WithPort(intstr.FromInt32(int32(port))).WithScheme(corev1.URISchemeHTTP))
	}
	container := corev1ac.Container().
		WithName("coredns").
		WithImage(in.Images[vocab.ImageCoreDNS]).
		WithImagePullPolicy(corev1.PullIfNotPresent).
		WithArgs("-conf", coreDNSConfigDir+"/Corefile").
		WithPorts(port("dns", 53, corev1.ProtocolUDP), port("dns-tcp", 53, corev1.ProtocolTCP), port("metrics", 9153, corev1.ProtocolTCP)).
		WithVolumeMounts(corev1ac.VolumeMount().WithName("config-volume").WithMountPath(coreDNSConfigDir).WithReadOnly(true)).
		WithReadinessProbe(probe("/ready", 8181).WithPeriodSeconds(10)).
		WithLivenessProbe(probe("/health", 8080).WithInitialDelaySeconds(60).WithTimeoutSeconds(5).WithSuccessThreshold(1).WithFailureThreshold(5)).
		WithResources(corev1ac.ResourceRequirements().
			WithRequests(corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("70Mi")}).
			WithLimits(corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("170Mi")})).
		WithSecurityContext(corev1ac.SecurityContext().
			WithAllowPrivilegeEscalation(false).
			WithReadOnlyRootFilesystem(true).
			WithCapabilities(corev1ac.Capabilities().WithAdd("NET_BIND_SERVICE").WithDrop("ALL")))
	pod := corev1ac.PodSpec().
		WithServiceAccountName("coredns").
		WithPriorityClassName("system-cluster-critical").
		// CoreDNS resolves through the node's resolvers, never itself.
		WithDNSPolicy(corev1.DNSDefault).
		WithNodeSelector(map[string]string{"kubernetes.io/os": "linux"}).
		WithTolerations(corev1ac.Toleration().WithKey("CriticalAddonsOnly").WithOperator(corev1.TolerationOpExists)).
		WithContainers(container).
		WithVolumes(corev1ac.Volume().WithName("config-volume").WithConfigMap(
			corev1ac.ConfigMapVolumeSource().WithName("coredns").WithItems(corev1ac.KeyToPath().WithKey("Corefile").WithPath("Corefile"))))
	servicePort := func(name string, n int32, proto corev1.Protocol) *corev1ac.ServicePortApplyConfiguration {
		return corev1ac.ServicePort().WithName(name).WithPort(n).WithTargetPort(intstr.FromInt32(n)).WithProtocol(proto)
	}
	return []object{
		corev1ac.ServiceAccount("coredns", systemNamespace).WithLabels(lib),
		corev1ac.ConfigMap("coredns", systemNamespace).WithLabels(lib).WithData(map[string]string{"Corefile": corefile(in.DNSDomain)}),
		corev1ac.Service("kube-dns", systemNamespace).
			WithLabels(labels(componentCoreDNS, "k8s-app", "kube-dns", "kubernetes.io/name", "CoreDNS")).
			WithAnnotations(map[string]string{"prometheus.io/port": "9153", "prometheus.io/scrape": "true"}).
			WithSpec(corev1ac.ServiceSpec().
				WithSelector(podLabels).
				WithClusterIP(in.ClusterDNS).
				WithPorts(servicePort("dns", 53, corev1.ProtocolUDP), servicePort("dns-tcp", 53, corev1.ProtocolTCP), servicePort("metrics", 9153, corev1.ProtocolTCP))),
		appsv1ac.Deployment("coredns", systemNamespace).
			WithLabels(labels(componentCoreDNS, "k8s-app", "kube-dns")).
			WithSpec(appsv1ac.DeploymentSpec().
				WithReplicas(1).
				WithSelector(metav1ac.LabelSelector().WithMatchLabels(podLabels)).
				WithStrategy(appsv1ac.DeploymentStrategy().WithType("RollingUpdate").WithRollingUpdate(
					appsv1ac.RollingUpdateDeployment().WithMaxUnavailable(intstr.FromInt32(1)))).
				WithTemplate(corev1ac.PodTemplateSpec().
					WithLabels(labels(componentCoreDNS, "k8s-app", "kube-dns")).
					// CoreDNS reads the cluster CA (kube-root-ca.crt) once:
					// it starts again when a CA rotation changes it.
					WithAnnotations(map[string]string{configHashKey: hashData(map[string]string{"ca": string(in.ClusterCAPEM)})}).
					WithSpec(pod))),
	}
}
