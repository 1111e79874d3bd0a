// Package gossip is the encrypted memberlist (SWIM) gossip between the
// hypervisor agents and the coordinator servers. Agents are members named
// "hv/NAME", coordinator servers observers named "server/ID". What a member
// sees is advice only: the coordinator's leader decides a hypervisor's
// health from the agent's reports, and gossip can only make it suspect.
package gossip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// DefaultPort is the gossip port (TCP and UDP) unless told otherwise.
const DefaultPort = 7946

// KeySize is the size of the gossip encryption key (AES-256).
const KeySize = 32

// Prefixes of member names.
const (
	HypervisorPrefix = "hv/"
	ServerPrefix     = "server/"
)

// HypervisorMember is the member name of a hypervisor's agent.
func HypervisorMember(name string) string { return HypervisorPrefix + name }

// ServerMember is the member name of a coordinator server.
func ServerMember(id string) string { return ServerPrefix + id }

// State is what gossip says of a member.
type State string

const (
	Alive   State = "alive"
	Suspect State = "suspect"
	Dead    State = "dead" // failed, or left
)

// Observation is a member's state as this member sees it, and since when.
type Observation struct {
	State State
	Since time.Time
}

// Config starts a member.
type Config struct {
	Name string // "hv/NAME" or "server/ID"
	// Addr is IP:PORT to listen on (TCP and UDP); port 0 picks one.
	Addr string
	// Advertise is the IP:PORT others reach this member by; default Addr
	// (memberlist picks a private address when Addr's IP is unspecified).
	Advertise string
	// Join lists HOST:PORT of members to join. When none answers, joining
	// is retried every RejoinInterval while this member is alone.
	Join           []string
	RejoinInterval time.Duration // default 30s
	Key            []byte        // KeySize bytes
	Meta           []byte        // member metadata, at most 512 bytes
	// Local uses memberlist's loopback timings (tests): faster probes and
	// failure detection.
	Local  bool
	Logger *slog.Logger
}

// Member is this process's member of the gossip.
type Member struct {
	ml     *memberlist.Memberlist
	logger *slog.Logger
	join   []string

	mu   sync.Mutex
	seen map[string]Observation

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// Start creates the member, listens, and joins in the background.
func Start(cfg Config) (*Member, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if len(cfg.Key) != KeySize {
		return nil, fmt.Errorf("gossip key: %d bytes, want %d", len(cfg.Key), KeySize)
	}
	if cfg.Name == "" {
		return nil, errors.New("gossip: a member name is required")
	}
	if len(cfg.Meta) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("gossip metadata: %d bytes, at most %d", len(cfg.Meta), memberlist.MetaMaxSize)
	}
	host, port, err := splitAddr(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("--gossip-addr %q: %w", cfg.Addr, err)
	}
	conf := memberlist.DefaultLANConfig()
	if cfg.Local {
		conf = memberlist.DefaultLocalConfig()
	}
	conf.Name = cfg.Name
	conf.BindAddr, conf.BindPort = host, port
	conf.AdvertisePort = port
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		conf.AdvertiseAddr = host
	}
	if cfg.Advertise != "" {
		ahost, aport, err := splitAddr(cfg.Advertise)
		if err != nil {
			return nil, fmt.Errorf("gossip advertise address %q: %w", cfg.Advertise, err)
		}
		conf.AdvertiseAddr, conf.AdvertisePort = ahost, aport
	}
	conf.SecretKey = cfg.Key
	conf.GossipVerifyIncoming, conf.GossipVerifyOutgoing = true, true
	logger := cfg.Logger.With("subsystem", "gossip")
	conf.LogOutput = nil
	conf.Logger = log.New(&logWriter{logger: logger}, "", 0)
	m := &Member{logger: logger, join: cfg.Join, seen: map[string]Observation{}, stop: make(chan struct{}), done: make(chan struct{})}
	conf.Events = &events{m: m}
	conf.Delegate = &delegate{meta: cfg.Meta}
	if m.ml, err = memberlist.Create(conf); err != nil {
		return nil, fmt.Errorf("starting gossip on %s: %w", cfg.Addr, err)
	}
	rejoin := cfg.RejoinInterval
	if rejoin <= 0 {
		rejoin = 30 * time.Second
	}
	go m.joinLoop(rejoin)
	logger.Info("gossip started", "member", cfg.Name, "addr", m.Addr(), "join", cfg.Join)
	return m, nil
}

