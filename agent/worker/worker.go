package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/oneinfra/oneinfra/agent/wireguard"
	"github.com/oneinfra/oneinfra/internal/observe"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"google.golang.org/protobuf/proto"
)

// Worker is the agent of one worker node.
type Worker struct {
	cfg     Config
	logger  *slog.Logger
	wgKey   wgtypes.Key
	state   *state
	tun     *tunnel
	kubelet kubeletRunner
	// tunnelUp is what /readyz answers.
	tunnelUp atomic.Bool
}

// New checks cfg and makes a worker; Run does the work.
func New(cfg Config) (*Worker, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	w := &Worker{cfg: cfg, logger: cfg.Logger}
	if cfg.KubeletCommand != "" {
		w.kubelet = newSupervisor(cfg.KubeletCommand, cfg.path(kubeletLog), cfg.Logger)
	} else {
		w.kubelet = &systemdKubelet{unitDir: cfg.SystemdDir, kubelet: cfg.KubeletPath, systemctl: cfg.Systemctl, logger: cfg.Logger}
	}
	return w, nil
}

// ensureJoined makes the keys and, on the first start, joins; later
// starts load what the join saved.
func (w *Worker) ensureJoined(ctx context.Context) error {
	if err := os.MkdirAll(w.cfg.DataDir, 0o700); err != nil {
		return err
	}
	key, err := wireguard.LoadOrCreateKey(w.cfg.path("wireguard.key"))
	if err != nil {
		return fmt.Errorf("WireGuard key: %w", err)
	}
	w.wgKey = key
	st, err := loadState(w.cfg)
	if err != nil {
		return err
	}
	if st == nil {
		began := time.Now()
		w.logger.Info("joining the cluster", "endpoint", w.cfg.Join, "name", w.cfg.Name)
		if st, err = join(ctx, w.cfg, key); err != nil {
			return err
		}
		if err := st.save(w.cfg); err != nil {
			return err
		}
		w.logger.Info("joined", "cluster", st.config.GetCluster(), "address", st.config.GetAddress(),
			"pod_cidr", st.config.GetPodCidr(), "took", time.Since(began).Round(time.Millisecond).String())
	} else if st.config.GetName() != "" && st.config.GetName() != w.cfg.Name {
		return fmt.Errorf("--name %q: this machine joined as %q (%s)", w.cfg.Name, st.config.GetName(), w.cfg.path(configFile))
	} else {
		w.logger.Info("joined before: using the saved configuration", "path", w.cfg.path(configFile),
			"cluster", st.config.GetCluster(), "address", st.config.GetAddress())
	}
	w.state = st
	return nil
}

