// Package containerd starts private containerd instances for tests (through
// test/containerd/start.sh and stop.sh) and loads the test images into them
// (built by `make -f test/images/images.mk`, no registry needed).
//
// Tests that use it need root, containerd, runc and make; when one is
// missing they fail, telling what to install, rather than skip.
package containerd

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
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/test/images"
)

// Instance is one running containerd.
type Instance struct {
	// Dir holds its config, root, state, socket and log.
	Dir string
	// Socket is the path of its gRPC (and CRI) socket.
	Socket string
	root   string
}

// Endpoint is the CRI endpoint, unix://SOCKET.
func (i *Instance) Endpoint() string { return "unix://" + i.Socket }

// LogFile is containerd's own log.
func (i *Instance) LogFile() string { return filepath.Join(i.Dir, "containerd.log") }

// RepoRoot finds the repository (the directory of the go.mod of
// github.com/oneinfra/oneinfra) from the working directory upwards.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(bytes.TrimSpace(b), []byte("module github.com/oneinfra/oneinfra\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the oneinfra repository (no go.mod of github.com/oneinfra/oneinfra above the working directory)")
		}
		dir = parent
	}
}

const installHint = "the containerd tests need root and Debian's containerd and runc packages (apt-get install -y containerd runc)"

// Check says what is missing to run containerd here, nil when nothing is.
func Check() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("not running as root: %s", installHint)
	}
	for _, bin := range []string{"containerd", "runc", "ctr", "containerd-shim-runc-v2"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s is not installed: %s", bin, installHint)
		}
	}
	return nil
}

// StartDir starts a containerd whose files live in dir (created if needed).
func StartDir(ctx context.Context, dir string) (*Instance, error) {
	if err := Check(); err != nil {
		return nil, err
	}
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(root, "test/containerd/start.sh"), dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("starting containerd in %s: %v: %s", dir, err, strings.TrimSpace(stderr.String()))
	}
	abs, _ := filepath.Abs(dir)
	return &Instance{Dir: abs, Socket: strings.TrimSpace(string(out)), root: root}, nil
}

// Stop stops containerd and everything it runs, and removes its directory.
func (i *Instance) Stop() error {
	out, err := exec.Command(filepath.Join(i.root, "test/containerd/stop.sh"), i.Dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("stopping containerd in %s: %v: %s", i.Dir, err, out)
	}
	return nil
}

// Start starts a containerd for the test, stopped at its cleanup (its log is
// printed when the test failed). It fails the test, saying what to install,
// when containerd cannot run here.
func Start(t testing.TB) *Instance {
	t.Helper()
	// A short path: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inst, err := StartDir(ctx, dir)
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			if b, err := os.ReadFile(inst.LogFile()); err == nil {
				lines := strings.Split(strings.TrimSpace(string(b)), "\n")
				if len(lines) > 40 {
					lines = lines[len(lines)-40:]
				}
				t.Logf("containerd log (last lines):\n%s", strings.Join(lines, "\n"))
			}
		}
		if err := inst.Stop(); err != nil {
			t.Error(err)
		}
	})
	return inst
}

// ImportFile loads an image tarball (OCI layout or docker archive) into
// the k8s.io namespace, the CRI plugin's.
func (i *Instance) ImportFile(ctx context.Context, tarball string) error {
	out, err := exec.CommandContext(ctx, "ctr", "-a", i.Socket, "-n", "k8s.io", "images", "import", tarball).CombinedOutput()
	if err != nil {
		return fmt.Errorf("importing %s: %v: %s", tarball, err, out)
	}
	return nil
}

// Import builds (see BuildImages) and imports the images of images.txt
// with these keys, for example Import(t, "pause", "testapp").
func (i *Instance) Import(t testing.TB, keys ...string) {
	t.Helper()
	files := BuildImages(t, keys...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, k := range keys {
		if err := i.ImportFile(ctx, files[k]); err != nil {
			t.Fatal(err)
		}
	}
}

var buildMu sync.Mutex

// BuildImages runs `make -f test/images/images.mk` for the tarballs of these
// image keys (incremental: a no-op when they are up to date; the first
// build of the Kubernetes images takes minutes) and returns their paths by
// key. Concurrent test processes are serialised by a lock file.
func BuildImages(t testing.TB, keys ...string) map[string]string {
	t.Helper()
	files, err := buildImages(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func buildImages(keys ...string) (map[string]string, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	if _, err := exec.LookPath("make"); err != nil {
		return nil, errors.New("make is not installed (apt-get install -y make): it builds the test images")
	}
	dir := filepath.Join(root, "_output", "images")
	files := map[string]string{}
	args := []string{"-s", "-f", "test/images/images.mk"}
	for _, k := range keys {
		files[k] = images.Get(k).Tarball(dir)
		rel, _ := filepath.Rel(root, files[k])
		args = append(args, rel)
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	if err := os.MkdirAll(filepath.Join(root, "_output"), 0o755); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(root, "_output", ".images.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return nil, err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	cmd := exec.Command("make", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building images %v: %v\n%s", keys, err, out)
	}
	return files, nil
}