// Addr is the IP:PORT this member advertises.
func (m *Member) Addr() string {
	n := m.ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// Join joins the named members now; it returns how many answered.
func (m *Member) Join(addrs []string) (int, error) { return m.ml.Join(addrs) }

// joinLoop joins the configured members, and again whenever this member
// finds itself alone.
func (m *Member) joinLoop(every time.Duration) {
	defer close(m.done)
	if len(m.join) == 0 {
		<-m.stop
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if m.ml.NumMembers() <= 1 {
			if n, err := m.ml.Join(m.join); err != nil {
				m.logger.Warn("joining the gossip; retrying", "join", m.join, "answered", n, "err", err, "retry", every)
			} else {
				m.logger.Info("joined the gossip", "join", m.join, "answered", n)
			}
		}
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
	}
}

// View is every member this member has known, with its state now. Members
// that failed or left stay in the view as dead.
func (m *Member) View() map[string]Observation {
	now := time.Now()
	// Members takes memberlist's lock, which it holds while calling the
	// event delegate: never call it holding m.mu.
	live := m.ml.Members()
	m.mu.Lock()
	defer m.mu.Unlock()
	present := map[string]bool{}
	for _, n := range live {
		present[n.Name] = true
		st := Alive
		if n.State == memberlist.StateSuspect {
			st = Suspect
		}
		m.observeLocked(n.Name, st, now)
	}
	for name := range m.seen {
		if !present[name] {
			m.observeLocked(name, Dead, now)
		}
	}
	out := make(map[string]Observation, len(m.seen))
	for name, o := range m.seen {
		out[name] = o
	}
	return out
}

// Observe is one member's state in View, and whether it is known.
func (m *Member) Observe(name string) (Observation, bool) {
	o, ok := m.View()[name]
	return o, ok
}

func (m *Member) observe(name string, st State, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.observeLocked(name, st, now)
}

func (m *Member) observeLocked(name string, st State, now time.Time) {
	if o, ok := m.seen[name]; ok && o.State == st {
		return
	}
	m.seen[name] = Observation{State: st, Since: now}
}

// Close leaves the gossip (so the others know at once) and stops.
func (m *Member) Close() error {
	var err error
	m.once.Do(func() {
		close(m.stop)
		<-m.done
		if lerr := m.ml.Leave(2 * time.Second); lerr != nil {
			m.logger.Debug("leaving the gossip", "err", lerr)
		}
		err = m.ml.Shutdown()
	})
	return err
}

// Kill stops without leaving, as a crash would (tests).
func (m *Member) Kill() error {
	var err error
	m.once.Do(func() {
		close(m.stop)
		<-m.done
		err = m.ml.Shutdown()
	})
	return err
}

// events tracks joins and failures as they happen; View fills in the
// suspicion, which memberlist raises no event for.
type events struct{ m *Member }

func (e *events) NotifyJoin(n *memberlist.Node) { e.m.observe(n.Name, Alive, time.Now()) }
func (e *events) NotifyLeave(n *memberlist.Node) {
	e.m.observe(n.Name, Dead, time.Now())
	e.m.logger.Info("gossip member gone", "member", n.Name, "left", n.State == memberlist.StateLeft)
}
func (e *events) NotifyUpdate(*memberlist.Node) {}

// delegate gives this member's metadata; no user messages or state.
type delegate struct{ meta []byte }

func (d *delegate) NodeMeta(limit int) []byte {
	if len(d.meta) > limit {
		return d.meta[:limit]
	}
	return d.meta
}
func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

// logWriter turns memberlist's "[LEVEL] memberlist: message" lines into
// structured records; its chatty DEBUG lines go to slog's Debug.
type logWriter struct{ logger *slog.Logger }

func (w *logWriter) Write(p []byte) (int, error) {
	line := string(bytes.TrimRight(p, "\r\n"))
	level := slog.LevelInfo
	for prefix, l := range map[string]slog.Level{"[DEBUG]": slog.LevelDebug, "[TRACE]": slog.LevelDebug, "[INFO]": slog.LevelInfo, "[WARN]": slog.LevelWarn, "[ERR]": slog.LevelError, "[ERROR]": slog.LevelError} {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			level, line = l, strings.TrimSpace(rest)
			break
		}
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	w.logger.Log(context.Background(), level, line)
	return len(p), nil
}

func splitAddr(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}
