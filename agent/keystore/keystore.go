// Package keystore holds the private keys of a component's certificates,
// made on the hypervisor that runs it and never sent anywhere: the
// coordinator gets a certificate request per key and issues certificates
// without keys, which the agent completes from here.
package keystore

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/oneinfra/oneinfra/internal/tlsutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"google.golang.org/protobuf/proto"
)

// ErrNoKey: a certificate is for a key this hypervisor does not have.
var ErrNoKey = errors.New("no private key here for the certificate")

// keySuffix ends the name of every key file; the rest is the hex SHA-256
// of its public key (tlsutil.PublicKeyHash).
const keySuffix = ".key"

// Dir is the directory (0700) of one component's keys, one file (0600)
// per key.
type Dir string

// New makes a key for each name, stores it, and returns a certificate
// request signed by each, by name, with subject informative only.
func (d Dir) New(component string, names []string) (map[string][]byte, error) {
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return nil, fmt.Errorf("creating the key dir: %w", err)
	}
	csrs := make(map[string][]byte, len(names))
	for _, name := range names {
		key, keyPEM, err := tlsutil.GenerateKey()
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKIXPublicKey(key.Public())
		if err != nil {
			return nil, fmt.Errorf("encoding a public key: %w", err)
		}
		if err := tlsutil.WriteFileAtomic(d.path(tlsutil.PublicKeyHash(der)), keyPEM, 0o600); err != nil {
			return nil, err
		}
		if csrs[name], err = tlsutil.CreateCSR(key, component+" "+name, nil); err != nil {
			return nil, err
		}
	}
	return csrs, nil
}

// Complete returns certs with the private key of each certificate that
// comes without one, read from d: ErrNoKey if d does not have it.
func (d Dir) Complete(certs map[string]*pb.KeyPair) (map[string]*pb.KeyPair, error) {
	out := make(map[string]*pb.KeyPair, len(certs))
	for name, kp := range certs {
		if len(kp.GetKeyPem()) > 0 || len(kp.GetCertPem()) == 0 {
			out[name] = kp
			continue
		}
		cert, err := tlsutil.ParseCertPEM(kp.CertPem)
		if err != nil {
			return nil, fmt.Errorf("certificate %s: %w", name, err)
		}
		h := tlsutil.PublicKeyHash(cert.RawSubjectPublicKeyInfo)
		keyPEM, err := os.ReadFile(d.path(h))
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("certificate %s (public key %s): %w", name, h[:16], ErrNoKey)
		}
		if err != nil {
			return nil, fmt.Errorf("certificate %s: %w", name, err)
		}
		full := proto.Clone(kp).(*pb.KeyPair)
		full.KeyPem = keyPEM
		if _, _, err := tlsutil.ParseKeyPair(full); err != nil {
			return nil, fmt.Errorf("certificate %s: its key file: %w", name, err)
		}
		out[name] = full
	}
	return out, nil
}

// Prune deletes the keys not in keep (public key hashes) and older than
// grace: those of certificates no longer held, and ones made for a
// request that never took.
func (d Dir) Prune(keep []string, grace time.Duration, now time.Time) error {
	entries, err := os.ReadDir(string(d))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		h, ok := strings.CutSuffix(e.Name(), keySuffix)
		if !ok || slices.Contains(keep, h) {
			continue
		}
		if info, err := e.Info(); err != nil || now.Sub(info.ModTime()) < grace {
			continue
		}
		if err := os.Remove(filepath.Join(string(d), e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (d Dir) path(hash string) string { return filepath.Join(string(d), hash+keySuffix) }
