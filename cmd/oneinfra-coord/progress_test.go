package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/oneinfra/oneinfra/internal/resources"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// readyzBody is a kube-apiserver /readyz?verbose answer of about 1,500
// characters with two failing checks, flattened the way the ingress probe
// reports it.
func readyzBody(t *testing.T) string {
	checks := []string{
		"[+]ping ok", "[+]log ok", "[-]informer-sync failed: reason withheld", "[-]etcd failed: reason withheld",
		"[+]etcd-readiness ok", "[+]api-priority-and-fairness ok", "[+]poststarthook/start-apiserver-admission-initializer ok",
		"[+]poststarthook/generic-apiserver-start-informers ok", "[+]poststarthook/priority-and-fairness-config-consumer ok",
		"[+]poststarthook/priority-and-fairness-filter ok", "[+]poststarthook/storage-object-count-tracker-hook ok",
		"[+]poststarthook/start-apiextensions-informers ok", "[+]poststarthook/start-apiextensions-controllers ok",
		"[+]poststarthook/crd-informer-synced ok", "[+]poststarthook/start-system-namespaces-controller ok",
		"[+]poststarthook/start-cluster-authentication-info-controller ok",
		"[+]poststarthook/start-kube-apiserver-identity-lease-controller ok",
		"[+]poststarthook/start-kube-apiserver-identity-lease-garbage-collector ok",
		"[+]poststarthook/start-legacy-token-tracking-controller ok", "[+]poststarthook/start-service-ip-repair-controllers ok",
		"[+]poststarthook/rbac/bootstrap-roles ok", "[+]poststarthook/scheduling/bootstrap-system-priority-classes ok",
		"[+]poststarthook/priority-and-fairness-config-producer ok", "[+]poststarthook/bootstrap-controller ok",
		"[+]poststarthook/aggregator-reload-proxy-client-cert ok", "[+]poststarthook/start-kube-aggregator-informers ok",
		"[+]poststarthook/apiservice-status-local-available-controller ok",
		"[+]poststarthook/apiservice-status-remote-available-controller ok",
		"[+]poststarthook/apiservice-registration-controller ok", "[+]poststarthook/apiservice-discovery-controller ok",
		"[+]poststarthook/kube-apiserver-autoregistration ok", "[+]autoregister-completion ok",
		"[+]poststarthook/apiservice-openapi-controller ok", "[+]poststarthook/apiservice-openapiv3-controller ok",
		"[+]shutdown ok", "readyz check failed",
	}
	body := "GET https://203.0.113.5:30443/readyz: 500 Internal Server Error: " + strings.Join(checks, " ")
	if len(body) < 1500 {
		t.Fatalf("readyz body is %d characters, want 1,500 or more", len(body))
	}
	return body
}

