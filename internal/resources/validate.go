package resources

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"

	"github.com/oneinfra/oneinfra/internal/version"
)

// VPN CIDR prefix lengths: a /29 is the smallest block that leaves room for
// the ingress endpoint and a few peers.
const (
	MinVPNPrefix = 16
	MaxVPNPrefix = 29
)

// FieldError is one invalid field of a resource. Field is the path in the
// manifest's YAML names, like "spec.controlPlane.replicas".
type FieldError struct {
	Field  string
	Detail string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Detail }

// fieldErrors collects the field errors of one object.
type fieldErrors []error

func (fe *fieldErrors) add(field, format string, args ...any) {
	*fe = append(*fe, &FieldError{Field: field, Detail: fmt.Sprintf(format, args...)})
}

// ValidateCluster checks a cluster against the rules of SPEC.md. Fields
// that DefaultCluster fills in may be empty. It returns every FieldError
// found, joined with errors.Join, or nil.
func ValidateCluster(c *pb.Cluster) error {
	var errs fieldErrors
	if c == nil {
		return &FieldError{Field: "spec", Detail: "required"}
	}
	validateType(&errs, c.ApiVersion, c.Kind, KindCluster)
	validateMeta(&errs, c.Metadata)
	s := c.Spec
	if s == nil {
		return errors.Join(errs...)
	}
	if v := s.KubernetesVersion; v != "" && !version.SupportsKubernetes(v) {
		errs.add("spec.kubernetesVersion", "unsupported version %q (supported: %s)", v, strings.Join(version.KubernetesVersions, ", "))
	}
	if r := s.GetControlPlane(); r != nil && r.Replicas != nil && (*r.Replicas < MinReplicas || *r.Replicas > MaxReplicas) {
		errs.add("spec.controlPlane.replicas", "must be between %d and %d, got %d", MinReplicas, MaxReplicas, *r.Replicas)
	}
	if b := s.GetBackup(); b != nil {
		if d, err := time.ParseDuration(b.Schedule); err != nil || d < MinBackupSchedule {
			errs.add("spec.backup.schedule", "must be an interval of %s or more, such as 6h, got %q", MinBackupSchedule, b.Schedule)
		}
		if b.Retain < 1 || b.Retain > MaxBackupRetain {
			errs.add("spec.backup.retain", "must be between 1 and %d, got %d", MaxBackupRetain, b.Retain)
		}
	}
	var vpn netip.Prefix
	if cidr := s.GetVpn().GetCidr(); cidr != "" {
		p, err := parseCanonicalPrefix(cidr)
		switch {
		case err != nil:
			errs.add("spec.vpn.cidr", "%v", err)
		case !p.Addr().Is4():
			errs.add("spec.vpn.cidr", "must be an IPv4 CIDR, got %q", cidr)
		case p.Bits() < MinVPNPrefix || p.Bits() > MaxVPNPrefix:
			errs.add("spec.vpn.cidr", "prefix length must be between /%d and /%d (room for the endpoint and its peers), got /%d", MinVPNPrefix, MaxVPNPrefix, p.Bits())
		default:
			vpn = p
		}
	}
	for i, san := range s.GetApiServer().GetExtraSans() {
		if !isIP(san) && !isSANName(san) {
			errs.add(fmt.Sprintf("spec.apiServer.extraSANs[%d]", i), "must be a DNS name or an IP address, got %q", san)
		}
	}
	var pod, svc netip.Prefix
	if cidr := s.GetNetworking().GetPodCidr(); cidr != "" {
		if p, err := parseCanonicalPrefix(cidr); err != nil {
			errs.add("spec.networking.podCIDR", "%v", err)
		} else {
			pod = p
		}
	}
	if cidr := s.GetNetworking().GetServiceCidr(); cidr != "" {
		if p, err := parseCanonicalPrefix(cidr); err != nil {
			errs.add("spec.networking.serviceCIDR", "%v", err)
		} else {
			svc = p
		}
	}
	overlap := func(field string, a netip.Prefix, other string, b netip.Prefix) {
		if a.IsValid() && b.IsValid() && a.Overlaps(b) {
			errs.add(field, "%s overlaps %s %s", a, other, b)
		}
	}
	overlap("spec.networking.serviceCIDR", svc, "spec.networking.podCIDR", pod)
	overlap("spec.vpn.cidr", vpn, "spec.networking.podCIDR", pod)
	overlap("spec.vpn.cidr", vpn, "spec.networking.serviceCIDR", svc)
	return errors.Join(errs...)
}

