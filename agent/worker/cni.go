package worker

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"

	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// CNIConfFile is the worker's CNI configuration, in --cni-conf-dir.
const CNIConfFile = "10-oneinfra.conflist"

// CNIBridge is the bridge the node's pods are attached to.
const CNIBridge = "oi-cni0"

// renderCNI renders the CNI configuration list: a bridge with host-local
// addresses from the node's pod CIDR (kept under the data directory, so
// that workers sharing a machine do not share allocations) and portmap.
func renderCNI(c Config, wc *pb.WorkerConfig) ([]byte, error) {
	_, subnet, err := net.ParseCIDR(wc.GetPodCidr())
	if err != nil {
		return nil, fmt.Errorf("pod CIDR: %w", err)
	}
	type obj = map[string]any
	conf := obj{
		"cniVersion": "1.0.0",
		"name":       "oneinfra",
		"plugins": []obj{
			{
				"type":        "bridge",
				"bridge":      CNIBridge,
				"isGateway":   true,
				"ipMasq":      false,
				"hairpinMode": true,
				"ipam": obj{
					"type":    "host-local",
					"ranges":  [][]obj{{{"subnet": subnet.String()}}},
					"routes":  []obj{{"dst": "0.0.0.0/0"}},
					"dataDir": c.path(cniIPAMDir),
				},
			},
			{
				"type":         "portmap",
				"capabilities": obj{"portMappings": true},
			},
		},
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// writeCNI writes the CNI configuration when it differs.
func writeCNI(c Config, wc *pb.WorkerConfig) (bool, error) {
	b, err := renderCNI(c, wc)
	if err != nil {
		return false, err
	}
	if err := os.MkdirAll(c.CNIConfDir, 0o755); err != nil {
		return false, err
	}
	return writeIfChanged(filepath.Join(c.CNIConfDir, CNIConfFile), b, 0o644)
}
