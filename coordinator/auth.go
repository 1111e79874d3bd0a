package coordinator

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/oneinfra/oneinfra/coordinator/state"
	"github.com/oneinfra/oneinfra/internal/client"
	"github.com/oneinfra/oneinfra/internal/vocab"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// identity is who a call comes from: a role, a name (the certificate CN)
// and the certificate's serial and expiry (zero when forwarded: the
// forwarding server checked it).
type identity struct {
	Role, Name, Serial string
	NotAfter           time.Time
}

func (i identity) String() string { return i.Role + "/" + i.Name }

// forwarded is how an identity travels on a forwarded call.
func (i identity) forwarded() string { return i.Role + "/" + i.Name + "/" + i.Serial }

func parseForwarded(s string) identity {
	role, rest, _ := strings.Cut(s, "/")
	name, serial, _ := strings.Cut(rest, "/")
	return identity{Role: role, Name: name, Serial: serial}
}

type identityKey struct{}

func callerOf(ctx context.Context) identity {
	id, _ := ctx.Value(identityKey{}).(identity)
	return id
}

// forwardedFor carries the original caller on a call a server forwards to
// the leader; it is believed only from another server that is a member.
const forwardedFor = "oneinfra-forwarded-for"

// roleFor is the role each service requires; Bootstrap needs none.
var roleFor = map[string]string{
	"/oneinfra.v1.Operator/":  vocab.RoleOperator,
	"/oneinfra.v1.Agent/":     vocab.RoleHypervisor,
	"/oneinfra.v1.Peer/":      vocab.RoleServer,
	"/oneinfra.v1.Bootstrap/": "",
	"/grpc.health.v1.Health/": "",
}

// writes are the calls that change state: they run on the leader, which
// they are forwarded to from any other server, in this one place.
var writes = map[string]bool{
	"/oneinfra.v1.Operator/Apply":               true,
	"/oneinfra.v1.Operator/Delete":              true,
	"/oneinfra.v1.Operator/CreateToken":         true,
	"/oneinfra.v1.Operator/RevokeToken":         true,
	"/oneinfra.v1.Bootstrap/JoinServer":         true,
	"/oneinfra.v1.Bootstrap/RegisterHypervisor": true,
	"/oneinfra.v1.Agent/ReportStatus":           true,
	"/oneinfra.v1.Agent/JoinWorker":             true,
	"/oneinfra.v1.Operator/RemovePeer":          true,
	"/oneinfra.v1.Operator/SetScheduling":       true,
	"/oneinfra.v1.Operator/Kubeconfig":          true,
	"/oneinfra.v1.Operator/CreateAdmin":         true,
	"/oneinfra.v1.Operator/RevokeAdmin":         true,
	"/oneinfra.v1.Operator/RemoveMember":        true,
	"/oneinfra.v1.Operator/RenewCredentials":    true,
	"/oneinfra.v1.Agent/RenewCertificate":       true,
	"/oneinfra.v1.Agent/RenewWorkerCertificate": true,
	"/oneinfra.v1.Peer/RenewCertificate":        true,
	"/oneinfra.v1.Agent/IssueJoinCertificate":   true,
	"/oneinfra.v1.Agent/SubmitKeys":             true,
	"/oneinfra.v1.Peer/Join":                    true,
	"/oneinfra.v1.Operator/BackupCluster":       true,
	"/oneinfra.v1.Operator/RestoreCluster":      true,
	"/oneinfra.v1.Operator/RotateClusterCA":     true,
	"/oneinfra.v1.Operator/RotateCA":            true,
	// A node's configuration request records the trust generation it
	// says it is at.
	"/oneinfra.v1.Agent/GetWorkerConfig": true,
}

// peerJoin is the one call of a server that is not a member yet.
const peerJoin = "/oneinfra.v1.Peer/Join"

// leaderReads are the reads the leader answers, so that an operator reads
// what they just wrote; with the stale header any server answers from its
// own copy, as its ReadMeta says.
var leaderReads = map[string]bool{
	"/oneinfra.v1.Operator/Get":         true,
	"/oneinfra.v1.Operator/Describe":    true,
	"/oneinfra.v1.Operator/ListBackups": true,
	"/oneinfra.v1.Operator/ListTokens":  true,
	"/oneinfra.v1.Operator/ListPeers":   true,
	"/oneinfra.v1.Operator/ListAdmins":  true,
	"/oneinfra.v1.Operator/CAStatus":    true,
}

// StaleHeader, set to "true" on a read, lets any server answer it.
const StaleHeader = "oneinfra-stale"

func allowStale(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	return ok && len(md.Get(StaleHeader)) == 1 && md.Get(StaleHeader)[0] == "true"
}

