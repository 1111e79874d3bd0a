// Package lab makes hosts on one machine for end-to-end tests and the
// demo: each host is a network namespace on a private network (a bridge),
// public hosts also on a public one, each with its own containerd (started
// inside its namespace, so host-network pods live there) loaded with the
// test images. The coordinator and the "internet" client are the root
// namespace, which has an address on both networks.
//
// Worker hosts sit behind two layers of NAT instead, each router its own
// namespace:
//
//	public bridge 10.214.0.0/24
//	  └ outer router  10.214.0.(100+N) eth0, 172.30.N.1 eth1 (MASQUERADE out of eth0)
//	      └ inner router  172.30.N.2 eth0, 172.31.N.1 eth1 (MASQUERADE out of eth0)
//	          └ worker  172.31.N.2 eth0, default route via 172.31.N.1
//
// for the Nth worker. Connections of a worker reach the public network from
// its outer router's address (Host.OutwardIP); nothing outside can dial a
// worker or its inner router (no port forwards, and the routers drop what
// comes in from outside unless it answers a connection made from inside).
// A worker's containerd runs ordinary pods with CNI: the plugins of
// /usr/lib/cni and the configuration the worker agent writes in
// Host.CNIConfDir.
//
// Everything a lab makes is named after its prefix, so Down finds it again
// from a fresh process and leaves nothing behind.
package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/oneinfra/oneinfra/internal/testutil/containerd"
)

// Networks of a lab; the root namespace is .1 on both.
const (
	PrivateNet = "10.213.0"
	PublicNet  = "10.214.0"
	// CoordinatorIP is the root namespace's private address.
	CoordinatorIP = PrivateNet + ".1"
	// CNIBinDir holds the standard CNI plugins (Debian's
	// containernetworking-plugins); workers' containerds use it.
	CNIBinDir = "/usr/lib/cni"
)

// Worker addressing: the Nth worker (N from 1, in the order of Spec.Hosts)
// has its outer router at PublicNet.(WorkerOutwardBase+N), the link between
// its routers is 172.30.N.0/24 (outer .1, inner .2) and its own subnet
// 172.31.N.0/24 (inner router .1, worker .2). All of it stays out of
// 10.0.0.0/8, which clusters use (VPN 10.200/16, pods 10.244/16, services
// 10.96/12).
const (
	WorkerOutwardBase = 100
	WorkerLinkNet     = "172.30"
	WorkerNet         = "172.31"
	// MaxWorkers and MaxHosts keep every address inside its /24: hosts are
	// PrivateNet/PublicNet .11 to .99, outer routers .101 to .250.
	MaxWorkers = 150
	MaxHosts   = 89
)

// Images are the keys of test/images/images.txt a lab's hosts need: the
// control plane's, the ingress's and what worker nodes run.
var Images = []string{"pause", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "haproxy",
	"kube-proxy", "coredns", "testapp"}

// Spec describes a lab.
type Spec struct {
	// Prefix names every namespace, link and directory; short (interface
	// names have 15 characters).
	Prefix string
	Hosts  []HostSpec
	// ImagesDir holds the image tarballs (_output/images) and Images the
	// keys of those each host imports.
	ImagesDir string
	Images    []string
	// RepoRoot is the repository, for test/containerd.
	RepoRoot string
}

// HostSpec is one host: private (the default), public (also on the public
// network) or a worker (behind two NATs, on neither network).
type HostSpec struct {
	Name   string
	Public bool
	Worker bool
	// Bare: a namespace on the private network with no containerd, for a
	// process of its own (a coordinator server to partition).
	Bare bool
}

