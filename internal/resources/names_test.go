package resources

import "testing"

func TestComponentName(t *testing.T) {
	tests := []struct {
		cluster, role string
		n             int
		want          string
	}{
		{"demo", RoleControlPlane, 0, "demo-cp-0"},
		{"demo", RoleControlPlane, 12, "demo-cp-12"},
		{"demo", RoleIngress, 0, "demo-ingress-0"},
	}
	for _, tc := range tests {
		if got := ComponentName(tc.cluster, tc.role, tc.n); got != tc.want {
			t.Errorf("ComponentName(%q, %q, %d) = %q, want %q", tc.cluster, tc.role, tc.n, got, tc.want)
		}
	}
}

func TestComponentIndex(t *testing.T) {
	for _, tc := range []struct {
		cluster, role, name string
		n                   int
		ok                  bool
	}{
		{"demo", RoleControlPlane, "demo-cp-0", 0, true},
		{"demo", RoleControlPlane, "demo-cp-12", 12, true},
		{"demo", RoleIngress, "demo-ingress-3", 3, true},
		{"demo", RoleControlPlane, "demo-ingress-3", 0, false},
		{"demo", RoleControlPlane, "demo-cp-01", 0, false},
		{"demo", RoleControlPlane, "demo-cp--1", 0, false},
		{"demo", RoleControlPlane, "demo-cp-cp-4", 0, false},
		{"demo-cp", RoleControlPlane, "demo-cp-4", 0, false},
		{"demo", RoleControlPlane, "", 0, false},
	} {
		if n, ok := ComponentIndex(tc.cluster, tc.role, tc.name); n != tc.n || ok != tc.ok {
			t.Errorf("ComponentIndex(%q, %q, %q) = %d, %v; want %d, %v", tc.cluster, tc.role, tc.name, n, ok, tc.n, tc.ok)
		}
	}
}
