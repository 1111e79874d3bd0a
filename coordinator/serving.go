package coordinator

import (
	"time"

	"github.com/oneinfra/oneinfra/internal/client"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// servingInterval is how often a server tells its health service whether
// it can serve calls.
const servingInterval = 500 * time.Millisecond

// serveHealth registers the gRPC health service: client.ServingService is
// SERVING while this server knows a leader and holds the state, so a
// client that checks it (agents do) sends nothing to a server cut off from
// the others, which could only fail its writes.
func (s *Server) serveHealth() {
	s.health = grpchealth.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	s.health.SetServingStatus(client.ServingService, healthpb.HealthCheckResponse_NOT_SERVING)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		last := healthpb.HealthCheckResponse_NOT_SERVING
		for {
			select {
			case <-s.stopCh:
				s.health.Shutdown()
				return
			case <-time.After(servingInterval):
			}
			now := healthpb.HealthCheckResponse_NOT_SERVING
			if s.ready() == nil {
				now = healthpb.HealthCheckResponse_SERVING
			}
			if now != last {
				s.health.SetServingStatus(client.ServingService, now)
				s.logger.Info("serving status", "status", now.String())
				last = now
			}
		}
	}()
}