// Host is a running host of the lab.
type Host struct {
	Name, Namespace string
	// PrivateIP and PublicIP are its addresses on the lab's networks; ""
	// when it is not on one (workers are on neither).
	PrivateIP, PublicIP string
	Dir                 string // everything of the host
	CRIEndpoint         string
	RootDir, AgentDir   string

	Bare bool `json:",omitempty"`

	// Worker hosts only.
	Worker bool `json:",omitempty"`
	// WorkerIP is its own address (172.31.N.2), reachable from nowhere
	// but its inner router; WorkerGateway that router (172.31.N.1).
	WorkerIP      string `json:",omitempty"`
	WorkerGateway string `json:",omitempty"`
	// OutwardIP is the address its connections come from on the public
	// network: its outer router's (10.214.0.(100+N)).
	OutwardIP string `json:",omitempty"`
	// Routers are the network namespaces of its outer and inner routers
	// (PREFIX-NAME-outer, PREFIX-NAME-inner).
	Routers []string `json:",omitempty"`
	// CNIBinDir and CNIConfDir are the plugin and configuration
	// directories of its containerd (CNIConfDir is the host's own, empty
	// until the worker agent writes a configuration there); CNIStateDir
	// is a directory of the host for plugins' state (host-local IPAM's
	// dataDir), so that workers do not share /var/lib/cni/networks.
	CNIBinDir   string `json:",omitempty"`
	CNIConfDir  string `json:",omitempty"`
	CNIStateDir string `json:",omitempty"`
	// KubeletDir is the host's own directory for the kubelet's state.
	KubeletDir string `json:",omitempty"`

	containerdDir string
}

// Lab is a running lab.
type Lab struct {
	Spec  Spec
	Hosts map[string]*Host
	mu    sync.Mutex
	procs []*exec.Cmd
}

// Dir is where a lab with this prefix keeps its files.
func Dir(prefix string) string { return filepath.Join("/run", prefix) }

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// Check says what is missing to make a lab here.
func Check() error {
	var missing []string
	for _, c := range []struct{ bin, pkg string }{
		{"ip", "iproute2"}, {"nsenter", "util-linux"}, {"iptables", "iptables"},
		{"containerd", "containerd"}, {"runc", "runc"}, {"ctr", "containerd"},
	} {
		if _, err := exec.LookPath(c.bin); err != nil {
			missing = append(missing, fmt.Sprintf("%s (apt-get install -y %s)", c.bin, c.pkg))
		}
	}
	// Workers' pods get their network from the standard CNI plugins.
	var plugins []string
	for _, plugin := range []string{"bridge", "host-local", "loopback", "portmap"} {
		if _, err := os.Stat(filepath.Join(CNIBinDir, plugin)); err != nil {
			plugins = append(plugins, plugin)
		}
	}
	if len(plugins) > 0 {
		missing = append(missing, fmt.Sprintf("the CNI plugins %s in %s (apt-get install -y containernetworking-plugins)", strings.Join(plugins, ", "), CNIBinDir))
	}
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if len(missing) > 0 {
		return fmt.Errorf("the lab needs %s", strings.Join(missing, ", "))
	}
	return nil
}

// Up makes the lab: networks, hosts, a containerd per host with the images.
// On error, what was made is removed.
func Up(ctx context.Context, spec Spec) (*Lab, error) {
	if err := spec.validate(); err != nil {
		return nil, err
	}
	if err := Check(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(Dir(spec.Prefix)); err == nil {
		return nil, fmt.Errorf("a lab %q exists (%s): run `lab down` first", spec.Prefix, Dir(spec.Prefix))
	}
	// Two labs would hold the same addresses in the root namespace.
	if out, err := exec.Command("ip", "-o", "-4", "addr", "show").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 3 && (strings.HasPrefix(f[3], CoordinatorIP+"/") || strings.HasPrefix(f[3], PublicNet+".1/")) {
				other := strings.TrimSuffix(strings.TrimSuffix(f[1], "-priv"), "-pub")
				return nil, fmt.Errorf("another lab is up: %s holds %s (`lab down --prefix %s` removes it)", f[1], f[3], other)
			}
		}
	}
	l := &Lab{Spec: spec, Hosts: map[string]*Host{}}
	if err := l.up(ctx); err != nil {
		_ = Down(spec.Prefix)
		return nil, err
	}
	return l, nil
}