// authorize finds the caller of a call and checks it may make it (see
// Trust in trust.go).
func (s *Server) authorize(ctx context.Context, method string) (identity, error) {
	var want string
	known := false
	for prefix, role := range roleFor {
		if strings.HasPrefix(method, prefix) {
			want, known = role, true
		}
	}
	if !known {
		return identity{}, status.Errorf(codes.Unimplemented, "unknown method %s", method)
	}
	leaf := peerLeaf(ctx)
	id := identityOf(leaf)
	if id.Role != "" && s.creds.trust.IssuerOf(leaf) == nil {
		// Verified at its handshake, before a CA rotation dropped its CA.
		return id, status.Errorf(codes.Unauthenticated, "the certificate %s of %s is of a coordinator CA trusted no more (rotated): it works no more", id.Serial, id)
	}
	if id.Role == "" {
		if want == "" {
			return id, nil
		}
		return id, status.Error(codes.Unauthenticated, "a client certificate of a oneinfra role, signed by the coordinator CA, is required")
	}
	st := s.stateWithRecord(ctx, id)
	if err := admitCaller(st, id, method); err != nil {
		return id, err
	}
	if id.Role == vocab.RoleServer && isMember(st, id.Name) {
		if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(forwardedFor)) == 1 {
			id = parseForwarded(md.Get(forwardedFor)[0])
			if err := admitCaller(s.stateWithRecord(ctx, id), id, method); err != nil {
				return id, err
			}
		}
	}
	if want != "" && id.Role != want {
		return id, status.Errorf(codes.PermissionDenied, "%s may not call %s", id, method)
	}
	return id, nil
}

// admitCaller checks a caller's certificate against the records and, for a
// server, its membership.
func admitCaller(st *state.Store, id identity, method string) error {
	if err := admit(st, id); err != nil {
		return status.Error(codes.Unauthenticated, err.Error())
	}
	if id.Role == vocab.RoleServer && !isMember(st, id.Name) && !(method == peerJoin && pendingServer(st, id)) {
		return status.Errorf(codes.PermissionDenied, "server %q is not a member of this coordinator: its certificate counts only while it is", id.Name)
	}
	return nil
}

// membersHeader lists the members for clients to learn, and the
// coordinator trust generation (see client.MembersHeader, TrustHeader).
func (s *Server) membersHeader() metadata.MD {
	st := s.State()
	members := map[string]string{}
	for _, srv := range st.Servers(nil) {
		members[srv.Id] = srv.ApiAddress
	}
	gen := st.Config(nil).GetTrustGeneration()
	return metadata.Pairs(client.MembersHeader, client.FormatMembers(members), client.TrustHeader, strconv.FormatUint(gen, 10))
}

// peerIdentity reads the verified client certificate of a call.
func peerIdentity(ctx context.Context) identity { return identityOf(peerLeaf(ctx)) }

// peerLeaf is the verified client certificate of a call, or nil.
func peerLeaf(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 {
		return nil
	}
	return info.State.VerifiedChains[0][0]
}

// identityOf is the identity a certificate (may be nil) names, or none.
func identityOf(cert *x509.Certificate) identity {
	if cert == nil {
		return identity{}
	}
	role := roleOf(cert)
	if role == "" {
		return identity{}
	}
	return identity{Role: role, Name: cert.Subject.CommonName, Serial: serialOf(cert), NotAfter: cert.NotAfter}
}

func (s *Server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	id, err := s.authorize(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	ctx = context.WithValue(ctx, identityKey{}, id)
	if id.Role != "" {
		_ = grpc.SetHeader(ctx, s.membersHeader())
	}
	if !writes[info.FullMethod] && (!leaderReads[info.FullMethod] || allowStale(ctx)) {
		resp, err := handler(ctx, req)
		return resp, grpcError(err)
	}
	// A write, or a read that wants the leader's view: run it on the
	// leader. Leadership can move meanwhile, so a call that finds this
	// server no longer leads is sent on again.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var resp any
		if s.IsLeader() {
			resp, err = handler(ctx, req)
			if writes[info.FullMethod] && id.Role == vocab.RoleOperator {
				s.logger.Info("operator write", "operator", id.Name, "method", path.Base(info.FullMethod), "ok", err == nil)
			}
		} else {
			resp, err = s.forward(ctx, info.FullMethod, req.(proto.Message), id)
		}
		if !leadershipError(err) || time.Now().After(deadline) {
			return resp, grpcError(err)
		}
		select {
		case <-ctx.Done():
			return nil, grpcError(ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	id, err := s.authorize(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	if id.Role != "" {
		_ = ss.SetHeader(s.membersHeader())
	}
	return grpcError(handler(srv, &identityStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), identityKey{}, id)}))
}

type identityStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identityStream) Context() context.Context { return s.ctx }

var errNoLeader = errors.New("no coordinator leader is known")

