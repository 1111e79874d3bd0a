// Package oci writes single-layer container images as OCI image-layout
// tarballs that `ctr images import` loads, so that tests and the lab can run
// images without a registry.
//
// A tarball holds oci-layout, index.json (annotated with
// io.containerd.image.name = the full reference and
// org.opencontainers.image.ref.name = the tag) and blobs/sha256/: one gzip
// layer, the image config and the manifest. The output is reproducible: the
// same inputs give the same digests (fixed timestamps, sorted entries, owner
// root), so an unchanged image keeps its ID when imported again.
//
// Only the standard library is used.
package oci

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Media types of the OCI image specification.
const (
	MediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	MediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"

	// AnnotationImageName is the index annotation containerd's importer
	// names the image after.
	AnnotationImageName = "io.containerd.image.name"
	// AnnotationRefName is the OCI annotation holding the tag.
	AnnotationRefName = "org.opencontainers.image.ref.name"
)

// Epoch is the timestamp given to every file and to the image config.
var Epoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// File is one entry of the image's root file system.
type File struct {
	// Path inside the image, absolute ("/usr/local/bin/etcd").
	Path string
	// Source is a host file whose content is copied (symlinks followed).
	// Empty with Content nil and Link empty means a directory.
	Source string
	// Content is used when Source is empty.
	Content []byte
	// Link, when set, makes the entry a symlink to this target.
	Link string
	// Dir makes the entry a directory.
	Dir bool
	// Mode holds the permission bits (and sticky, setuid...). Zero means
	// 0755 for directories and for executables copied from Source with an
	// executable bit, 0644 otherwise.
	Mode fs.FileMode
}

// Image describes what to build.
type Image struct {
	// Name is the full reference, for example registry.k8s.io/pause:3.10.
	Name       string
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	User       string
	// StopSignal is the signal a runtime sends to stop the container
	// ("SIGTERM" when empty).
	StopSignal string
	// Files make up the single layer; parent directories are added as
	// needed (0755).
	Files []File
	// NoBase leaves out the base files (see BaseFiles).
	NoBase bool
}

// BaseFiles are added to every image unless Image.NoBase is set: a world
// writable /tmp, minimal /etc/passwd, /etc/group and /etc/nsswitch.conf.
func BaseFiles() []File {
	return []File{
		{Path: "/tmp", Dir: true, Mode: 0o777 | fs.ModeSticky},
		{Path: "/etc/passwd", Content: []byte("root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n")},
		{Path: "/etc/group", Content: []byte("root:x:0:\nnogroup:x:65534:\n")},
		{Path: "/etc/nsswitch.conf", Content: []byte("hosts: files dns\npasswd: files\ngroup: files\n")},
		{Path: "/root", Dir: true, Mode: 0o700},
	}
}

// RootFS returns the files of a host directory tree, to be placed under
// prefix ("/" for the image root).
func RootFS(dir, prefix string) ([]File, error) {
	var files []File
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		f := File{Path: path.Join(prefix, filepath.ToSlash(rel)), Mode: info.Mode().Perm() | info.Mode()&(fs.ModeSticky|fs.ModeSetuid|fs.ModeSetgid)}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			f.Link = target
		case info.IsDir():
			f.Dir = true
		case info.Mode().IsRegular():
			f.Source = p
		default:
			return fmt.Errorf("%s: unsupported file type %s", p, info.Mode().Type())
		}
		files = append(files, f)
		return nil
	})
	return files, err
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

type imageConfig struct {
	Created      time.Time `json:"created"`
	Architecture string    `json:"architecture"`
	OS           string    `json:"os"`
	Config       struct {
		User       string   `json:"User,omitempty"`
		Env        []string `json:"Env,omitempty"`
		Entrypoint []string `json:"Entrypoint,omitempty"`
		Cmd        []string `json:"Cmd,omitempty"`
		WorkingDir string   `json:"WorkingDir,omitempty"`
		StopSignal string   `json:"StopSignal,omitempty"`
	} `json:"config"`
	RootFS struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
	History []struct {
		Created   time.Time `json:"created"`
		CreatedBy string    `json:"created_by"`
	} `json:"history"`
}

type manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        descriptor   `json:"config"`
	Layers        []descriptor `json:"layers"`
}

type index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []descriptor `json:"manifests"`
}

// Tag returns the tag of a reference ("3.10" for registry.k8s.io/pause:3.10),
// "latest" when it has none.
func Tag(ref string) string {
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref[i+1:]
	}
	return "latest"
}

// WriteFile builds img into the tarball out, atomically (a temporary file
// renamed into place). It returns the manifest digest.
func WriteFile(img Image, out string) (string, error) {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), ".oci-*.tmp")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	digest, err := Write(img, tmp)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return "", err
	}
	return digest, os.Rename(tmp.Name(), out)
}

