package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Credentials are an S3 target's access keys (--backup-credentials).
type Credentials struct {
	AccessKeyID, SecretAccessKey string
}

// LoadCredentials reads a --backup-credentials file: mode 0600, lines
// AWS_ACCESS_KEY_ID=... and AWS_SECRET_ACCESS_KEY=... (blank lines and
// # comments allowed).
func LoadCredentials(file string) (Credentials, error) {
	var c Credentials
	fi, err := os.Stat(file)
	if err != nil {
		return c, fmt.Errorf("--backup-credentials: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return c, fmt.Errorf("--backup-credentials %s: mode %v, want 0600 (it holds a secret)", file, fi.Mode().Perm())
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return c, fmt.Errorf("--backup-credentials: %w", err)
	}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		switch {
		case ok && k == "AWS_ACCESS_KEY_ID":
			c.AccessKeyID = v
		case ok && k == "AWS_SECRET_ACCESS_KEY":
			c.SecretAccessKey = v
		default:
			return Credentials{}, fmt.Errorf("--backup-credentials %s: line %d: want AWS_ACCESS_KEY_ID=... or AWS_SECRET_ACCESS_KEY=...", file, i+1)
		}
	}
	if c.AccessKeyID == "" || c.SecretAccessKey == "" {
		return Credentials{}, fmt.Errorf("--backup-credentials %s: both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are needed", file)
	}
	return c, nil
}

// s3Target stores objects under a prefix of a bucket of an S3-compatible
// store.
type s3Target struct {
	client *minio.Client
	bucket string
	prefix string
}

// s3PartSize is the part size of a streamed upload: a backup of unknown
// size is sent in parts of this size, never held whole.
const s3PartSize = 16 << 20

// parseS3 validates s3://BUCKET/PREFIX?endpoint=HOST:PORT[&region=R][&insecure=true].
func parseS3(raw string, u *url.URL, creds Credentials) (Target, error) {
	q := u.Query()
	for k := range q {
		if k != "endpoint" && k != "region" && k != "insecure" {
			return nil, fmt.Errorf("--backup-target %q: unknown parameter %q (endpoint, region, insecure)", raw, k)
		}
	}
	endpoint := q.Get("endpoint")
	switch {
	case u.Host == "":
		return nil, fmt.Errorf("--backup-target %q: want s3://BUCKET/PREFIX?endpoint=HOST:PORT", raw)
	case endpoint == "":
		return nil, fmt.Errorf("--backup-target %q: endpoint=HOST:PORT is required", raw)
	case q.Has("insecure") && q.Get("insecure") != "true" && q.Get("insecure") != "false":
		return nil, fmt.Errorf("--backup-target %q: insecure must be true or false", raw)
	case creds.AccessKeyID == "":
		return nil, fmt.Errorf("--backup-target %q: an s3 target needs --backup-credentials", raw)
	}
	client, err := minio.New(endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(creds.AccessKeyID, creds.SecretAccessKey, ""),
		Secure: q.Get("insecure") != "true",
		Region: q.Get("region"),
	})
	if err != nil {
		return nil, fmt.Errorf("--backup-target %q: %w", raw, err)
	}
	return &s3Target{client: client, bucket: u.Host, prefix: strings.Trim(u.Path, "/")}, nil
}

func (s *s3Target) key(name string) (string, error) {
	if _, err := fileTarget("/").path(name); err != nil {
		return "", err
	}
	return path.Join(s.prefix, name), nil
}

func (s *s3Target) Put(ctx context.Context, name string, r io.Reader) (int64, error) {
	key, err := s.key(name)
	if err != nil {
		return 0, err
	}
	info, err := s.client.PutObject(ctx, s.bucket, key, r, -1, minio.PutObjectOptions{PartSize: s3PartSize, ContentType: "application/octet-stream"})
	if err != nil {
		return 0, fmt.Errorf("s3 put %s/%s: %w", s.bucket, key, err)
	}
	return info.Size, nil
}

func (s *s3Target) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	key, err := s.key(name)
	if err != nil {
		return nil, err
	}
	obj, err := s.client.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("s3 get %s/%s: %w", s.bucket, key, err)
	}
	// GetObject is lazy: the first read says whether it is there.
	if _, err := obj.Stat(); err != nil {
		obj.Close()
		return nil, fmt.Errorf("s3 get %s/%s: %w", s.bucket, key, err)
	}
	return obj, nil
}

func (s *s3Target) Delete(ctx context.Context, name string) error {
	key, err := s.key(name)
	if err != nil {
		return err
	}
	err = s.client.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{})
	var resp minio.ErrorResponse
	if errors.As(err, &resp) && resp.Code == "NoSuchKey" {
		return nil
	}
	if err != nil {
		return fmt.Errorf("s3 delete %s/%s: %w", s.bucket, key, err)
	}
	return nil
}
