package ingress

import (
	"bytes"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/agent/cri"
	"github.com/oneinfra/oneinfra/agent/host"
	"github.com/oneinfra/oneinfra/coordinator/pki"
	"github.com/oneinfra/oneinfra/internal/resources"
	testcluster "github.com/oneinfra/oneinfra/internal/testutil/cluster"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/proto"
)

// newPKI makes a cluster PKI and the ingress's certificates.
func newPKI(t testing.TB, cluster string) (*pb.ClusterPKI, *pb.ComponentCerts) {
	t.Helper()
	p, err := pki.NewClusterPKI(cluster, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	certs := testcluster.IngressCerts(t, p, cluster+"-ingress-0")
	return p, certs
}

// assignment is an ingress assignment as the coordinator makes it.
func assignment(p *pb.ClusterPKI, certs *pb.ComponentCerts, port uint32, servers ...*pb.Endpoint) *pb.Assignment {
	as := &pb.Assignment{
		Component: &pb.Component{
			Metadata: &pb.ObjectMeta{Name: certs.Component},
			Spec: &pb.ComponentSpec{Cluster: p.Cluster, Role: resources.RoleIngress, Hypervisor: "hv-public",
				Ports: map[string]uint32{"apiserver": port, "wireguard": port + 1}},
		},
		CaCerts:           map[string][]byte{},
		Certs:             certs.Certs,
		ApiServers:        servers,
		ApiServerEndpoint: "https://203.0.113.5:30000",
		Images:            map[string]string{"haproxy": DefaultImage, "pause": "registry.k8s.io/pause:3.10"},
	}
	for name, ca := range p.Cas {
		as.CaCerts[name] = ca.CertPem
	}
	return as
}

func ep(name, addr string, port uint32) *pb.Endpoint {
	return &pb.Endpoint{Name: name, Address: addr, Port: port}
}

func render(t *testing.T, as *pb.Assignment, paths host.Paths) *host.Plan {
	t.Helper()
	plan, err := Render(as, paths)
	if err != nil {
		t.Fatal(err)
	}
	return plan
}

func file(t *testing.T, plan *host.Plan, path string) host.File {
	t.Helper()
	for _, f := range plan.Files {
		if f.Path == path {
			return f
		}
	}
	t.Fatalf("the plan has no file %s", path)
	return host.File{}
}

func TestRenderConfig(t *testing.T) {
	p, certs := newPKI(t, "demo")
	paths := host.Paths{Root: "/r", Cluster: "demo", Component: "demo-ingress-0"}
	dir := "/r/etc/oneinfra/clusters/demo/demo-ingress-0"
	as := assignment(p, certs, 30000, ep("demo-cp-1", "10.0.0.2", 30101), ep("demo-cp-0", "10.0.0.1", 30100), ep("demo-cp-2", "fd00::3", 30102))
	plan := render(t, as, paths)

	if len(plan.Files) != 4 || len(plan.Dirs) != 0 {
		t.Fatalf("want 4 files and no dirs, got %+v", plan)
	}
	if f := file(t, plan, dir+"/server-state"); string(f.Data) != EmptyServerState || f.Mode != 0o644 {
		t.Errorf("server-state: %q mode %o", f.Data, f.Mode)
	}
	cfg := string(file(t, plan, dir+"/haproxy.cfg").Data)
	for _, want := range []string{
		"\n  master-worker\n",
		"\n  server-state-file " + dir + "/server-state\n",
		"\n  load-server-state-from-file global\n",
		"\n  hard-stop-after 3600s\n",
		"\n  mode tcp\n",
		"\nfrontend apiserver\n  bind :30000\n  default_backend apiservers\n",
		"\n  balance leastconn\n",
		"\n  option httpchk\n  http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host kubernetes\n  http-check expect status 200\n",
		" check check-ssl verify required ca-file " + dir + "/cluster-ca.crt check-sni kubernetes verifyhost kubernetes crt " + dir + "/ingress-health.pem ",
		"\n  server demo-cp-0 10.0.0.1:30100\n  server demo-cp-1 10.0.0.2:30101\n  server demo-cp-2 [fd00::3]:30102\n",
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("haproxy.cfg lacks %q:\n%s", want, cfg)
		}
	}
	if strings.Contains(cfg, "wireguard") || strings.Contains(cfg, "30001") {
		t.Errorf("haproxy.cfg mentions the WireGuard port:\n%s", cfg)
	}

	// The same servers in another order give the same bytes.
	shuffled := proto.Clone(as).(*pb.Assignment)
	slices.Reverse(shuffled.ApiServers)
	if got := file(t, render(t, shuffled, paths), dir+"/haproxy.cfg").Data; !bytes.Equal(got, []byte(cfg)) {
		t.Errorf("the order of the API servers changes the configuration")
	}

	// Files and modes.
	ca := file(t, plan, dir+"/cluster-ca.crt")
	if ca.Mode != 0o644 || !bytes.Equal(ca.Data, p.Cas[vocab.ClusterCA].CertPem) {
		t.Errorf("cluster-ca.crt: mode %o, is the cluster CA: %v", ca.Mode, bytes.Equal(ca.Data, p.Cas[vocab.ClusterCA].CertPem))
	}
	if f := file(t, plan, dir+"/haproxy.cfg"); f.Mode != 0o644 {
		t.Errorf("haproxy.cfg mode %o, want 644", f.Mode)
	}
	health := file(t, plan, dir+"/ingress-health.pem")
	if health.Mode != 0o600 {
		t.Errorf("ingress-health.pem mode %o, want 600", health.Mode)
	}
	kp := certs.Certs[vocab.IngressHealthCert]
	if _, err := tls.X509KeyPair(health.Data, health.Data); err != nil {
		t.Errorf("ingress-health.pem is not a certificate followed by its key: %v", err)
	}
	if !bytes.HasPrefix(health.Data, kp.CertPem) || !bytes.HasSuffix(health.Data, kp.KeyPem) {
		t.Errorf("ingress-health.pem is not the ingress-health certificate and key")
	}

	// Without a health certificate the checks go anonymous.
	anon := proto.Clone(as).(*pb.Assignment)
	anon.Certs = nil
	plan2 := render(t, anon, paths)
	if len(plan2.Files) != 3 || strings.Contains(string(plan2.Files[0].Data), " crt ") {
		t.Errorf("without a health certificate: %d files, config:\n%s", len(plan2.Files), plan2.Files[0].Data)
	}

	// No API server yet: a valid backend without servers.
	none := proto.Clone(as).(*pb.Assignment)
	none.ApiServers = nil
	if cfg := string(render(t, none, paths).Files[0].Data); strings.Contains(cfg, "\n  server ") || !strings.Contains(cfg, "backend apiservers") {
		t.Errorf("without API servers:\n%s", cfg)
	}
}

