package scheduler

import (
	"github.com/oneinfra/oneinfra/internal/resources"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// NextIndex returns the index for the next component of cluster in role: one
// more than the highest index among the existing components of cluster named
// by resources.ComponentName, or 0. Indexes are never reused while a higher one exists,
// so a replacement never takes the name of the component it replaces.
func NextIndex(cluster, role string, components []*pb.Component) int {
	next := 0
	for _, c := range components {
		if c.GetSpec().GetCluster() != cluster {
			continue
		}
		if n, ok := resources.ComponentIndex(cluster, role, c.GetMetadata().GetName()); ok && n >= next {
			next = n + 1
		}
	}
	return next
}
