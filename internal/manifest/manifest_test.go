package manifest

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/oneinfra/oneinfra/internal/resources"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

func i32(v int32) *int32 { return &v }

func decodeFile(t *testing.T, name string) []*pb.Resource {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Decode(name, data)
	if err != nil {
		t.Fatalf("Decode(%s): %v", name, err)
	}
	return res
}

func TestDecodeCluster(t *testing.T) {
	res := decodeFile(t, "cluster.yaml")
	want := &pb.Resource{Source: "cluster.yaml document 1", Kind: &pb.Resource_Cluster{Cluster: &pb.Cluster{
		ApiVersion: resources.APIVersion,
		Kind:       resources.KindCluster,
		Metadata:   &pb.ObjectMeta{Name: "demo", Labels: map[string]string{"team": "platform"}},
		Spec: &pb.ClusterSpec{
			KubernetesVersion: "1.37.2",
			ControlPlane:      &pb.ControlPlaneSpec{Replicas: i32(3)},
			Vpn:               &pb.VPNSpec{Enabled: true, Cidr: "10.200.0.0/24"},
			ApiServer:         &pb.APIServerSpec{ExtraSans: []string{"api.example.com", "203.0.113.10"}},
			Networking:        &pb.NetworkingSpec{PodCidr: "10.244.0.0/16", ServiceCidr: "10.96.0.0/12"},
		},
	}}}
	if len(res) != 1 || !proto.Equal(res[0], want) {
		t.Errorf("Decode = %v, want %v", res, want)
	}
}