func TestSummarize(t *testing.T) {
	for _, tc := range []struct{ name, msg, want string }{
		{"readyz through the ingress", readyzBody(t), "readyz: informer-sync, etcd failing"},
		{"readyz of one API server",
			"kube-apiserver /readyz: 500 Internal Server Error: etcd failed: reason withheld; informer-sync failed: reason withheld",
			"readyz: etcd, informer-sync failing"},
		{"readyz with many failing checks",
			"kube-apiserver /readyz: 500 Internal Server Error: etcd failed: reason withheld; informer-sync failed: reason withheld; " +
				"poststarthook/rbac/bootstrap-roles failed: not finished; shutdown failed: reason withheld",
			"readyz: etcd, informer-sync, poststarthook/rbac/bootstrap-roles and 1 more failing"},
		{"readyz with no check list", "GET https://203.0.113.5:30443/readyz: 503 Service Unavailable: ", "readyz: HTTP 503"},
		{"readyz refused",
			`GET https://203.0.113.5:30443/readyz: Get "https://203.0.113.5:30443/readyz": dial tcp 203.0.113.5:30443: connect: connection refused`,
			"readyz: connection refused"},
		{"readyz timed out",
			`kube-apiserver /readyz: Get "https://10.0.0.11:30001/readyz": context deadline exceeded (Client.Timeout exceeded while awaiting headers)`,
			"readyz: timed out"},
		{"ingress closed the connection",
			"GET https://203.0.113.5:30443/readyz: the ingress closed the connection (is any API server behind it up?): EOF",
			"readyz: connection closed"},
		{"learner", "etcd member demo-cp-1 is a learner not promoted yet: etcdserver: can only promote a learner member which is in sync with leader",
			"etcd learner not promoted yet"},
		{"crash loop with logs",
			`pod etcd: Failed (CrashLoopBackOff): container etcd: exited with code 1 (Error); restart 4 in 9.7s; last log line: {"level":"fatal","msg":"discovery failed"}; ` +
				`etcd last log: {"level":"info","ts":"2025-01-01T00:00:00Z","msg":"starting"} | {"level":"warn","msg":"failed to dial"} | {"level":"fatal","msg":"discovery failed"}; ` +
				"pod kube-apiserver: Pending (ContainerCreating): container kube-apiserver: created, not started yet",
			"etcd exited with code 1"},
		{"pod creating", "pod kube-apiserver: Pending (ContainerCreating): container kube-apiserver: created, not started yet",
			"kube-apiserver: ContainerCreating"},
		{"pod without reason", "pod haproxy: Pending", "haproxy: Pending"},
		{"waiting with detail in parentheses",
			"waiting to join etcd as a learner (etcdserver: too many learner members in cluster; stale learners removed: [demo-cp-4])",
			"waiting to join etcd as a learner"},
		{"waiting with a cause", "waiting to join etcd as a learner: etcdserver: too many learner members in cluster",
			"waiting to join etcd as a learner: too many learner members in cluster"},
		{"short aside kept", "waiting for the first etcd member (demo-cp-0)", "waiting for the first etcd member (demo-cp-0)"},
		{"timeout", "listing etcd members: context deadline exceeded", "listing etcd members: timed out"},
		{"empty", "  ", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := summarize(tc.msg); got != tc.want {
				t.Errorf("summarize(%q)\n got %q\nwant %q", tc.msg, got, tc.want)
			}
		})
	}
}

func TestCause(t *testing.T) {
	msg := "placing control plane of cluster demo: no schedulable private hypervisor is registered (hv-1 unschedulable, hv-2 dead); " +
		"start `oneinfra-agent hypervisor` without --public on a private machine, or clear unschedulable on one"
	if got, want := cause(msg), "no schedulable private hypervisor is registered (hv-1 unschedulable, hv-2 dead)"; got != want {
		t.Errorf("cause: got %q, want %q", got, want)
	}
}

// cluster is a cluster of three replicas in phase with a Ready condition
// saying why.
func cluster(phase string, conds ...*pb.Condition) *pb.Cluster {
	three := int32(3)
	return &pb.Cluster{
		Metadata: &pb.ObjectMeta{Name: "demo"},
		Spec:     &pb.ClusterSpec{ControlPlane: &pb.ControlPlaneSpec{Replicas: &three}},
		Status:   &pb.ClusterStatus{Phase: phase, Conditions: conds},
	}
}

func comp(name, role, hv, state, msg string, conds ...*pb.Condition) *pb.Component {
	return &pb.Component{
		Metadata: &pb.ObjectMeta{Name: name},
		Spec:     &pb.ComponentSpec{Cluster: "demo", Role: role, Hypervisor: hv},
		Status:   &pb.ComponentStatus{State: state, Message: msg, Conditions: conds},
	}
}

func cond(typ, status, msg string) *pb.Condition {
	return &pb.Condition{Type: typ, Status: status, Message: msg}
}