// leadershipError reports whether a write failed because leadership is
// moving: this server lost it, none is known, or the one known is gone.
func leadershipError(err error) bool {
	return errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) ||
		errors.Is(err, errNoLeader) || status.Code(err) == codes.Unavailable
}

// leaderAPI returns the API address of the current leader.
func (s *Server) leaderAPI() (string, error) {
	_, id := s.raft.LeaderWithID()
	if id == "" {
		return "", errNoLeader
	}
	for _, srv := range s.State().Servers(nil) {
		if srv.Id == string(id) {
			return srv.ApiAddress, nil
		}
	}
	return "", fmt.Errorf("leader %s: %w", id, errNoLeader)
}

// forward sends a call to the leader on behalf of its original caller.
func (s *Server) forward(ctx context.Context, method string, req proto.Message, id identity) (any, error) {
	addr, err := s.leaderAPI()
	if err != nil {
		return nil, err
	}
	resp, err := newResponse(method)
	if err != nil {
		return nil, err
	}
	conn, err := s.peers.get(addr)
	if err != nil {
		return nil, err
	}
	ctx = metadata.AppendToOutgoingContext(ctx, forwardedFor, id.forwarded())
	s.metrics.forwarded.Inc()
	if err := conn.Invoke(ctx, method, req, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// newResponse makes an empty response message of a method, by name.
func newResponse(method string) (proto.Message, error) {
	svc, name, _ := strings.Cut(strings.TrimPrefix(method, "/"), "/")
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
	if err != nil {
		return nil, fmt.Errorf("method %s: %w", method, err)
	}
	m := d.(protoreflect.ServiceDescriptor).Methods().ByName(protoreflect.Name(name))
	if m == nil {
		return nil, fmt.Errorf("method %s: not found", method)
	}
	t, err := protoregistry.GlobalTypes.FindMessageByName(m.Output().FullName())
	if err != nil {
		return nil, fmt.Errorf("method %s: %w", method, err)
	}
	return t.New().Interface(), nil
}

// grpcError gives an error the status code callers branch on.
func grpcError(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, errInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, state.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, state.ErrConflict), errors.Is(err, ErrHypervisorInUse), errors.Is(err, ErrPortTaken):
		code = codes.FailedPrecondition
	case errors.Is(err, errDenied):
		code = codes.PermissionDenied
	case errors.Is(err, errRevoked):
		code = codes.Unauthenticated
	case errors.Is(err, errNotReady):
		code = codes.FailedPrecondition
	case errors.Is(err, errAlreadyExists):
		code = codes.AlreadyExists
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, errNoLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrRaftShutdown), errors.Is(err, raft.ErrEnqueueTimeout):
		code = codes.Unavailable
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	msg := err.Error()
	for _, quiet := range []error{state.ErrConflict, errDenied, errRevoked, ErrHypervisorInUse, errAlreadyExists, errNotReady} {
		msg = strings.TrimSuffix(msg, ": "+quiet.Error()) // they choose the code, not the words
	}
	return status.Error(code, msg)
}

// Sentinels handlers wrap to choose a status code.
var (
	errInvalid = errors.New("invalid")
	errDenied  = errors.New("denied")
)

// invalid is an error caused by the request itself.
func invalid(format string, args ...any) error {
	return &invalidError{msg: fmt.Sprintf(format, args...)}
}

type invalidError struct{ msg string }

func (e *invalidError) Error() string        { return e.msg }
func (e *invalidError) Is(target error) bool { return target == errInvalid }

// peerPool keeps one connection to each other server, and the client
// TLS configuration Raft dials them with.
type peerPool struct {
	mu    sync.Mutex
	tls   *tls.Config
	conns map[string]*grpc.ClientConn
}

func newPeerPool(conf *tls.Config) *peerPool {
	return &peerPool{tls: conf, conns: map[string]*grpc.ClientConn{}}
}

// config is the client TLS configuration of new connections.
func (p *peerPool) config() *tls.Config {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tls
}

// redial makes new connections with conf (the CAs trusted changed).
func (p *peerPool) redial(conf *tls.Config) {
	p.mu.Lock()
	p.tls = conf
	p.mu.Unlock()
	p.renewed()
}

func (p *peerPool) get(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[addr]; ok {
		return c, nil
	}
	c, err := client.DialTLS([]string{addr}, p.tls)
	if err != nil {
		return nil, err
	}
	p.conns[addr] = c
	return c, nil
}

// renewed makes new calls dial afresh, presenting this server's renewed
// certificate; the connections in use are closed once their calls are
// done (a minute).
func (p *peerPool) renewed() {
	p.mu.Lock()
	old := p.conns
	p.conns = map[string]*grpc.ClientConn{}
	p.mu.Unlock()
	time.AfterFunc(time.Minute, func() {
		for _, c := range old {
			c.Close()
		}
	})
}

func (p *peerPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = map[string]*grpc.ClientConn{}
}
