package scheduler

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

func TestPlaceControlPlane(t *testing.T) {
	tests := []struct {
		name       string
		want       int
		hvs        []*pb.Hypervisor
		comps      []*pb.Component
		out        []string
		err        error
		errContain string
	}{
		{name: "no hypervisors", want: 1, err: ErrNoPrivateHypervisor, errContain: "none registered"},
		{name: "only public", want: 1, hvs: hvs(hv("a", public)), err: ErrNoPrivateHypervisor, errContain: "1 public"},
		{
			name: "none schedulable", want: 1,
			hvs: hvs(hv("a", unschedulable), hv("b", dead), hv("c", deleting), hv("d", withPorts("9-1")), hv("e", public)),
			err: ErrNoPrivateHypervisor, errContain: "5 registered: 1 unschedulable, 1 dead, 1 being deleted, 1 invalid port range, 1 public",
		},
		{name: "want zero", want: 0, out: nil},
		{name: "distinct", want: 3, hvs: hvs(hv("c"), hv("a"), hv("b")), out: []string{"a", "b", "c"}},
		{name: "more replicas than hypervisors", want: 3, hvs: hvs(hv("b"), hv("a")), out: []string{"a", "b", "a"}},
		{
			name: "least loaded first", want: 2,
			hvs:   hvs(hv("a"), hv("b"), hv("c")),
			comps: concat(filler("a", 2), filler("c", 1)),
			out:   []string{"b", "c"},
		},
		{
			name: "existing replica is spread from", want: 1,
			hvs:   hvs(hv("a"), hv("b"), hv("c")),
			comps: concat(filler("a", 3), filler("c", 3), []*pb.Component{comp("demo-cp-0", "demo", resources.RoleControlPlane, "b")}),
			out:   []string{"a"},
		},
		{
			name: "ingress of the cluster does not count as a replica", want: 1,
			hvs:   hvs(hv("a"), hv("b")),
			comps: concat(filler("b", 2), []*pb.Component{comp("demo-ingress-0", "demo", resources.RoleIngress, "a")}),
			out:   []string{"a"},
		},
		{
			// A suspect hypervisor gets no new replica, even an empty one.
			name: "suspect is skipped", want: 2,
			hvs:   hvs(hv("a", suspect), hv("b"), hv("c")),
			comps: filler("b", 5),
			out:   []string{"c", "b"},
		},
		{
			name: "only dead and suspect", want: 1,
			hvs: hvs(hv("a", suspect), hv("b", dead)),
			err: ErrNoPrivateHypervisor, errContain: "2 registered: 1 suspect, 1 dead",
		},
		{
			// The replacement of a replica on a dead hypervisor goes to the
			// spare, never back to the dead one nor to a suspect one.
			name: "replacement skips dead and suspect", want: 1,
			hvs: hvs(hv("a"), hv("b", dead), hv("c"), hv("d"), hv("e", suspect)),
			comps: []*pb.Component{
				comp("demo-cp-0", "demo", resources.RoleControlPlane, "a"),
				comp("demo-cp-1", "demo", resources.RoleControlPlane, "b"),
				comp("demo-cp-2", "demo", resources.RoleControlPlane, "c"),
			},
			out: []string{"d"},
		},
		{
			name: "public, dead, unschedulable, deleting are skipped", want: 2,
			hvs: hvs(hv("a", public), hv("b", dead), hv("c", unschedulable), hv("d", deleting), hv("e")),
			out: []string{"e", "e"},
		},
		{
			name: "hypervisor without room is skipped", want: 2,
			hvs: hvs(hv("a", withPorts("100-103")), hv("b")),
			out: []string{"b", "b"},
		},
		{
			name: "reported allocated ports count", want: 1,
			hvs: hvs(hv("a", withPorts("100-104"), allocated(104)), hv("b", withPorts("100-109"))),
			comps: concat(filler("b", 4), []*pb.Component{
				comp("x", "x", resources.RoleControlPlane, "b", 100, 101, 102, 103, 104),
			}),
			out: []string{"b"},
		},
		{
			name: "components on other hypervisors leave ports free", want: 1,
			hvs:   hvs(hv("a", withPorts("100-104"))),
			comps: []*pb.Component{comp("x", "x", resources.RoleControlPlane, "z", 100, 101, 102, 103, 104)},
			out:   []string{"a"},
		},
		{
			name: "ports used by existing components", want: 1,
			hvs:   hvs(hv("a", withPorts("100-109")), hv("b", withPorts("100-104"))),
			comps: []*pb.Component{comp("x", "x", resources.RoleControlPlane, "b", 100)},
			out:   []string{"a"},
		},
		{
			name: "no room anywhere", want: 1,
			hvs: hvs(hv("a", withPorts("100-103")), hv("b", withPorts("5-5"))),
			err: ErrNoPorts,
		},
		{
			name: "partial placement", want: 3,
			hvs: hvs(hv("a", withPorts("100-109")), hv("b", withPorts("100-104"))),
			out: []string{"a", "b", "a"},
		},
		{
			name: "partial placement stops at capacity", want: 4,
			hvs: hvs(hv("a", withPorts("100-109")), hv("b", withPorts("100-104"))),
			out: []string{"a", "b", "a"}, err: ErrNoPorts, errContain: "placed 3 of 4",
		},
		{
			name: "duplicate names: first wins", want: 1,
			hvs: hvs(hv("a", dead), hv("a"), hv("b", withPorts("1-5"))),
			out: []string{"b"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := PlaceControlPlane("demo", tc.want, tc.hvs, tc.comps)
			if tc.err == nil && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tc.err != nil && !errors.Is(err, tc.err) {
				t.Fatalf("error = %v, want %v", err, tc.err)
			}
			if tc.errContain != "" && !strings.Contains(err.Error(), tc.errContain) {
				t.Fatalf("error %q does not say %q", err, tc.errContain)
			}
			if !slices.Equal(out, tc.out) {
				t.Fatalf("placed on %v, want %v", out, tc.out)
			}
		})
	}
}

