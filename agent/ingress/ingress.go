// Package ingress runs a cluster's ingress on a public hypervisor: haproxy
// in TCP mode in front of every API server of the cluster, with health
// checks that verify the servers' TLS against the cluster CA.
//
// haproxy runs in master-worker mode with its master CLI on a socket in the
// component's config dir. A change of backends rewrites haproxy.cfg and
// reloads it through that socket: the pod, whose spec does not include the
// configuration, keeps running and established connections stay up.
package ingress

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/oneinfra/oneinfra/agent/cri"
	"github.com/oneinfra/oneinfra/agent/host"
	"github.com/oneinfra/oneinfra/coordinator/pki"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// Files in the component's config dir.
const (
	configFile   = "haproxy.cfg"
	caFile       = "cluster-ca.crt"
	masterSocket = "master.sock"
)

// Render makes the ingress's plan: its configuration and one haproxy pod.
func Render(as *pb.Assignment, paths host.Paths) (*host.Plan, error) {
	port := as.GetComponent().GetSpec().GetPorts()["apiserver"]
	if port == 0 {
		return nil, fmt.Errorf("ingress %s: no apiserver port assigned", paths.Component)
	}
	ca := as.CaCerts[pki.ClusterCA]
	if len(ca) == 0 {
		return nil, fmt.Errorf("ingress %s: no cluster CA in the assignment", paths.Component)
	}
	image := as.Images["haproxy"]
	if image == "" {
		return nil, fmt.Errorf("ingress %s: no haproxy image in the assignment", paths.Component)
	}
	dir := paths.ConfigDir()
	return &host.Plan{
		Files: []host.File{
			{Path: paths.Config(configFile), Data: []byte(Config(port, paths.Config(caFile), as.ApiServers)), Mode: 0o644},
			{Path: paths.Config(caFile), Data: ca, Mode: 0o644},
		},
		Pods: []cri.Pod{{
			Component: paths.Component,
			Name:      "ingress",
			Containers: []cri.Container{{
				Name:    "haproxy",
				Image:   image,
				Command: []string{"haproxy", "-W", "-db", "-S", paths.Config(masterSocket) + ",mode,600", "-f", paths.Config(configFile)},
				Mounts:  []cri.Mount{{HostPath: dir, ContainerPath: dir}},
			}},
		}},
	}, nil
}

// Config is haproxy's configuration: a TCP frontend on port and a backend
// with every API server, checked with GET /readyz over TLS verified
// against the cluster CA (the API servers answer /readyz anonymously).
// Names are not verified: every API server certificate of the cluster comes
// from its own CA.
func Config(port uint32, caPath string, servers []*pb.Endpoint) string {
	var b strings.Builder
	fmt.Fprintf(&b, `global
    master-worker
    log stdout format raw local0 info

defaults
    mode tcp
    log global
    option tcplog
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout check 3s

frontend apiserver
    bind :%d
    default_backend apiservers

backend apiservers
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 2s fall 2 rise 1 check check-ssl verify required ca-file %s
`, port, caPath)
	sorted := append([]*pb.Endpoint{}, servers...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	for _, s := range sorted {
		fmt.Fprintf(&b, "    server %s %s\n", s.Name, net.JoinHostPort(s.Address, strconv.Itoa(int(s.Port))))
	}
	return b.String()
}

// Reload asks the running haproxy master to load the configuration again:
// a new worker takes the listeners, the old one finishes its connections.
func Reload(ctx context.Context, paths host.Paths) error {
	var d net.Dialer
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "unix", paths.Config(masterSocket))
	if errors.Is(err, os.ErrNotExist) {
		return nil // haproxy is starting: it reads the new configuration anyway
	}
	if err != nil {
		return fmt.Errorf("reaching the haproxy master: %w", err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := io.WriteString(conn, "reload\n"); err != nil {
		return fmt.Errorf("reloading haproxy: %w", err)
	}
	// The master answers (2.7+) or closes the connection (2.6) once the
	// reload is under way.
	_, _ = bufio.NewReader(conn).ReadString('\n')
	return nil
}

// Probe checks the cluster's API through the ingress at address: /readyz
// must answer 200, from a server the cluster CA vouches for.
func Probe(ctx context.Context, as *pb.Assignment, address string) error {
	pool, err := tlsutil.CertPool(as.CaCerts[pki.ClusterCA])
	if err != nil {
		return err
	}
	port := as.GetComponent().GetSpec().GetPorts()["apiserver"]
	url := "https://" + net.JoinHostPort(address, strconv.Itoa(int(port))) + "/readyz"
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}
