package scheduler

import (
	"testing"

	"github.com/oneinfra/oneinfra/internal/resources"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

func TestNextIndex(t *testing.T) {
	tests := []struct {
		name  string
		role  string
		comps []*pb.Component
		want  int
	}{
		{name: "none", role: resources.RoleControlPlane, want: 0},
		{
			name: "after the highest", role: resources.RoleControlPlane,
			comps: []*pb.Component{
				comp("demo-cp-0", "demo", resources.RoleControlPlane, "a"),
				comp("demo-cp-2", "demo", resources.RoleControlPlane, "a"),
			},
			want: 3,
		},
		{
			name: "other roles and clusters ignored", role: resources.RoleControlPlane,
			comps: []*pb.Component{
				comp("demo-ingress-5", "demo", resources.RoleIngress, "a"),
				comp("demo-cp-9", "other", resources.RoleControlPlane, "a"),
				comp("demo-cp-cp-4", "demo-cp", resources.RoleControlPlane, "a"),
				comp("demo-cp-1", "demo", resources.RoleControlPlane, "a"),
			},
			want: 2,
		},
		{
			name: "odd names ignored", role: resources.RoleIngress,
			comps: []*pb.Component{
				comp("demo-ingress-x", "demo", resources.RoleIngress, "a"),
				comp("demo-ingress-01", "demo", resources.RoleIngress, "a"),
				comp("demo-ingress--1", "demo", resources.RoleIngress, "a"),
				comp("demo-ingress-0", "demo", resources.RoleIngress, "a"),
			},
			want: 1,
		},
	}
	for _, tc := range tests {
		if got := NextIndex("demo", tc.role, tc.comps); got != tc.want {
			t.Errorf("%s: NextIndex = %d, want %d", tc.name, got, tc.want)
		}
	}
}
