package kubeconfig

import (
	"bytes"
	"encoding/base64"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/tlsutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"sigs.k8s.io/yaml"
)

// testCerts makes a CA and a client certificate from it.
func testCerts(t *testing.T) ([]byte, *pb.KeyPair) {
	t.Helper()
	ca, err := tlsutil.NewCA("ca", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	admin, err := tlsutil.Issue(ca, tlsutil.CertOptions{CommonName: "oneinfra-admin", Usages: []tlsutil.Usage{tlsutil.UsageClient}, Validity: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca.CertPem, admin
}

func TestWithCert(t *testing.T) {
	caPEM, admin := testCerts(t)
	out, err := WithCert("demo", "https://203.0.113.5:30443", caPEM, admin, "oneinfra-admin")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(out, &doc); err != nil {
		t.Fatalf("kubeconfig is not YAML: %v\n%s", err, out)
	}
	get := func(v any, path ...any) any {
		for _, k := range path {
			switch k := k.(type) {
			case string:
				m, _ := v.(map[string]any)
				v = m[k]
			case int:
				l, _ := v.([]any)
				if k >= len(l) {
					return nil
				}
				v = l[k]
			}
		}
		return v
	}
	decode := func(path ...any) []byte {
		s, _ := get(doc, path...).(string)
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			t.Errorf("%v: not base64: %v", path, err)
		}
		return b
	}
	if get(doc, "apiVersion") != "v1" || get(doc, "kind") != "Config" {
		t.Errorf("apiVersion/kind = %v/%v", get(doc, "apiVersion"), get(doc, "kind"))
	}
	if get(doc, "clusters", 0, "name") != "demo" || get(doc, "clusters", 0, "cluster", "server") != "https://203.0.113.5:30443" {
		t.Errorf("cluster entry = %v", get(doc, "clusters", 0))
	}
	if !bytes.Equal(decode("clusters", 0, "cluster", "certificate-authority-data"), caPEM) {
		t.Error("certificate-authority-data is not the CA")
	}
	if get(doc, "users", 0, "name") != "oneinfra-admin" {
		t.Errorf("user entry = %v", get(doc, "users", 0, "name"))
	}
	if !bytes.Equal(decode("users", 0, "user", "client-certificate-data"), admin.CertPem) {
		t.Error("client-certificate-data is not the admin certificate")
	}
	if !bytes.Equal(decode("users", 0, "user", "client-key-data"), admin.KeyPem) {
		t.Error("client-key-data is not the admin key")
	}
	ctx := get(doc, "current-context")
	if ctx != "oneinfra-admin@demo" || get(doc, "contexts", 0, "name") != ctx ||
		get(doc, "contexts", 0, "context", "cluster") != "demo" || get(doc, "contexts", 0, "context", "user") != "oneinfra-admin" {
		t.Errorf("contexts = %v, current %v", get(doc, "contexts"), ctx)
	}

	if _, err := WithCert("demo", "https://x", caPEM, nil, "u"); err == nil {
		t.Error("WithCert without a client certificate")
	}
	if _, err := WithCert("demo", "", caPEM, admin, "u"); err == nil {
		t.Error("WithCert without a server")
	}
	if _, err := WithCert("demo", "https://x", nil, admin, "u"); err == nil {
		t.Error("WithCert without a CA")
	}
}

func TestWithToken(t *testing.T) {
	caPEM, _ := testCerts(t)
	out, err := WithToken("demo", "https://10.200.0.1:6443", caPEM, "kubelet-bootstrap", "abcdef.0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	var cfg kubeconfig
	if err := yaml.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Users) != 1 || cfg.Users[0].User.Token != "abcdef.0123456789abcdef" || len(cfg.Users[0].User.ClientKeyData) != 0 {
		t.Errorf("users = %+v", cfg.Users)
	}
	if len(cfg.Clusters) != 1 || !bytes.Equal(cfg.Clusters[0].Cluster.CertificateAuthorityData, caPEM) {
		t.Error("CA not embedded")
	}
	if _, err := WithToken("demo", "https://x", caPEM, "u", ""); err == nil {
		t.Error("WithToken without a token")
	}
}