// validate checks names and sizes before anything is made.
func (s Spec) validate() error {
	// Bridges are PREFIX-priv, host links PREFIX-hIx: 15 characters at most.
	if s.Prefix == "" || strings.ContainsAny(s.Prefix, "/ \t") {
		return fmt.Errorf("lab prefix %q: want a short name", s.Prefix)
	}
	if n := len(s.Prefix) + len(fmt.Sprintf("-h%d", len(s.Hosts)-1)) + 1; n > 15 || len(s.Prefix+"-priv") > 15 {
		return fmt.Errorf("lab prefix %q is too long for interface names (15 characters): keep it to %d", s.Prefix, 15-max(len("-priv"), n-len(s.Prefix)))
	}
	if len(s.Hosts) > MaxHosts {
		return fmt.Errorf("%d hosts: a lab has at most %d", len(s.Hosts), MaxHosts)
	}
	names, workers := map[string]bool{}, 0
	for _, h := range s.Hosts {
		if h.Name == "" || strings.ContainsAny(h.Name, "/ \t") {
			return fmt.Errorf("host name %q: want a plain name", h.Name)
		}
		if h.Public && h.Worker {
			return fmt.Errorf("host %s: a worker is behind NAT, it cannot be public too", h.Name)
		}
		if h.Bare && (h.Public || h.Worker) {
			return fmt.Errorf("host %s: a bare host is on the private network only", h.Name)
		}
		if h.Worker {
			workers++
		}
		names[h.Name] = true
	}
	if workers > MaxWorkers {
		return fmt.Errorf("%d workers: a lab has at most %d", workers, MaxWorkers)
	}
	if len(names) != len(s.Hosts) {
		return fmt.Errorf("host names repeat")
	}
	for _, h := range s.Hosts {
		if h.Worker && (names[h.Name+"-outer"] || names[h.Name+"-inner"]) {
			return fmt.Errorf("host names %s-outer and %s-inner are those of worker %s's routers", h.Name, h.Name, h.Name)
		}
	}
	return nil
}

func (l *Lab) bridge(public bool) string {
	if public {
		return l.Spec.Prefix + "-pub"
	}
	return l.Spec.Prefix + "-priv"
}

func (l *Lab) up(ctx context.Context) error {
	p := l.Spec.Prefix
	if err := os.MkdirAll(Dir(p), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return err
	}
	for _, public := range []bool{false, true} {
		br, ip := l.bridge(public), CoordinatorIP
		if public {
			ip = PublicNet + ".1"
		}
		for _, args := range [][]string{
			{"ip", "link", "add", br, "type", "bridge"},
			{"ip", "addr", "add", ip + "/24", "dev", br},
			{"ip", "link", "set", br, "up"},
		} {
			if err := run(args...); err != nil {
				return err
			}
		}
	}
	workers := 0
	for i, hs := range l.Spec.Hosts {
		h := &Host{Name: hs.Name, Namespace: p + "-" + hs.Name, Dir: filepath.Join(Dir(p), hs.Name)}
		h.RootDir, h.AgentDir = filepath.Join(h.Dir, "root"), filepath.Join(h.Dir, "agent")
		h.containerdDir = filepath.Join(h.Dir, "containerd")
		h.CRIEndpoint = "unix://" + filepath.Join(h.containerdDir, "containerd.sock")
		var err error
		if hs.Worker {
			workers++
			n := workers
			h.Worker = true
			h.WorkerIP, h.WorkerGateway = fmt.Sprintf("%s.%d.2", WorkerNet, n), fmt.Sprintf("%s.%d.1", WorkerNet, n)
			h.OutwardIP = fmt.Sprintf("%s.%d", PublicNet, WorkerOutwardBase+n)
			h.Routers = []string{h.Namespace + "-outer", h.Namespace + "-inner"}
			h.CNIBinDir = CNIBinDir
			h.CNIConfDir = filepath.Join(h.Dir, "cni", "net.d")
			h.CNIStateDir = filepath.Join(h.Dir, "cni", "state")
			h.KubeletDir = filepath.Join(h.Dir, "kubelet")
			err = l.addWorker(h, i, n)
		} else {
			h.PrivateIP = fmt.Sprintf("%s.%d", PrivateNet, 11+i)
			if hs.Public {
				h.PublicIP = fmt.Sprintf("%s.%d", PublicNet, 11+i)
			}
			h.Bare = hs.Bare
			err = l.addHost(h, i, hs.Public)
		}
		if err != nil {
			return fmt.Errorf("host %s: %w", hs.Name, err)
		}
		l.Hosts[h.Name] = h
	}
	// Start containerds and import images on every host at once.
	errs := make(chan error, len(l.Hosts))
	started := 0
	for _, h := range l.Hosts {
		if !h.Bare {
			started++
			go func(h *Host) { errs <- l.startContainerd(ctx, h) }(h)
		}
	}
	var all []error
	for range started {
		all = append(all, <-errs)
	}
	return errors.Join(all...)
}

