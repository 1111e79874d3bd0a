package resources

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/version"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func i32(v int32) *int32 { return &v }

func validCluster() *pb.Cluster {
	return &pb.Cluster{
		Metadata: &pb.ObjectMeta{Name: "demo", Labels: map[string]string{"team": "a", "example.com/tier": "gold"}},
		Spec: &pb.ClusterSpec{
			KubernetesVersion: version.DefaultKubernetesVersion(),
			ControlPlane:      &pb.ControlPlaneSpec{Replicas: i32(3)},
			Vpn:               &pb.VPNSpec{Enabled: true, Cidr: "10.200.0.0/24"},
			ApiServer:         &pb.APIServerSpec{ExtraSans: []string{"api.example.com", "*.example.com", "203.0.113.7", "2001:db8::1"}},
			Networking:        &pb.NetworkingSpec{PodCidr: "10.244.0.0/16", ServiceCidr: "10.96.0.0/12"},
		},
	}
}

func validHypervisor() *pb.Hypervisor {
	return &pb.Hypervisor{
		Metadata: &pb.ObjectMeta{Name: "hv-1", Labels: map[string]string{"zone": "a"}},
		Spec:     &pb.HypervisorSpec{Public: true, Address: "10.0.0.11", PublicAddress: "203.0.113.5", PortRange: "30000-32767"},
	}
}

