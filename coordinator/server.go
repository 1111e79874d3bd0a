// Package coordinator is the oneinfra coordinator server: Raft-replicated
// desired state, the gRPC API over mutual TLS, and the leader's loops that
// place clusters. See DESIGN.md in this folder.
package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/oneinfra/oneinfra/coordinator/health"
	"github.com/oneinfra/oneinfra/coordinator/keyring"
	"github.com/oneinfra/oneinfra/coordinator/state"
	"github.com/oneinfra/oneinfra/internal/backup"
	"github.com/oneinfra/oneinfra/internal/connlimit"
	"github.com/oneinfra/oneinfra/internal/gossip"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	grpchealth "google.golang.org/grpc/health"
)

// Config is what `oneinfra-coord serve` is told.
type Config struct {
	ID          string
	DataDir     string
	APIAddr     string // listen address of the gRPC API
	RaftAddr    string // listen address of Raft
	Advertise   string // host peers and agents use to reach this server
	MetricsAddr string // empty: no metrics listener

	Bootstrap bool
	Join      string // HOST:PORT of any server, with Token and CAHash
	Token     string
	CAHash    string

	ImageRepository string
	VPNPool         string
	// BackupTarget is where agents store etcd backups (--backup-target);
	// empty: none are taken. BackupCredentials is the file of an s3
	// target's access keys (--backup-credentials).
	BackupTarget, BackupCredentials string
	// CertValidity is the lifetime of every leaf certificate issued;
	// DefaultCertValidity when zero.
	CertValidity time.Duration

	// GossipAddr is IP:PORT of this server's gossip observer; empty: no
	// gossip (health then rests on the agents' reports alone). GossipJoin
	// lists members to join (agents or other servers).
	GossipAddr string
	GossipJoin []string
	// GossipLocal uses loopback gossip timings (tests).
	GossipLocal bool
	// Health tunes the leader's health decisions (tests shorten them).
	Health health.Rules

	Timings RaftTimings
	Logger  *slog.Logger
}

// DefaultCertValidity is how long leaf certificates live unless
// --cert-validity says otherwise.
const DefaultCertValidity = 365 * 24 * time.Hour

func (c Config) certValidity() time.Duration {
	if c.CertValidity > 0 {
		return c.CertValidity
	}
	return DefaultCertValidity
}

// Server is one running coordinator server.
type Server struct {
	cfg    Config
	logger *slog.Logger
	fsm    *FSM
	keys   *keyring.Keyring // seals the replicated state at rest
	// backupCreds are the backup target's access keys, never replicated.
	backupCreds backup.Credentials
	raft        *raftNode
	creds       *serverCreds
	grpc        *grpc.Server
	health      *grpchealth.Server
	apiLn       net.Listener
	http        *http.Server
	metrics     *metrics
	peers       *peerPool
	trustHeld   atomic.Uint64 // the trust generation whose CAs this server trusts (syncTrust)
	gossip      atomic.Pointer[gossip.Member]
	// started is raft once running, for the Raft transport's checks,
	// which run from the start (raftPeer).
	started atomic.Pointer[raftNode]

	apiAddr, raftAddr string // advertised

	writeMu sync.Mutex // serialises the leader's read-decide-write handlers
	joins   joinLimiter
	wg      sync.WaitGroup
	stopCh  chan struct{}
	stopped sync.Once
}

// Start opens (or creates, with Bootstrap or Join) the server's state in
// its data dir and serves until Shutdown or Kill.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Timings == (RaftTimings{}) {
		cfg.Timings = DefaultRaftTimings
	}
	if cfg.VPNPool == "" {
		cfg.VPNPool = DefaultVPNPool
	}
	if cfg.ID == "" {
		return nil, errors.New("--id: required")
	}
	if cfg.DataDir == "" {
		return nil, errors.New("--data-dir: required")
	}
	var creds backup.Credentials
	if cfg.BackupCredentials != "" {
		var err error
		if creds, err = backup.LoadCredentials(cfg.BackupCredentials); err != nil {
			return nil, err
		}
	}
	if cfg.BackupTarget != "" {
		if _, err := backup.ParseTarget(cfg.BackupTarget, creds); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("--data-dir: %w", err)
	}
	s := &Server{cfg: cfg, logger: cfg.Logger.With("server", cfg.ID), stopCh: make(chan struct{}), backupCreds: creds}
	host, err := advertiseHost(cfg.Advertise, cfg.APIAddr)
	if err != nil {
		return nil, err
	}
	if s.apiAddr, err = withHost(host, cfg.APIAddr, "--api-addr"); err != nil {
		return nil, err
	}
	if s.raftAddr, err = withHost(host, cfg.RaftAddr, "--raft-addr"); err != nil {
		return nil, err
	}

	raftDir := filepath.Join(cfg.DataDir, "raft")
	hasState, err := raftHasState(raftDir)
	if err != nil {
		return nil, fmt.Errorf("reading raft state: %w", err)
	}
	bootstrap := false
	switch {
	case hasState:
		s.creds, err = loadCreds(cfg.DataDir)
	case cfg.Bootstrap:
		bootstrap = true
		s.creds, err = bootstrapCreds(cfg.DataDir, cfg.ID, host, s.apiAddr, cfg.certValidity())
	case cfg.Join != "":
		s.creds, err = joinCreds(ctx, cfg, host, s.apiAddr, s.raftAddr)
	default:
		err = fmt.Errorf("data dir %s holds no state: start the first server with --bootstrap, or another with --join", cfg.DataDir)
	}
	if err != nil {
		return nil, err
	}
	if s.keys, err = serverKeyring(cfg.DataDir, bootstrap); err != nil {
		return nil, err
	}

	s.metrics = newMetrics(s)
	s.fsm = NewFSM(s.keys, s.logger)
	clientTLS, err := s.creds.clientTLS()
	if err != nil {
		return nil, err
	}
	raftTLS, err := s.creds.raftServerTLS()
	if err != nil {
		return nil, err
	}
	raftTLS.VerifyConnection = s.raftPeer
	s.peers = newPeerPool(clientTLS)
	layer, err := newTLSStreamLayer(cfg.RaftAddr, s.raftAddr, raftTLS, s.peers.config)
	if err != nil {
		return nil, err
	}
	s.raft, err = startRaft(cfg.ID, raftDir, layer, s.fsm, cfg.Timings, bootstrap, s.logger)
	if err != nil {
		layer.Close()
		return nil, err
	}
	s.started.Store(s.raft)
	if err := s.serveAPI(); err != nil {
		s.raft.close()
		return nil, err
	}
	if err := s.serveMetrics(); err != nil {
		s.Kill()
		return nil, err
	}
	s.wg.Add(3)
	go s.monitorLeadership()
	go s.runGossip()
	go s.renewLoop()
	if !hasState && cfg.Join != "" {
		if err := s.joinRaft(ctx); err != nil {
			s.Kill()
			return nil, err
		}
	}
	s.logger.Info("coordinator server started", "api", s.apiAddr, "raft", s.raftAddr, "bootstrap", bootstrap)
	return s, nil
}

