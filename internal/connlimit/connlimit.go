// Package connlimit bounds what clients without a trusted client
// certificate can make a gRPC server hold. Their handshakes, connections
// and calls are counted per source (an IPv4 address or an IPv6 /64) and
// refused beyond Limits; a connection that presents a trusted certificate
// is counted nowhere once its handshake is done. ServerOptions adds the
// bounds every connection gets: calls per connection, a handshake timeout
// and keepalive enforcement.
package connlimit

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

// Limits are what one source may hold at once.
type Limits struct {
	// Handshakes is how many of its connections may be in their TLS
	// handshake. Until a handshake ends an agent cannot be told from
	// anyone, so this bound is high: many agents behind one address may
	// connect at once (those refused connect again).
	Handshakes int
	// Conns is how many connections without a trusted certificate it
	// may have open.
	Conns int
	// Streams is how many calls it may have in flight over them.
	Streams int
}

// Default suits a server that clients without a certificate reach only to
// get one (a machine registering, a worker joining): each needs one
// connection and a call or two, a few even from behind one NAT address.
var Default = Limits{Handshakes: 256, Conns: 16, Streams: 32}

// Bounds of every connection, whatever its certificate.
const (
	// MaxStreamsPerConn is how many calls one connection may have in
	// flight (a benchmark runs 1,000 watches over one agent connection).
	MaxStreamsPerConn = 1024
	// HandshakeTimeout is how long a connection has to finish its TLS
	// and HTTP/2 handshakes.
	HandshakeTimeout = 10 * time.Second
	// IdleTimeout closes a connection with no call in flight; clients
	// connect again when they next call.
	IdleTimeout = 5 * time.Minute
)

// ServerOptions are the options to serve with creds (TLS credentials)
// under limits: the credentials and the tap that count handshakes,
// connections and calls per source, and the bounds every connection gets.
// trusted tells whether a connection's certificate exempts it from the
// counts; nil trusts any verified client certificate.
func ServerOptions(creds credentials.TransportCredentials, limits Limits, trusted func(tls.ConnectionState) bool) []grpc.ServerOption {
	if trusted == nil {
		trusted = func(cs tls.ConnectionState) bool { return len(cs.VerifiedChains) > 0 }
	}
	l := &limiter{limits: limits, trusted: trusted, handshakes: map[string]int{}, conns: map[string]int{}, streams: map[string]int{}}
	return []grpc.ServerOption{
		grpc.Creds(&countingCreds{TransportCredentials: creds, l: l}),
		grpc.InTapHandle(l.tap),
		grpc.MaxConcurrentStreams(MaxStreamsPerConn),
		grpc.ConnectionTimeout(HandshakeTimeout),
		// A peer that vanished is noticed within Time+Timeout, and one
		// that pings more often than every MinTime is disconnected.
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: IdleTimeout, Time: time.Minute, Timeout: 20 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
}

// limiter counts, per source, the handshakes, and the untrusted
// connections and their calls.
type limiter struct {
	limits  Limits
	trusted func(tls.ConnectionState) bool

	mu                         sync.Mutex
	handshakes, conns, streams map[string]int
}

// take counts one more in m for src, unless it has limit already.
func (l *limiter) take(m map[string]int, src string, limit int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if m[src] >= limit {
		return false
	}
	m[src]++
	return true
}

// give counts one less in m for src.
func (l *limiter) give(m map[string]int, src string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if m[src]--; m[src] <= 0 {
		delete(m, src)
	}
}

func (l *limiter) trustedInfo(info credentials.AuthInfo) bool {
	t, ok := info.(credentials.TLSInfo)
	return ok && l.trusted(t.State)
}

// tap refuses a call over an untrusted connection whose source has
// Limits.Streams in flight, before the server reads anything of it; the
// count is given back when the call ends.
func (l *limiter) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	p, ok := peer.FromContext(ctx)
	if !ok || l.trustedInfo(p.AuthInfo) {
		return ctx, nil
	}
	src := source(p.Addr)
	if !l.take(l.streams, src, l.limits.Streams) {
		return ctx, status.Errorf(codes.ResourceExhausted, "%s: %s has %d calls in flight without a client certificate, the most allowed", info.FullMethodName, src, l.limits.Streams)
	}
	context.AfterFunc(ctx, func() { l.give(l.streams, src) })
	return ctx, nil
}