func TestClusterStep(t *testing.T) {
	cp := resources.RoleControlPlane
	running := func(name, hv string, conds ...*pb.Condition) *pb.Component {
		return comp(name, cp, hv, "Running", "", conds...)
	}
	voting := cond("EtcdMember", "True", "voting etcd member")
	apiOK := cond("APIServerReady", "True", "kube-apiserver answers /readyz")
	ingress := func(conds ...*pb.Condition) *pb.Component {
		return comp("demo-ingress-0", resources.RoleIngress, "pub-1", "Running", "", conds...)
	}
	longReady := "ControlPlaneNotReady: " + strings.Repeat("demo-cp-1 on hv-1: Pending: waiting to join etcd as a learner; ", 20)
	// fits: the line, with the elapsed time, is not clipped.
	for _, tc := range []struct {
		name  string
		c     *pb.Cluster
		comps []*pb.Component
		want  string
		fits  bool
	}{
		{"nothing reported", cluster(""), nil,
			"Pending: control plane 0/3 ready, no ingress; waiting for 3 more control-plane replica(s) to be placed", true},
		{"unschedulable", cluster("Pending", cond("Scheduled", "False",
			"placing ingress of cluster demo: no schedulable public hypervisor is registered (none registered); start `oneinfra-agent hypervisor --public --public-address IP` on a machine reachable by clients, or clear unschedulable on one")),
			nil,
			"Pending: control plane 0/3 ready, no ingress; no schedulable public hypervisor is registered (none registered)", true},
		{"learner", cluster("Provisioning", cond("Ready", "False", longReady)), []*pb.Component{
			running("demo-cp-0", "hv-1", voting, apiOK),
			running("demo-cp-1", "hv-2", cond("EtcdMember", "False",
				"etcd member demo-cp-1 is a learner not promoted yet: etcdserver: can only promote a learner member which is in sync with leader")),
			comp("demo-cp-2", cp, "hv-3", "Pending", "waiting to join etcd as a learner: etcdserver: too many learner members in cluster"),
			ingress(),
		}, "Provisioning: control plane 1/3 ready, ingress ready; waiting for demo-cp-1: etcd learner not promoted yet", true},
		{"joining", cluster("Provisioning"), []*pb.Component{
			running("demo-cp-0", "hv-1", voting, apiOK),
			comp("demo-cp-1", cp, "hv-2", "Pending", "waiting for the first etcd member (demo-cp-0)"),
			comp("demo-cp-2", cp, "hv-3", "", ""),
		}, "Provisioning: control plane 1/3 ready, no ingress; demo-cp-1 waits for the first etcd member (demo-cp-0)", true},
		{"failed", cluster("Provisioning"), []*pb.Component{
			comp("demo-cp-0", cp, "hv-1", "Failed", "rendering kube-apiserver: reading the service account key: open /etc/oneinfra/sa.key: no such file or directory"),
		}, "Provisioning: control plane 0/3 ready, no ingress; waiting for demo-cp-0: failed: rendering kube-apiserver: no such file or directory", false},
		{"crash loop", cluster("Provisioning"), []*pb.Component{
			comp("demo-cp-0", cp, "hv-1", "Failed", `pod kube-apiserver: Failed (CrashLoopBackOff): container kube-apiserver: exited with code 1 (Error); restart 3 in 7.9s; `+
				`kube-apiserver last log: I0101 12:00:02.000000 1 options.go:221] external host was not specified | E0101 12:00:03.123456 1 run.go:72] "command failed" err="context deadline exceeded"`),
			ingress(),
		}, "Provisioning: control plane 0/3 ready, ingress ready; waiting for demo-cp-0: kube-apiserver exited with code 1", true},
		{"API through the ingress", cluster("Provisioning", cond("Ready", "False", readyzBody(t))), []*pb.Component{
			running("demo-cp-0", "hv-1", voting, apiOK), running("demo-cp-1", "hv-2", voting, apiOK), running("demo-cp-2", "hv-3", voting, apiOK),
			ingress(cond("APIReachable", "False", readyzBody(t))),
		}, "Provisioning: control plane 3/3 ready, ingress ready; waiting for the API: readyz: informer-sync, etcd failing", true},
		{"ingress pod", cluster("Provisioning"), []*pb.Component{
			running("demo-cp-0", "hv-1"), running("demo-cp-1", "hv-2"), running("demo-cp-2", "hv-3"),
			comp("demo-ingress-0", resources.RoleIngress, "pub-1", "Pending", "pod haproxy: Pending (ImageNotFound): container haproxy: image haproxy:2.8 is not on this machine and pulling it failed: ..."),
		}, "Provisioning: control plane 3/3 ready, ingress not ready; waiting for demo-ingress-0: haproxy: ImageNotFound", true},
		{"no API report", cluster("Provisioning"), []*pb.Component{
			running("demo-cp-0", "hv-1"), running("demo-cp-1", "hv-2"), running("demo-cp-2", "hv-3"), ingress(),
		}, "Provisioning: control plane 3/3 ready, ingress ready; waiting for the API: no report from the ingress yet", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := clusterStep(tc.c, tc.comps)
			if got := st.String(); got != tc.want {
				t.Errorf("clusterStep\n got %q\nwant %q", got, tc.want)
			}
			checkLine(t, st, tc.fits)
		})
	}
}