func (s *Server) serveAPI() error {
	ln, err := net.Listen("tcp", s.cfg.APIAddr)
	if err != nil {
		return fmt.Errorf("--api-addr: %w", err)
	}
	apiTLS, err := s.creds.apiTLS()
	if err != nil {
		ln.Close()
		return err
	}
	s.apiLn = ln
	s.grpc = grpc.NewServer(append(connlimit.ServerOptions(credentials.NewTLS(apiTLS), connlimit.Default, s.trustedConn),
		grpc.MaxRecvMsgSize(maxRequest),
		// A server holds a connection per agent, mostly idle: each gets a
		// small read buffer, and a write buffer only while it writes.
		grpc.ReadBufferSize(4<<10), grpc.SharedWriteBuffer(true),
		grpc.ChainUnaryInterceptor(s.metrics.unaryInterceptor, limitAgentRequests, s.unaryInterceptor),
		grpc.ChainStreamInterceptor(s.streamInterceptor),
	)...)
	pb.RegisterOperatorServer(s.grpc, &operatorAPI{s: s})
	pb.RegisterBootstrapServer(s.grpc, &bootstrapAPI{s: s})
	pb.RegisterAgentServer(s.grpc, &agentAPI{s: s})
	pb.RegisterPeerServer(s.grpc, &peerAPI{s: s})
	s.serveHealth()
	go func() {
		if err := s.grpc.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.logger.Error("api server stopped", "err", err)
		}
	}()
	return nil
}

// APIAddr is the advertised API address; RaftAddr the advertised Raft one.
func (s *Server) APIAddr() string  { return s.apiAddr }
func (s *Server) RaftAddr() string { return s.raftAddr }

// ID is this server's Raft ID.
func (s *Server) ID() string { return s.cfg.ID }

// State is this server's current state store.
func (s *Server) State() *state.Store { return s.fsm.State() }

// IsLeader reports whether this server leads now.
func (s *Server) IsLeader() bool { return s.raft.State() == raft.Leader }

// AppliedIndex is the index of the last entry applied to this server's state.
func (s *Server) AppliedIndex() uint64 { return s.raft.AppliedIndex() }

// CAPEM is every CA this server trusts: the coordinator CA, and during a
// rotation the other one.
func (s *Server) CAPEM() []byte { return s.creds.trust.PEM() }

// Shutdown stops the server cleanly: a leader hands leadership to another
// voter first, so the others elect nobody in a hurry.
func (s *Server) Shutdown() error {
	if s.IsLeader() && s.voters() > 1 {
		if err := s.raft.LeadershipTransfer().Error(); err != nil {
			s.logger.Warn("leadership transfer failed", "err", err)
		} else {
			s.logger.Info("leadership transferred")
		}
	}
	return s.stop(true)
}

// Kill stops the server at once, as a crash would (tests use it).
func (s *Server) Kill() { _ = s.stop(false) }

func (s *Server) stop(graceful bool) error {
	var err error
	s.stopped.Do(func() {
		close(s.stopCh)
		if graceful {
			done := make(chan struct{})
			go func() { s.grpc.GracefulStop(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				s.grpc.Stop()
			}
		} else {
			s.grpc.Stop()
		}
		if s.http != nil {
			s.http.Close()
		}
		err = s.raft.close()
		s.wg.Wait()
		s.peers.close()
	})
	return err
}

func (s *Server) voters() int {
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	n := 0
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage == raft.Voter {
			n++
		}
	}
	return n
}

// advertiseHost picks the host others reach this server by.
func advertiseHost(advertise, apiAddr string) (string, error) {
	if advertise != "" {
		if h, _, err := net.SplitHostPort(advertise); err == nil {
			return h, nil
		}
		return advertise, nil
	}
	host, _, err := net.SplitHostPort(apiAddr)
	if err != nil {
		return "", fmt.Errorf("--api-addr %q: %w", apiAddr, err)
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return host, nil
	}
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
				return n.IP.String(), nil
			}
		}
	}
	return "127.0.0.1", nil
}

// withHost replaces the host of a listen address by the advertised one.
func withHost(host, addr, flag string) (string, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("%s %q: %w", flag, addr, err)
	}
	return net.JoinHostPort(host, port), nil
}
