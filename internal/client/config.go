// Package client holds the CLI's credentials file (admin.conf) and dials
// coordinator servers over mutual TLS, failing over between them.
package client

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/oneinfra/oneinfra/internal/tlsutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"sigs.k8s.io/yaml"
)

// EnvConfig names the environment variable that points at a config file.
const EnvConfig = "ONEINFRA_CONFIG"

// Config is the content of admin.conf and ~/.oneinfra/config.
type Config struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Servers    []string `json:"servers"`
	// ServerIDs is the server ID at each address of Servers, as the
	// members said: only that server's certificate is accepted there.
	ServerIDs map[string]string `json:"serverIDs,omitempty"`
	// PEM data.
	CertificateAuthority string `json:"certificateAuthority"`
	ClientCertificate    string `json:"clientCertificate"`
	ClientKey            string `json:"clientKey"`
	// TrustGeneration is the coordinator trust generation (a CA rotation's
	// stage) the file's CAs and certificate are of: a command told of
	// another renews them (TrustHeader).
	TrustGeneration uint64 `json:"trustGeneration,omitempty"`
}

// NewConfig makes a config for the given servers and credentials.
func NewConfig(servers []string, caPEM []byte, client *pb.KeyPair) *Config {
	return &Config{
		APIVersion:           "oneinfra.io/v1alpha1",
		Kind:                 "Config",
		Servers:              servers,
		CertificateAuthority: string(caPEM),
		ClientCertificate:    string(client.GetCertPem()),
		ClientKey:            string(client.GetKeyPem()),
	}
}

// Path picks the config file: the flag, else $ONEINFRA_CONFIG, else
// ~/.oneinfra/config.
func Path(flag string) string {
	if flag != "" {
		return flag
	}
	if env := os.Getenv(EnvConfig); env != "" {
		return env
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(".oneinfra", "config")
	}
	return filepath.Join(home, ".oneinfra", "config")
}

// Load reads and checks a config file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no credentials at %s: pass --config, set $%s, or copy a server's admin.conf there", path, EnvConfig)
	}
	if err != nil {
		return nil, fmt.Errorf("reading credentials: %w", err)
	}
	c := &Config{}
	if err := yaml.UnmarshalStrict(b, c); err != nil {
		return nil, fmt.Errorf("credentials %s: %w", path, err)
	}
	switch {
	case len(c.Servers) == 0:
		return nil, fmt.Errorf("credentials %s: servers: none listed", path)
	case c.CertificateAuthority == "":
		return nil, fmt.Errorf("credentials %s: certificateAuthority: missing", path)
	case c.ClientCertificate == "" || c.ClientKey == "":
		return nil, fmt.Errorf("credentials %s: clientCertificate and clientKey: missing", path)
	}
	return c, nil
}

// Encode returns the config as its file holds it.
func (c *Config) Encode() ([]byte, error) {
	b, err := yaml.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encoding credentials: %w", err)
	}
	return b, nil
}

// Write stores the config with mode 0600: it holds a private key.
func (c *Config) Write(path string) error {
	b, err := c.Encode()
	if err != nil {
		return err
	}
	return tlsutil.WriteFileAtomic(path, b, 0o600)
}

// Members is what the config knows of the coordinator's servers.
func (c *Config) Members() *Members { return NewMembers(c.Servers, c.ServerIDs) }

// KeyPair returns the client certificate and key.
func (c *Config) KeyPair() *pb.KeyPair {
	return &pb.KeyPair{CertPem: []byte(c.ClientCertificate), KeyPem: []byte(c.ClientKey)}
}
