package coordinator

import (
	"strings"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func testComponent(name, cluster, hv string) *pb.Component {
	return &pb.Component{Metadata: &pb.ObjectMeta{Name: name},
		Spec: &pb.ComponentSpec{Cluster: cluster, Role: resources.RoleControlPlane, Hypervisor: hv}}
}

// TestMergeRestore: a restore brings the snapshot's clusters and tokens
// but keeps the servers, the hypervisors registered since, every
// revocation, and the components the snapshot lacks, orphaned.
func TestMergeRestore(t *testing.T) {
	exp := timestamppb.New(testNow.Add(time.Hour))
	then := &pb.Snapshot{
		Config:      &pb.CoordinatorConfig{ClusterId: "old"},
		Clusters:    []*pb.Cluster{{Metadata: &pb.ObjectMeta{Name: "kept"}}, {Metadata: &pb.ObjectMeta{Name: "gone-since"}}},
		Hypervisors: []*pb.Hypervisor{{Metadata: &pb.ObjectMeta{Name: "hv-1"}, Spec: &pb.HypervisorSpec{Address: "then"}}},
		Components:  []*pb.Component{testComponent("kept-cp-0", "kept", "hv-1")},
		Tokens: []*pb.Token{
			{Id: "revoked", Expires: exp}, {Id: "pruned", Expires: exp}, {Id: "used", Expires: exp, Uses: 1, MaxUses: 3},
		},
		Issued:   []*pb.IssuedCert{{Serial: "aa", Role: vocab.RoleOperator, Name: "ops"}},
		VpnPeers: []*pb.VPNPeer{{Cluster: "kept", Name: "w-1", Address: "10.200.0.2"}, {Cluster: "gone-since", Name: "w-9"}},
	}
	now := &pb.Snapshot{
		Config:      &pb.CoordinatorConfig{ClusterId: "cur"},
		Servers:     []*pb.Server{{Id: "s1"}},
		Clusters:    []*pb.Cluster{{Metadata: &pb.ObjectMeta{Name: "kept"}}, {Metadata: &pb.ObjectMeta{Name: "newer"}}},
		Hypervisors: []*pb.Hypervisor{{Metadata: &pb.ObjectMeta{Name: "hv-1"}, Spec: &pb.HypervisorSpec{Address: "now"}}, {Metadata: &pb.ObjectMeta{Name: "hv-2"}}},
		Components:  []*pb.Component{testComponent("kept-cp-0", "kept", "hv-1"), testComponent("newer-cp-0", "newer", "hv-2")},
		Tokens: []*pb.Token{
			{Id: "revoked", Expires: exp, Revoked: true}, {Id: "used", Expires: exp, Uses: 3, MaxUses: 3}, {Id: "made-since", Expires: exp},
		},
		Issued: []*pb.IssuedCert{
			{Serial: "aa", Role: vocab.RoleOperator, Name: "ops", Revoked: true, RevokedReason: "admin revoked"},
			{Serial: "bb", Role: vocab.RoleHypervisor, Name: "hv-2"},
		},
		VpnPeers: []*pb.VPNPeer{{Cluster: "kept", Name: "w-2", Address: "10.200.0.3"}},
	}
	changes := mergeRestore(now, then, testNow)
	got := then

	if got.Config.ClusterId != "cur" || len(got.Servers) != 1 {
		t.Errorf("the coordinator's configuration or servers changed: %v %v", got.Config, got.Servers)
	}
	hvs := map[string]*pb.Hypervisor{}
	for _, h := range got.Hypervisors {
		hvs[h.Metadata.Name] = h
	}
	if len(hvs) != 2 || hvs["hv-1"].Spec.Address != "now" || hvs["hv-2"] == nil {
		t.Errorf("hypervisors: %v, want hv-1 as now and hv-2", got.Hypervisors)
	}
	toks := map[string]*pb.Token{}
	for _, tok := range got.Tokens {
		toks[tok.Id] = tok
	}
	switch {
	case toks["revoked"] == nil || !toks["revoked"].Revoked:
		t.Error("a token revoked since the snapshot is not revoked")
	case toks["pruned"] != nil:
		t.Error("a token forgotten since the snapshot is back")
	case toks["made-since"] == nil:
		t.Error("a token made since the snapshot is gone")
	case toks["used"].Uses != 3:
		t.Errorf("a token used since has %d uses, want 3", toks["used"].Uses)
	}
	certs := map[string]*pb.IssuedCert{}
	for _, c := range got.Issued {
		certs[c.Serial] = c
	}
	if !certs["aa"].GetRevoked() || certs["aa"].RevokedReason != "admin revoked" || certs["bb"] == nil {
		t.Errorf("issued certificates: %v", got.Issued)
	}
	comps := map[string]*pb.Component{}
	for _, c := range got.Components {
		comps[c.Metadata.Name] = c
	}
	if c := comps["newer-cp-0"]; c == nil || !c.Spec.Orphaned || c.Status.State != vocab.StateOrphaned || c.Spec.Hypervisor != "hv-2" {
		t.Errorf("the component the snapshot lacks: %v, want it orphaned on hv-2", c)
	}
	if c := comps["kept-cp-0"]; c == nil || c.Spec.Orphaned {
		t.Errorf("a component of the snapshot: %v", c)
	}
	var peers []string
	for _, p := range got.VpnPeers {
		peers = append(peers, p.Cluster+"/"+p.Name)
	}
	if strings.Join(peers, " ") != "gone-since/w-9 kept/w-1 kept/w-2" {
		t.Errorf("VPN peers %v", peers)
	}
	all := strings.Join(changes, "\n")
	for _, want := range []string{"cluster newer: not in the snapshot", "cluster gone-since: back", "token pruned", "component newer-cp-0 (cluster newer) on hv-2"} {
		if !strings.Contains(all, want) {
			t.Errorf("changes lack %q:\n%s", want, all)
		}
	}
}
