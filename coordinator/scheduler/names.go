package scheduler

import (
	"strconv"
	"strings"

	"github.com/oneinfra/oneinfra/internal/resources"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// roleShort is the role as it appears in component names.
func roleShort(role string) string {
	if role == resources.RoleControlPlane {
		return "cp"
	}
	return role
}

// ComponentName names the n-th component of cluster in role:
// ComponentName("demo", resources.RoleControlPlane, 0) is "demo-cp-0",
// ComponentName("demo", resources.RoleIngress, 0) is "demo-ingress-0".
func ComponentName(cluster, role string, n int) string {
	return cluster + "-" + roleShort(role) + "-" + strconv.Itoa(n)
}

// NextIndex returns the index for the next component of cluster in role: one
// more than the highest index among the existing components of cluster named
// by ComponentName, or 0. Indexes are never reused while a higher one exists,
// so a replacement never takes the name of the component it replaces.
func NextIndex(cluster, role string, components []*pb.Component) int {
	prefix := cluster + "-" + roleShort(role) + "-"
	next := 0
	for _, c := range components {
		if c.GetSpec().GetCluster() != cluster {
			continue
		}
		rest, ok := strings.CutPrefix(c.GetMetadata().GetName(), prefix)
		if !ok {
			continue
		}
		n, err := strconv.Atoi(rest)
		if err != nil || n < 0 || strconv.Itoa(n) != rest {
			continue
		}
		if n >= next {
			next = n + 1
		}
	}
	return next
}
