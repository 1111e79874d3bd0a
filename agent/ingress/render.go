package ingress

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"regexp"
	"sort"
	"strconv"
	"time"

	"github.com/oneinfra/oneinfra/agent/cri"
	"github.com/oneinfra/oneinfra/agent/host"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// Names of the ingress's files in its config dir.
const (
	// ConfigFile is haproxy's configuration.
	ConfigFile = "haproxy.cfg"
	// CAFile is the cluster CA's certificate, which API servers are
	// verified against.
	CAFile = "cluster-ca.crt"
	// HealthCertFile holds the health-check client certificate followed by
	// its key (mode 0600).
	HealthCertFile = "ingress-health.pem"
	// MasterSocket is the master CLI's unix socket, made by haproxy.
	MasterSocket = "haproxy-master.sock"
	// ServerStateFile is where Reload saves the servers' states for the
	// new worker. Outside reloads it holds no state (EmptyServerState).
	ServerStateFile = "server-state"
)

// Pod and container names, and defaults.
const (
	// PodName is the name of the ingress's pod within its component.
	PodName = "ingress"
	// ContainerName is haproxy's container, named as its image's key.
	ContainerName = vocab.ImageHAProxy
	// DefaultImage is used when the assignment names no haproxy image.
	DefaultImage = "docker.io/library/haproxy:2.6"
	// CheckHost is the name API server certificates are verified for in
	// the health checks (a DNS SAN of every API server certificate).
	CheckHost = vocab.APIServerName
	// HardStopAfter bounds how long a worker replaced by a reload keeps
	// serving its established connections. The API server itself ends
	// watch requests within --min-request-timeout (30 to 60 minutes).
	HardStopAfter = time.Hour
	// WorkerUID is the user (and group) haproxy's workers run as once the
	// master has bound the ports and read the files as root: "haproxy" in
	// the official image.
	WorkerUID = 99
)

// EmptyServerState is a server state file without servers: its format
// version only. haproxy warns about a missing file, not about this one.
const EmptyServerState = "1\n"

// Backend and frontend names in haproxy.cfg.
const (
	frontendName = "apiserver"
	backendName  = "apiservers"
)

// ErrInvalidAssignment wraps every error of Render.
var ErrInvalidAssignment = errors.New("invalid ingress assignment")

// serverNameRE is what a server name may be: haproxy identifiers allow
// letters, digits, '-', '_', '.' and ':'; component names are DNS labels.
var serverNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$`)

// hostNameRE is a DNS name, for API server addresses that are not IPs.
var hostNameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$`)

// Render returns what the ingress assignment as needs on this host, with
// its files under paths.ConfigDir():
//
//   - ConfigFile (0644): haproxy's configuration, see package doc;
//   - CAFile (0644): the cluster CA certificate;
//   - HealthCertFile (0600): the ingress-health certificate and key, when
//     the assignment has them;
//   - ServerStateFile (0644): EmptyServerState (Reload fills it during a
//     reload only);
//
// and one pod PodName with one container ContainerName running haproxy as
// master and worker(s), in the host network, as root (the workers drop to
// WorkerUID), with the config dir mounted at the same path and as working
// directory. The pod spec depends only on the image and the paths.
func Render(as *pb.Assignment, paths host.Paths) (*host.Plan, error) {
	fail := func(format string, args ...any) (*host.Plan, error) {
		return nil, fmt.Errorf("%w: component %s: %s", ErrInvalidAssignment, as.GetComponent().GetMetadata().GetName(), fmt.Sprintf(format, args...))
	}
	comp := as.GetComponent()
	name := comp.GetMetadata().GetName()
	if name == "" {
		return fail("no component name")
	}
	if role := comp.GetSpec().GetRole(); role != resources.RoleIngress {
		return fail("role is %q, not %q", role, resources.RoleIngress)
	}
	if paths.Root == "" || paths.Root[0] != '/' {
		return fail("root dir %q is not absolute", paths.Root)
	}
	port := comp.GetSpec().GetPorts()[vocab.PortAPIServer]
	if port == 0 || port > 65535 {
		return fail("no valid %s port (%d)", vocab.PortAPIServer, port)
	}
	caPEM := as.GetCaCerts()[vocab.ClusterCA]
	if len(caPEM) == 0 {
		return fail("no %s CA certificate", vocab.ClusterCA)
	}
	if _, err := tlsutil.ParseCertsPEM(caPEM); err != nil {
		return fail("%s CA certificate: %v", vocab.ClusterCA, err)
	}
	var healthPEM []byte
	if kp := as.GetCerts()[vocab.IngressHealthCert]; kp != nil {
		if _, err := tls.X509KeyPair(kp.GetCertPem(), kp.GetKeyPem()); err != nil {
			return fail("%s certificate: %v", vocab.IngressHealthCert, err)
		}
		healthPEM = append(healthPEM, kp.GetCertPem()...)
		if !bytes.HasSuffix(healthPEM, []byte("\n")) {
			healthPEM = append(healthPEM, '\n')
		}
		healthPEM = append(healthPEM, kp.GetKeyPem()...)
	}
	servers, err := backendServers(as.GetApiServers())
	if err != nil {
		return fail("%v", err)
	}

	cfg := config{
		cluster:   comp.GetSpec().GetCluster(),
		component: name,
		port:      port,
		caFile:    paths.Config(CAFile),
		stateFile: paths.Config(ServerStateFile),
		servers:   servers,
	}
	plan := &host.Plan{Files: []host.File{
		{Path: paths.Config(ConfigFile), Data: cfg.render(healthPEM != nil, paths.Config(HealthCertFile)), Mode: 0o644},
		{Path: paths.Config(CAFile), Data: caPEM, Mode: 0o644},
		{Path: paths.Config(ServerStateFile), Data: []byte(EmptyServerState), Mode: 0o644},
	}}
	if healthPEM != nil {
		plan.Files = append(plan.Files, host.File{Path: paths.Config(HealthCertFile), Data: healthPEM, Mode: 0o600})
	}

	image := as.GetImages()[ContainerName]
	if image == "" {
		image = DefaultImage
	}
	dir := paths.ConfigDir()
	root := int64(0)
	plan.Pods = []cri.Pod{{
		Component: name,
		Name:      PodName,
		Containers: []cri.Container{{
			Name:  ContainerName,
			Image: image,
			// -W master-worker, -db foreground; the master CLI socket is
			// relative to WorkingDir (see package doc).
			Command:    []string{"haproxy", "-W", "-db", "-S", "unix@" + MasterSocket + ",mode,600", "-f", paths.Config(ConfigFile)},
			Mounts:     []cri.Mount{{HostPath: dir, ContainerPath: dir}},
			WorkingDir: dir,
			RunAsUser:  &root,
		}},
	}}
	return plan, nil
}