func TestNormalizeKind(t *testing.T) {
	for in, want := range map[string]string{
		"clusters": Clusters, "Cluster": Clusters, "CL": Clusters,
		"hypervisors": Hypervisors, "hypervisor": Hypervisors, "hv": Hypervisors,
		"components": Components, "Component": Components, "comp": Components,
	} {
		got, err := NormalizeKind(in)
		if err != nil || got != want {
			t.Errorf("NormalizeKind(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	_, err := NormalizeKind("pods")
	if err == nil || !strings.Contains(err.Error(), `"pods"`) || !strings.Contains(err.Error(), "hypervisors") {
		t.Errorf("NormalizeKind(pods) error = %v", err)
	}
}

func TestDefaultCluster(t *testing.T) {
	c := &pb.Cluster{Metadata: &pb.ObjectMeta{Name: "demo"}}
	DefaultCluster(c)
	want := &pb.Cluster{
		ApiVersion: APIVersion,
		Kind:       KindCluster,
		Metadata:   &pb.ObjectMeta{Name: "demo"},
		Spec: &pb.ClusterSpec{
			KubernetesVersion: version.DefaultKubernetesVersion(),
			ControlPlane:      &pb.ControlPlaneSpec{Replicas: i32(1)},
			Networking:        &pb.NetworkingSpec{PodCidr: DefaultPodCIDR, ServiceCidr: DefaultServiceCIDR},
		},
	}
	if !proto.Equal(c, want) {
		t.Errorf("DefaultCluster = %v, want %v", c, want)
	}
	if err := ValidateCluster(c); err != nil {
		t.Errorf("defaulted cluster invalid: %v", err)
	}
	// Set fields are kept; the VPN CIDR is never chosen here.
	c = validCluster()
	c.Spec.Vpn.Cidr = ""
	want = proto.Clone(c).(*pb.Cluster)
	want.ApiVersion, want.Kind = APIVersion, KindCluster
	DefaultCluster(c)
	if !proto.Equal(c, want) {
		t.Errorf("DefaultCluster changed set fields: %v", c)
	}
	// Idempotent.
	DefaultCluster(c)
	if !proto.Equal(c, want) {
		t.Errorf("DefaultCluster is not idempotent: %v", c)
	}
}

func TestValidateCluster(t *testing.T) {
	if err := ValidateCluster(validCluster()); err != nil {
		t.Fatalf("valid cluster: %v", err)
	}
	tests := []struct {
		name   string
		mutate func(c *pb.Cluster)
		want   string // substring of the error; "" means valid
	}{
		{"no metadata", func(c *pb.Cluster) { c.Metadata = nil }, "metadata.name: required"},
		{"uppercase name", func(c *pb.Cluster) { c.Metadata.Name = "Demo" }, `metadata.name: must be a DNS-1123 label`},
		{"dotted name", func(c *pb.Cluster) { c.Metadata.Name = "a.b" }, `got "a.b"`},
		{"leading dash", func(c *pb.Cluster) { c.Metadata.Name = "-a" }, "metadata.name"},
		{"trailing dash", func(c *pb.Cluster) { c.Metadata.Name = "a-" }, "metadata.name"},
		{"long name", func(c *pb.Cluster) { c.Metadata.Name = strings.Repeat("a", 64) }, "metadata.name"},
		{"63 char name", func(c *pb.Cluster) { c.Metadata.Name = strings.Repeat("a", 63) }, ""},
		{"digit name", func(c *pb.Cluster) { c.Metadata.Name = "1" }, ""},
		{"label key space", func(c *pb.Cluster) { c.Metadata.Labels["a b"] = "x" }, `metadata.labels: key "a b"`},
		{"label key bad prefix", func(c *pb.Cluster) { c.Metadata.Labels["Ex_ample/x"] = "x" }, "prefix must be a DNS-1123 subdomain"},
		{"label key empty name", func(c *pb.Cluster) { c.Metadata.Labels["example.com/"] = "x" }, `key "example.com/"`},
		{"label value", func(c *pb.Cluster) { c.Metadata.Labels["k"] = "a b" }, `metadata.labels: value "a b" of key "k"`},
		{"label value long", func(c *pb.Cluster) { c.Metadata.Labels["k"] = strings.Repeat("v", 64) }, "metadata.labels"},
		{"label value empty", func(c *pb.Cluster) { c.Metadata.Labels["k"] = "" }, ""},
		{"apiVersion", func(c *pb.Cluster) { c.ApiVersion = "v1" }, `apiVersion: must be "oneinfra.io/v1alpha1", got "v1"`},
		{"kind", func(c *pb.Cluster) { c.Kind = "Hypervisor" }, `kind: must be "Cluster", got "Hypervisor"`},
		{"version", func(c *pb.Cluster) { c.Spec.KubernetesVersion = "1.18.2" }, `spec.kubernetesVersion: unsupported version "1.18.2" (supported: ` + strings.Join(version.KubernetesVersions, ", ") + ")"},
		{"replicas 0", func(c *pb.Cluster) { c.Spec.ControlPlane.Replicas = i32(0) }, "spec.controlPlane.replicas: must be between 1 and 7, got 0"},
		{"replicas 9", func(c *pb.Cluster) { c.Spec.ControlPlane.Replicas = i32(9) }, "spec.controlPlane.replicas: must be between 1 and 7, got 9"},
		{"replicas 7", func(c *pb.Cluster) { c.Spec.ControlPlane.Replicas = i32(7) }, ""},
		{"replicas unset", func(c *pb.Cluster) { c.Spec.ControlPlane.Replicas = nil }, ""},
		{"backup schedule garbage", func(c *pb.Cluster) { c.Spec.Backup = &pb.BackupSpec{Schedule: "daily", Retain: 3} }, `spec.backup.schedule: must be an interval of 1m0s or more, such as 6h, got "daily"`},
		{"backup schedule too short", func(c *pb.Cluster) { c.Spec.Backup = &pb.BackupSpec{Schedule: "10s", Retain: 3} }, `spec.backup.schedule: must be an interval of 1m0s or more`},
		{"backup retain too many", func(c *pb.Cluster) { c.Spec.Backup = &pb.BackupSpec{Schedule: "1h", Retain: 5000} }, `spec.backup.retain: must be between 1 and 1000, got 5000`},
		{"vpn cidr garbage", func(c *pb.Cluster) { c.Spec.Vpn.Cidr = "nope" }, `spec.vpn.cidr: invalid CIDR "nope"`},
		{"vpn cidr no prefix", func(c *pb.Cluster) { c.Spec.Vpn.Cidr = "10.200.0.0" }, `spec.vpn.cidr: invalid CIDR`},
		{"vpn cidr not network", func(c *pb.Cluster) { c.Spec.Vpn.Cidr = "10.200.0.1/24" }, "spec.vpn.cidr: CIDR \"10.200.0.1/24\" must be written as its network address 10.200.0.0/24"},
		{"vpn cidr ipv6", func(c *pb.Cluster) { c.Spec.Vpn.Cidr = "fd00::/64" }, "spec.vpn.cidr: must be an IPv4 CIDR"},
		{"vpn cidr too big", func(c *pb.Cluster) { c.Spec.Vpn.Cidr = "10.0.0.0/8" }, "spec.vpn.cidr: prefix length must be between /16 and /29"},
		{"vpn cidr too small", func(c *pb.Cluster) { c.Spec.Vpn.Cidr = "10.200.0.0/30" }, "got /30"},
		{"vpn cidr /16", func(c *pb.Cluster) { c.Spec.Vpn.Cidr = "10.200.0.0/16" }, ""},
		{"vpn cidr /29", func(c *pb.Cluster) { c.Spec.Vpn.Cidr = "10.200.0.8/29" }, ""},
		{"vpn overlaps pods", func(c *pb.Cluster) { c.Spec.Vpn.Cidr = "10.244.3.0/24" }, "spec.vpn.cidr: 10.244.3.0/24 overlaps spec.networking.podCIDR 10.244.0.0/16"},
		{"vpn overlaps services", func(c *pb.Cluster) { c.Spec.Vpn.Cidr = "10.100.0.0/16" }, "spec.vpn.cidr: 10.100.0.0/16 overlaps spec.networking.serviceCIDR 10.96.0.0/12"},
		{"extra SAN bad", func(c *pb.Cluster) { c.Spec.ApiServer.ExtraSans = []string{"ok.example.com", "bad_name"} }, `spec.apiServer.extraSANs[1]: must be a DNS name or an IP address, got "bad_name"`},
		{"extra SAN empty", func(c *pb.Cluster) { c.Spec.ApiServer.ExtraSans = []string{""} }, `spec.apiServer.extraSANs[0]`},
		{"extra SAN zone", func(c *pb.Cluster) { c.Spec.ApiServer.ExtraSans = []string{"fe80::1%eth0"} }, `spec.apiServer.extraSANs[0]`},
		{"pod cidr bad", func(c *pb.Cluster) { c.Spec.Networking.PodCidr = "10.244.0.0/33" }, `spec.networking.podCIDR: invalid CIDR "10.244.0.0/33"`},
		{"pod cidr not network", func(c *pb.Cluster) { c.Spec.Networking.PodCidr = "10.244.1.0/16" }, `spec.networking.podCIDR: CIDR "10.244.1.0/16" must be written as its network address 10.244.0.0/16`},
		{"service cidr bad", func(c *pb.Cluster) { c.Spec.Networking.ServiceCidr = "x" }, `spec.networking.serviceCIDR: invalid CIDR "x"`},
		{"service overlaps pods", func(c *pb.Cluster) { c.Spec.Networking.ServiceCidr = "10.244.128.0/20" }, "spec.networking.serviceCIDR: 10.244.128.0/20 overlaps spec.networking.podCIDR 10.244.0.0/16"},
		{"ipv6 networking", func(c *pb.Cluster) {
			c.Spec.Networking = &pb.NetworkingSpec{PodCidr: "fd00:10::/56", ServiceCidr: "fd00:20::/112"}
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validCluster()
			tt.mutate(c)
			err := ValidateCluster(c)
			checkErr(t, err, tt.want)
		})
	}
}

func TestValidateClusterReportsAll(t *testing.T) {
	c := validCluster()
	c.Metadata.Name = "Bad"
	c.Spec.ControlPlane.Replicas = i32(8)
	err := ValidateCluster(c)
	for _, want := range []string{"metadata.name", "spec.controlPlane.replicas"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
}

func TestValidateHypervisor(t *testing.T) {
	if err := ValidateHypervisor(validHypervisor()); err != nil {
		t.Fatalf("valid hypervisor: %v", err)
	}
	tests := []struct {
		name   string
		mutate func(h *pb.Hypervisor)
		want   string
	}{
		{"bad name", func(h *pb.Hypervisor) { h.Metadata.Name = "HV_1" }, `metadata.name: must be a DNS-1123 label`},
		{"no name", func(h *pb.Hypervisor) { h.Metadata.Name = "" }, `metadata.name: required`},
		{"label", func(h *pb.Hypervisor) { h.Metadata.Labels["zone"] = "-a" }, `metadata.labels: value "-a" of key "zone"`},
		{"kind", func(h *pb.Hypervisor) { h.Kind = "Cluster" }, `kind: must be "Hypervisor"`},
		{"no spec", func(h *pb.Hypervisor) { h.Spec = nil }, "spec.address: required"},
		{"no address", func(h *pb.Hypervisor) { h.Spec.Address = "" }, "spec.address: required"},
		{"bad address", func(h *pb.Hypervisor) { h.Spec.Address = "hv-1.local" }, `spec.address: must be an IP address, got "hv-1.local"`},
		{"ipv6 address", func(h *pb.Hypervisor) { h.Spec.Address = "2001:db8::11" }, ""},
		{"public no public address", func(h *pb.Hypervisor) { h.Spec.PublicAddress = "" }, "spec.publicAddress: required when spec.public is true"},
		{"public bad address", func(h *pb.Hypervisor) { h.Spec.PublicAddress = "1.2.3" }, `spec.publicAddress: must be an IP address, got "1.2.3"`},
		{"private with public address", func(h *pb.Hypervisor) { h.Spec.Public = false }, "spec.publicAddress: must be empty unless spec.public is true"},
		{"private", func(h *pb.Hypervisor) { h.Spec.Public, h.Spec.PublicAddress = false, "" }, ""},
		{"port range empty", func(h *pb.Hypervisor) { h.Spec.PortRange = "" }, ""},
		{"port range format", func(h *pb.Hypervisor) { h.Spec.PortRange = "30000" }, `spec.portRange: invalid port range "30000": must be LOW-HIGH`},
		{"port range words", func(h *pb.Hypervisor) { h.Spec.PortRange = "a-b" }, `must be LOW-HIGH`},
		{"port range low", func(h *pb.Hypervisor) { h.Spec.PortRange = "80-2000" }, "spec.portRange: invalid port range \"80-2000\": ports must be between 1024 and 65535"},
		{"port range high", func(h *pb.Hypervisor) { h.Spec.PortRange = "60000-70000" }, "ports must be between 1 and 65535"},
		{"port range reversed", func(h *pb.Hypervisor) { h.Spec.PortRange = "32767-30000" }, "LOW must not exceed HIGH"},
		{"port range small", func(h *pb.Hypervisor) { h.Spec.PortRange = "30000-30014" }, "must hold at least 16 ports, got 15"},
		{"port range 16", func(h *pb.Hypervisor) { h.Spec.PortRange = "30000-30015" }, ""},
		{"port range negative", func(h *pb.Hypervisor) { h.Spec.PortRange = "-1-3000" }, "must be LOW-HIGH"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := validHypervisor()
			tt.mutate(h)
			checkErr(t, ValidateHypervisor(h), tt.want)
		})
	}
}

func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("unexpected error: %v", err)
	case want != "" && err == nil:
		t.Errorf("no error, want %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Errorf("error %q does not contain %q", err, want)
	}
}

func TestParsePortRange(t *testing.T) {
	lo, hi, err := ParsePortRange("")
	if err != nil || lo != 30000 || hi != 32767 {
		t.Errorf("ParsePortRange(\"\") = %d, %d, %v", lo, hi, err)
	}
	lo, hi, err = ParsePortRange("1024-65535")
	if err != nil || lo != 1024 || hi != 65535 {
		t.Errorf("ParsePortRange(1024-65535) = %d, %d, %v", lo, hi, err)
	}
}

func TestCIDRsOverlap(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"10.0.0.0/8", "10.1.0.0/16", true},
		{"10.1.0.0/16", "10.0.0.0/8", true},
		{"10.0.0.0/24", "10.0.1.0/24", false},
		{"10.0.0.0/24", "10.0.0.0/24", true},
		{"10.0.0.0/24", "fd00::/8", false},
	}
	for _, tt := range tests {
		got, err := CIDRsOverlap(tt.a, tt.b)
		if err != nil || got != tt.want {
			t.Errorf("CIDRsOverlap(%s, %s) = %v, %v", tt.a, tt.b, got, err)
		}
	}
	if _, err := CIDRsOverlap("10.0.0.0/8", "bad"); err == nil || !strings.Contains(err.Error(), `"bad"`) {
		t.Errorf("CIDRsOverlap(bad) error = %v", err)
	}
}

