package client

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// MembersHeader is the response header in which every coordinator server
// lists the members, "ID=API-ADDRESS,...": every successful call teaches a
// client where the others are, so that it fails over to them.
const MembersHeader = "oneinfra-members"

// TrustHeader is the response header in which every coordinator server
// gives the coordinator trust generation (a CA rotation's stage): a client
// whose credentials are of another renews them, and takes the CAs to trust.
const TrustHeader = "oneinfra-trust-generation"

// FormatMembers writes members (API address by server ID) for the header.
func FormatMembers(members map[string]string) string {
	ids := slices.Sorted(maps.Keys(members))
	parts := make([]string, 0, len(ids))
	for _, id := range ids {
		parts = append(parts, id+"="+members[id])
	}
	return strings.Join(parts, ",")
}

// ParseMembers reads the header: API address by server ID, or nil.
func ParseMembers(md metadata.MD) map[string]string {
	vals := md.Get(MembersHeader)
	if len(vals) != 1 || vals[0] == "" {
		return nil
	}
	out := map[string]string{}
	for _, part := range strings.Split(vals[0], ",") {
		id, addr, ok := strings.Cut(part, "=")
		if !ok || id == "" || addr == "" {
			return nil
		}
		out[id] = addr
	}
	return out
}

// Members is what a client knows of the coordinator's servers: their API
// addresses and, once learned from a member, the server ID at each. A
// connection to an address with a known ID is accepted only from the
// certificate of that server: another server's certificate (one that
// never joined, say) is refused there. Safe for concurrent use.
type Members struct {
	// fixed: the addresses are the ones to dial, whatever calls say (a
	// connection to one given server).
	fixed    bool
	mu       sync.Mutex
	ids      map[string]string // server ID by API address
	addrs    []string          // the flag's and the learned addresses
	resolver *manual.Resolver
	onChange func(addrs []string, ids map[string]string)
	// trust is the coordinator trust generation answers gave (TrustHeader).
	trust      uint64
	trustKnown bool
}

// NewMembers starts from addresses and the IDs known at some of them.
func NewMembers(addrs []string, ids map[string]string) *Members {
	return &Members{addrs: slices.Clone(addrs), ids: maps.Clone(ids)}
}

// OnChange calls f whenever a call teaches other members, e.g. to save
// them.
func (m *Members) OnChange(f func(addrs []string, ids map[string]string)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.onChange = f
}

// Addrs returns the addresses to dial.
func (m *Members) Addrs() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.addrs)
}

// expected is the server ID known at an address, or "".
func (m *Members) expected(addr string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ids[addr]
}

// learn takes the members a server listed: they replace what was known.
func (m *Members) learn(members map[string]string) {
	if len(members) == 0 || m.fixed {
		return
	}
	ids := map[string]string{}
	var addrs []string
	for id, addr := range members {
		ids[addr] = id
		addrs = append(addrs, addr)
	}
	slices.Sort(addrs)
	m.mu.Lock()
	if maps.Equal(ids, m.ids) && slices.Equal(addrs, m.addrs) {
		m.mu.Unlock()
		return
	}
	m.ids, m.addrs = ids, addrs
	r, f := m.resolver, m.onChange
	m.mu.Unlock()
	if r != nil {
		r.UpdateState(resolver.State{Addresses: resolverAddresses(addrs)})
	}
	if f != nil {
		f(slices.Clone(addrs), maps.Clone(ids))
	}
}

// unary learns the members from every response's header.
func (m *Members) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	var md metadata.MD
	err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Header(&md))...)
	if err == nil {
		m.learn(ParseMembers(md))
		m.learnTrust(md)
	}
	return err
}

// learnTrust keeps the trust generation a server gave (TrustHeader).
func (m *Members) learnTrust(md metadata.MD) {
	vals := md.Get(TrustHeader)
	if len(vals) != 1 {
		return
	}
	if gen, err := strconv.ParseUint(vals[0], 10, 64); err == nil {
		m.mu.Lock()
		m.trust, m.trustKnown = gen, true
		m.mu.Unlock()
	}
}

// TrustGeneration is the coordinator trust generation the last answer
// gave, and whether one did.
func (m *Members) TrustGeneration() (uint64, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.trust, m.trustKnown
}

// stream learns the members from a stream's header.
func (m *Members) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, err
	}
	return &learningStream{ClientStream: s, m: m}, nil
}

type learningStream struct {
	grpc.ClientStream
	m    *Members
	once sync.Once
}

func (s *learningStream) RecvMsg(msg any) error {
	err := s.ClientStream.RecvMsg(msg)
	if err == nil {
		s.once.Do(func() {
			if md, herr := s.Header(); herr == nil {
				s.m.learn(ParseMembers(md))
				s.m.learnTrust(md)
			}
		})
	}
	return err
}

// memberCreds checks, after the TLS handshake, that a server whose ID is
// known at the address reached presents that server's certificate.
type memberCreds struct {
	credentials.TransportCredentials
	m *Members
}

func (c *memberCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil {
		return nil, nil, err
	}
	want := c.m.expected(raw.RemoteAddr().String())
	if want == "" {
		return conn, info, nil
	}
	tlsInfo, ok := info.(credentials.TLSInfo)
	if !ok || len(tlsInfo.State.PeerCertificates) == 0 {
		conn.Close()
		return nil, nil, fmt.Errorf("%s: no server certificate", raw.RemoteAddr())
	}
	if got := tlsInfo.State.PeerCertificates[0].Subject.CommonName; got != want {
		conn.Close()
		return nil, nil, fmt.Errorf("%s presented the certificate of server %q, but the member there is %q", raw.RemoteAddr(), got, want)
	}
	return conn, info, nil
}

func (c *memberCreds) Clone() credentials.TransportCredentials {
	return &memberCreds{TransportCredentials: c.TransportCredentials.Clone(), m: c.m}
}
