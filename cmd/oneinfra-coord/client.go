package main

import (
	"context"
	"time"

	"github.com/oneinfra/oneinfra/coordinator"
	"github.com/oneinfra/oneinfra/internal/client"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// callTimeout bounds one CLI call, failover to another server included.
const callTimeout = 30 * time.Second

// session is a connection to the coordinator with the operator's
// credentials.
type session struct {
	conn  *grpc.ClientConn
	op    pb.OperatorClient
	path  string
	conf  *client.Config
	stale bool
}

func (g *globals) connect() (*session, error) {
	path := client.Path(g.config)
	conf, err := client.Load(path)
	if err != nil {
		return nil, err
	}
	members := conf.Members()
	// Every successful call lists the members: the credentials file
	// learns them, so that the next command reaches any of them when the
	// one it knew is down. Failing to write it is no error for the
	// command.
	members.OnChange(func(addrs []string, ids map[string]string) {
		conf.Servers, conf.ServerIDs = addrs, ids
		_ = conf.Write(path)
	})
	conn, err := client.Dial(members, []byte(conf.CertificateAuthority), conf.KeyPair())
	if err != nil {
		return nil, err
	}
	return &session{conn: conn, op: pb.NewOperatorClient(conn), path: path, conf: conf, stale: g.stale}, nil
}

func (s *session) close() { s.conn.Close() }

// ctx is the context of one call.
func (s *session) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	if s.stale {
		parent = metadata.AppendToOutgoingContext(parent, coordinator.StaleHeader, "true")
	}
	return context.WithTimeout(parent, callTimeout)
}

// call connects, runs f with the context of one call, and disconnects.
func (g *globals) call(cmd *cobra.Command, f func(ctx context.Context, s *session) error) error {
	s, err := g.connect()
	if err != nil {
		return err
	}
	defer s.close()
	ctx, cancel := s.ctx(cmd.Context())
	defer cancel()
	return f(ctx, s)
}