func TestDecodeMultiDocument(t *testing.T) {
	res := decodeFile(t, "multi.yaml")
	var got []string
	for _, r := range res {
		kind, name := kindName(r)
		got = append(got, r.Source+" "+kind+" "+name)
	}
	want := []string{
		"multi.yaml document 1 Cluster small",
		"multi.yaml document 2 Hypervisor hv-1",
		"multi.yaml document 3 Hypervisor hv-2",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Defaults are filled in.
	c := res[0].GetCluster()
	if c.Spec.GetControlPlane().GetReplicas() != 1 || c.Spec.KubernetesVersion == "" || c.Spec.Networking.GetPodCidr() != resources.DefaultPodCIDR || c.Spec.Vpn != nil {
		t.Errorf("defaults not applied: %v", c)
	}
	if h := res[2].GetHypervisor(); !h.Spec.Unschedulable || h.Spec.PublicAddress != "203.0.113.5" || h.ApiVersion != resources.APIVersion {
		t.Errorf("hypervisor: %v", h)
	}
}

func TestDecodeClearsServerFields(t *testing.T) {
	res := decodeFile(t, "get-output.yaml")
	c, h := res[0].GetCluster(), res[1].GetHypervisor()
	if c.Status != nil || h.Status != nil {
		t.Errorf("status kept: %v / %v", c.Status, h.Status)
	}
	for _, m := range []*pb.ObjectMeta{c.Metadata, h.Metadata} {
		if !proto.Equal(m, &pb.ObjectMeta{Name: m.Name}) {
			t.Errorf("server metadata kept: %v", m)
		}
	}
	if c.Spec.Vpn.Cidr != "10.200.3.0/24" || h.Spec.PublicAddress != "203.0.113.5" {
		t.Errorf("spec lost: %v / %v", c.Spec, h.Spec)
	}
}

func TestDecodeLegacy(t *testing.T) {
	res := decodeFile(t, "legacy.yaml")
	want := &pb.Cluster{
		ApiVersion: resources.APIVersion,
		Kind:       resources.KindCluster,
		Metadata:   &pb.ObjectMeta{Name: "old", Labels: map[string]string{"app": "legacy"}},
		Spec: &pb.ClusterSpec{
			KubernetesVersion: "1.37.2",
			ControlPlane:      &pb.ControlPlaneSpec{Replicas: i32(3)},
			Vpn:               &pb.VPNSpec{Enabled: true, Cidr: "10.0.0.0/16"},
			ApiServer:         &pb.APIServerSpec{ExtraSans: []string{"old.example.com"}},
			Networking:        &pb.NetworkingSpec{PodCidr: "10.244.0.0/16", ServiceCidr: "10.96.0.0/12"},
		},
	}
	if len(res) != 1 || !proto.Equal(res[0].GetCluster(), want) {
		t.Errorf("Decode = %v, want %v", res, want)
	}
	// A minimal one gets the defaults; the older spec.vpnCIDR is read too.
	res, err := Decode("old.yaml", []byte(`
apiVersion: cluster.oneinfra.ereslibre.es/v1alpha1
kind: Cluster
metadata: {name: tiny}
spec: {vpnCIDR: 10.150.0.0/16}
`))
	if err != nil {
		t.Fatal(err)
	}
	c := res[0].GetCluster()
	if c.Spec.GetControlPlane().GetReplicas() != 1 || c.Spec.GetVpn().GetCidr() != "10.150.0.0/16" || c.Spec.GetVpn().GetEnabled() || c.Spec.ApiServer != nil {
		t.Errorf("minimal legacy cluster: %v", c)
	}
}

func TestDecodeList(t *testing.T) {
	res := decodeFile(t, "list.json")
	if len(res) != 2 || res[0].Source != "list.json document 1 item 1" || res[1].GetHypervisor().GetSpec().GetAddress() != "2001:db8::9" {
		t.Errorf("Decode(list.json) = %v", res)
	}
}

func TestDecodeEmpty(t *testing.T) {
	for _, in := range []string{"", "\n", "---\n---\n", "# only a comment\n", "---\n# c\n---\n"} {
		res, err := Decode("empty.yaml", []byte(in))
		if err != nil || len(res) != 0 {
			t.Errorf("Decode(%q) = %v, %v", in, res, err)
		}
	}
}

const clusterHead = "apiVersion: oneinfra.io/v1alpha1\nkind: Cluster\nmetadata: {name: demo}\n"
const hvHead = "apiVersion: oneinfra.io/v1alpha1\nkind: Hypervisor\nmetadata: {name: hv-1}\n"

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"not yaml", "apiVersion: [oops\n", `demo.yaml document 1: not valid YAML: `},
		{"tabs", "a:\n\tb: c\n", `demo.yaml document 1: not valid YAML`},
		{"duplicate key", clusterHead + "spec: {controlPlane: {replicas: 1, replicas: 2}}\n", `not valid YAML: yaml: line 4: key "replicas" already set in map`},
		{"scalar", "hello\n", `demo.yaml document 1: not a manifest: want a mapping with apiVersion and kind`},
		{"list document", "- a\n- b\n", `not a manifest`},
		{"missing apiVersion", "kind: Cluster\nmetadata: {name: demo}\n", `demo.yaml document 1 (Cluster "demo"): missing apiVersion (want oneinfra.io/v1alpha1)`},
		{"apiVersion number", "apiVersion: 1\nkind: Cluster\n", `demo.yaml document 1 (Cluster): apiVersion: must be a string, got number 1`},
		{"kind list", "apiVersion: oneinfra.io/v1alpha1\nkind: [Cluster]\n", `demo.yaml document 1: kind: must be a string, got a list`},
		{"missing kind", "apiVersion: oneinfra.io/v1alpha1\n", `demo.yaml document 1: missing kind`},
		{"unknown apiVersion", "apiVersion: example.com/v1\nkind: Cluster\nmetadata: {name: demo}\n", `demo.yaml document 1 (Cluster "demo"): unknown apiVersion "example.com/v1" and kind "Cluster"`},
		{"unknown kind", "apiVersion: oneinfra.io/v1alpha1\nkind: Pod\n", `unknown apiVersion "oneinfra.io/v1alpha1" and kind "Pod"`},
		{"legacy other kind", "apiVersion: cluster.oneinfra.ereslibre.es/v1alpha1\nkind: Component\n", `and kind "Component"`},
		{"component", "apiVersion: oneinfra.io/v1alpha1\nkind: Component\nmetadata: {name: c}\n", `(Component "c"): components are read-only`},
		{"unknown top field", clusterHead + "extra: 1\n", `demo.yaml document 1 (Cluster "demo"): unknown field "extra"`},
		{"unknown nested field", clusterHead + "spec:\n  controlPlane:\n    replicaz: 3\n", `demo.yaml document 1 (Cluster "demo"): unknown field "replicaz" in spec.controlPlane`},
		{"proto field name", clusterHead + "spec: {networking: {pod_cidr: 10.0.0.0/8}}\n", `unknown field "pod_cidr" in spec.networking`},
		{"wrong case", clusterHead + "spec: {vpn: {CIDR: 10.0.0.0/16}}\n", `unknown field "CIDR" in spec.vpn`},
		{"unknown metadata", clusterHead[:len(clusterHead)-len("metadata: {name: demo}\n")] + "metadata: {name: demo, namespace: x}\n", `unknown field "namespace" in metadata`},
		{"unknown status field", clusterHead + "status: {foo: 1}\n", `unknown field "foo" in status`},
		{"version as number", clusterHead + "spec: {kubernetesVersion: 1.37}\n", `spec.kubernetesVersion: must be a string, got number 1.37`},
		{"replicas word", clusterHead + "spec: {controlPlane: {replicas: three}}\n", `spec.controlPlane.replicas: must be an integer, got string "three"`},
		{"replicas fraction", clusterHead + "spec: {controlPlane: {replicas: 1.5}}\n", `spec.controlPlane.replicas: must be an integer, got number 1.5`},
		{"replicas overflow", clusterHead + "spec: {controlPlane: {replicas: 9999999999}}\n", `spec.controlPlane.replicas: must be an integer from -2147483648 to 2147483647, got number 9999999999`},
		{"index negative", clusterHead[:len(clusterHead)-len("metadata: {name: demo}\n")] + "metadata: {name: demo, createIndex: -1}\n", `invalid value for uint64 field createIndex: -1`},
		{"index word", clusterHead[:len(clusterHead)-len("metadata: {name: demo}\n")] + "metadata: {name: demo, createIndex: many}\n", `metadata.createIndex: must be an integer, got string "many"`},
		{"port overflow", hvHead + "spec: {address: 10.0.0.1}\nstatus: {allocatedPorts: [\"4294967296\"]}\n", `status.allocatedPorts[0]: must be an integer from 0 to 4294967295, got string "4294967296"`},
		{"spec list", clusterHead + "spec: []\n", `spec: must be a mapping, got a list`},
		{"label number", "apiVersion: oneinfra.io/v1alpha1\nkind: Cluster\nmetadata: {name: demo, labels: {zone: 1}}\n", `metadata.labels.zone: must be a string, got number 1`},
		{"sans not list", clusterHead + "spec: {apiServer: {extraSANs: a.example.com}}\n", `spec.apiServer.extraSANs: must be a list`},
		{"sans null item", clusterHead + "spec: {apiServer: {extraSANs: [~]}}\n", `spec.apiServer.extraSANs[0]: must not be null`},
		{"enabled string", clusterHead + "spec: {vpn: {enabled: \"true\"}}\n", `spec.vpn.enabled: must be true or false, got string "true"`},
		{"bad timestamp", clusterHead[:len(clusterHead)-len("metadata: {name: demo}\n")] + "metadata: {name: demo, creationTimestamp: yesterday}\n", `demo.yaml document 1 (Cluster "demo"): invalid google.protobuf.Timestamp value "yesterday"`},
		{"bad name", "apiVersion: oneinfra.io/v1alpha1\nkind: Cluster\nmetadata: {name: Demo}\n", `demo.yaml document 1 (Cluster "Demo"): metadata.name: must be a DNS-1123 label`},
		{"no name", "apiVersion: oneinfra.io/v1alpha1\nkind: Cluster\n", `demo.yaml document 1 (Cluster): metadata.name: required`},
		{"replicas range", clusterHead + "spec: {controlPlane: {replicas: 9}}\n", `demo.yaml document 1 (Cluster "demo"): spec.controlPlane.replicas: must be between 1 and 7, got 9`},
		{"version", clusterHead + "spec: {kubernetesVersion: 1.18.2}\n", `spec.kubernetesVersion: unsupported version "1.18.2" (supported: `},
		{"vpn cidr", clusterHead + "spec: {vpn: {enabled: true, cidr: 10.200.0.0/33}}\n", `spec.vpn.cidr: invalid CIDR "10.200.0.0/33"`},
		{"two errors one line", clusterHead + "spec: {controlPlane: {replicas: 0}, vpn: {cidr: 10.200.0.1/24}}\n", `spec.controlPlane.replicas: must be between 1 and 7, got 0; spec.vpn.cidr: `},
		{"hypervisor address", hvHead + "spec: {address: nope}\n", `demo.yaml document 1 (Hypervisor "hv-1"): spec.address: must be an IP address, got "nope"`},
		{"hypervisor port range", hvHead + "spec: {address: 10.0.0.1, portRange: 100-200}\n", `spec.portRange: invalid port range "100-200"`},
		{"hypervisor unknown", hvHead + "spec: {address: 10.0.0.1, ports: 1}\n", `unknown field "ports" in spec`},
		{"multi doc bad second", clusterHead + "---\n" + clusterHead[:len(clusterHead)-len("metadata: {name: demo}\n")] + "metadata: {name: other}\nspec:\n  replicaz: 2\n",
			`demo.yaml document 2 (Cluster "other"): unknown field "replicaz" in spec`},
		{"multi doc bad yaml", "---\n" + clusterHead + "---\nfoo: [\n", `demo.yaml document 2: not valid YAML`},
		{"duplicate names", clusterHead + "---\n" + clusterHead, `demo.yaml document 2 (Cluster "demo"): duplicate Cluster "demo": also defined in demo.yaml document 1`},
		{"vpn overlap", clusterHead + "spec: {vpn: {enabled: true, cidr: 10.200.0.0/24}}\n---\napiVersion: oneinfra.io/v1alpha1\nkind: Cluster\nmetadata: {name: b}\nspec: {vpn: {enabled: true, cidr: 10.200.0.0/16}}\n",
			`demo.yaml document 2 (Cluster "b"): spec.vpn.cidr: 10.200.0.0/16 overlaps the VPN CIDR 10.200.0.0/24 of cluster "demo" (demo.yaml document 1)`},
		{"legacy unknown", "apiVersion: cluster.oneinfra.ereslibre.es/v1alpha1\nkind: Cluster\nmetadata: {name: old}\nspec: {controlPlaneReplica: 3}\n", `demo.yaml document 1 (Cluster "old"): unknown field "controlPlaneReplica" in spec`},
		{"legacy new field name", "apiVersion: cluster.oneinfra.ereslibre.es/v1alpha1\nkind: Cluster\nmetadata: {name: old}\nspec: {vpn: {cidr: 10.0.0.0/16}}\n", `unknown field "cidr" in spec.vpn`},
		{"legacy unknown metadata", "apiVersion: cluster.oneinfra.ereslibre.es/v1alpha1\nkind: Cluster\nmetadata: {name: old, nmae: x}\n", `unknown field "nmae" in metadata`},
		{"legacy type", "apiVersion: cluster.oneinfra.ereslibre.es/v1alpha1\nkind: Cluster\nmetadata: {name: old}\nspec: {controlPlaneReplicas: three}\n", `spec.controlPlaneReplicas: must be an integer, got string`},
		{"legacy invalid", "apiVersion: cluster.oneinfra.ereslibre.es/v1alpha1\nkind: Cluster\nmetadata: {name: old}\nspec: {controlPlaneReplicas: 8}\n", `(Cluster "old"): spec.controlPlane.replicas: must be between 1 and 7, got 8`},
		{"list bad item", `{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"oneinfra.io/v1alpha1","kind":"Cluster","metadata":{"name":"a"},"spec":{"x":1}}]}`, `demo.yaml document 1 item 1 (Cluster "a"): unknown field "x" in spec`},
		{"nested list", `{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"List"}]}`, `unknown apiVersion "v1" and kind "List"`},
		{"list unknown field", `{"apiVersion":"v1","kind":"List","itemz":[]}`, `unknown field "itemz"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Decode("demo.yaml", []byte(tt.in))
			if err == nil {
				t.Fatalf("no error, want %q; got %v", tt.want, res)
			}
			if res != nil {
				t.Errorf("resources returned with an error: %v", res)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q\ndoes not contain %q", err, tt.want)
			}
		})
	}
}

func TestDecodeReportsEveryBadDocument(t *testing.T) {
	in := "apiVersion: oneinfra.io/v1alpha1\nkind: Cluster\nmetadata: {name: A}\n---\n" + clusterHead + "---\nfoo: [\n"
	_, err := Decode("x.yaml", []byte(in))
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "x.yaml document 1 ") || !strings.HasPrefix(lines[1], "x.yaml document 3: ") {
		t.Errorf("error = %q", err)
	}
	var fe *resources.FieldError
	if !errors.As(err, &fe) || fe.Field != "metadata.name" {
		t.Errorf("no FieldError for metadata.name in %v", err)
	}
}

func toMessages(res []*pb.Resource) []proto.Message {
	var msgs []proto.Message
	for _, r := range res {
		switch k := r.Kind.(type) {
		case *pb.Resource_Cluster:
			msgs = append(msgs, k.Cluster)
		case *pb.Resource_Hypervisor:
			msgs = append(msgs, k.Hypervisor)
		}
	}
	return msgs
}

// sameResources compares decoded resources, ignoring their sources.
func sameResources(a, b []*pb.Resource) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := proto.Clone(a[i]).(*pb.Resource), proto.Clone(b[i]).(*pb.Resource)
		x.Source, y.Source = "", ""
		if !proto.Equal(x, y) {
			return false
		}
	}
	return true
}

func TestRoundTrip(t *testing.T) {
	for _, file := range []string{"cluster.yaml", "multi.yaml", "get-output.yaml", "legacy.yaml", "list.json"} {
		res := decodeFile(t, file)
		for _, format := range []string{"yaml", "json"} {
			var buf bytes.Buffer
			if err := Encode(&buf, format, toMessages(res)); err != nil {
				t.Fatalf("%s: Encode(%s): %v", file, format, err)
			}
			again, err := Decode("again", buf.Bytes())
			if err != nil {
				t.Fatalf("%s: decoding the %s output: %v\n%s", file, format, err, buf.String())
			}
			if !sameResources(res, again) {
				t.Errorf("%s: %s round trip differs:\n%v\n%v", file, format, res, again)
			}
		}
	}
}

func TestRoundTripWithServerFields(t *testing.T) {
	// What get -o yaml prints (status, uid, indexes) applies again.
	c := &pb.Cluster{
		ApiVersion: resources.APIVersion, Kind: resources.KindCluster,
		Metadata: &pb.ObjectMeta{Name: "demo", Uid: "u-1", CreateIndex: 1 << 60, ModifyIndex: 7},
		Spec:     &pb.ClusterSpec{Vpn: &pb.VPNSpec{Enabled: true, Cidr: "10.200.0.0/24"}},
		Status: &pb.ClusterStatus{Phase: resources.PhaseReady, Conditions: []*pb.Condition{
			{Type: "Ready", Status: resources.ConditionTrue, Reason: "yes"},
		}},
	}
	var buf bytes.Buffer
	if err := Encode(&buf, "yaml", []proto.Message{c}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `createIndex: "1152921504606846976"`) {
		t.Errorf("uint64 not rendered as a string:\n%s", buf.String())
	}
	res, err := Decode("get.yaml", buf.Bytes())
	if err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	got := res[0].GetCluster()
	if got.Status != nil || got.Metadata.Uid != "" || got.Metadata.CreateIndex != 0 || got.Spec.Vpn.Cidr != "10.200.0.0/24" {
		t.Errorf("got %v", got)
	}
}

func TestEncode(t *testing.T) {
	h := &pb.Hypervisor{ApiVersion: resources.APIVersion, Kind: resources.KindHypervisor, Metadata: &pb.ObjectMeta{Name: "hv-1"}, Spec: &pb.HypervisorSpec{Address: "10.0.0.1"}}
	c := &pb.Cluster{ApiVersion: resources.APIVersion, Kind: resources.KindCluster, Metadata: &pb.ObjectMeta{Name: "demo"}}
	var buf bytes.Buffer
	if err := Encode(&buf, "yaml", []proto.Message{h, c}); err != nil {
		t.Fatal(err)
	}
	want := "apiVersion: oneinfra.io/v1alpha1\nkind: Hypervisor\nmetadata:\n  name: hv-1\nspec:\n  address: 10.0.0.1\n---\napiVersion: oneinfra.io/v1alpha1\nkind: Cluster\nmetadata:\n  name: demo\n"
	if buf.String() != want {
		t.Errorf("yaml:\n%s\nwant\n%s", buf.String(), want)
	}
	buf.Reset()
	if err := Encode(&buf, "json", []proto.Message{c}); err != nil {
		t.Fatal(err)
	}
	want = "{\n  \"apiVersion\": \"oneinfra.io/v1alpha1\",\n  \"kind\": \"Cluster\",\n  \"metadata\": {\n    \"name\": \"demo\"\n  }\n}\n"
	if buf.String() != want {
		t.Errorf("json:\n%s\nwant\n%s", buf.String(), want)
	}
	buf.Reset()
	if err := Encode(&buf, "json", []proto.Message{c, h}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(buf.String(), "{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"List\",\n  \"items\": [\n") {
		t.Errorf("json list:\n%s", buf.String())
	}
	if err := Encode(&buf, "xml", nil); err == nil || !strings.Contains(err.Error(), `"xml"`) {
		t.Errorf("Encode(xml) error = %v", err)
	}
}

func TestReadSources(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cluster := func(name, cidr string) string {
		return "apiVersion: oneinfra.io/v1alpha1\nkind: Cluster\nmetadata: {name: " + name + "}\nspec: {vpn: {enabled: true, cidr: " + cidr + "}}\n"
	}
	write("m/b.yaml", cluster("b", "10.200.1.0/24"))
	write("m/a.yml", cluster("a", "10.200.0.0/24"))
	write("m/c.json", `{"apiVersion":"oneinfra.io/v1alpha1","kind":"Hypervisor","metadata":{"name":"hv"},"spec":{"address":"10.0.0.1"}}`)
	write("m/notes.txt", "not a manifest")
	write("m/sub/d.yaml", cluster("d", "10.200.9.0/24"))
	res, err := ReadSources([]string{filepath.Join(dir, "m"), "-"}, strings.NewReader(cluster("s", "10.200.2.0/24")))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range res {
		got = append(got, strings.TrimPrefix(r.Source, dir+"/"))
	}
	want := "m/a.yml document 1,m/b.yaml document 1,m/c.json document 1,stdin document 1"
	if strings.Join(got, ",") != want {
		t.Errorf("sources = %v, want %s", got, want)
	}

	// Checks across files: an overlap between two files is refused.
	other := write("other.yaml", cluster("o", "10.200.0.0/16"))
	_, err = ReadSources([]string{filepath.Join(dir, "m"), other}, nil)
	if err == nil || !strings.Contains(err.Error(), other+` document 1 (Cluster "o"): spec.vpn.cidr: 10.200.0.0/16 overlaps`) {
		t.Errorf("cross-file overlap: %v", err)
	}
	_, err = ReadSources([]string{filepath.Join(dir, "nope.yaml")}, nil)
	if err == nil || !strings.Contains(err.Error(), "nope.yaml") {
		t.Errorf("missing file: %v", err)
	}
	_, err = ReadSources([]string{write("e/x.txt", "")[:len(dir)+2]}, nil)
	if err == nil || !strings.Contains(err.Error(), "no .yaml, .yml or .json files") {
		t.Errorf("empty dir: %v", err)
	}
	_, err = ReadSources([]string{write("empty.yaml", "# nothing\n")}, nil)
	if err == nil || !strings.Contains(err.Error(), "no resources in") {
		t.Errorf("empty manifest: %v", err)
	}
	bad := write("bad.yaml", cluster("x", "10.200.5.0/24")+"---\n"+cluster("Bad", "10.200.6.0/24"))
	res, err = ReadSources([]string{bad}, nil)
	if err == nil || res != nil || !strings.Contains(err.Error(), bad+` document 2 (Cluster "Bad"): metadata.name`) {
		t.Errorf("bad manifest: %v, %v", res, err)
	}
}
