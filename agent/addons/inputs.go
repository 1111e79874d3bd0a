package addons

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/oneinfra/oneinfra/internal/vocab"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Inputs is what the cluster's add-ons are rendered from.
type Inputs struct {
	Cluster string
	// APIServer is the https URL kube-proxy on the workers uses (reachable
	// through the VPN).
	APIServer    string
	ClusterCAPEM []byte
	PodCIDR      string
	ServiceCIDR  string
	// ClusterDNS is the DNS service IP (the 10th address of the service
	// CIDR, computed by the caller).
	ClusterDNS string
	// DNSDomain is the cluster DNS domain, "cluster.local".
	DNSDomain string
	// Images has the keys ImageKubeProxy and ImageCoreDNS.
	Images          map[string]string
	BootstrapTokens []BootstrapToken
}

// BootstrapToken is a bootstrap token, "ID.Secret", for the kubelets of
// joining workers. A zero Expires means it never expires.
type BootstrapToken struct {
	ID, Secret  string
	Expires     time.Time
	Description string
}

// String names the token without its secret, so that a token (or Inputs)
// given to a logger or a %v does not leak it.
func (t BootstrapToken) String() string {
	if t.Expires.IsZero() {
		return fmt.Sprintf("bootstrap token %s", t.ID)
	}
	return fmt.Sprintf("bootstrap token %s (expires %s)", t.ID, t.Expires.UTC().Format(time.RFC3339))
}

// GoString is String, for %#v.
func (t BootstrapToken) GoString() string { return t.String() }

var (
	tokenID     = regexp.MustCompile(`^[a-z0-9]{6}$`)
	tokenSecret = regexp.MustCompile(`^[a-z0-9]{16}$`)
)

// Validate checks Inputs and returns every problem found, each naming its
// field ("Inputs.PodCIDR: ..."). Token secrets are never quoted.
func (in Inputs) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("Inputs.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if in.Cluster == "" {
		bad("Cluster", "required")
	}
	if in.APIServer == "" {
		bad("APIServer", "required")
	} else if u, err := url.Parse(in.APIServer); err != nil {
		bad("APIServer", "%q is not a URL: %v", in.APIServer, err)
	} else if _, _, err := apiAddress(u); u.Scheme != "https" || err != nil {
		bad("APIServer", "%q is not an https URL with an IP address and a port", in.APIServer)
	}
	if len(in.ClusterCAPEM) == 0 {
		bad("ClusterCAPEM", "required")
	} else if block, _ := pem.Decode(in.ClusterCAPEM); block == nil || block.Type != "CERTIFICATE" {
		bad("ClusterCAPEM", "not a PEM certificate")
	} else if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		bad("ClusterCAPEM", "%v", err)
	}
	pods, podsErr := parseCIDR(in.PodCIDR)
	if podsErr != nil {
		bad("PodCIDR", "%v", podsErr)
	}
	services, servicesErr := parseCIDR(in.ServiceCIDR)
	if servicesErr != nil {
		bad("ServiceCIDR", "%v", servicesErr)
	}
	if podsErr == nil && servicesErr == nil && pods.Overlaps(services) {
		bad("PodCIDR", "%s overlaps ServiceCIDR %s", in.PodCIDR, in.ServiceCIDR)
	}
	if in.ClusterDNS == "" {
		bad("ClusterDNS", "required")
	} else if ip, err := netip.ParseAddr(in.ClusterDNS); err != nil {
		bad("ClusterDNS", "%q is not an IP address", in.ClusterDNS)
	} else if servicesErr == nil && !services.Contains(ip) {
		bad("ClusterDNS", "%s is not in ServiceCIDR %s", in.ClusterDNS, in.ServiceCIDR)
	}
	if in.DNSDomain == "" {
		bad("DNSDomain", "required")
	} else if msgs := validation.IsDNS1123Subdomain(in.DNSDomain); len(msgs) > 0 {
		bad("DNSDomain", "%q: %s", in.DNSDomain, strings.Join(msgs, "; "))
	}
	for _, key := range []string{vocab.ImageKubeProxy, vocab.ImageCoreDNS} {
		if strings.TrimSpace(in.Images[key]) == "" {
			bad(fmt.Sprintf("Images[%q]", key), "required")
		}
	}
	seen := map[string]bool{}
	for i, t := range in.BootstrapTokens {
		field := fmt.Sprintf("BootstrapTokens[%d]", i)
		if !tokenID.MatchString(t.ID) {
			bad(field+".ID", "%q is not 6 characters of [a-z0-9]", t.ID)
		} else if seen[t.ID] {
			bad(field+".ID", "%q is repeated", t.ID)
		}
		seen[t.ID] = true
		if !tokenSecret.MatchString(t.Secret) {
			bad(field+".Secret", "not 16 characters of [a-z0-9]")
		}
	}
	return errors.Join(errs...)
}

func parseCIDR(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, errors.New("required")
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, fmt.Errorf("%q is not a CIDR", s)
	}
	return p.Masked(), nil
}

// apiAddress is the IP and port of the APIServer URL.
func apiAddress(u *url.URL) (netip.Addr, int32, error) {
	ip, err := netip.ParseAddr(u.Hostname())
	if err != nil {
		return netip.Addr{}, 0, err
	}
	port, err := strconv.ParseUint(u.Port(), 10, 16)
	if err != nil || port == 0 {
		return netip.Addr{}, 0, fmt.Errorf("port %q", u.Port())
	}
	return ip, int32(port), nil
}