type server struct {
	name, addr string
}

// backendServers validates the API server endpoints and returns them
// sorted by name (the same set gives the same file).
func backendServers(eps []*pb.Endpoint) ([]server, error) {
	seen := map[string]bool{}
	var out []server
	for _, ep := range eps {
		name := ep.GetName()
		if !serverNameRE.MatchString(name) {
			return nil, fmt.Errorf("API server name %q is not a valid haproxy server name", name)
		}
		if seen[name] {
			return nil, fmt.Errorf("API server %q appears twice", name)
		}
		seen[name] = true
		addr := ep.GetAddress()
		if net.ParseIP(addr) == nil && !hostNameRE.MatchString(addr) {
			return nil, fmt.Errorf("API server %s: address %q is neither an IP nor a host name", name, addr)
		}
		if ep.GetPort() == 0 || ep.GetPort() > 65535 {
			return nil, fmt.Errorf("API server %s: invalid port %d", name, ep.GetPort())
		}
		out = append(out, server{name: name, addr: net.JoinHostPort(addr, strconv.Itoa(int(ep.GetPort())))})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

type config struct {
	cluster, component string
	port               uint32
	caFile, stateFile  string
	servers            []server
}

func (c config) render(withCert bool, certFile string) []byte {
	var b bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("# haproxy configuration of the ingress of cluster %s (component %s).", c.cluster, c.component)
	p("# Written by oneinfra-agent: changes are overwritten. Reloaded through the")
	p("# master CLI (%s in this directory) when it changes.", MasterSocket)
	p("global")
	p("  master-worker")
	p("  log stdout format raw local0 info")
	p("  uid %d", WorkerUID)
	p("  gid %d", WorkerUID)
	// maxconn follows the file limit, up to this many descriptors.
	p("  fd-hard-limit 65536")
	p("  hard-stop-after %ds", int(HardStopAfter/time.Second))
	p("  server-state-file %s", c.stateFile)
	p("")
	p("defaults")
	p("  mode tcp")
	// An API server whose host is cut off drops SYNs: a short connect
	// timeout and a redispatch on every retry send the connection to
	// another API server within seconds, before its checks mark it down.
	p("  timeout connect 2s")
	// Watches and exec sessions are long and may be quiet; TCP keepalives
	// find dead peers.
	p("  timeout client 1h")
	p("  timeout server 1h")
	p("  timeout client-fin 30s")
	p("  timeout server-fin 30s")
	p("  timeout check 5s")
	p("  option clitcpka")
	p("  option srvtcpka")
	p("  option redispatch 1")
	p("  retries 3")
	p("  load-server-state-from-file global")
	p("")
	p("frontend %s", frontendName)
	p("  bind :%d", c.port)
	p("  default_backend %s", backendName)
	p("")
	p("backend %s", backendName)
	p("  log global")
	p("  option log-health-checks")
	p("  balance leastconn")
	p("  option httpchk")
	p("  http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host %s", CheckHost)
	p("  http-check expect status 200")
	crt := ""
	if withCert {
		crt = " crt " + certFile
	}
	// init-addr libc,none: the address of the configuration wins over the
	// state file's, and an unresolvable name does not stop haproxy.
	p("  default-server check check-ssl verify required ca-file %s check-sni %s verifyhost %s%s inter 2s fastinter 500ms downinter 500ms fall 2 rise 2 init-addr libc,none",
		c.caFile, CheckHost, CheckHost, crt)
	for _, s := range c.servers {
		p("  server %s %s", s.name, s.addr)
	}
	return b.Bytes()
}
