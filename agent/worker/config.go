package worker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"regexp"
	"time"

	"github.com/oneinfra/oneinfra/internal/tlsutil"
)

// Defaults of the command line.
const (
	DefaultCRIEndpoint    = "unix:///run/containerd/containerd.sock"
	DefaultDataDir        = "/var/lib/oneinfra-worker"
	DefaultKubeletRootDir = "/var/lib/kubelet"
	DefaultCNIConfDir     = "/etc/cni/net.d"
	DefaultInterface      = "oi-wg0"
	DefaultKubeletPath    = "/usr/local/bin/kubelet"
	DefaultSystemdDir     = "/etc/systemd/system"
)

// Config is how a worker agent runs. The zero value of every tunable
// means its default.
type Config struct {
	// Join is HOST:PORT of a public hypervisor's join endpoint. Required.
	Join string
	// Token and CAHash (sha256:HEX of the coordinator CA) are needed on
	// the first start only.
	Token  string
	CAHash string
	// Name is the node's name. Required.
	Name string

	CRIEndpoint string
	DataDir     string
	// KubeletCommand, when set, is run as a supervised child; otherwise
	// the kubelet is the systemd unit oneinfra-kubelet.service.
	KubeletCommand string
	KubeletRootDir string
	// CgroupRoot is the kubelet's cgroup root; it is made in every
	// mounted cgroup hierarchy.
	CgroupRoot string
	CNIConfDir string
	// Interface is the WireGuard device's name.
	Interface string
	// MetricsAddr, when set, serves /healthz and /readyz (tunnel up).
	MetricsAddr string
	Logger      *slog.Logger

	// HealthInterval is how often the peer's last handshake is read (10 s).
	HealthInterval time.Duration
	// RefreshInterval is how often the configuration is asked for (60 s).
	RefreshInterval time.Duration
	// StaleHandshake is the handshake age from which the tunnel is down
	// and a fresh configuration is asked for at once (3 min).
	StaleHandshake time.Duration
	// FirstHandshake is how long after the tunnel is configured a first
	// handshake may take before the tunnel counts as down (30 s).
	FirstHandshake time.Duration
	// JoinBackoff and JoinMaxBackoff bound the wait between join
	// attempts the endpoint was not ready for (1 s, 30 s).
	JoinBackoff    time.Duration
	JoinMaxBackoff time.Duration

	// Host integration; tests point these elsewhere.
	KubeletPath string // the kubelet the systemd unit runs
	SystemdDir  string // where oneinfra-kubelet.service is written
	Systemctl   string // the systemctl command
	Mountinfo   string // /proc/self/mountinfo, to find cgroup hierarchies
}

var nodeName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// withDefaults fills in the defaults and checks the settings.
func (c Config) withDefaults() (Config, error) {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	defD := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.CRIEndpoint, DefaultCRIEndpoint)
	def(&c.DataDir, DefaultDataDir)
	def(&c.KubeletRootDir, DefaultKubeletRootDir)
	def(&c.CgroupRoot, "/")
	def(&c.CNIConfDir, DefaultCNIConfDir)
	def(&c.Interface, DefaultInterface)
	def(&c.KubeletPath, DefaultKubeletPath)
	def(&c.SystemdDir, DefaultSystemdDir)
	def(&c.Systemctl, "systemctl")
	def(&c.Mountinfo, "/proc/self/mountinfo")
	defD(&c.HealthInterval, 10*time.Second)
	defD(&c.RefreshInterval, 60*time.Second)
	defD(&c.StaleHandshake, 3*time.Minute)
	defD(&c.FirstHandshake, 30*time.Second)
	defD(&c.JoinBackoff, time.Second)
	defD(&c.JoinMaxBackoff, 30*time.Second)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Join == "" {
		return c, errors.New("--join: the join endpoint HOST:PORT is required")
	}
	if _, _, err := net.SplitHostPort(c.Join); err != nil {
		return c, fmt.Errorf("--join %q: %w", c.Join, err)
	}
	if len(c.Name) > 253 || !nodeName.MatchString(c.Name) {
		return c, fmt.Errorf("--name %q: must be a lowercase DNS name (a Kubernetes node name)", c.Name)
	}
	if c.CAHash != "" {
		if err := tlsutil.ValidateCAHash(c.CAHash); err != nil {
			return c, fmt.Errorf("--ca-hash: %w", err)
		}
	}
	if len(c.Interface) > 15 {
		return c, fmt.Errorf("--interface %q: at most 15 characters", c.Interface)
	}
	for _, p := range []struct{ flag, path string }{{"--data-dir", c.DataDir}, {"--kubelet-root-dir", c.KubeletRootDir},
		{"--cgroup-root", c.CgroupRoot}, {"--cni-conf-dir", c.CNIConfDir}} {
		if !filepath.IsAbs(p.path) {
			return c, fmt.Errorf("%s %q: must be an absolute path", p.flag, p.path)
		}
	}
	return c, nil
}

// path is a file under the data directory.
func (c Config) path(elem ...string) string {
	return filepath.Join(append([]string{c.DataDir}, elem...)...)
}