func TestDrainStep(t *testing.T) {
	cp := resources.RoleControlPlane
	removing := comp("demo-cp-1", cp, "hv-2", "Removing", "removing: waiting for the ingress to stop sending requests here")
	removing.Metadata.DeletionTimestamp = timestamppb.Now()
	other := func(name, hv string) *pb.Component {
		c := comp(name, cp, hv, "Running", "")
		c.Spec.Cluster = "web"
		return c
	}
	for _, tc := range []struct {
		name  string
		comps []*pb.Component
		want  string
		done  bool
	}{
		{"nothing left", []*pb.Component{comp("demo-cp-0", cp, "hv-1", "Running", "")}, "nothing left", true},
		{"replacement joining", []*pb.Component{
			comp("demo-cp-0", cp, "hv-1", "Running", ""),
			comp("demo-cp-1", cp, "hv-2", "Running", ""),
			comp("demo-cp-3", cp, "hv-3", "Pending", "waiting to join etcd as a learner: context deadline exceeded"),
			comp("demo-ingress-0", resources.RoleIngress, "hv-2", "Running", ""),
		}, "2 left: demo-cp-1, demo-ingress-0; demo-cp-3 on hv-3 waits to join etcd as a learner: timed out", false},
		{"removing", []*pb.Component{
			removing, other("web-cp-0", "hv-2"), other("web-cp-1", "hv-2"), other("web-cp-2", "hv-2"),
		}, "4 left: demo-cp-1, web-cp-0, +2 more; demo-cp-1 waits for the ingress to stop sending requests here", false},
		{"nothing moving yet", []*pb.Component{other("web-cp-0", "hv-2")}, "1 left: web-cp-0; waiting for web-cp-0 to move", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, done := drainStep("hv-2", tc.comps)
			if st.String() != tc.want || done != tc.done {
				t.Errorf("drainStep\n got %q, done %v\nwant %q, done %v", st, done, tc.want, tc.done)
			}
			checkLine(t, st, true)
		})
	}
}

// checkLine checks that the line printed for st after 999s has no raw
// /readyz output and is at most maxLine columns; when fits, that it is not
// clipped.
func checkLine(t *testing.T, st step, fits bool) {
	t.Helper()
	var out bytes.Buffer
	(&printer{w: &out}).print(999*time.Second, st)
	line := strings.TrimSuffix(out.String(), "\n")
	if n := utf8.RuneCountInString(line); n > maxLine {
		t.Errorf("line of %d columns, want at most %d: %q", n, maxLine, line)
	}
	if fits && line != "[ 999s] "+st.String() {
		t.Errorf("line clipped: %q", line)
	}
	if strings.Contains(line, "[+]") || strings.Contains(line, "[-]") || strings.Contains(line, "reason withheld") {
		t.Errorf("raw readyz output in %q", line)
	}
}

// TestPrinter: every line fits maxLine, however long the cluster's names
// and messages, and a step is printed once until it changes.
func TestPrinter(t *testing.T) {
	long := strings.Repeat("x", 60)
	c := cluster("Provisioning")
	c.Metadata.Name = long
	comps := []*pb.Component{comp(long+"-cp-0", resources.RoleControlPlane, "hv-1", "Running", "",
		cond("APIServerReady", "False", strings.Replace(readyzBody(t), "GET https://203.0.113.5:30443/readyz", "kube-apiserver /readyz", 1)))}
	var out bytes.Buffer
	p := &printer{w: &out}
	steps := []step{clusterStep(c, comps), clusterStep(c, comps), {state: "Pending"}, {state: "Pending"}, clusterStep(c, comps)}
	for i, s := range steps {
		p.print(time.Duration(i)*time.Second, s)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines printed, want 3 (repeats left out):\n%s", len(lines), out.String())
	}
	for _, l := range lines {
		if n := utf8.RuneCountInString(l); n > maxLine {
			t.Errorf("line of %d columns, want at most %d: %q", n, maxLine, l)
		}
	}
	prefix := "[   0s] Provisioning: control plane 0/3 ready, no ingress; waiting for "
	if want := prefix + long[:maxLine-len(prefix)-3] + "..."; lines[0] != want {
		t.Errorf("first line\n got %q\nwant %q", lines[0], want)
	}
	if lines[1] != "[   2s] Pending" {
		t.Errorf("second line %q, want the elapsed time and the new step", lines[1])
	}
}
