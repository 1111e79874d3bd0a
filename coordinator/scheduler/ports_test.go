package scheduler

import (
	"errors"
	"maps"
	"testing"

	"github.com/oneinfra/oneinfra/internal/resources"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

func TestAllocatePorts(t *testing.T) {
	tests := []struct {
		name  string
		h     *pb.Hypervisor
		comps []*pb.Component
		names []string
		want  map[string]uint32
		err   error
		fails bool
	}{
		{
			name: "default range", h: hv("a"), names: ControlPlanePorts,
			want: map[string]uint32{"apiserver": 30000, "etcd-client": 30001, "etcd-peer": 30002, "controller-manager": 30003, "scheduler": 30004},
		},
		{name: "no names", h: hv("a"), names: nil, want: map[string]uint32{}},
		{
			name: "skips ports of components on the hypervisor", h: hv("a", withPorts("10-20")),
			comps: []*pb.Component{comp("x", "x", resources.RoleIngress, "a", 10, 12), comp("y", "y", resources.RoleIngress, "b", 11, 13)},
			names: []string{"apiserver", "wireguard"},
			want:  map[string]uint32{"apiserver": 11, "wireguard": 13},
		},
		{
			name: "skips reported allocated ports", h: hv("a", withPorts("10-20"), allocated(10, 11)),
			names: []string{"apiserver"},
			want:  map[string]uint32{"apiserver": 12},
		},
		{
			name: "ports outside the range do not matter", h: hv("a", withPorts("10-11")),
			comps: []*pb.Component{comp("x", "x", resources.RoleIngress, "a", 9, 12, 30000)},
			names: []string{"apiserver", "wireguard"},
			want:  map[string]uint32{"apiserver": 10, "wireguard": 11},
		},
		{
			name: "top of the port space", h: hv("a", withPorts("65534-65535")),
			names: []string{"apiserver", "wireguard"},
			want:  map[string]uint32{"apiserver": 65534, "wireguard": 65535},
		},
		{
			name: "exhausted at the top of the port space", h: hv("a", withPorts("65534-65535")),
			names: []string{"a", "b", "c"}, err: ErrNoPorts,
		},
		{
			name: "exhausted", h: hv("a", withPorts("10-12")),
			comps: []*pb.Component{comp("x", "x", resources.RoleIngress, "a", 11)},
			names: []string{"a", "b", "c"}, err: ErrNoPorts,
		},
		{name: "invalid range", h: hv("a", withPorts("x")), names: []string{"a"}, err: ErrInvalidPortRange},
		{name: "repeated name", h: hv("a"), names: []string{"a", "a"}, fails: true},
		{name: "empty name", h: hv("a"), names: []string{""}, fails: true},
		{name: "no hypervisor", h: nil, names: []string{"a"}, fails: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := AllocatePorts(tc.h, tc.comps, tc.names)
			switch {
			case tc.err != nil:
				if !errors.Is(err, tc.err) {
					t.Fatalf("err = %v, want %v", err, tc.err)
				}
			case tc.fails:
				if err == nil {
					t.Fatalf("no error, got %v", got)
				}
			case err != nil:
				t.Fatalf("unexpected error: %v", err)
			case !maps.Equal(got, tc.want):
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestUsedPorts(t *testing.T) {
	h := hv("a", allocated(5))
	used := UsedPorts(h, []*pb.Component{comp("x", "x", resources.RoleIngress, "a", 1, 2), comp("y", "y", resources.RoleIngress, "b", 3)})
	if !maps.Equal(used, map[uint32]bool{1: true, 2: true, 5: true}) {
		t.Fatalf("used = %v", used)
	}
}
