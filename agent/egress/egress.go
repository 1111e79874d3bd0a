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
// kube-apiserver-kubelet-client), only towards the cluster's networks and
// never to an address of the host itself; a proxy holds at most maxConns
// connections, and closes them all when it stops.
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
// the dial of its target. maxConns bounds a proxy's connections, tunnels
// and handshakes together: more are closed at once.
const (
	requestTimeout = 10 * time.Second
	dialTimeout    = 10 * time.Second
	maxConns       = 256
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
	// own reports an address of this host, where no proxy dials.
	own func(netip.Addr) bool
	mu  sync.Mutex
	by  map[string]*proxy
}

// New returns no proxies yet.
func New(logger *slog.Logger) *Proxies {
	return &Proxies{logger: logger, own: ownAddress, by: map[string]*proxy{}}
}

type proxy struct {
	ln  net.Listener
	cfg atomic.Pointer[Config]
	own func(netip.Addr) bool
	// conns are its open connections (at most maxConns), closed with it.
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
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
		p.close()
		delete(ps.by, cluster)
	}
	p = &proxy{own: ps.own, conns: map[net.Conn]struct{}{}}
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
			p.close()
			delete(ps.by, cluster)
		}
	}
}

// Close stops every proxy.
func (ps *Proxies) Close() { ps.RemoveExcept(nil) }

// close stops the proxy: its listener and every connection through it.
func (p *proxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for c := range p.conns {
		_ = c.Close()
	}
}

// track counts conn among the proxy's connections, unless it is closed or
// full; untrack forgets it.
func (p *proxy) track(conn net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.conns) >= maxConns {
		return false
	}
	p.conns[conn] = struct{}{}
	return true
}

func (p *proxy) untrack(conn net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, conn)
}

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
		if !p.track(conn) {
			logger.Warn("egress proxy: connection refused, too many open", "remote", conn.RemoteAddr(), "max", maxConns)
			_ = conn.Close()
			continue
		}
		go p.handle(conn.(*tls.Conn), logger)
	}
}

// handle answers one CONNECT request and joins the connection to its
// target.
func (p *proxy) handle(conn *tls.Conn, logger *slog.Logger) {
	defer p.untrack(conn)
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
	// Closing the proxy closes conn, which ends the copy into out; out is
	// closed when handle returns.
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
// address and port in the cluster's networks that is not one of this
// host's (the local routing table would take it to the host's own
// listeners, other clusters' among them, whatever the cluster's table
// says); else the status refusing it.
func (p *proxy) target(req *http.Request) (netip.AddrPort, int) {
	if req.Method != http.MethodConnect {
		return netip.AddrPort{}, http.StatusMethodNotAllowed
	}
	ap, err := netip.ParseAddrPort(req.Host)
	if err != nil {
		return netip.AddrPort{}, http.StatusBadRequest
	}
	a := ap.Addr().Unmap()
	if a.IsLinkLocalUnicast() || a.IsMulticast() || a == p.cfg.Load().Address || p.own(a) {
		return netip.AddrPort{}, http.StatusForbidden
	}
	for _, n := range p.cfg.Load().Networks {
		if n.Contains(a) {
			return netip.AddrPortFrom(a, ap.Port()), http.StatusOK
		}
	}
	return netip.AddrPort{}, http.StatusForbidden
}

// ownAddress reports whether a is this host's: unspecified, loopback or
// an address of one of its interfaces (true too when they cannot be
// listed).
func ownAddress(a netip.Addr) bool {
	if a.IsUnspecified() || a.IsLoopback() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return true
	}
	for _, ia := range addrs {
		if n, ok := ia.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == a {
				return true
			}
		}
	}
	return false
}
