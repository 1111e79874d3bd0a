// Package lab makes hosts on one machine for end-to-end tests and the
// demo: each host is a network namespace on a private network (a bridge),
// public hosts also on a public one, each with its own containerd (started
// inside its namespace, so host-network pods live there) loaded with the
// test images. The coordinator and the "internet" client are the root
// namespace, which has an address on both networks.
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
)

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

// HostSpec is one host.
type HostSpec struct {
	Name   string
	Public bool
}

// Host is a running host of the lab.
type Host struct {
	Name, Namespace     string
	PrivateIP, PublicIP string
	Dir                 string // everything of the host
	CRIEndpoint         string
	RootDir, AgentDir   string
	containerdDir       string
	links               []string
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
	for bin, pkg := range map[string]string{"ip": "iproute2", "nsenter": "util-linux", "containerd": "containerd", "runc": "runc", "ctr": "containerd"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, fmt.Sprintf("%s (apt-get install -y %s)", bin, pkg))
		}
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
	if err := Check(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(Dir(spec.Prefix)); err == nil {
		return nil, fmt.Errorf("a lab %q exists (%s): run `lab down` first", spec.Prefix, Dir(spec.Prefix))
	}
	l := &Lab{Spec: spec, Hosts: map[string]*Host{}}
	if err := l.up(ctx); err != nil {
		_ = Down(spec.Prefix)
		return nil, err
	}
	return l, nil
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
	for i, hs := range l.Spec.Hosts {
		h := &Host{
			Name: hs.Name, Namespace: p + "-" + hs.Name, Dir: filepath.Join(Dir(p), hs.Name),
			PrivateIP: fmt.Sprintf("%s.%d", PrivateNet, 11+i),
		}
		if hs.Public {
			h.PublicIP = fmt.Sprintf("%s.%d", PublicNet, 11+i)
		}
		h.RootDir, h.AgentDir = filepath.Join(h.Dir, "root"), filepath.Join(h.Dir, "agent")
		h.containerdDir = filepath.Join(h.Dir, "containerd")
		h.CRIEndpoint = "unix://" + filepath.Join(h.containerdDir, "containerd.sock")
		if err := l.addHost(h, i, hs.Public); err != nil {
			return fmt.Errorf("host %s: %w", hs.Name, err)
		}
		l.Hosts[h.Name] = h
	}
	// Start containerds and import images on every host at once.
	errs := make(chan error, len(l.Hosts))
	for _, h := range l.Hosts {
		go func(h *Host) { errs <- l.startContainerd(ctx, h) }(h)
	}
	var all []error
	for range l.Hosts {
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
		h.links = append(h.links, outside)
	}
	if err := run("ip", "-n", h.Namespace, "link", "set", "lo", "up"); err != nil {
		return err
	}
	return run("ip", "-n", h.Namespace, "route", "add", "default", "via", CoordinatorIP)
}

func (l *Lab) startContainerd(ctx context.Context, h *Host) error {
	dir := h.containerdDir
	if err := run(append(h.Enter(), filepath.Join(l.Spec.RepoRoot, "test/containerd/start.sh"), dir)...); err != nil {
		return err
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

// Cut takes a host off both networks; Reconnect puts it back.
func (l *Lab) Cut(host string) error       { return l.setLinks(host, "down") }
func (l *Lab) Reconnect(host string) error { return l.setLinks(host, "up") }

func (l *Lab) setLinks(host, state string) error {
	h := l.Hosts[host]
	if h == nil {
		return fmt.Errorf("no host %q in the lab", host)
	}
	for _, link := range h.links {
		if err := run("ip", "link", "set", link, state); err != nil {
			return err
		}
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
	for _, c := range hosts {
		if err := run(stop, c); err != nil {
			errs = append(errs, err)
		}
	}
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
