package coordinator

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/oneinfra/oneinfra/internal/connlimit"
)

// RaftTimings tune elections; tests shorten them.
type RaftTimings struct {
	Heartbeat, Election, LeaderLease, Commit time.Duration
}

// DefaultRaftTimings suit servers on one LAN: a follower starts an
// election 0.8 to 1.6s after its leader's last contact, so a leader lost is
// replaced within about 2s (make bench measures the next accepted write:
// 1.4 to 1.8s with 300 agents, 3 to 3.6s with 10,000 and the three servers
// on one 2-core machine). The leader steps down when it has heard from no
// quorum for half a second.
var DefaultRaftTimings = RaftTimings{
	Heartbeat:   800 * time.Millisecond,
	Election:    800 * time.Millisecond,
	LeaderLease: 500 * time.Millisecond,
	Commit:      50 * time.Millisecond,
}

// raftNode is a Raft instance with its stores, all under one directory.
type raftNode struct {
	*raft.Raft
	store     *raftboltdb.BoltStore
	transport *raft.NetworkTransport
}

// raftHasState reports whether dir already holds Raft state.
func raftHasState(dir string) (bool, error) {
	_, err := os.Stat(filepath.Join(dir, "raft.db"))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	store, snaps, err := openRaftStores(dir, io.Discard)
	if err != nil {
		return false, err
	}
	defer store.Close()
	return raft.HasExistingState(store, store, snaps)
}

func openRaftStores(dir string, logOut io.Writer) (*raftboltdb.BoltStore, raft.SnapshotStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("creating raft dir: %w", err)
	}
	store, err := raftboltdb.NewBoltStore(filepath.Join(dir, "raft.db"))
	if err != nil {
		return nil, nil, fmt.Errorf("opening raft log: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStore(dir, 2, logOut)
	if err != nil {
		store.Close()
		return nil, nil, fmt.Errorf("opening snapshot store: %w", err)
	}
	private := privateSnapshots{FileSnapshotStore: snaps, dir: filepath.Join(dir, "snapshots")}
	if err := private.restrict(); err != nil {
		store.Close()
		return nil, nil, err
	}
	return store, private, nil
}

// privateSnapshots keeps Raft's snapshot files to this server's user
// (directories 0700, files 0600), as raft.db is: Raft makes them with the
// umask's modes.
type privateSnapshots struct {
	*raft.FileSnapshotStore
	dir string
}

func (p privateSnapshots) Create(version raft.SnapshotVersion, index, term uint64, conf raft.Configuration, confIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := p.FileSnapshotStore.Create(version, index, term, conf, confIndex, trans)
	if err != nil {
		return nil, err
	}
	return privateSink{SnapshotSink: sink, store: p}, nil
}

// restrict sets the modes of everything under the snapshot directory.
func (p privateSnapshots) restrict() error {
	return filepath.WalkDir(p.dir, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // reaped meanwhile
		}
		if err != nil {
			return err
		}
		mode := fs.FileMode(0o600)
		if d.IsDir() {
			mode = 0o700
		}
		if err := os.Chmod(path, mode); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("restricting raft snapshots: %w", err)
		}
		return nil
	})
}

type privateSink struct {
	raft.SnapshotSink
	store privateSnapshots
}

func (s privateSink) Close() error {
	if err := s.SnapshotSink.Close(); err != nil {
		return err
	}
	return s.store.restrict()
}

// startRaft opens the stores in dir and starts Raft on the TLS stream
// layer. With bootstrap set, a cluster of this one server is formed.
func startRaft(id, dir string, layer raft.StreamLayer, fsm raft.FSM, timings RaftTimings, bootstrap bool, logger *slog.Logger) (*raftNode, error) {
	logOut := &slogWriter{logger: logger.With("subsystem", "raft")}
	store, snaps, err := openRaftStores(dir, logOut)
	if err != nil {
		return nil, err
	}
	transport := raft.NewNetworkTransport(layer, 3, 10*time.Second, logOut)
	conf := raft.DefaultConfig()
	conf.LocalID = raft.ServerID(id)
	conf.HeartbeatTimeout = timings.Heartbeat
	conf.ElectionTimeout = timings.Election
	conf.LeaderLeaseTimeout = timings.LeaderLease
	conf.CommitTimeout = timings.Commit
	conf.SnapshotThreshold = 8192
	conf.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Output: logOut, Level: hclog.Warn})
	if bootstrap {
		err := raft.BootstrapCluster(conf, store, store, snaps, transport, raft.Configuration{
			Servers: []raft.Server{{ID: conf.LocalID, Address: transport.LocalAddr()}},
		})
		if err != nil {
			transport.Close()
			store.Close()
			return nil, fmt.Errorf("bootstrapping raft: %w", err)
		}
	}
	r, err := raft.NewRaft(conf, fsm, store, store, snaps, transport)
	if err != nil {
		transport.Close()
		store.Close()
		return nil, fmt.Errorf("starting raft: %w", err)
	}
	return &raftNode{Raft: r, store: store, transport: transport}, nil
}

// close stops Raft and releases its files.
func (n *raftNode) close() error {
	err := n.Shutdown().Error()
	n.transport.Close()
	if cerr := n.store.Close(); err == nil {
		err = cerr
	}
	return err
}

// raftHandshakes bounds the Raft connections one source may have in their
// TLS handshake at once: a few servers, each with a few connections.
const raftHandshakes = 16

// tlsStreamLayer carries Raft traffic over mutual TLS between servers.
type tlsStreamLayer struct {
	net.Listener
	advertise net.Addr
	client    func() *tls.Config // as it is now: a CA rotation replaces it
}

func newTLSStreamLayer(bind, advertise string, server *tls.Config, client func() *tls.Config) (*tlsStreamLayer, error) {
	adv, err := net.ResolveTCPAddr("tcp", advertise)
	if err != nil {
		return nil, fmt.Errorf("raft advertise address %q: %w", advertise, err)
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("listening for raft on %s: %w", bind, err)
	}
	// Handshakes end before Raft sees a connection, within a deadline and
	// a few at a time per source: the port is reachable by anyone.
	return &tlsStreamLayer{Listener: connlimit.TLSListener(ln, server, raftHandshakes), advertise: adv, client: client}, nil
}

func (l *tlsStreamLayer) Addr() net.Addr { return l.advertise }

func (l *tlsStreamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	return tls.DialWithDialer(d, "tcp", string(addr), l.client())
}

// slogWriter turns the lines Raft writes into structured log records.
type slogWriter struct{ logger *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	w.logger.Info(string(trimNewline(p)))
	return len(p), nil
}

func trimNewline(p []byte) []byte {
	for len(p) > 0 && (p[len(p)-1] == '\n' || p[len(p)-1] == '\r') {
		p = p[:len(p)-1]
	}
	return p
}
