package cri

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// DefaultEndpoint is containerd's CRI socket.
const DefaultEndpoint = "unix:///run/containerd/containerd.sock"

// PullPolicy says whether EnsureImage may pull a missing image.
type PullPolicy int

const (
	// PullIfNotPresent pulls an image that is not on the machine.
	PullIfNotPresent PullPolicy = iota
	// PullNever only uses images already there (air gaps, tests).
	PullNever
)

// Options tunes a Runtime; zero values take the defaults.
type Options struct {
	// LogDir holds the pods' container logs, one directory per sandbox
	// (default /var/log/oneinfra/pods).
	LogDir string
	// Timeout bounds each CRI call (default 1m); RunPodSandbox gets twice
	// as long, image pulls PullTimeout.
	Timeout time.Duration
	// PullTimeout bounds one image pull (default 5m).
	PullTimeout time.Duration
	PullPolicy  PullPolicy
	// StopTimeout is the grace period between the stop signal and SIGKILL
	// when a container is stopped (default 10s).
	StopTimeout time.Duration
	// RestartBackoff is the delay before the first restart of an exited
	// container, doubled at each further restart up to MaxRestartBackoff
	// (defaults 10s and 5m). A container that ran for 10 minutes before
	// exiting starts again from RestartBackoff.
	RestartBackoff    time.Duration
	MaxRestartBackoff time.Duration
	// LogTailLines is how many log lines a failed container reports
	// (default 20).
	LogTailLines int
	// CgroupParent is given to every sandbox (default: the runtime's).
	CgroupParent string
	Logger       *slog.Logger
	// now is the clock (tests).
	now func() time.Time
}

func (o *Options) setDefaults() {
	if o.LogDir == "" {
		o.LogDir = "/var/log/oneinfra/pods"
	}
	if abs, err := filepath.Abs(o.LogDir); err == nil {
		o.LogDir = abs
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Minute
	}
	if o.PullTimeout <= 0 {
		o.PullTimeout = 5 * time.Minute
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 10 * time.Second
	}
	if o.RestartBackoff <= 0 {
		o.RestartBackoff = 10 * time.Second
	}
	if o.MaxRestartBackoff <= 0 {
		o.MaxRestartBackoff = 5 * time.Minute
	}
	if o.LogTailLines <= 0 {
		o.LogTailLines = 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.now == nil {
		o.now = time.Now
	}
}

// Runtime runs oneinfra's pods through a CRI runtime. It keeps no state of
// its own: everything it needs is in the runtime's labels, so a new Runtime
// on the same containerd (an agent restart) carries on where the last one
// stopped. Its methods are safe for concurrent use (they are serialised).
type Runtime struct {
	conn    *grpc.ClientConn
	rt      runtimeapi.RuntimeServiceClient
	img     runtimeapi.ImageServiceClient
	opts    Options
	log     *slog.Logger
	mu      sync.Mutex
	version *runtimeapi.VersionResponse
}

// Connect dials the CRI endpoint (unix:///path or a plain socket path) and
// checks that it speaks CRI v1.
func Connect(ctx context.Context, endpoint string, opts Options) (*Runtime, error) {
	opts.setDefaults()
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	target := endpoint
	if strings.HasPrefix(target, "/") {
		target = "unix://" + target
	}
	if !strings.HasPrefix(target, "unix://") {
		return nil, fmt.Errorf("CRI endpoint %q: only unix sockets are supported", endpoint)
	}
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)))
	if err != nil {
		return nil, fmt.Errorf("CRI endpoint %s: %w", endpoint, err)
	}
	r := &Runtime{
		conn: conn,
		rt:   runtimeapi.NewRuntimeServiceClient(conn),
		img:  runtimeapi.NewImageServiceClient(conn),
		opts: opts,
		log:  opts.Logger.With("cri", endpoint),
	}
	cctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	// WaitForReady: a runtime that is starting gets until the timeout.
	v, err := r.rt.Version(cctx, &runtimeapi.VersionRequest{Version: "v1"}, grpc.WaitForReady(true))
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("CRI endpoint %s: version: %w", endpoint, err)
	}
	if v.RuntimeApiVersion != "v1" {
		conn.Close()
		return nil, fmt.Errorf("CRI endpoint %s: runtime %s %s speaks CRI %q, need v1", endpoint, v.RuntimeName, v.RuntimeVersion, v.RuntimeApiVersion)
	}
	r.version = v
	r.log.Debug("connected", "runtime", v.RuntimeName, "version", v.RuntimeVersion)
	return r, nil
}

// Close closes the connection; pods keep running.
func (r *Runtime) Close() error { return r.conn.Close() }

// RuntimeVersion returns the runtime's name and version, as seen at Connect.
func (r *Runtime) RuntimeVersion() (name, version string) {
	return r.version.RuntimeName, r.version.RuntimeVersion
}

// call runs f with the per-call timeout, times mult.
func (r *Runtime) call(ctx context.Context, mult time.Duration, f func(context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, r.opts.Timeout*mult)
	defer cancel()
	return f(cctx)
}

// EnsureImage makes sure ref is on the machine: present already, or pulled
// (PullIfNotPresent). It returns an error wrapping ErrImageNotFound when the
// image is absent and cannot be had.
func (r *Runtime) EnsureImage(ctx context.Context, ref string) error {
	var present bool
	err := r.call(ctx, 1, func(ctx context.Context) error {
		st, err := r.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		present = err == nil && st.GetImage() != nil
		return err
	})
	if err != nil {
		return fmt.Errorf("image status of %s: %w", ref, err)
	}
	if present {
		return nil
	}
	if r.opts.PullPolicy == PullNever {
		return fmt.Errorf("%w: %s is not on this machine (pulling is disabled)", ErrImageNotFound, ref)
	}
	start := time.Now()
	pctx, cancel := context.WithTimeout(ctx, r.opts.PullTimeout)
	defer cancel()
	_, err = r.img.PullImage(pctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("pulling %s: %w", ref, ctx.Err())
		}
		return fmt.Errorf("%w: %s is not on this machine and pulling it failed: %s", ErrImageNotFound, ref, status.Convert(err).Message())
	}
	r.log.Info("pulled image", "image", ref, "took", time.Since(start).Round(time.Millisecond))
	return nil
}
