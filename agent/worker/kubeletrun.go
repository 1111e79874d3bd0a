package worker

import (
	"context"
	"fmt"
	"github.com/oneinfra/oneinfra/agent/netconf"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// kubeletRunner runs the kubelet.
type kubeletRunner interface {
	// Start starts the kubelet with args, or restarts it when args or
	// its files changed since it started.
	Start(ctx context.Context, args []string, filesChanged bool) error
	// Stop stops a kubelet the agent owns; it waits for it to exit.
	Stop()
}

// supervisor runs --kubelet-command as a child: it restarts it with a
// back-off when it exits, and stops it when the agent stops.
type supervisor struct {
	path    string
	logPath string
	logger  *slog.Logger
	// back-off between restarts; reset once the kubelet ran a minute
	minBackoff, maxBackoff time.Duration

	mu      sync.Mutex
	args    []string
	restart chan struct{}
	cancel  context.CancelFunc
	done    chan struct{}
}

func newSupervisor(path, logPath string, logger *slog.Logger) *supervisor {
	return &supervisor{path: path, logPath: logPath, logger: logger,
		minBackoff: time.Second, maxBackoff: 30 * time.Second, restart: make(chan struct{}, 1)}
}

// Start starts the supervision, or restarts the child when needed.
func (s *supervisor) Start(ctx context.Context, args []string, filesChanged bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done == nil {
		log, err := os.OpenFile(s.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return fmt.Errorf("kubelet log: %w", err)
		}
		s.args = args
		ctx, s.cancel = context.WithCancel(ctx)
		s.done = make(chan struct{})
		go s.loop(ctx, log)
		return nil
	}
	if filesChanged || !slices.Equal(s.args, args) {
		s.args = args
		select {
		case s.restart <- struct{}{}:
		default:
		}
	}
	return nil
}

// Stop stops the child and waits for it.
func (s *supervisor) Stop() {
	s.mu.Lock()
	cancel, done := s.cancel, s.done
	s.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func (s *supervisor) currentArgs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.args...)
}

func (s *supervisor) loop(ctx context.Context, log *os.File) {
	defer close(s.done)
	defer log.Close()
	wait := s.minBackoff
	for {
		cmd := exec.Command(s.path, s.currentArgs()...)
		cmd.Stdout, cmd.Stderr = log, log
		// Its own process group, so that stopping it stops its children;
		// and it dies with the agent.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		started := time.Now()
		if err := cmd.Start(); err != nil {
			s.logger.Error("cannot start the kubelet", "command", s.path, "err", err, "retry_in", wait.String())
		} else {
			s.logger.Info("kubelet started", "command", s.path, "pid", cmd.Process.Pid)
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			select {
			case err := <-exited:
				if time.Since(started) > time.Minute {
					wait = s.minBackoff
				}
				s.logger.Warn("kubelet exited", "err", errString(err), "ran", time.Since(started).Round(time.Millisecond).String(), "restart_in", wait.String())
			case <-s.restart:
				s.logger.Info("restarting the kubelet: its configuration changed")
				stopProcess(cmd, exited)
				wait = s.minBackoff
				continue
			case <-ctx.Done():
				stopProcess(cmd, exited)
				s.logger.Info("kubelet stopped")
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-s.restart:
		case <-time.After(wait):
		}
		wait = min(2*wait, s.maxBackoff)
	}
}

// stopProcess sends SIGTERM to the child's process group, then SIGKILL
// after 10 s, and waits for the child.
func stopProcess(cmd *exec.Cmd, exited <-chan error) {
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
}

func errString(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// KubeletUnit is the systemd unit of the kubelet the worker manages.
const KubeletUnit = "oneinfra-kubelet.service"

// systemdKubelet manages the kubelet as the systemd unit KubeletUnit. The
// kubelet keeps running when the agent stops.
type systemdKubelet struct {
	unitDir   string
	kubelet   string
	systemctl string
	logger    *slog.Logger
}

// renderUnit renders the kubelet's unit.
func renderUnit(kubelet string, args []string) []byte {
	return []byte(fmt.Sprintf(`# Written by oneinfra-agent worker; changes are overwritten.
[Unit]
Description=kubelet of a oneinfra worker
Documentation=https://github.com/oneinfra/oneinfra
Wants=network-online.target
After=network-online.target containerd.service oneinfra-worker.service

[Service]
ExecStart=%s %s
Restart=always
RestartSec=2
KillMode=process

[Install]
WantedBy=multi-user.target
`, kubelet, strings.Join(args, " ")))
}

// Start writes the unit; when it (or the kubelet's files) changed it
// reloads systemd and restarts the kubelet, else it only makes sure the
// unit is enabled and running.
func (s *systemdKubelet) Start(ctx context.Context, args []string, filesChanged bool) error {
	changed, err := writeIfChanged(filepath.Join(s.unitDir, KubeletUnit), renderUnit(s.kubelet, args), 0o644)
	if err != nil {
		return err
	}
	steps := [][]string{{"enable", "--now", KubeletUnit}}
	if changed {
		steps = [][]string{{"daemon-reload"}, {"enable", KubeletUnit}, {"restart", KubeletUnit}}
	} else if filesChanged {
		steps = [][]string{{"enable", KubeletUnit}, {"restart", KubeletUnit}}
	}
	for _, st := range steps {
		if err := netconf.Run(s.systemctl, st...); err != nil {
			return err
		}
	}
	if changed || filesChanged {
		s.logger.Info("kubelet unit (re)started", "unit", KubeletUnit)
	}
	return nil
}

// Stop leaves the kubelet to systemd.
func (s *systemdKubelet) Stop() {}