// Write builds img and writes the image-layout tarball to w. It returns the
// manifest digest.
func Write(img Image, w io.Writer) (string, error) {
	if img.Name == "" {
		return "", errors.New("image name is empty")
	}
	files := img.Files
	if !img.NoBase {
		files = append(BaseFiles(), files...)
	}
	layer, diffID, err := buildLayer(files)
	if err != nil {
		return "", fmt.Errorf("layer of %s: %w", img.Name, err)
	}
	layerDigest := digestOf(layer)

	var cfg imageConfig
	cfg.Created = Epoch
	cfg.Architecture = "amd64"
	cfg.OS = "linux"
	cfg.Config.User = img.User
	cfg.Config.Env = img.Env
	cfg.Config.Entrypoint = img.Entrypoint
	cfg.Config.Cmd = img.Cmd
	cfg.Config.WorkingDir = img.WorkingDir
	cfg.Config.StopSignal = img.StopSignal
	cfg.RootFS.Type = "layers"
	cfg.RootFS.DiffIDs = []string{diffID}
	cfg.History = append(cfg.History, struct {
		Created   time.Time `json:"created"`
		CreatedBy string    `json:"created_by"`
	}{Epoch, "oneinfra test/images/oci"})
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return "", err
	}

	man := manifest{
		SchemaVersion: 2,
		MediaType:     MediaTypeManifest,
		Config:        descriptor{MediaType: MediaTypeConfig, Digest: digestOf(cfgJSON), Size: int64(len(cfgJSON))},
		Layers:        []descriptor{{MediaType: MediaTypeLayer, Digest: layerDigest, Size: int64(len(layer))}},
	}
	manJSON, err := json.Marshal(man)
	if err != nil {
		return "", err
	}
	manDigest := digestOf(manJSON)

	idx := index{
		SchemaVersion: 2,
		MediaType:     MediaTypeIndex,
		Manifests: []descriptor{{
			MediaType: MediaTypeManifest,
			Digest:    manDigest,
			Size:      int64(len(manJSON)),
			Annotations: map[string]string{
				AnnotationImageName: img.Name,
				AnnotationRefName:   Tag(img.Name),
			},
			Platform: &platform{Architecture: "amd64", OS: "linux"},
		}},
	}
	idxJSON, err := json.Marshal(idx)
	if err != nil {
		return "", err
	}

	tw := tar.NewWriter(w)
	entries := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", idxJSON},
		{"blobs/", nil},
		{"blobs/sha256/", nil},
		{blobPath(layerDigest), layer},
		{blobPath(man.Config.Digest), cfgJSON},
		{blobPath(manDigest), manJSON},
	}
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), ModTime: Epoch, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if strings.HasSuffix(e.name, "/") {
			hdr.Typeflag, hdr.Mode = tar.TypeDir, 0o755
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return "", err
		}
		if _, err := tw.Write(e.data); err != nil {
			return "", err
		}
	}
	return manDigest, tw.Close()
}

func blobPath(digest string) string {
	return "blobs/sha256/" + strings.TrimPrefix(digest, "sha256:")
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// buildLayer returns the gzip layer and the digest of its uncompressed tar.
func buildLayer(files []File) ([]byte, string, error) {
	byPath := map[string]File{}
	for _, f := range files {
		p := path.Clean("/" + f.Path)
		if p == "/" {
			continue
		}
		f.Path = p
		byPath[p] = f // a later entry wins
		for dir := path.Dir(p); dir != "/"; dir = path.Dir(dir) {
			if _, ok := byPath[dir]; !ok {
				byPath[dir] = File{Path: dir, Dir: true}
			}
		}
	}
	paths := make([]string, 0, len(byPath))
	for p := range byPath {
		paths = append(paths, p)
	}
	sort.Strings(paths)

	var gzBuf bytes.Buffer
	gz, err := gzip.NewWriterLevel(&gzBuf, gzip.BestSpeed)
	if err != nil {
		return nil, "", err
	}
	diff := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(gz, diff))
	for _, p := range paths {
		if err := writeEntry(tw, byPath[p]); err != nil {
			return nil, "", err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	if err := gz.Close(); err != nil {
		return nil, "", err
	}
	return gzBuf.Bytes(), hashString(diff), nil
}

func hashString(h hash.Hash) string {
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

func writeEntry(tw *tar.Writer, f File) error {
	hdr := &tar.Header{
		Name:    strings.TrimPrefix(f.Path, "/"),
		ModTime: Epoch,
		Format:  tar.FormatPAX,
		Uname:   "root",
		Gname:   "root",
	}
	mode := f.Mode
	var content []byte
	switch {
	case f.Link != "":
		hdr.Typeflag = tar.TypeSymlink
		hdr.Linkname = f.Link
		mode = 0o777
	case f.Dir:
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
		if mode == 0 {
			mode = 0o755
		}
	default:
		hdr.Typeflag = tar.TypeReg
		content = f.Content
		if f.Source != "" {
			b, err := os.ReadFile(f.Source)
			if err != nil {
				return err
			}
			content = b
			if mode == 0 {
				info, err := os.Stat(f.Source)
				if err != nil {
					return err
				}
				mode = 0o644
				if info.Mode()&0o111 != 0 {
					mode = 0o755
				}
			}
		}
		if mode == 0 {
			mode = 0o644
		}
		hdr.Size = int64(len(content))
	}
	hdr.Mode = int64(mode.Perm())
	if mode&fs.ModeSticky != 0 || mode&0o1000 != 0 {
		hdr.Mode |= 0o1000
	}
	if mode&fs.ModeSetuid != 0 {
		hdr.Mode |= 0o4000
	}
	if mode&fs.ModeSetgid != 0 {
		hdr.Mode |= 0o2000
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("%s: %w", f.Path, err)
	}
	if _, err := tw.Write(content); err != nil {
		return fmt.Errorf("%s: %w", f.Path, err)
	}
	return nil
}