func TestRenderPod(t *testing.T) {
	p, certs := newPKI(t, "demo")
	paths := host.Paths{Root: "/r", Cluster: "demo", Component: "demo-ingress-0"}
	dir := paths.ConfigDir()
	as := assignment(p, certs, 30000, ep("demo-cp-0", "10.0.0.1", 30100))
	plan := render(t, as, paths)
	if len(plan.Pods) != 1 {
		t.Fatalf("want one pod, got %d", len(plan.Pods))
	}
	pod := plan.Pods[0]
	if pod.Component != "demo-ingress-0" || pod.Name != "ingress" || len(pod.Containers) != 1 {
		t.Fatalf("pod %+v", pod)
	}
	c := pod.Containers[0]
	if c.Name != "haproxy" || c.Image != DefaultImage {
		t.Errorf("container %s image %s", c.Name, c.Image)
	}
	wantCmd := []string{"haproxy", "-W", "-db", "-S", "unix@haproxy-master.sock,mode,600", "-f", dir + "/haproxy.cfg"}
	if !slices.Equal(c.Command, wantCmd) || len(c.Args) != 0 {
		t.Errorf("command %q args %q, want %q", c.Command, c.Args, wantCmd)
	}
	if len(c.Mounts) != 1 || c.Mounts[0] != (cri.Mount{HostPath: dir, ContainerPath: dir}) {
		t.Errorf("mounts %+v, want the config dir at the same path, writable (the master makes its socket there)", c.Mounts)
	}
	if c.WorkingDir != dir {
		t.Errorf("working dir %q, want %q (the master socket path is relative to it)", c.WorkingDir, dir)
	}
	if c.RunAsUser == nil || *c.RunAsUser != 0 {
		t.Errorf("RunAsUser %v, want 0 (the master reads 0600 keys; workers drop to uid %d)", c.RunAsUser, WorkerUID)
	}
	for _, f := range plan.Files {
		if filepath.Dir(f.Path) != dir {
			t.Errorf("file %s is outside the mounted config dir", f.Path)
		}
	}

	// What goes to haproxy through the files leaves the pod alone.
	hash := cri.SpecHash(pod)
	same := map[string]func(*pb.Assignment){
		"another API server": func(as *pb.Assignment) { as.ApiServers = append(as.ApiServers, ep("demo-cp-1", "10.0.0.2", 30100)) },
		"no API server":      func(as *pb.Assignment) { as.ApiServers = nil },
		"a moved API server": func(as *pb.Assignment) { as.ApiServers[0].Address, as.ApiServers[0].Port = "10.0.0.9", 30999 },
		"the frontend port":  func(as *pb.Assignment) { as.Component.Spec.Ports["apiserver"] = 31000 },
		"renewed certificates": func(as *pb.Assignment) {
			_, c := newPKI(t, "demo")
			as.Certs = c.Certs
		},
		"the endpoint":     func(as *pb.Assignment) { as.ApiServerEndpoint = "https://198.51.100.7:30000" },
		"the other images": func(as *pb.Assignment) { as.Images["kube-apiserver"] = "registry.k8s.io/kube-apiserver:v1.37.2" },
	}
	for what, change := range same {
		c := proto.Clone(as).(*pb.Assignment)
		change(c)
		got := render(t, c, paths)
		if h := cri.SpecHash(got.Pods[0]); h != hash {
			t.Errorf("changing %s changes the pod spec hash (%s to %s): haproxy would restart and drop connections", what, hash, h)
		}
	}
	moved := proto.Clone(as).(*pb.Assignment)
	moved.ApiServers[0].Address = "10.0.0.9"
	if bytes.Equal(render(t, moved, paths).Files[0].Data, plan.Files[0].Data) {
		t.Errorf("a moved API server does not change haproxy.cfg")
	}

	image := proto.Clone(as).(*pb.Assignment)
	image.Images["haproxy"] = "mirror.example/library/haproxy:2.6"
	if got := render(t, image, paths).Pods[0]; cri.SpecHash(got) == hash || got.Containers[0].Image != "mirror.example/library/haproxy:2.6" {
		t.Errorf("a new haproxy image: image %s, hash changed: %v", got.Containers[0].Image, cri.SpecHash(got) != hash)
	}
	noImage := proto.Clone(as).(*pb.Assignment)
	delete(noImage.Images, "haproxy")
	if got := render(t, noImage, paths).Pods[0]; got.Containers[0].Image != DefaultImage {
		t.Errorf("without a haproxy image: %s, want %s", got.Containers[0].Image, DefaultImage)
	}
	if got := render(t, as, host.Paths{Root: "/other", Cluster: "demo", Component: "demo-ingress-0"}).Pods[0]; cri.SpecHash(got) == hash {
		t.Errorf("another root dir does not change the pod")
	}
}

