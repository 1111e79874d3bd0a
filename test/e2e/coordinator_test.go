// Package e2e drives the built binaries as an operator would: real
// processes, real sockets, SIGKILL.
package e2e

import (
	"bytes"
	"fmt"
	"github.com/oneinfra/oneinfra/internal/testutil"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// binDir holds the binaries built once for the package's tests.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "oneinfra-e2e-bin")
	if err != nil {
		panic(err)
	}
	build := exec.Command("go", "build", "-o", dir+"/", "../../cmd/...")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building binaries:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// server is one oneinfra-coord serve process.
type server struct {
	id, dataDir, api, raft string
	cmd                    *exec.Cmd
	log                    *bytes.Buffer
}

func (s *server) start(t *testing.T, extra ...string) {
	t.Helper()
	args := append([]string{"serve", "--id", s.id, "--data-dir", s.dataDir, "--api-addr", s.api, "--raft-addr", s.raft,
		"--metrics-addr", "127.0.0.1:0"}, extra...)
	s.cmd = exec.Command(filepath.Join(binDir, "oneinfra-coord"), args...)
	s.log = &bytes.Buffer{}
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			s.cmd.Process.Kill()
			s.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("log of %s:\n%s", s.id, s.log.String())
		}
	})
}

func (s *server) kill9(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	s.cmd.Wait()
}

