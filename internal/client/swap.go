package client

import (
	"context"
	"sync/atomic"

	"google.golang.org/grpc"
)

// Swappable is a client connection that can be replaced while clients
// made on it are in use: a holder that renewed its certificate dials
// again, since a connection keeps presenting the certificate of its
// handshake. Calls started on the old connection finish there.
type Swappable struct {
	cur atomic.Pointer[grpc.ClientConn]
}

// NewSwappable starts with conn.
func NewSwappable(conn *grpc.ClientConn) *Swappable {
	s := &Swappable{}
	s.cur.Store(conn)
	return s
}

// Swap puts conn in use and returns the connection it replaces, for the
// caller to close once its calls are done.
func (s *Swappable) Swap(conn *grpc.ClientConn) *grpc.ClientConn { return s.cur.Swap(conn) }

// Close closes the connection in use.
func (s *Swappable) Close() error { return s.cur.Load().Close() }

// Invoke implements grpc.ClientConnInterface.
func (s *Swappable) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return s.cur.Load().Invoke(ctx, method, args, reply, opts...)
}

// NewStream implements grpc.ClientConnInterface.
func (s *Swappable) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return s.cur.Load().NewStream(ctx, desc, method, opts...)
}