func TestRenderRefuses(t *testing.T) {
	p, certs := newPKI(t, "demo")
	paths := host.Paths{Root: "/r", Cluster: "demo", Component: "demo-ingress-0"}
	other, _ := newPKI(t, "other")
	cases := map[string]func(*pb.Assignment){
		"no port":           func(as *pb.Assignment) { delete(as.Component.Spec.Ports, "apiserver") },
		"no cluster CA":     func(as *pb.Assignment) { delete(as.CaCerts, vocab.ClusterCA) },
		"bad cluster CA":    func(as *pb.Assignment) { as.CaCerts[vocab.ClusterCA] = []byte("not a certificate") },
		"control-plane":     func(as *pb.Assignment) { as.Component.Spec.Role = resources.RoleControlPlane },
		"no name":           func(as *pb.Assignment) { as.Component.Metadata.Name = "" },
		"duplicate server":  func(as *pb.Assignment) { as.ApiServers = append(as.ApiServers, ep("a", "10.0.0.3", 1)) },
		"server name":       func(as *pb.Assignment) { as.ApiServers[0].Name = "a b" },
		"empty server name": func(as *pb.Assignment) { as.ApiServers[0].Name = "" },
		"address":           func(as *pb.Assignment) { as.ApiServers[0].Address = "10.0.0.1 check disabled" },
		"server port":       func(as *pb.Assignment) { as.ApiServers[0].Port = 0 },
		"mismatched key": func(as *pb.Assignment) {
			as.Certs = map[string]*pb.KeyPair{vocab.IngressHealthCert: {CertPem: as.Certs[vocab.IngressHealthCert].CertPem, KeyPem: other.ServiceAccountKeyPem}}
		},
	}
	for what, change := range cases {
		as := assignment(p, certs, 30000, ep("a", "10.0.0.1", 30100))
		change(as)
		if plan, err := Render(as, paths); err == nil || !errors.Is(err, ErrInvalidAssignment) {
			t.Errorf("%s: Render gave %v, %v; want ErrInvalidAssignment", what, plan, err)
		}
	}
	if _, err := Render(assignment(p, certs, 30000), host.Paths{Root: "relative", Cluster: "demo", Component: "x"}); err == nil {
		t.Errorf("a relative root dir was accepted")
	}
}