// Run joins if needed, brings the tunnel and the kubelet up and keeps
// them up until ctx ends. A supervised kubelet is stopped then; a
// userspace WireGuard device goes away with the process.
func (w *Worker) Run(ctx context.Context) error {
	if err := w.ensureJoined(ctx); err != nil {
		return err
	}
	impl := wireguard.Choose(wireguard.ProbeKernel)
	dev, err := wireguard.Open(w.cfg.Interface, impl)
	if err != nil {
		return fmt.Errorf("WireGuard device %s (%s): %w", w.cfg.Interface, impl, err)
	}
	if impl == wireguard.Userspace {
		defer dev.Close()
	}
	w.tun = &tunnel{dev: dev, key: w.wgKey, logger: w.logger}
	// A failure here may pass (the endpoint's name does not resolve yet
	// at boot): retry rather than exit.
	for wait := time.Second; ; wait = min(2*wait, 30*time.Second) {
		err := w.tun.apply(w.state.config)
		if err == nil {
			break
		}
		w.logger.Error("cannot bring the tunnel up, retrying", "err", err, "retry_in", wait.String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
	if err := ensureCgroupRoot(w.cfg.Mountinfo, w.cfg.CgroupRoot); err != nil {
		return err
	}
	defer w.kubelet.Stop()
	if err := w.startKubelet(ctx, w.state.config, false); err != nil {
		return err
	}
	if err := w.serveHealth(ctx); err != nil {
		return err
	}
	w.keepUp(ctx)
	return nil
}

// startKubelet writes the kubelet's and CNI's files and (re)starts the
// kubelet when they or its flags changed, or when restart says other
// files of it did (syncTrust).
func (w *Worker) startKubelet(ctx context.Context, wc *pb.WorkerConfig, restart bool) error {
	kubeletChanged, err := writeKubeletFiles(w.cfg, wc)
	if err != nil {
		return fmt.Errorf("kubelet files: %w", err)
	}
	if _, err := writeCNI(w.cfg, wc); err != nil {
		return fmt.Errorf("CNI configuration: %w", err)
	}
	args, err := kubeletFlags(w.cfg, wc)
	if err != nil {
		return err
	}
	return w.kubelet.Start(ctx, args, kubeletChanged || restart)
}

// keepUp watches the endpoint's handshakes and refreshes the
// configuration: every RefreshInterval, and at once while the tunnel is
// down.
func (w *Worker) keepUp(ctx context.Context) {
	tick := time.NewTicker(w.cfg.HealthInterval)
	defer tick.Stop()
	configured := time.Now() // when the tunnel was last (re)configured
	nextRefresh := time.Now()
	reported := "" // "up" or "down", once known
	lastErr := ""  // the last refresh failure, logged once
	for {
		now := time.Now()
		hs, err := w.tun.lastHandshake()
		if err != nil {
			w.logger.Warn("cannot read the tunnel's state", "err", err)
		}
		age := now.Sub(hs)
		var state string
		switch {
		case !hs.IsZero() && age < w.cfg.StaleHandshake:
			state = "up"
		case !hs.IsZero() || now.Sub(configured) >= w.cfg.FirstHandshake:
			state = "down"
		}
		w.tunnelUp.Store(state == "up")
		if state != "" && state != reported {
			if state == "up" {
				w.logger.Info("tunnel up", "endpoint", w.tun.applied.GetEndpoint(), "handshake_age", age.Round(time.Second).String())
			} else if hs.IsZero() {
				w.logger.Warn("tunnel down: no handshake yet", "endpoint", w.tun.applied.GetEndpoint(), "since", now.Sub(configured).Round(time.Second).String())
			} else {
				w.logger.Warn("tunnel down", "endpoint", w.tun.applied.GetEndpoint(), "handshake_age", age.Round(time.Second).String())
			}
			reported = state
		}
		if state == "down" || !now.Before(nextRefresh) {
			nextRefresh = now.Add(w.cfg.RefreshInterval)
			reconfigured, err := w.refresh(ctx, state == "down")
			if w.state.trustAt != w.state.trustTold || w.state.coordAt != w.state.coordTold {
				// Said at once: a CA rotation waits for it.
				nextRefresh = now
			}
			switch {
			case err != nil && ctx.Err() == nil && err.Error() != lastErr:
				w.logger.Warn("cannot refresh the worker configuration", "err", err)
				lastErr = err.Error()
			case err == nil && lastErr != "":
				w.logger.Info("worker configuration refreshed again")
				lastErr = ""
			}
			if reconfigured {
				configured = time.Now()
				reported = ""
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// merge is the new configuration, keeping what only Join answers (the
// client certificate, the bootstrap token) when a Config answer lacks it,
// and leaving out the coordinator's trust (kept apart, in state.caPEM: it
// changes nothing of the kubelet's).
func merge(old, fresh *pb.WorkerConfig) *pb.WorkerConfig {
	m := proto.Clone(fresh).(*pb.WorkerConfig)
	m.CoordinatorTrust = nil
	if len(m.CertPem) == 0 {
		m.CertPem = old.GetCertPem()
	}
	if m.BootstrapToken == "" {
		m.BootstrapToken = old.GetBootstrapToken()
	}
	return m
}

// refresh asks for the current configuration and applies what changed.
// While the tunnel is down (down) the device is checked again even when
// nothing changed: the endpoint's name may resolve to a new address. It
// reports whether the tunnel was reconfigured.
func (w *Worker) refresh(ctx context.Context, down bool) (bool, error) {
	fresh, from, err := fetchConfig(ctx, w.cfg, w.state)
	if err != nil {
		if down {
			_ = w.tun.apply(w.state.config)
		}
		return false, err
	}
	w.state.trustTold, w.state.coordTold = w.state.trustAt, w.state.coordAt
	w.syncCoordinatorTrust(ctx, fresh.GetCoordinatorTrust(), from)
	old := w.state.config
	wc := merge(old, fresh)
	// A CA rotation's files and certificates first, so that the kubelet
	// restarts once for them and a new configuration together.
	restart, holds, trustErr := w.syncTrust(ctx, wc)
	changed := !proto.Equal(old, wc)
	reconfigured := false
	switch {
	case changed && tunnelChanged(old, wc):
		w.logger.Info("tunnel configuration changed", "from", from, "endpoint", wc.GetEndpoint(), "address", wc.GetAddress())
		if err := w.tun.apply(wc); err != nil {
			return false, fmt.Errorf("tunnel: %w", err)
		}
		reconfigured = true
	case !changed && down:
		if err := w.tun.apply(wc); err != nil {
			return false, err
		}
	}
	if changed || restart {
		if err := w.startKubelet(ctx, wc, restart); err != nil {
			return reconfigured, err
		}
	}
	if changed {
		if err := saveConfig(w.cfg, wc); err != nil {
			return reconfigured, err
		}
		w.state.config = wc
	}
	if trustErr != nil {
		return reconfigured, fmt.Errorf("CA rotation: %w", trustErr)
	}
	if holds && w.state.trustAt != wc.GetTrustGeneration() {
		w.state.trustAt = wc.GetTrustGeneration()
		w.logger.Info("the kubelet holds the cluster's CAs", "trust_generation", w.state.trustAt, "restarted", restart)
	}
	return reconfigured, nil
}

// serveHealth serves /healthz (the agent runs) and /readyz (the tunnel
// is up) on MetricsAddr, when set, until ctx ends.
func (w *Worker) serveHealth(ctx context.Context) error {
	if w.cfg.MetricsAddr == "" {
		return nil
	}
	ready := func() error {
		if !w.tunnelUp.Load() {
			return errors.New("tunnel down")
		}
		return nil
	}
	srv, err := observe.Serve(w.cfg.MetricsAddr, nil, ready, w.logger)
	if err != nil {
		return fmt.Errorf("--metrics-addr: %w", err)
	}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	return nil
}
