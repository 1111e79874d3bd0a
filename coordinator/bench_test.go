package coordinator

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	memdb "github.com/hashicorp/go-memdb"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// BenchmarkRaftApply measures writes through Raft with its bbolt log on
// disk: one writer at a time, and many at once (Raft batches them).
func BenchmarkRaftApply(b *testing.B) {
	s, _ := bootstrapOne(b, b.TempDir())
	write := func(i int64) {
		tok := &pb.Token{Id: fmt.Sprintf("t%05d", i%100000), Kind: TokenHypervisor, Expires: timestamppb.Now()}
		if _, err := s.raftApply(UpsertTokenType, &pb.UpsertTokenCommand{Token: tok}); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("serial", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			write(int64(i))
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
	})
	b.Run("parallel-64", func(b *testing.B) {
		var n atomic.Int64
		b.SetParallelism(32) // 32 × GOMAXPROCS writers
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				write(n.Add(1))
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
	})
}

// BenchmarkWatchFanout measures how long one committed change takes to
// wake 1,000 watchers: blocked on the state store, and blocked in
// WatchAssignments calls over gRPC.
func BenchmarkWatchFanout(b *testing.B) {
	watchers := 1000
	if n, err := strconv.Atoi(os.Getenv("FANOUT")); err == nil {
		watchers = n
	}
	b.Run("store", func(b *testing.B) {
		a := newTestFSM(b)
		populate(a)
		b.ResetTimer()
		b.StopTimer()
		for i := 0; i < b.N; i++ {
			var ready, woke sync.WaitGroup
			ready.Add(watchers)
			woke.Add(watchers)
			st := a.fsm.State()
			for w := 0; w < watchers; w++ {
				go func() {
					ws := memdb.NewWatchSet()
					st.ComponentsOnHypervisor(ws, "hv-1")
					ready.Done()
					ws.Watch(nil)
					woke.Done()
				}()
			}
			ready.Wait()
			b.StartTimer()
			a.mustApply(ReportStatusType, &pb.ReportStatusCommand{Hypervisor: "hv-1", Time: timestamppb.Now(),
				Components: []*pb.Component{{Metadata: &pb.ObjectMeta{Name: "demo-cp-0"}, Status: &pb.ComponentStatus{State: fmt.Sprint(i)}}}})
			woke.Wait()
			b.StopTimer()
		}
	})
	b.Run("grpc", func(b *testing.B) {
		s, cfg := bootstrapOne(b, b.TempDir())
		op := pb.NewOperatorClient(adminConn(b, cfg.DataDir, s.APIAddr()))
		agent := registerHypervisorB(b, s, op, "hv-1")
		ctx := context.Background()
		b.ResetTimer()
		b.StopTimer()
		for i := 0; i < b.N; i++ {
			index := s.State().Index(assignmentTables...)
			var woke sync.WaitGroup
			woke.Add(watchers)
			for w := 0; w < watchers; w++ {
				go func() {
					defer woke.Done()
					if _, err := agent.WatchAssignments(ctx, &pb.WatchAssignmentsRequest{Hypervisor: "hv-1", MinIndex: index, WaitMs: 60000}); err != nil {
						b.Error(err)
					}
				}()
			}
			deadline := time.Now().Add(30 * time.Second)
			for int(testutil.ToFloat64(s.metrics.watchers)) < watchers && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			b.StartTimer()
			if _, err := s.raftApply(ReportStatusType, &pb.ReportStatusCommand{Hypervisor: "hv-1", Time: timestamppb.Now()}); err != nil {
				b.Fatal(err)
			}
			woke.Wait()
			b.StopTimer()
		}
	})
}