// cli runs oneinfra-coord with the given credentials.
func cli(config string, stdin string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(binDir, "oneinfra-coord"), append([]string{"--config", config}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%v: %s", err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// leader is the ID of the coordinator's leader as `members` marks it, or
// "" when there is none or no answer.
func leader(conf string) string {
	out, err := cli(conf, "", "members")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 3 && f[3] == "*" {
			return f[0]
		}
	}
	return ""
}

// onlyServer writes a copy of the credentials file conf that knows one
// server, api, and returns its path.
func onlyServer(t *testing.T, conf, api string) string {
	t.Helper()
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	one := regexp.MustCompile(`(?s)servers:\n(- \S+\n)+`).ReplaceAllString(string(b), "servers:\n- "+api+"\n")
	one = regexp.MustCompile(`serverIDs:\n(  .*\n)*`).ReplaceAllString(one, "") // the members it learned
	path := filepath.Join(t.TempDir(), "only-"+strings.ReplaceAll(api, ":", "-")+".conf")
	if err := os.WriteFile(path, []byte(one), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const demoCluster = `apiVersion: oneinfra.io/v1alpha1
kind: Cluster
metadata:
  name: %s
spec:
  controlPlane:
    replicas: 3
  vpn:
    enabled: true
`

// TestOperatorFailover is the coordinator walk-through of the README, run
// with the CLI alone: bootstrap, two joins, apply through a follower,
// kill -9 the leader, keep reading and writing, restart it, see it catch
// up; a broken manifest changes nothing.
func TestOperatorFailover(t *testing.T) {
	dir := t.TempDir()
	servers := map[string]*server{}
	for _, id := range []string{"s1", "s2", "s3"} {
		servers[id] = &server{id: id, dataDir: filepath.Join(dir, id), api: freeAddr(t), raft: freeAddr(t)}
	}
	servers["s1"].start(t, "--bootstrap")
	conf := filepath.Join(servers["s1"].dataDir, "admin.conf")
	testutil.Eventually(t, 20*time.Second, "admin.conf and a leader", func() error {
		_, err := cli(conf, "", "members")
		return err
	})
	if fi, err := os.Stat(conf); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin.conf: %v, mode %v", err, fi.Mode())
	}
	out, err := cli(conf, "", "token", "create", "--kind", "server", "--uses", "2")
	if err != nil {
		t.Fatal(err)
	}
	token := regexp.MustCompile(`token: (\S+)`).FindStringSubmatch(out)[1]
	hash := regexp.MustCompile(`ca-hash: (\S+)`).FindStringSubmatch(out)[1]
	for _, id := range []string{"s2", "s3"} {
		servers[id].start(t, "--join", servers["s1"].api, "--token", token, "--ca-hash", hash)
	}
	testutil.Eventually(t, 30*time.Second, "three members", func() error {
		out, err := cli(conf, "", "members")
		if err != nil {
			return err
		}
		if n := strings.Count(out, "Voter"); n != 3 || strings.Contains(out, "unreachable") {
			return fmt.Errorf("members:\n%s", out)
		}
		return nil
	})
	// A read teaches the credentials file every server.
	if _, err := cli(conf, "", "get", "clusters"); err != nil {
		t.Fatal(err)
	}

	var follower string
	for id := range servers {
		if id != leader(conf) {
			follower = id
		}
	}
	// Apply through a follower only.
	viaFollower := onlyServer(t, conf, servers[follower].api)
	if out, err := cli(viaFollower, fmt.Sprintf(demoCluster, "demo"), "apply", "-f", "-"); err != nil || !strings.Contains(out, "cluster/demo created") {
		t.Fatalf("apply through %s: %q %v", follower, out, err)
	}

	// A broken manifest: non-zero exit, names the document and the field,
	// and changes nothing (its first, valid document is not written).
	bad := fmt.Sprintf(demoCluster, "good") + "---\n" + strings.Replace(fmt.Sprintf(demoCluster, "bad"), "replicas: 3", "replicaz: 3", 1)
	_, err = cli(conf, bad, "apply", "-f", "-")
	if err == nil || !strings.Contains(err.Error(), "document 2") || !strings.Contains(err.Error(), "replicaz") {
		t.Fatalf("broken manifest: %v", err)
	}
	if out, _ := cli(conf, "", "get", "clusters"); strings.Contains(out, "good") {
		t.Fatalf("a refused apply wrote something:\n%s", out)
	}

	// kill -9 the leader; the others answer and take writes, also through
	// credentials that knew only the dead server and ran only `members`
	// since: every call teaches the credentials file the members.
	dead := leader(conf)
	onlyDeadBefore := onlyServer(t, conf, servers[dead].api)
	if strings.Contains(readFile(t, onlyDeadBefore), "serverIDs") {
		t.Fatalf("the copy already knows the members:\n%s", readFile(t, onlyDeadBefore))
	}
	if _, err := cli(onlyDeadBefore, "", "members"); err != nil {
		t.Fatal(err)
	}
	servers[dead].kill9(t)
	killed := time.Now()
	testutil.Eventually(t, 30*time.Second, "a write after the leader died", func() error {
		_, err := cli(onlyDeadBefore, fmt.Sprintf(demoCluster, "after"), "apply", "-f", "-")
		return err
	})
	t.Logf("first write accepted %.1fs after kill -9 of the leader %s", time.Since(killed).Seconds(), dead)
	out, err = cli(conf, "", "get", "clusters")
	if err != nil || !strings.Contains(out, "demo") || !strings.Contains(out, "after") {
		t.Fatalf("get clusters after the leader died: %q %v", out, err)
	}

	// The killed server restarts from its data dir and catches up.
	servers[dead].start(t)
	onlyDead := onlyServer(t, conf, servers[dead].api)
	testutil.Eventually(t, 30*time.Second, "the restarted server catching up", func() error {
		out, err := cli(onlyDead, "", "--stale", "get", "clusters", "-o", "yaml")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "name: after") || !strings.Contains(out, "name: demo") {
			return fmt.Errorf("restarted server has:\n%s", out)
		}
		return nil
	})
	// get -o yaml output applies back unchanged.
	yamlOut, err := cli(conf, "", "get", "clusters", "demo", "-o", "yaml")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := cli(conf, yamlOut, "apply", "-f", "-"); err != nil || !strings.Contains(out, "unchanged") {
		t.Errorf("re-applying get -o yaml: %q %v", out, err)
	}
}