func (l *Lab) addHost(h *Host, i int, public bool) error {
	if err := run("ip", "netns", "add", h.Namespace); err != nil {
		return err
	}
	type network struct {
		public  bool
		ip, dev string
	}
	nets := []network{{false, h.PrivateIP, "eth0"}}
	if public {
		nets = append(nets, network{true, h.PublicIP, "eth1"})
	}
	for j, n := range nets {
		outside := fmt.Sprintf("%s-h%d%c", l.Spec.Prefix, i, "pu"[j])
		for _, args := range [][]string{
			{"ip", "link", "add", outside, "type", "veth", "peer", "name", n.dev, "netns", h.Namespace},
			{"ip", "link", "set", outside, "master", l.bridge(n.public)},
			{"ip", "link", "set", outside, "up"},
			{"ip", "-n", h.Namespace, "addr", "add", n.ip + "/24", "dev", n.dev},
			{"ip", "-n", h.Namespace, "link", "set", n.dev, "up"},
		} {
			if err := run(args...); err != nil {
				return err
			}
		}
	}
	if err := run("ip", "-n", h.Namespace, "link", "set", "lo", "up"); err != nil {
		return err
	}
	return run("ip", "-n", h.Namespace, "route", "add", "default", "via", CoordinatorIP)
}

// addWorker makes the worker's namespace behind its two routers (the
// Nth worker, host index i).
func (l *Lab) addWorker(h *Host, i, n int) error {
	outer, inner := h.Routers[0], h.Routers[1]
	link := fmt.Sprintf("%s.%d", WorkerLinkNet, n)
	for _, ns := range []string{outer, inner, h.Namespace} {
		if err := run("ip", "netns", "add", ns); err != nil {
			return err
		}
	}
	// Made inside the namespaces, so no unprefixed link is ever left in
	// the root namespace; only the outer router's leg on the public bridge
	// is there (PREFIX-hIo), which Cut takes down.
	outside := fmt.Sprintf("%s-h%do", l.Spec.Prefix, i)
	cmds := [][]string{
		{"ip", "link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", outer},
		{"ip", "link", "set", outside, "master", l.bridge(true)},
		{"ip", "link", "set", outside, "up"},
		{"ip", "-n", outer, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", inner},
		{"ip", "-n", inner, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", h.Namespace},
		{"ip", "-n", outer, "addr", "add", h.OutwardIP + "/24", "dev", "eth0"},
		{"ip", "-n", outer, "addr", "add", link + ".1/24", "dev", "eth1"},
		{"ip", "-n", inner, "addr", "add", link + ".2/24", "dev", "eth0"},
		{"ip", "-n", inner, "addr", "add", h.WorkerGateway + "/24", "dev", "eth1"},
		{"ip", "-n", h.Namespace, "addr", "add", h.WorkerIP + "/24", "dev", "eth0"},
	}
	for _, ns := range []string{outer, inner, h.Namespace} {
		cmds = append(cmds, []string{"ip", "-n", ns, "link", "set", "lo", "up"}, []string{"ip", "-n", ns, "link", "set", "eth0", "up"})
		if ns != h.Namespace {
			cmds = append(cmds, []string{"ip", "-n", ns, "link", "set", "eth1", "up"})
		}
	}
	cmds = append(cmds,
		[]string{"ip", "-n", outer, "route", "add", "default", "via", PublicNet + ".1"},
		[]string{"ip", "-n", inner, "route", "add", "default", "via", link + ".1"},
		[]string{"ip", "-n", h.Namespace, "route", "add", "default", "via", h.WorkerGateway},
	)
	for _, args := range cmds {
		if err := run(args...); err != nil {
			return err
		}
	}
	// Routers masquerade what leaves by eth0 and forward into eth1 only
	// what answers a connection made from inside; the worker forwards too
	// (its pods are routed through it).
	for _, ns := range []string{outer, inner, h.Namespace} {
		enter := (&Host{Namespace: ns}).Enter()
		if err := run(append(enter, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")...); err != nil {
			return err
		}
		if ns == h.Namespace {
			continue
		}
		for _, rule := range [][]string{
			{"-t", "nat", "-A", "POSTROUTING", "-o", "eth0", "-j", "MASQUERADE"},
			{"-A", "FORWARD", "-i", "eth0", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"},
			{"-A", "FORWARD", "-i", "eth0", "-j", "DROP"},
		} {
			if err := run(append(append(enter, "iptables", "-w"), rule...)...); err != nil {
				return err
			}
		}
	}
	for _, d := range []string{h.CNIConfDir, h.CNIStateDir, h.KubeletDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	return nil
}

func (l *Lab) startContainerd(ctx context.Context, h *Host) error {
	dir := h.containerdDir
	argv := append(h.Enter(), filepath.Join(l.Spec.RepoRoot, "test/containerd/start.sh"), dir)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if h.CNIConfDir != "" {
		cmd.Env = append(os.Environ(), "CONTAINERD_CNI_BIN_DIR="+h.CNIBinDir, "CONTAINERD_CNI_CONF_DIR="+h.CNIConfDir)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	sock := filepath.Join(dir, "containerd.sock")
	for _, key := range l.Spec.Images {
		tar := filepath.Join(l.Spec.ImagesDir, key+".tar")
		out, err := exec.CommandContext(ctx, "ctr", "-a", sock, "-n", "k8s.io", "images", "import", tar).CombinedOutput()
		if err != nil {
			return fmt.Errorf("importing %s: %v: %s", tar, err, out)
		}
	}
	return nil
}

// Start runs a command inside a host's namespace (or in the root one for
// host ""), its output in logFile; Down stops it.
func (l *Lab) Start(host string, argv []string, logFile string) (*exec.Cmd, error) {
	if host != "" {
		h := l.Hosts[host]
		if h == nil {
			return nil, fmt.Errorf("no host %q in the lab", host)
		}
		argv = append(h.Enter(), argv...)
	}
	log, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, err
	}
	go func() { cmd.Wait(); log.Close() }()
	l.mu.Lock()
	l.procs = append(l.procs, cmd)
	l.mu.Unlock()
	if err := os.WriteFile(filepath.Join(Dir(l.Spec.Prefix), fmt.Sprintf("proc-%d.pid", cmd.Process.Pid)), []byte(fmt.Sprint(cmd.Process.Pid)), 0o600); err != nil {
		return cmd, err
	}
	return cmd, nil
}

// Enter is the command prefix that runs a command in the host's network
// namespace. Unlike `ip netns exec`, nsenter keeps the machine's mounts:
// runc needs the cgroup file systems that `ip netns exec` hides behind a
// fresh /sys.
func (h *Host) Enter() []string {
	return []string{"nsenter", "--net=/run/netns/" + h.Namespace, "--"}
}

// InNetNS runs f on an OS thread that entered the network namespace at
// path (/run/netns/NAME, or a pod's): the sockets f opens (net.Dial,
// net.Listen) belong to that namespace, and keep to it when used from other
// goroutines afterwards. The thread is thrown away when f returns.
func InNetNS(path string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the goroutine's end takes the thread with it.
		runtime.LockOSThread()
		fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("network namespace %s: %w", path, err)
			return
		}
		defer syscall.Close(fd)
		trap, ok := setnsTrap[runtime.GOARCH]
		if !ok {
			errc <- fmt.Errorf("setns: unknown system call number on %s", runtime.GOARCH)
			return
		}
		if _, _, e := syscall.RawSyscall(trap, uintptr(fd), syscall.CLONE_NEWNET, 0); e != 0 {
			errc <- fmt.Errorf("entering network namespace %s: %w", path, e)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// setnsTrap is setns(2)'s number: package syscall lacks it on amd64 (and
// golang.org/x/sys is not a direct dependency of the module).
var setnsTrap = map[string]uintptr{"amd64": 308, "386": 346, "arm64": 268, "arm": 375, "riscv64": 268, "loong64": 268, "ppc64le": 350, "s390x": 339}

// InNetNS runs f in the host's network namespace (see InNetNS).
func (h *Host) InNetNS(f func() error) error { return InNetNS("/run/netns/"+h.Namespace, f) }

// Cut takes a host off both networks (a worker: its outer router off the
// public one); Reconnect puts it back.
func (l *Lab) Cut(host string) error       { return l.setLinks(host, "down") }
func (l *Lab) Reconnect(host string) error { return l.setLinks(host, "up") }

func (l *Lab) setLinks(host, state string) error {
	if l.Hosts[host] == nil {
		return fmt.Errorf("no host %q in the lab", host)
	}
	return SetHostLinks(l.Spec.Prefix, host, state)
}

// SetHostLinks sets "up" or "down" the root namespace's ends of the links
// of a host of the lab with prefix (a worker's: its outer router's), as
// Cut and Reconnect do, from any process.
func SetHostLinks(prefix, host, state string) error {
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		return fmt.Errorf("ip link show: %w", err)
	}
	ns := prefix + "-" + host
	found := 0
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		i := slices.Index(f, "link-netns")
		if len(f) < 2 || i < 0 || i+1 >= len(f) || (f[i+1] != ns && f[i+1] != ns+"-outer") {
			continue
		}
		name := strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0]
		if err := run("ip", "link", "set", name, state); err != nil {
			return err
		}
		found++
	}
	if found == 0 {
		return fmt.Errorf("no link of host %q in lab %q", host, prefix)
	}
	return nil
}

// Down removes the lab.
func (l *Lab) Down() error { return Down(l.Spec.Prefix) }

// Down removes everything of the lab with this prefix: processes started
// in it, containerds and their pods, namespaces, links and files. It works
// from a fresh process and when nothing is left.
func Down(prefix string) error {
	var errs []error
	dir := Dir(prefix)
	pids, _ := filepath.Glob(filepath.Join(dir, "proc-*.pid"))
	for _, f := range pids {
		var pid int
		if _, err := fmt.Sscan(strings.TrimPrefix(strings.TrimSuffix(filepath.Base(f), ".pid"), "proc-"), &pid); err == nil {
			signal(pid, syscall.SIGTERM)
		}
	}
	if len(pids) > 0 {
		time.Sleep(2 * time.Second)
		for _, f := range pids {
			var pid int
			if _, err := fmt.Sscan(strings.TrimPrefix(strings.TrimSuffix(filepath.Base(f), ".pid"), "proc-"), &pid); err == nil {
				signal(pid, syscall.SIGKILL)
			}
		}
	}
	root, err := containerd.RepoRoot()
	if err != nil {
		return err
	}
	stop := filepath.Join(root, "test/containerd/stop.sh")
	hosts, _ := filepath.Glob(filepath.Join(dir, "*", "containerd"))
	// Pods killed here get no CNI DEL: their results cached under
	// /var/lib/cni (not configurable in containerd 1.6) go with them.
	sandboxes, _ := filepath.Glob(filepath.Join(dir, "*", "containerd", "root", "io.containerd.grpc.v1.cri", "sandboxes", "*"))
	stopErrs := make(chan error, len(hosts))
	for _, c := range hosts {
		go func() { stopErrs <- run(stop, c) }()
	}
	for range hosts {
		if err := <-stopErrs; err != nil {
			errs = append(errs, err)
		}
	}
	for _, sb := range sandboxes {
		cached, _ := filepath.Glob(filepath.Join("/var/lib/cni/results", "*-"+filepath.Base(sb)+"-*"))
		for _, f := range cached {
			_ = os.Remove(f)
		}
	}
	removeCgroups(prefix)
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], prefix+"-") {
			if err := run("ip", "netns", "delete", f[0]); err != nil {
				errs = append(errs, err)
			}
		}
	}
	links, _ := exec.Command("ip", "-o", "link", "show").Output()
	for _, line := range strings.Split(string(links), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name := strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0]
		// A veth may go with its namespace meanwhile.
		if strings.HasPrefix(name, prefix+"-") {
			if err := run("ip", "link", "delete", name); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
				errs = append(errs, err)
			}
		}
	}
	// Unmount what pods may have left under the lab, then remove it.
	mounts, _ := os.ReadFile("/proc/mounts")
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
			_ = syscall.Unmount(f[1], syscall.MNT_DETACH)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// signal signals a process started for the lab and its process group,
// when it leads one.
func signal(pid int, sig syscall.Signal) {
	_ = syscall.Kill(-pid, sig)
	_ = syscall.Kill(pid, sig)
}

// removeCgroups removes the cgroup trees named after the lab (the cgroup
// roots of its workers' kubelets), deepest first; their processes are gone.
func removeCgroups(prefix string) {
	roots, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", prefix+"-*"))
	unified, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", prefix+"-*"))
	for _, root := range append(roots, unified...) {
		var dirs []string
		_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = os.Remove(dirs[i])
		}
	}
}
