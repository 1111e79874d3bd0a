// Package kubeconfig writes the one-cluster, one-user kubeconfig files
// oneinfra hands out (cluster kubeconfig) and writes on hosts (the
// controller-manager's, the scheduler's, a kubelet's bootstrap one).
package kubeconfig

import (
	"errors"
	"fmt"

	"sigs.k8s.io/yaml"

	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// kubeconfig is the part of a kubeconfig file (clientcmd v1 Config) that
// oneinfra writes. Byte fields are base64 encoded by the JSON encoder, as
// the *-data fields of a kubeconfig require.
type kubeconfig struct {
	APIVersion     string         `json:"apiVersion"`
	Kind           string         `json:"kind"`
	Clusters       []namedCluster `json:"clusters"`
	Users          []namedUser    `json:"users"`
	Contexts       []namedContext `json:"contexts"`
	CurrentContext string         `json:"current-context"`
	Preferences    struct{}       `json:"preferences"`
}

type namedCluster struct {
	Name    string      `json:"name"`
	Cluster clusterInfo `json:"cluster"`
}

type clusterInfo struct {
	Server                   string `json:"server"`
	CertificateAuthorityData []byte `json:"certificate-authority-data"`
}

type namedUser struct {
	Name string   `json:"name"`
	User authInfo `json:"user"`
}

type authInfo struct {
	ClientCertificateData []byte `json:"client-certificate-data,omitempty"`
	ClientKeyData         []byte `json:"client-key-data,omitempty"`
	Token                 string `json:"token,omitempty"`
}

type namedContext struct {
	Name    string      `json:"name"`
	Context contextInfo `json:"context"`
}

type contextInfo struct {
	Cluster string `json:"cluster"`
	User    string `json:"user"`
}

// WithCert returns a kubeconfig YAML with one cluster (clusterName,
// reached at server, an https URL, and verified against caPEM), one user
// authenticated by the client certificate and key of client, and a
// context "USER@CLUSTER" joining them that is the current one. The
// certificates and key are embedded (the *-data fields).
func WithCert(clusterName, server string, caPEM []byte, client *pb.KeyPair, user string) ([]byte, error) {
	if client == nil || len(client.GetCertPem()) == 0 || len(client.GetKeyPem()) == 0 {
		return nil, errors.New("kubeconfig: a client certificate and key are required")
	}
	return buildKubeconfig(clusterName, server, caPEM, user, authInfo{
		ClientCertificateData: client.GetCertPem(),
		ClientKeyData:         client.GetKeyPem(),
	})
}

// WithToken is WithCert for a user authenticated by a bearer
// token, such as the kubelet's bootstrap token.
func WithToken(clusterName, server string, caPEM []byte, user, token string) ([]byte, error) {
	if token == "" {
		return nil, errors.New("kubeconfig: a token is required")
	}
	return buildKubeconfig(clusterName, server, caPEM, user, authInfo{Token: token})
}

// buildKubeconfig renders a one-cluster, one-user kubeconfig.
func buildKubeconfig(clusterName, server string, caPEM []byte, user string, auth authInfo) ([]byte, error) {
	switch {
	case clusterName == "":
		return nil, errors.New("kubeconfig: cluster name is required")
	case server == "":
		return nil, errors.New("kubeconfig: server is required")
	case len(caPEM) == 0:
		return nil, errors.New("kubeconfig: CA certificate is required")
	case user == "":
		return nil, errors.New("kubeconfig: user name is required")
	}
	ctx := user + "@" + clusterName
	cfg := kubeconfig{
		APIVersion:     "v1",
		Kind:           "Config",
		Clusters:       []namedCluster{{Name: clusterName, Cluster: clusterInfo{Server: server, CertificateAuthorityData: caPEM}}},
		Users:          []namedUser{{Name: user, User: auth}},
		Contexts:       []namedContext{{Name: ctx, Context: contextInfo{Cluster: clusterName, User: user}}},
		CurrentContext: ctx,
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	return out, nil
}
