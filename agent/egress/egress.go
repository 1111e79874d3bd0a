// Package egress serves, at a cluster's VPN endpoint, the HTTP CONNECT
// proxy through which its API servers reach the cluster's nodes, pods and
// services (kube-apiserver's egress selector, "cluster"): kubelets for
// logs, exec and port-forward, and pods behind admission webhooks,
// aggregated APIs and the pod and service proxy. The nodes sit behind
// NATs, reachable only through the tunnel; their pod networks may overlap
// another cluster's, so a dial leaves from the endpoint's VPN address,
// which the cluster's own routing table routes (agent/vpn).
//
// Only the cluster's API servers may use it (mutual TLS: a client
// certificate of the cluster's kubelet-client CA, CN
// kube-apiserver-kubelet-client), and only towards the cluster's networks.
package egress

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oneinfra/oneinfra/internal/resources"
)

// requestTimeout bounds the TLS handshake and the CONNECT request; dialTimeout
// the dial of its target.
const (
	requestTimeout = 10 * time.Second
	dialTimeout    = 10 * time.Second
)

// Config is one cluster's proxy.
type Config struct {
	// Address is the endpoint's VPN address (distinct per cluster): the
	// proxy listens there, at resources.EgressProxyPort unless ListenPort
	// is set, and its dials leave from it.
	Address    netip.Addr
	ListenPort int
	// Networks are where it may dial: the cluster's VPN and pod networks.
	Networks []netip.Prefix
	// Cert is the proxy's serving certificate; ClientCAs verify the API
	// servers, whose certificates must have ClientCN.
	Cert      tls.Certificate
	ClientCAs *x509.CertPool
	ClientCN  string
}

// Proxies keeps the proxies of this host, one per cluster.
type Proxies struct {
	logger *slog.Logger
	mu     sync.Mutex
	by     map[string]*proxy
}

// New returns no proxies yet.
func New(logger *slog.Logger) *Proxies {
	return &Proxies{logger: logger, by: map[string]*proxy{}}
}

type proxy struct {
	ln  net.Listener
	cfg atomic.Pointer[Config]
}

// Ensure runs a cluster's proxy with cfg: started, or given the new
// certificates and networks (its connections stay), or moved when its
// address changed.
func (ps *Proxies) Ensure(cluster string, cfg Config) error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	p := ps.by[cluster]
	if p != nil && p.cfg.Load().Address == cfg.Address && p.cfg.Load().ListenPort == cfg.ListenPort {
		p.cfg.Store(&cfg)
		return nil
	}
	if p != nil {
		_ = p.ln.Close()
		delete(ps.by, cluster)
	}
	p = &proxy{}
	p.cfg.Store(&cfg)
	tlsConf := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: tls.RequireAndVerifyClientCert,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			c := p.cfg.Load()
			return &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: []tls.Certificate{c.Cert},
				ClientAuth:   tls.RequireAndVerifyClientCert,
				ClientCAs:    c.ClientCAs,
				VerifyPeerCertificate: func(_ [][]byte, chains [][]*x509.Certificate) error {
					if len(chains) == 0 || chains[0][0].Subject.CommonName != c.ClientCN {
						return fmt.Errorf("egress: only %s may use the proxy", c.ClientCN)
					}
					return nil
				},
			}, nil
		},
	}
	port := resources.EgressProxyPort
	if cfg.ListenPort != 0 {
		port = cfg.ListenPort
	}
	ln, err := tls.Listen("tcp", net.JoinHostPort(cfg.Address.String(), strconv.Itoa(port)), tlsConf)
	if err != nil {
		return fmt.Errorf("egress proxy of %s: %w", cluster, err)
	}
	p.ln = ln
	ps.by[cluster] = p
	go p.serve(ps.logger.With("cluster", cluster))
	return nil
}

// RemoveExcept stops the proxies of the clusters not in keep.
func (ps *Proxies) RemoveExcept(keep map[string]bool) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for cluster, p := range ps.by {
		if !keep[cluster] {
			_ = p.ln.Close()
			delete(ps.by, cluster)
		}
	}
}

// Close stops every proxy.
func (ps *Proxies) Close() { ps.RemoveExcept(nil) }

func (p *proxy) serve(logger *slog.Logger) {
	for {
		conn, err := p.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			logger.Warn("egress proxy: accepting", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go p.handle(conn.(*tls.Conn), logger)
	}
}

// handle answers one CONNECT request and joins the connection to its
// target.
func (p *proxy) handle(conn *tls.Conn, logger *slog.Logger) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(requestTimeout))
	if err := conn.Handshake(); err != nil {
		logger.Debug("egress proxy: handshake", "remote", conn.RemoteAddr(), "err", err)
		return
	}
	br := bufio.NewReader(conn)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	target, status := p.target(req)
	if status != http.StatusOK {
		logger.Warn("egress proxy: refused", "target", req.Host, "status", status)
		_, _ = fmt.Fprintf(conn, "HTTP/1.1 %d %s\r\nContent-Length: 0\r\n\r\n", status, http.StatusText(status))
		return
	}
	d := net.Dialer{Timeout: dialTimeout, LocalAddr: &net.TCPAddr{IP: net.IP(p.cfg.Load().Address.AsSlice())}}
	out, err := d.Dial("tcp", target.String())
	if err != nil {
		_, _ = fmt.Fprintf(conn, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	defer out.Close()
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	_ = conn.SetDeadline(time.Time{})
	done := make(chan struct{}, 2)
	go func() {
		_, _ = io.Copy(out, br) // what the client sent after its request too
		if tc, ok := out.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(conn, out)
		_ = conn.CloseWrite()
		done <- struct{}{}
	}()
	<-done
	<-done
}

// target is where a request asks to go, if it is a CONNECT to an IP
// address and port in the cluster's networks; else the status refusing
// it.
func (p *proxy) target(req *http.Request) (netip.AddrPort, int) {
	if req.Method != http.MethodConnect {
		return netip.AddrPort{}, http.StatusMethodNotAllowed
	}
	ap, err := netip.ParseAddrPort(req.Host)
	if err != nil {
		return netip.AddrPort{}, http.StatusBadRequest
	}
	for _, n := range p.cfg.Load().Networks {
		if n.Contains(ap.Addr().Unmap()) {
			return ap, http.StatusOK
		}
	}
	return netip.AddrPort{}, http.StatusForbidden
}