// TestRenderWrites writes a plan and checks the modes on disk.
func TestRenderWrites(t *testing.T) {
	p, certs := newPKI(t, "demo")
	paths := host.Paths{Root: t.TempDir(), Cluster: "demo", Component: "demo-ingress-0"}
	plan := render(t, assignment(p, certs, 30000, ep("a", "10.0.0.1", 30100)), paths)
	if changed, err := plan.WriteFiles(); err != nil || !changed {
		t.Fatalf("WriteFiles: %v %v", changed, err)
	}
	for name, mode := range map[string]os.FileMode{ConfigFile: 0o644, CAFile: 0o644, HealthCertFile: 0o600, ServerStateFile: 0o644} {
		fi, err := os.Stat(paths.Config(name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %o, want %o", name, fi.Mode().Perm(), mode)
		}
	}
	if changed, err := render(t, assignment(p, certs, 30000, ep("a", "10.0.0.1", 30100)), paths).WriteFiles(); err != nil || changed {
		t.Errorf("rewriting the same plan: changed %v, %v (the agent would reload for nothing)", changed, err)
	}
}

func TestParseShowProc(t *testing.T) {
	out := `#<PID>          <type>          <reloads>       <uptime>        <version>      
28257           master          2 [failed: 1]   0d00h00m05s     2.6.12-1+deb12u4
# workers
28306           worker          1               0d00h00m01s     2.6.12-1+deb12u4
# old workers
28260           worker          [was: 1]        0d00h00m09s     2.6.12-1+deb12u4
# programs

`
	p, err := parseShowProc(out)
	if err != nil {
		t.Fatal(err)
	}
	if p.master != 28257 || p.reloads != 2 || p.failed != 1 || len(p.workers) != 1 || p.workers[0].pid != 28306 || p.workers[0].reloads != 1 ||
		len(p.oldWorkers) != 1 || p.oldWorkers[0].pid != 28260 {
		t.Errorf("parsed %+v", p)
	}
	if p.newWorker(p) {
		t.Errorf("the same workers count as new")
	}
	if !p.newWorker(procs{workers: []proc{{pid: 1}}}) {
		t.Errorf("a new worker is not seen")
	}
	if _, err := parseShowProc("Unknown command\n"); err == nil {
		t.Errorf("an answer without master parsed")
	}
}

func TestParseShowStat(t *testing.T) {
	out := `# pxname,svname,status,check_status,check_code,last_chk,check_desc,addr,
apiserver,FRONTEND,OPEN,,,,,,
apiservers,b,DOWN,L6RSP,,Server presented an SSL certificate different from the configured one,Layer6 invalid response,127.0.0.1:2,
apiservers,a,UP,L7OK,200,,Layer7 check passed,127.0.0.1:1,
apiservers,BACKEND,UP,,,,,,
`
	servers, err := parseShowStat(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []ServerStatus{
		{Name: "a", Address: "127.0.0.1:1", Status: "UP", Check: "L7OK 200", Detail: "Layer7 check passed"},
		{Name: "b", Address: "127.0.0.1:2", Status: "DOWN", Check: "L6RSP", Detail: "Server presented an SSL certificate different from the configured one"},
	}
	if !slices.Equal(servers, want) || !servers[0].Up() || servers[1].Up() {
		t.Errorf("parsed %+v, want %+v", servers, want)
	}
}

func TestFilterServerState(t *testing.T) {
	p, certs := newPKI(t, "demo")
	as := assignment(p, certs, 30000, ep("kept", "10.0.0.1", 30100), ep("moved", "10.0.0.9", 30100), ep("v6", "fd00::3", 30102), ep("new", "10.0.0.4", 1))
	cfg := render(t, as, host.Paths{Root: "/r", Cluster: "demo", Component: "demo-ingress-0"}).Files[0].Data
	servers := configServers(cfg)
	if len(servers) != 4 || servers["v6"] != "[fd00::3]:30102" || servers["kept"] != "10.0.0.1:30100" {
		t.Fatalf("servers of the configuration: %v", servers)
	}
	header := "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n"
	line := func(name, addr, port string) string {
		return "3 apiservers 1 " + name + " " + addr + " 0 0 1 1 3 15 3 4 6 0 0 0 - " + port + " - 0 0 - - 0\n"
	}
	dump := header +
		line("kept", "10.0.0.1", "30100") +
		line("moved", "10.0.0.2", "30100") + // same name, another address
		line("v6", "fd00:0::3", "30102") +
		line("gone", "10.0.0.5", "30100") +
		line("kept", "10.0.0.1", "30101") + // another port
		"2 other 1 kept 10.0.0.1 0 0 1 1 3 15 3 4 6 0 0 0 - 30100 - 0 0 - - 0\n"
	want := header + line("kept", "10.0.0.1", "30100") + line("v6", "fd00:0::3", "30102")
	if got := filterServerState(dump, servers); got != want {
		t.Errorf("filtered state:\n%s\nwant:\n%s", got, want)
	}
	// The servers the dump lacks (new, or at a new address) start down,
	// with no good check.
	down := func(name, addr, port string) string {
		return "0 apiservers 0 " + name + " " + addr + " 0 0 1 1 0 1 0 0 6 0 0 0 - " + port + " - 0 0 - - 0\n"
	}
	want += down("moved", "10.0.0.9", "30100") + down("new", "10.0.0.4", "1")
	if got := withNewServersDown(filterServerState(dump, servers), servers); got != want {
		t.Errorf("state with the new servers down:\n%s\nwant:\n%s", got, want)
	}
}