func TestPlaceControlPlaneNegative(t *testing.T) {
	if _, err := PlaceControlPlane("demo", -1, hvs(hv("a")), nil); err == nil {
		t.Fatal("negative replica count accepted")
	}
}

func TestPlaceControlPlaneMessageIsActionable(t *testing.T) {
	_, err := PlaceControlPlane("demo", 1, nil, nil)
	for _, want := range []string{"demo", "no schedulable private hypervisor is registered", "oneinfra-agent hypervisor"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestPlaceControlPlaneDoesNotDependOnInputOrder(t *testing.T) {
	a := hvs(hv("a"), hv("b"), hv("c"), hv("d"))
	b := hvs(hv("d"), hv("b"), hv("c"), hv("a"))
	comps := concat(filler("c", 1), filler("d", 1))
	x, _ := PlaceControlPlane("demo", 6, a, comps)
	slices.Reverse(comps)
	y, _ := PlaceControlPlane("demo", 6, b, comps)
	if !slices.Equal(x, y) || len(x) != 6 {
		t.Fatalf("%v != %v", x, y)
	}
}

func TestPlaceIngress(t *testing.T) {
	tests := []struct {
		name       string
		hvs        []*pb.Hypervisor
		comps      []*pb.Component
		out        string
		err        error
		errContain string
	}{
		{name: "no hypervisors", err: ErrNoPublicHypervisor, errContain: "none registered"},
		{name: "only private", hvs: hvs(hv("a"), hv("b")), err: ErrNoPublicHypervisor, errContain: "2 private"},
		{
			name: "public but not schedulable",
			hvs:  hvs(hv("a", public, dead), hv("b", public, unschedulable), hv("c", public, deleting)),
			err:  ErrNoPublicHypervisor,
		},
		{name: "one public", hvs: hvs(hv("a"), hv("b", public)), out: "b"},
		{
			name:  "least loaded public",
			hvs:   hvs(hv("a", public), hv("b", public), hv("c")),
			comps: concat(filler("a", 2), filler("b", 1)),
			out:   "b",
		},
		{
			name:  "spread from an existing ingress of the cluster",
			hvs:   hvs(hv("a", public), hv("b", public)),
			comps: concat(filler("b", 3), []*pb.Component{comp("demo-ingress-0", "demo", resources.RoleIngress, "a")}),
			out:   "b",
		},
		{name: "suspect is skipped", hvs: hvs(hv("a", public, suspect), hv("b", public)), comps: filler("b", 2), out: "b"},
		{
			name: "dead and suspect only", hvs: hvs(hv("a", public, suspect), hv("b", public, dead), hv("c")),
			err: ErrNoPublicHypervisor, errContain: "3 registered: 1 suspect, 1 dead, 1 private",
		},
		{
			name:  "replacement of an ingress on a dead hypervisor",
			hvs:   hvs(hv("a", public, dead), hv("b", public)),
			comps: []*pb.Component{comp("demo-ingress-0", "demo", resources.RoleIngress, "a")},
			out:   "b",
		},
		{name: "no room", hvs: hvs(hv("a", public, withPorts("7-7"))), err: ErrNoPorts},
		{name: "room for two is enough", hvs: hvs(hv("a", public, withPorts("7-8"))), out: "a"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := PlaceIngress("demo", tc.hvs, tc.comps)
			if tc.err == nil && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tc.err != nil && !errors.Is(err, tc.err) {
				t.Fatalf("error = %v, want %v", err, tc.err)
			}
			if tc.errContain != "" && !strings.Contains(err.Error(), tc.errContain) {
				t.Fatalf("error %q does not say %q", err, tc.errContain)
			}
			if out != tc.out {
				t.Fatalf("placed on %q, want %q", out, tc.out)
			}
		})
	}
}

func TestUnschedulableReason(t *testing.T) {
	tests := []struct {
		h    *pb.Hypervisor
		want string
	}{
		{hv("a"), ""},
		{hv("a", public), ""},
		{hv("a", suspect), "suspect"},
		{hv("a", suspect, unschedulable), "suspect"},
		{hv("a", dead), "dead"},
		{hv("a", unschedulable), "unschedulable"},
		{hv("a", deleting, dead), "being deleted"},
		{hv("a", withPorts("x")), "invalid port range"},
		{nil, ""},
	}
	for _, tc := range tests {
		if got := UnschedulableReason(tc.h); got != tc.want {
			t.Errorf("UnschedulableReason(%v) = %q, want %q", tc.h, got, tc.want)
		}
	}
}

func TestNewControlPlaneComponents(t *testing.T) {
	hs := hvs(hv("a", withPorts("100-109")), hv("b", withPorts("200-209")))
	existing := make([]*pb.Component, 1, 10) // spare capacity must stay untouched
	existing[0] = comp("demo-cp-4", "demo", resources.RoleControlPlane, "z")
	backing := existing[:cap(existing)]

	out, err := NewControlPlaneComponents("demo", 3, 0, hs, existing)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 3 {
		t.Fatalf("got %d components", len(out))
	}
	wantNames := []string{"demo-cp-5", "demo-cp-6", "demo-cp-7"}
	wantHV := []string{"a", "b", "a"}
	wantAPI := []uint32{100, 200, 105}
	for i, c := range out {
		if c.GetMetadata().GetName() != wantNames[i] || c.GetSpec().GetHypervisor() != wantHV[i] ||
			c.GetSpec().GetCluster() != "demo" || c.GetSpec().GetRole() != resources.RoleControlPlane || c.GetKind() != "Component" {
			t.Errorf("component %d = %v", i, c)
		}
		if len(c.GetSpec().GetPorts()) != len(ControlPlanePorts) {
			t.Errorf("component %d ports %v", i, c.GetSpec().GetPorts())
		}
		if got := c.GetSpec().GetPorts()[vocab.PortAPIServer]; got != wantAPI[i] {
			t.Errorf("component %d apiserver port %d, want %d", i, got, wantAPI[i])
		}
	}
	for _, c := range backing[1:] {
		if c != nil {
			t.Fatal("the caller's slice was written to")
		}
	}

	// A fifth replica does not fit: partial result and ErrNoPorts.
	out, err = NewControlPlaneComponents("demo", 5, 0, hs, existing)
	if !errors.Is(err, ErrNoPorts) || len(out) != 4 {
		t.Fatalf("got %d components, err %v", len(out), err)
	}
	// A removed replica's index is never given again: names start at
	// minIndex when it is above the existing ones.
	if out, err := NewControlPlaneComponents("demo", 1, 9, hs, existing); err != nil || out[0].Metadata.Name != "demo-cp-9" {
		t.Fatalf("with minIndex 9: %v %v", out, err)
	}
	if _, err := NewControlPlaneComponents("demo", 1, 0, nil, nil); !errors.Is(err, ErrNoPrivateHypervisor) {
		t.Fatalf("err = %v", err)
	}
}

func TestNewIngressComponent(t *testing.T) {
	hs := hvs(hv("a"), hv("p", public, withPorts("40000-40010")))
	existing := []*pb.Component{comp("x", "x", resources.RoleIngress, "p", 40000, 40002)}
	c, err := NewIngressComponent("demo", hs, existing)
	if err != nil {
		t.Fatal(err)
	}
	if c.GetMetadata().GetName() != "demo-ingress-0" || c.GetSpec().GetHypervisor() != "p" || c.GetSpec().GetRole() != resources.RoleIngress {
		t.Fatalf("component %v", c)
	}
	ports := c.GetSpec().GetPorts()
	if ports[vocab.PortAPIServer] != 40001 || ports[vocab.PortWireGuard] != 40003 || len(ports) != 2 {
		t.Fatalf("ports %v", ports)
	}
	if _, err := NewIngressComponent("demo", hvs(hv("a")), nil); !errors.Is(err, ErrNoPublicHypervisor) {
		t.Fatalf("err = %v", err)
	}
}
