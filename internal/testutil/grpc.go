package testutil

import (
	"context"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
)

// Connected waits up to 5s for conn to connect, and tells whether it did
// (false as soon as it fails).
func Connected(conn *grpc.ClientConn) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn.Connect()
	for s := conn.GetState(); s != connectivity.Ready; s = conn.GetState() {
		if s == connectivity.TransientFailure || !conn.WaitForStateChange(ctx, s) {
			return false
		}
	}
	return true
}

// DialFrom makes a connection's TCP connections from the local address ip
// (any of 127.0.0.0/8 on loopback): a caller of its own source address.
func DialFrom(ip net.IP) grpc.DialOption {
	return grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}
		return d.DialContext(ctx, "tcp", addr)
	})
}