func TestCheckVPNOverlaps(t *testing.T) {
	mk := func(name, cidr string, enabled bool) *pb.Cluster {
		return &pb.Cluster{Metadata: &pb.ObjectMeta{Name: name}, Spec: &pb.ClusterSpec{Vpn: &pb.VPNSpec{Enabled: enabled, Cidr: cidr}}}
	}
	ok := []*pb.Cluster{mk("a", "10.200.0.0/24", true), mk("b", "10.200.1.0/24", true), mk("c", "10.200.0.0/16", false), mk("d", "", true)}
	if err := CheckVPNOverlaps(ok); err != nil {
		t.Errorf("CheckVPNOverlaps: %v", err)
	}
	err := CheckVPNOverlaps(append(ok, mk("e", "10.200.0.0/16", true)))
	want := `VPN CIDR 10.200.0.0/16 of cluster "e" overlaps VPN CIDR 10.200.0.0/24 of cluster "a"`
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), `cluster "b"`) {
		t.Errorf("CheckVPNOverlaps error = %v, want %q and cluster b", err, want)
	}
}

func TestSetCondition(t *testing.T) {
	t0 := timestamppb.New(time.Unix(1000, 0))
	t1 := timestamppb.New(time.Unix(2000, 0))
	var conds []*pb.Condition
	conds = SetCondition(conds, &pb.Condition{Type: "Ready", Status: ConditionFalse, Reason: "Placing", LastTransitionTime: t0})
	conds = SetCondition(conds, &pb.Condition{Type: "VPN", Status: ConditionTrue, LastTransitionTime: t0})
	if len(conds) != 2 {
		t.Fatalf("got %d conditions", len(conds))
	}
	before := conds
	// Same status: reason and message change, the transition time does not.
	conds = SetCondition(conds, &pb.Condition{Type: "Ready", Status: ConditionFalse, Reason: "Starting", Message: "etcd", LastTransitionTime: t1})
	got := FindCondition(conds, "Ready")
	if got.Reason != "Starting" || got.Message != "etcd" || !proto.Equal(got.LastTransitionTime, t0) {
		t.Errorf("same status: got %v", got)
	}
	if FindCondition(before, "Ready").Reason != "Placing" {
		t.Errorf("SetCondition modified its input")
	}
	// Status change: the transition time moves.
	conds = SetCondition(conds, &pb.Condition{Type: "Ready", Status: ConditionTrue, Reason: "Ready", LastTransitionTime: t1})
	if got := FindCondition(conds, "Ready"); got.Status != ConditionTrue || !proto.Equal(got.LastTransitionTime, t1) {
		t.Errorf("status change: got %v", got)
	}
	if len(conds) != 2 || FindCondition(conds, "Missing") != nil {
		t.Errorf("unexpected conditions %v", conds)
	}
}

