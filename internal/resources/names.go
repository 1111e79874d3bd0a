package resources

import (
	"strconv"
	"strings"
)

// roleShort is the role as it appears in component names.
func roleShort(role string) string {
	if role == RoleControlPlane {
		return "cp"
	}
	return role
}

// ComponentName names the n-th component of cluster in role:
// ComponentName("demo", RoleControlPlane, 0) is "demo-cp-0",
// ComponentName("demo", RoleIngress, 0) is "demo-ingress-0". The
// coordinator never gives a name twice within a cluster (the index only
// grows), so a name is one component for good.
func ComponentName(cluster, role string, n int) string {
	return cluster + "-" + roleShort(role) + "-" + strconv.Itoa(n)
}

// ComponentIndex is the inverse of ComponentName: the index n of a name
// of cluster's components in role, and false for any other name.
func ComponentIndex(cluster, role, name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, cluster+"-"+roleShort(role)+"-")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 0 || strconv.Itoa(n) != rest {
		return 0, false
	}
	return n, true
}
