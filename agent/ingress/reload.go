package ingress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/oneinfra/oneinfra/agent/host"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
)

// ErrConfigRejected is returned by Reload when haproxy refused the new
// configuration; the previous one goes on serving. The reason is in
// haproxy's log (the container's).
var ErrConfigRejected = errors.New("haproxy rejected the new configuration")

// masterStartup is how long Reload asks again a master that does not
// answer on its socket before taking it for gone.
const masterStartup = 3 * time.Second

// DefaultReloadTimeout bounds Reload when its context has no deadline.
const DefaultReloadTimeout = 30 * time.Second

// Reload makes the running haproxy of the ingress at paths read its
// configuration again, without dropping connections (see the package doc),
// and waits until a new worker runs it. It returns nil when no haproxy is
// running there (no master answers on its socket within masterStartup):
// a haproxy that starts reads the current files anyway. It returns an
// error wrapping ErrConfigRejected when haproxy refused the configuration.
//
// Calls for one ingress must not overlap.
func Reload(ctx context.Context, paths host.Paths) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultReloadTimeout)
		defer cancel()
	}
	sock := paths.Config(MasterSocket)
	before, err := showProc(ctx, sock)
	// A master just started may not have made or opened its socket yet,
	// while its worker, which read the files as they were, serves already:
	// it is asked again for a while before it is taken for gone.
	for since := time.Now(); notRunning(err) && time.Since(since) < masterStartup; {
		select {
		case <-ctx.Done():
			return fmt.Errorf("reloading haproxy: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
		before, err = showProc(ctx, sock)
	}
	if err != nil {
		if notRunning(err) {
			return nil
		}
		return fmt.Errorf("reloading haproxy: %w", err)
	}

	// The new worker starts with the servers' current states, so that a
	// down API server gets no traffic until its checks pass.
	state := paths.Config(ServerStateFile)
	defer clearServerState(state)
	if err := saveServerState(ctx, sock, state, paths.Config(ConfigFile)); err != nil {
		// Without states the servers start up, as in a fresh start.
		clearServerState(state)
	}

	out, err := masterCommand(ctx, sock, "reload")
	if err != nil {
		return fmt.Errorf("reloading haproxy: %w", err)
	}
	// haproxy 2.7 and later answer with the outcome; 2.6 closes the
	// connection when it re-executes itself.
	if strings.Contains(out, "Success=0") {
		return fmt.Errorf("%w: %s", ErrConfigRejected, strings.TrimSpace(out))
	}

	for {
		after, err := showProc(ctx, sock)
		if err == nil && after.reloads > before.reloads {
			if after.failed > before.failed {
				return fmt.Errorf("%w (master reload %d failed; the running workers keep the previous configuration)", ErrConfigRejected, after.reloads)
			}
			if after.newWorker(before) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return fmt.Errorf("reloading haproxy: no new worker: %w (last error: %v)", ctx.Err(), err)
			}
			return fmt.Errorf("reloading haproxy: no new worker: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// saveServerState writes the current worker's "show servers state" to
// path, where load-server-state-from-file reads it, keeping only the
// servers that the configuration at cfgPath has at the same address and
// port.
func saveServerState(ctx context.Context, sock, path, cfgPath string) error {
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		return err
	}
	out, err := masterCommand(ctx, sock, "@1 show servers state")
	if err != nil {
		return err
	}
	// The dump starts with its format version, "1".
	if !strings.HasPrefix(out, "1\n") {
		return fmt.Errorf("unexpected server state dump %q", firstLine(out))
	}
	servers := configServers(cfg)
	return tlsutil.WriteFileAtomic(path, []byte(withNewServersDown(filterServerState(out, servers), servers)), 0o644)
}

// withNewServersDown adds to a filtered state dump a line for each server
// of the configuration that the dump lacks (an API server added by this
// reload), in state DOWN with no good check yet: haproxy would otherwise
// take a new server for up and send it connections before its first check,
// when it may not serve yet (kube-apiserver answers 500 until its
// informers have synced). So a new API server gets traffic only after
// passing "rise" checks. haproxy finds the server by its backend's and its
// own name (ids 0, not forced).
func withNewServersDown(dump string, servers map[string]string) string {
	have := map[string]bool{}
	for _, line := range strings.Split(dump, "\n") {
		if f := strings.Fields(line); len(f) >= 19 && f[1] == backendName {
			have[f[3]] = true
		}
	}
	names := make([]string, 0, len(servers))
	for name := range servers {
		if !have[name] {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString(dump)
	for _, name := range names {
		host, port, err := net.SplitHostPort(servers[name])
		if err != nil {
			continue
		}
		// be_id be_name srv_id srv_name srv_addr srv_op_state(0: down)
		// srv_admin_state srv_uweight srv_iweight srv_time_since_last_change
		// srv_check_status srv_check_result srv_check_health(0)
		// srv_check_state(configured, enabled) srv_agent_state
		// bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord
		// srv_use_ssl srv_check_port srv_check_addr srv_agent_addr
		// srv_agent_port
		fmt.Fprintf(&b, "0 %s 0 %s %s 0 0 1 1 0 1 0 0 6 0 0 0 - %s - 0 0 - - 0\n", backendName, name, host, port)
	}
	return b.String()
}

// configServers returns the address (host:port) of every server of the
// API server backend of a configuration made by Render.
func configServers(cfg []byte) map[string]string {
	servers := map[string]string{}
	backend := ""
	for _, line := range strings.Split(string(cfg), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
		case line[0] != ' ':
			backend = ""
			if f[0] == "backend" && len(f) > 1 {
				backend = f[1]
			}
		case backend == backendName && f[0] == "server" && len(f) >= 3:
			servers[f[1]] = f[2]
		}
	}
	return servers
}

// filterServerState keeps the lines of a "show servers state" dump (format
// 1) of servers whose name, address and port are still those of servers:
// haproxy would apply the port of the state to a server whose address
// changed, and a state describes a server, not a name.
func filterServerState(dump string, servers map[string]string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(dump, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] == "1" || strings.HasPrefix(f[0], "#") {
			b.WriteString(line)
			continue
		}
		// be_id be_name srv_id srv_name srv_addr ... srv_port (19th)
		if len(f) < 19 || f[1] != backendName {
			continue
		}
		host, port, err := net.SplitHostPort(servers[f[3]])
		if err != nil || net.ParseIP(host) == nil || !net.ParseIP(host).Equal(net.ParseIP(f[4])) || port != f[18] {
			continue
		}
		b.WriteString(line)
	}
	return b.String()
}

// clearServerState leaves the state file as Render makes it, so that a
// later start does not load stale states.
func clearServerState(path string) {
	_ = tlsutil.WriteFileAtomic(path, []byte(EmptyServerState), 0o644)
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// notRunning reports whether a dial error means that no master listens.
func notRunning(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED)
}

// procs is haproxy's "show proc".
type procs struct {
	master          int
	reloads, failed int
	workers         []proc
	oldWorkers      []proc
}

type proc struct {
	pid, reloads int
}

// newWorker reports whether a worker runs now that did not before.
func (p procs) newWorker(before procs) bool {
	old := map[int]bool{}
	for _, w := range append(append([]proc(nil), before.workers...), before.oldWorkers...) {
		old[w.pid] = true
	}
	for _, w := range p.workers {
		if !old[w.pid] {
			return true
		}
	}
	return false
}

func showProc(ctx context.Context, sock string) (procs, error) {
	out, err := masterCommand(ctx, sock, "show proc")
	if err != nil {
		return procs{}, err
	}
	return parseShowProc(out)
}

// parseShowProc reads the output of the master CLI's "show proc":
//
//	#<PID>          <type>          <reloads>       <uptime>        <version>
//	28257           master          2 [failed: 1]   0d00h00m05s     2.6.12
//	# workers
//	28306           worker          1               0d00h00m01s     2.6.12
//	# old workers
//	28260           worker          [was: 1]        0d00h00m09s     2.6.12
//	# programs
func parseShowProc(out string) (procs, error) {
	var p procs
	section := ""
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "#") {
			section = strings.TrimSpace(strings.TrimPrefix(line, "#"))
			continue
		}
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		pid, err := strconv.Atoi(f[0])
		if err != nil {
			continue
		}
		reloads, _ := strconv.Atoi(strings.Trim(f[2], "[]"))
		switch {
		case f[1] == "master":
			p.master, p.reloads = pid, reloads
			for i := 3; i+1 < len(f); i++ {
				if f[i] == "[failed:" {
					p.failed, _ = strconv.Atoi(strings.TrimSuffix(f[i+1], "]"))
				}
			}
		case f[1] == "worker" && section == "workers":
			p.workers = append(p.workers, proc{pid, reloads})
		case f[1] == "worker" && section == "old workers":
			p.oldWorkers = append(p.oldWorkers, proc{pid: pid})
		}
	}
	if p.master == 0 {
		return p, fmt.Errorf("no master in the output of show proc: %q", firstLine(out))
	}
	return p, nil
}

// masterCommand sends one command to haproxy's master CLI at sock and
// returns the answer. The master answers once the client has shut down
// its side of the connection.
func masterCommand(ctx context.Context, sock, command string) (string, error) {
	conn, err := dialUnix(ctx, sock)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(10 * time.Second)
	}
	if err := conn.SetDeadline(deadline); err != nil {
		return "", err
	}
	if _, err := io.WriteString(conn, command+"\n"); err != nil {
		return "", fmt.Errorf("master CLI %s: %q: %w", sock, command, err)
	}
	if err := conn.CloseWrite(); err != nil {
		return "", fmt.Errorf("master CLI %s: %q: %w", sock, command, err)
	}
	out, err := io.ReadAll(conn)
	if err != nil {
		return string(out), fmt.Errorf("master CLI %s: %q: %w", sock, command, err)
	}
	return string(out), nil
}

// maxSocketPath is the longest path a unix socket address holds (the
// 108 bytes of sun_path, less the terminating NUL).
const maxSocketPath = 107

// dialUnix connects to a unix socket, also when its path is too long for a
// socket address: then through /proc/self/fd/N/NAME, N being an open
// descriptor of the socket's directory.
func dialUnix(ctx context.Context, path string) (*net.UnixConn, error) {
	var d net.Dialer
	if len(path) <= maxSocketPath {
		c, err := d.DialContext(ctx, "unix", path)
		if err != nil {
			return nil, err
		}
		return c.(*net.UnixConn), nil
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	short := fmt.Sprintf("/proc/self/fd/%d/%s", dir.Fd(), filepath.Base(path))
	c, err := d.DialContext(ctx, "unix", short)
	if err != nil {
		return nil, fmt.Errorf("dial unix %s: %w", path, err)
	}
	return c.(*net.UnixConn), nil
}
