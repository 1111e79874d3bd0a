package oci_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oneinfra/oneinfra/test/images/oci"
)

func readTar(t *testing.T, r io.Reader) (map[string][]byte, map[string]*tar.Header) {
	t.Helper()
	files, headers := map[string][]byte{}, map[string]*tar.Header{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files, headers
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name], headers[h.Name] = b, h
	}
}

func blob(t *testing.T, files map[string][]byte, digest string) []byte {
	t.Helper()
	b, ok := files["blobs/sha256/"+strings.TrimPrefix(digest, "sha256:")]
	if !ok {
		t.Fatalf("blob %s missing", digest)
	}
	sum := sha256.Sum256(b)
	if "sha256:"+hex.EncodeToString(sum[:]) != digest {
		t.Fatalf("blob %s has another digest", digest)
	}
	return b
}

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "app")
	if err := os.WriteFile(bin, []byte("#!binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	img := oci.Image{
		Name:       "registry.example/team/app:v1.2",
		Entrypoint: []string{"/usr/local/bin/app"},
		Env:        []string{"PATH=/usr/local/bin"},
		StopSignal: "SIGUSR1",
		Files: []oci.File{
			{Path: "/usr/local/bin/app", Source: bin},
			{Path: "/etc/app.conf", Content: []byte("x=1\n"), Mode: 0o600},
			{Path: "/usr/bin/app", Link: "/usr/local/bin/app"},
		},
	}
	var buf bytes.Buffer
	digest, err := oci.Write(img, &buf)
	if err != nil {
		t.Fatal(err)
	}
	files, _ := readTar(t, bytes.NewReader(buf.Bytes()))
	if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout %q", files["oci-layout"])
	}
	var index struct {
		Manifests []struct {
			Digest      string
			Annotations map[string]string
		}
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	if len(index.Manifests) != 1 || index.Manifests[0].Digest != digest {
		t.Fatalf("index %s", files["index.json"])
	}
	if a := index.Manifests[0].Annotations; a[oci.AnnotationImageName] != img.Name || a[oci.AnnotationRefName] != "v1.2" {
		t.Errorf("annotations %v", a)
	}
	var manifest struct {
		Config struct{ Digest string }
		Layers []struct{ Digest, MediaType string }
	}
	if err := json.Unmarshal(blob(t, files, digest), &manifest); err != nil {
		t.Fatal(err)
	}
	var config struct {
		Architecture, OS string
		Config           struct {
			Entrypoint []string
			StopSignal string
		}
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		}
	}
	if err := json.Unmarshal(blob(t, files, manifest.Config.Digest), &config); err != nil {
		t.Fatal(err)
	}
	if config.Architecture != "amd64" || config.OS != "linux" || config.Config.Entrypoint[0] != "/usr/local/bin/app" || config.Config.StopSignal != "SIGUSR1" {
		t.Errorf("config %+v", config)
	}
	if len(manifest.Layers) != 1 || manifest.Layers[0].MediaType != oci.MediaTypeLayer {
		t.Fatalf("layers %+v", manifest.Layers)
	}
	gz, err := gzip.NewReader(bytes.NewReader(blob(t, files, manifest.Layers[0].Digest)))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(gz)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	if "sha256:"+hex.EncodeToString(sum[:]) != config.RootFS.DiffIDs[0] {
		t.Errorf("diff_id does not match the uncompressed layer")
	}
	layer, headers := readTar(t, bytes.NewReader(raw))
	if string(layer["usr/local/bin/app"]) != "#!binary" || headers["usr/local/bin/app"].Mode != 0o755 {
		t.Errorf("app: %q mode %o", layer["usr/local/bin/app"], headers["usr/local/bin/app"].Mode)
	}
	if headers["etc/app.conf"].Mode != 0o600 || headers["usr/bin/app"].Linkname != "/usr/local/bin/app" {
		t.Errorf("conf mode %o, link %q", headers["etc/app.conf"].Mode, headers["usr/bin/app"].Linkname)
	}
	if h := headers["tmp/"]; h == nil || h.Mode != 0o1777 || h.Typeflag != tar.TypeDir {
		t.Errorf("/tmp: %+v", h)
	}
	if !strings.HasPrefix(string(layer["etc/passwd"]), "root:x:0:0:") {
		t.Errorf("/etc/passwd %q", layer["etc/passwd"])
	}
	if h := headers["usr/local/"]; h == nil || h.Typeflag != tar.TypeDir {
		t.Errorf("parent directory missing")
	}

	// Reproducible.
	var again bytes.Buffer
	if d2, err := oci.Write(img, &again); err != nil || d2 != digest || !bytes.Equal(again.Bytes(), buf.Bytes()) {
		t.Errorf("second build differs: %s vs %s (%v)", d2, digest, err)
	}
}

func TestTag(t *testing.T) {
	for ref, want := range map[string]string{
		"registry.k8s.io/pause:3.10":    "3.10",
		"localhost:5000/x":              "latest",
		"localhost:5000/x:v1":           "v1",
		"docker.io/library/haproxy:2.6": "2.6",
		"registry.k8s.io/etcd:3.6.16-0": "3.6.16-0",
	} {
		if got := oci.Tag(ref); got != want {
			t.Errorf("Tag(%q) = %q, want %q", ref, got, want)
		}
	}
}

// RootFS keeps symlinks as symlinks (the xtables extension directory of the
// kube-proxy image has relative ones, libxt_SNAT.so -> libxt_NAT.so).
func TestRootFS(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "libxt_NAT.so"), []byte("nat"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("libxt_NAT.so", filepath.Join(dir, "libxt_SNAT.so")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/missing", filepath.Join(dir, "sub", "dangling")); err != nil {
		t.Fatal(err)
	}
	files, err := oci.RootFS(dir, "/usr/lib/xtables")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	digest, err := oci.Write(oci.Image{Name: "example/rootfs:v1", NoBase: true, Files: files}, &buf)
	if err != nil {
		t.Fatal(err)
	}
	outer, _ := readTar(t, bytes.NewReader(buf.Bytes()))
	var manifest struct{ Layers []struct{ Digest string } }
	if err := json.Unmarshal(blob(t, outer, digest), &manifest); err != nil {
		t.Fatal(err)
	}
	gz, err := gzip.NewReader(bytes.NewReader(blob(t, outer, manifest.Layers[0].Digest)))
	if err != nil {
		t.Fatal(err)
	}
	layer, headers := readTar(t, gz)
	if h := headers["usr/lib/xtables/libxt_NAT.so"]; h == nil || h.Typeflag != tar.TypeReg || h.Mode != 0o640 || string(layer[h.Name]) != "nat" {
		t.Errorf("regular file: %+v", h)
	}
	if h := headers["usr/lib/xtables/libxt_SNAT.so"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "libxt_NAT.so" || h.Size != 0 {
		t.Errorf("relative symlink: %+v", h)
	}
	if h := headers["usr/lib/xtables/sub/dangling"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "/etc/missing" {
		t.Errorf("dangling symlink: %+v", h)
	}
	if h := headers["usr/lib/xtables/sub/"]; h == nil || h.Typeflag != tar.TypeDir || h.Mode != 0o750 {
		t.Errorf("directory: %+v", h)
	}
	if _, ok := headers["etc/passwd"]; ok {
		t.Errorf("NoBase image has /etc/passwd")
	}
}
