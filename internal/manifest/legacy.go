package manifest

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
)

// schema lists the keys allowed in a JSON object; a nil schema accepts
// any value without looking inside.
type schema map[string]schema

// kubeMetadata is the Kubernetes ObjectMeta of the original manifests:
// only name and labels are used, the rest is accepted and ignored.
var kubeMetadata = schema{
	"name": nil, "labels": nil, "namespace": nil, "annotations": nil,
	"uid": nil, "resourceVersion": nil, "generation": nil, "generateName": nil,
	"selfLink": nil, "creationTimestamp": nil, "deletionTimestamp": nil,
	"deletionGracePeriodSeconds": nil, "ownerReferences": nil,
	"finalizers": nil, "managedFields": nil, "clusterName": nil,
}

// legacySchema is the Cluster of the original oneinfra
// (cluster.oneinfra.ereslibre.es/v1alpha1). Keys with a nil schema that
// legacyCluster does not read (certificates, keys, tokens, status) are
// accepted and ignored: oneinfra makes its own.
var legacySchema = schema{
	"apiVersion": nil,
	"kind":       nil,
	"metadata":   kubeMetadata,
	"spec": schema{
		"kubernetesVersion":      nil,
		"controlPlaneReplicas":   nil,
		"certificateAuthorities": nil,
		"etcdServer":             nil,
		"apiServer":              schema{"ca": nil, "serviceAccount": nil, "extraSANs": nil},
		"vpn":                    schema{"enabled": nil, "privateKey": nil, "publicKey": nil, "CIDR": nil},
		"vpnCIDR":                nil, // before spec.vpn existed
		"joinKey":                nil,
		"joinTokens":             nil,
		"networking": schema{
			"clusterCIDR": nil, "serviceCIDR": nil,
			"nodeCIDRMaskSize": nil, "nodeCIDRMaskSizeIPv4": nil, "nodeCIDRMaskSizeIPv6": nil,
		},
	},
	"status": nil,
}

// legacyCluster holds the fields of the original Cluster that are used.
type legacyCluster struct {
	Metadata struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		KubernetesVersion    string `json:"kubernetesVersion"`
		ControlPlaneReplicas int32  `json:"controlPlaneReplicas"`
		APIServer            struct {
			ExtraSANs []string `json:"extraSANs"`
		} `json:"apiServer"`
		VPN struct {
			Enabled bool   `json:"enabled"`
			CIDR    string `json:"CIDR"`
		} `json:"vpn"`
		VPNCIDR    string `json:"vpnCIDR"`
		Networking struct {
			ClusterCIDR string `json:"clusterCIDR"`
			ServiceCIDR string `json:"serviceCIDR"`
		} `json:"networking"`
	} `json:"spec"`
}

// decodeLegacyCluster converts an original oneinfra Cluster (obj, and j
// its JSON) into a Cluster, refusing keys the original schema did not have.
func decodeLegacyCluster(j []byte, obj map[string]any) (*pb.Cluster, error) {
	if errs := checkSchema("", obj, legacySchema); len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "; "))
	}
	var l legacyCluster
	if err := json.Unmarshal(j, &l); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, fmt.Errorf("%s: must be %s, got %s", te.Field, goTypeName(te.Type), te.Value)
		}
		return nil, err
	}
	s := l.Spec
	c := &pb.Cluster{
		Metadata: &pb.ObjectMeta{Name: l.Metadata.Name, Labels: l.Metadata.Labels},
		Spec: &pb.ClusterSpec{
			KubernetesVersion: s.KubernetesVersion,
			ControlPlane:      &pb.ControlPlaneSpec{},
			Vpn:               &pb.VPNSpec{Enabled: s.VPN.Enabled, Cidr: s.VPN.CIDR},
			Networking:        &pb.NetworkingSpec{PodCidr: s.Networking.ClusterCIDR, ServiceCidr: s.Networking.ServiceCIDR},
		},
	}
	if s.ControlPlaneReplicas != 0 {
		r := s.ControlPlaneReplicas
		c.Spec.ControlPlane.Replicas = &r
	}
	if c.Spec.Vpn.Cidr == "" {
		c.Spec.Vpn.Cidr = s.VPNCIDR
	}
	if !c.Spec.Vpn.Enabled && c.Spec.Vpn.Cidr == "" {
		c.Spec.Vpn = nil
	}
	if len(s.APIServer.ExtraSANs) > 0 {
		c.Spec.ApiServer = &pb.APIServerSpec{ExtraSans: s.APIServer.ExtraSANs}
	}
	if len(c.Metadata.Labels) == 0 {
		c.Metadata.Labels = nil
	}
	return c, nil
}

// checkSchema returns one message per key of obj (at path) not in s.
func checkSchema(path string, obj map[string]any, s schema) []string {
	var errs []string
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		sub, ok := s[k]
		switch {
		case !ok:
			errs = append(errs, unknownField(path, k))
		case sub != nil:
			if m, ok := obj[k].(map[string]any); ok {
				errs = append(errs, checkSchema(join(path, k), m, sub)...)
			}
		}
	}
	return errs
}

// goTypeName names a Go type in words, for type errors.
func goTypeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Slice:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping"
	}
	return t.String()
}