// countingCreds wraps server TLS credentials: a handshake is counted
// while it lasts, and an untrusted connection from then until it closes.
type countingCreds struct {
	credentials.TransportCredentials
	l *limiter
}

func (c *countingCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	l := c.l
	src := source(raw.RemoteAddr())
	if !l.take(l.handshakes, src, l.limits.Handshakes) {
		raw.Close()
		return nil, nil, fmt.Errorf("%s has %d handshakes in progress, the most allowed", src, l.limits.Handshakes)
	}
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	l.give(l.handshakes, src)
	if err != nil || l.trustedInfo(info) {
		return conn, info, err
	}
	if !l.take(l.conns, src, l.limits.Conns) {
		conn.Close()
		return nil, nil, fmt.Errorf("%s has %d connections without a client certificate, the most allowed", src, l.limits.Conns)
	}
	return &countedConn{Conn: conn, release: sync.OnceFunc(func() { l.give(l.conns, src) })}, info, nil
}

func (c *countingCreds) Clone() credentials.TransportCredentials {
	return &countingCreds{TransportCredentials: c.TransportCredentials.Clone(), l: c.l}
}

// countedConn gives its count back when it is closed.
type countedConn struct {
	net.Conn
	release func()
}

func (c *countedConn) Close() error {
	defer c.release()
	return c.Conn.Close()
}

// source is what a connection from addr is counted against: its IPv4
// address, or its IPv6 /64 (which one machine often holds whole).
func source(addr net.Addr) string {
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return addr.String()
	}
	ip := ap.Addr().Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

// TLSListener accepts TLS connections on ln whose handshake (with conf)
// ended within HandshakeTimeout, at most handshakes of them in their
// handshake per source at once: a raw listener (Raft's) holds nothing for
// a peer that connects and never finishes its handshake. Close closes ln.
func TLSListener(ln net.Listener, conf *tls.Config, handshakes int) net.Listener {
	l := &tlsListener{Listener: ln, conf: conf, max: handshakes, pending: map[string]int{},
		ready: make(chan net.Conn), done: make(chan struct{})}
	go l.run()
	return l
}

type tlsListener struct {
	net.Listener
	conf    *tls.Config
	max     int
	mu      sync.Mutex
	pending map[string]int
	ready   chan net.Conn
	done    chan struct{}
	err     error
	once    sync.Once
}

func (l *tlsListener) run() {
	for {
		raw, err := l.Listener.Accept()
		if err != nil {
			l.mu.Lock()
			l.err = err
			l.mu.Unlock()
			l.once.Do(func() { close(l.done) })
			return
		}
		src := source(raw.RemoteAddr())
		l.mu.Lock()
		ok := l.pending[src] < l.max
		if ok {
			l.pending[src]++
		}
		l.mu.Unlock()
		if !ok {
			raw.Close()
			continue
		}
		go l.handshake(raw, src)
	}
}

func (l *tlsListener) handshake(raw net.Conn, src string) {
	conn := tls.Server(raw, l.conf)
	ctx, cancel := context.WithTimeout(context.Background(), HandshakeTimeout)
	err := conn.HandshakeContext(ctx)
	cancel()
	l.mu.Lock()
	if l.pending[src]--; l.pending[src] <= 0 {
		delete(l.pending, src)
	}
	l.mu.Unlock()
	if err != nil {
		conn.Close()
		return
	}
	select {
	case l.ready <- conn:
	case <-l.done:
		conn.Close()
	}
}

// Accept returns the next connection that finished its handshake.
func (l *tlsListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.err == nil {
			return nil, net.ErrClosed // Close came before run saw it: never a nil connection without an error
		}
		return nil, l.err
	}
}

func (l *tlsListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { close(l.done) })
	return err
}