func TestServiceIP(t *testing.T) {
	for cidr, want := range map[string]string{
		"10.96.0.0/12":     "10.96.0.1",
		"10.96.5.7/12":     "10.96.0.1",
		"172.20.0.0/16":    "172.20.0.1",
		"10.0.0.0/31":      "10.0.0.1",
		"fd00:10:96::/108": "fd00:10:96::1",
	} {
		got, err := ServiceIP(cidr)
		if err != nil || !got.Equal(net.ParseIP(want)) {
			t.Errorf("ServiceIP(%s) = %v, %v; want %s", cidr, got, err, want)
		}
	}
	for _, bad := range []string{"", "10.96.0.1", "10.96.0.0/32", "x/12"} {
		if _, err := ServiceIP(bad); err == nil {
			t.Errorf("ServiceIP(%q) succeeded", bad)
		}
	}
}

func TestDNSServiceIP(t *testing.T) {
	for cidr, want := range map[string]string{"10.96.0.0/12": "10.96.0.10", "172.20.0.0/28": "172.20.0.10"} {
		if got, err := DNSServiceIP(cidr); err != nil || !got.Equal(net.ParseIP(want)) {
			t.Errorf("DNSServiceIP(%s) = %v, %v; want %s", cidr, got, err, want)
		}
	}
	for _, bad := range []string{"10.0.0.0/29", "x"} {
		if _, err := DNSServiceIP(bad); err == nil {
			t.Errorf("DNSServiceIP(%q) succeeded", bad)
		}
	}
}