// ValidateHypervisor checks a hypervisor against the rules of SPEC.md. It
// returns every FieldError found, joined with errors.Join, or nil.
func ValidateHypervisor(h *pb.Hypervisor) error {
	var errs fieldErrors
	if h == nil {
		return &FieldError{Field: "spec", Detail: "required"}
	}
	validateType(&errs, h.ApiVersion, h.Kind, KindHypervisor)
	validateMeta(&errs, h.Metadata)
	s := h.GetSpec()
	switch a := s.GetAddress(); {
	case a == "":
		errs.add("spec.address", "required")
	case !isIP(a):
		errs.add("spec.address", "must be an IP address, got %q", a)
	}
	switch a := s.GetPublicAddress(); {
	case s.GetPublic() && a == "":
		errs.add("spec.publicAddress", "required when spec.public is true")
	case !s.GetPublic() && a != "":
		errs.add("spec.publicAddress", "must be empty unless spec.public is true")
	case a != "" && !isIP(a):
		errs.add("spec.publicAddress", "must be an IP address, got %q", a)
	}
	if err := CheckPortRange(s.GetPortRange()); err != nil {
		errs.add("spec.portRange", "%v", err)
	}
	return errors.Join(errs...)
}

func validateType(errs *fieldErrors, apiVersion, kind, want string) {
	if apiVersion != "" && apiVersion != APIVersion {
		errs.add("apiVersion", "must be %q, got %q", APIVersion, apiVersion)
	}
	if kind != "" && kind != want {
		errs.add("kind", "must be %q, got %q", want, kind)
	}
}

func validateMeta(errs *fieldErrors, m *pb.ObjectMeta) {
	switch name := m.GetName(); {
	case name == "":
		errs.add("metadata.name", "required")
	case !IsDNS1123Label(name):
		errs.add("metadata.name", "must be a DNS-1123 label (at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit), got %q", name)
	}
	keys := make([]string, 0, len(m.GetLabels()))
	for k := range m.GetLabels() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := checkLabelKey(k); err != nil {
			errs.add("metadata.labels", "key %q: %v", k, err)
		}
		if v := m.Labels[k]; v != "" && !isLabelName(v) {
			errs.add("metadata.labels", "value %q of key %q must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", v, k)
		}
	}
}

// IsDNS1123Label reports whether s is a DNS-1123 label: 1 to 63 lowercase
// letters, digits and '-', starting and ending with a letter or digit.
func IsDNS1123Label(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(s)-1:
		default:
			return false
		}
	}
	return true
}

// IsDNS1123Subdomain reports whether s is a DNS-1123 subdomain: dot
// separated DNS-1123 labels, at most 253 characters.
func IsDNS1123Subdomain(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !IsDNS1123Label(l) {
			return false
		}
	}
	return true
}

// isSANName reports whether s may be a DNS name in a certificate: a
// DNS-1123 subdomain, optionally with a leading "*." wildcard.
func isSANName(s string) bool {
	return IsDNS1123Subdomain(strings.TrimPrefix(s, "*."))
}

// isIP reports whether s is a plain IPv4 or IPv6 address (no zone).
func isIP(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Zone() == ""
}

// checkLabelKey checks a Kubernetes-style label key: an optional DNS-1123
// subdomain prefix and '/', then a name.
func checkLabelKey(k string) error {
	prefix, name, found := strings.Cut(k, "/")
	if !found {
		prefix, name = "", k
	} else if !IsDNS1123Subdomain(prefix) {
		return errors.New("prefix must be a DNS-1123 subdomain")
	}
	if !isLabelName(name) {
		return errors.New("name must be 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit")
	}
	return nil
}

// isLabelName reports whether s is 1 to 63 alphanumerics, '-', '_' or '.',
// starting and ending with an alphanumeric.
func isLabelName(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || i == len(s)-1 || (c != '-' && c != '_' && c != '.')) {
			return false
		}
	}
	return true
}
