package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// Target is where backups are stored, by object name (CLUSTER/ID).
type Target interface {
	// Put stores what r gives under name, whole or not at all, and
	// returns its size.
	Put(ctx context.Context, name string, r io.Reader) (int64, error)
	Get(ctx context.Context, name string) (io.ReadCloser, error)
	// Delete removes name; one already gone is no error.
	Delete(ctx context.Context, name string) error
}

// ParseTarget validates a --backup-target URL: file:///PATH, a directory
// every hypervisor has at that path (such as an NFS mount), or
// s3://BUCKET/PREFIX?endpoint=HOST:PORT[&region=R][&insecure=true] with
// creds.
func ParseTarget(raw string, creds Credentials) (Target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("--backup-target %q: %v", raw, err)
	}
	switch {
	case u.Scheme == "s3":
		return parseS3(raw, u, creds)
	case u.Scheme != "file":
		return nil, fmt.Errorf("--backup-target %q: want file:///PATH or s3://BUCKET/PREFIX?endpoint=HOST:PORT", raw)
	case u.Host != "" || !filepath.IsAbs(u.Path) || u.RawQuery != "":
		return nil, fmt.Errorf("--backup-target %q: want file:///PATH with an absolute path and nothing else", raw)
	}
	return fileTarget(filepath.Clean(u.Path)), nil
}

// fileTarget stores objects as files under a directory.
type fileTarget string

// path is the file of an object name, which must stay under the
// directory.
func (d fileTarget) path(name string) (string, error) {
	clean := filepath.Clean(name)
	if name == "" || clean != name || filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("backup object %q: not a plain relative name", name)
	}
	return filepath.Join(string(d), clean), nil
}

func (d fileTarget) Put(_ context.Context, name string, r io.Reader) (size int64, err error) {
	path, err := d.path(name)
	if err != nil {
		return 0, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return 0, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(0o600); err != nil {
		return 0, err
	}
	if size, err = io.Copy(tmp, r); err != nil {
		return 0, err
	}
	if err = tmp.Sync(); err != nil {
		return 0, err
	}
	if err = tmp.Close(); err != nil {
		return 0, err
	}
	return size, os.Rename(tmp.Name(), path)
}

func (d fileTarget) Get(_ context.Context, name string) (io.ReadCloser, error) {
	path, err := d.path(name)
	if err != nil {
		return nil, err
	}
	return os.Open(path)
}

func (d fileTarget) Delete(_ context.Context, name string) error {
	path, err := d.path(name)
	if err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
