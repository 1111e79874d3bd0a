package worker

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/oneinfra/oneinfra/internal/kubeconfig"
	"github.com/oneinfra/oneinfra/internal/tlsutil"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"sigs.k8s.io/yaml"
)

// Paths of the kubelet's files under the data directory.
const (
	kubeletDir          = "kubelet"
	bootstrapKubeconfig = "kubelet/bootstrap-kubeconfig"
	kubeletKubeconfig   = "kubelet/kubeconfig"
	kubeletConfigFile   = "kubelet/config.yaml"
	kubeletClientCA     = "kubelet/client-ca.crt"
	kubeletCertDir      = "kubelet/pki"
	cniIPAMDir          = "cni-ipam"
	kubeletLog          = "kubelet.log"
)

// BootstrapUser is the kubeconfig user of the bootstrap token.
const BootstrapUser = "kubelet-bootstrap"

// ClusterDomain is the cluster's DNS domain.
const ClusterDomain = "cluster.local"

// kubeletConfiguration is the part of kubelet.config.k8s.io/v1beta1
// KubeletConfiguration the worker sets (field names as upstream).
type kubeletConfiguration struct {
	APIVersion     string `json:"apiVersion"`
	Kind           string `json:"kind"`
	Authentication struct {
		X509 struct {
			ClientCAFile string `json:"clientCAFile"`
		} `json:"x509"`
		Webhook struct {
			Enabled bool `json:"enabled"`
		} `json:"webhook"`
		Anonymous struct {
			Enabled bool `json:"enabled"`
		} `json:"anonymous"`
	} `json:"authentication"`
	Authorization struct {
		Mode string `json:"mode"`
	} `json:"authorization"`
	CgroupDriver             string            `json:"cgroupDriver"`
	FailCgroupV1             bool              `json:"failCgroupV1"`
	CgroupRoot               string            `json:"cgroupRoot"`
	ClusterDNS               []string          `json:"clusterDNS"`
	ClusterDomain            string            `json:"clusterDomain"`
	FailSwapOn               bool              `json:"failSwapOn"`
	RotateCertificates       bool              `json:"rotateCertificates"`
	ServerTLSBootstrap       bool              `json:"serverTLSBootstrap"`
	ContainerRuntimeEndpoint string            `json:"containerRuntimeEndpoint"`
	PodLogsDir               string            `json:"podLogsDir"`
	EvictionHard             map[string]string `json:"evictionHard"`
	ResolvConf               string            `json:"resolvConf"`
}

// EvictionHard is small, so that a disk shared with other work (a test
// machine) does not taint the node.
var EvictionHard = map[string]string{
	"memory.available":   "50Mi",
	"nodefs.available":   "1%",
	"nodefs.inodesFree":  "1%",
	"imagefs.available":  "1%",
	"imagefs.inodesFree": "1%",
}

// renderKubeletConfig renders the KubeletConfiguration YAML.
func renderKubeletConfig(c Config, wc *pb.WorkerConfig) ([]byte, error) {
	if net.ParseIP(wc.GetClusterDns()) == nil {
		return nil, fmt.Errorf("cluster DNS %q is not an IP address", wc.GetClusterDns())
	}
	k := kubeletConfiguration{
		APIVersion:               "kubelet.config.k8s.io/v1beta1",
		Kind:                     "KubeletConfiguration",
		CgroupDriver:             "cgroupfs",
		FailCgroupV1:             false,
		CgroupRoot:               c.CgroupRoot,
		ClusterDNS:               []string{wc.GetClusterDns()},
		ClusterDomain:            ClusterDomain,
		FailSwapOn:               false,
		RotateCertificates:       true,
		ServerTLSBootstrap:       true,
		ContainerRuntimeEndpoint: c.CRIEndpoint,
		PodLogsDir:               filepath.Join(c.KubeletRootDir, "pod-logs"),
		EvictionHard:             EvictionHard,
		ResolvConf:               "/etc/resolv.conf",
	}
	k.Authentication.X509.ClientCAFile = c.path(kubeletClientCA)
	k.Authentication.Webhook.Enabled = true
	k.Authentication.Anonymous.Enabled = false
	k.Authorization.Mode = "Webhook"
	return yaml.Marshal(k)
}

// nodeIP is the node's VPN address without its prefix.
func nodeIP(wc *pb.WorkerConfig) (string, error) {
	ip, _, err := net.ParseCIDR(wc.GetAddress())
	if err != nil {
		return "", fmt.Errorf("VPN address: %w", err)
	}
	return ip.String(), nil
}

// kubeletFlags are the kubelet's command line arguments.
func kubeletFlags(c Config, wc *pb.WorkerConfig) ([]string, error) {
	ip, err := nodeIP(wc)
	if err != nil {
		return nil, err
	}
	return []string{
		"--config=" + c.path(kubeletConfigFile),
		"--bootstrap-kubeconfig=" + c.path(bootstrapKubeconfig),
		"--kubeconfig=" + c.path(kubeletKubeconfig),
		"--cert-dir=" + c.path(kubeletCertDir),
		"--root-dir=" + c.KubeletRootDir,
		"--node-ip=" + ip,
		"--hostname-override=" + c.Name,
	}, nil
}

// renderBootstrapKubeconfig is the kubeconfig the kubelet's TLS bootstrap
// authenticates with: the bootstrap token, user kubelet-bootstrap.
func renderBootstrapKubeconfig(wc *pb.WorkerConfig) ([]byte, error) {
	cluster := wc.GetCluster()
	if cluster == "" {
		cluster = "oneinfra"
	}
	return kubeconfig.WithToken(cluster, wc.GetApiServer(), wc.GetClusterCaPem(), BootstrapUser, wc.GetBootstrapToken())
}

// writeKubeletFiles writes the kubelet's files that differ from what is
// there and makes its directories. It reports whether any file changed.
func writeKubeletFiles(c Config, wc *pb.WorkerConfig) (bool, error) {
	kubeconfig, err := renderBootstrapKubeconfig(wc)
	if err != nil {
		return false, err
	}
	config, err := renderKubeletConfig(c, wc)
	if err != nil {
		return false, err
	}
	if _, err := tlsutil.ParseCertsPEM(wc.GetKubeletClientCaPem()); err != nil {
		return false, fmt.Errorf("kubelet client CA: %w", err)
	}
	for _, d := range []string{c.path(kubeletDir), c.path(kubeletCertDir), c.path(cniIPAMDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return false, err
		}
	}
	if err := os.MkdirAll(c.KubeletRootDir, 0o700); err != nil {
		return false, err
	}
	changed := false
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{c.path(bootstrapKubeconfig), kubeconfig, 0o600},
		{c.path(kubeletConfigFile), config, 0o644},
		{c.path(kubeletClientCA), wc.GetKubeletClientCaPem(), 0o644},
	} {
		ch, err := writeIfChanged(f.path, f.data, f.mode)
		if err != nil {
			return false, err
		}
		changed = changed || ch
	}
	return changed, nil
}

// writeIfChanged writes data atomically when the file holds something
// else or has another mode, and reports whether it wrote.
func writeIfChanged(path string, data []byte, mode os.FileMode) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm() == mode {
			return false, nil
		}
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	return true, tlsutil.WriteFileAtomic(path, data, mode)
}
