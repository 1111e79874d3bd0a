// Package version holds the build version and the Kubernetes versions this
// build can run.
package version

// Version is set at build time with -ldflags "-X .../internal/version.Version=...".
var Version = "dev"

// KubernetesVersions are the supported Kubernetes versions, newest first.
var KubernetesVersions = []string{"1.37.2"}

// DefaultKubernetesVersion is the newest supported version.
func DefaultKubernetesVersion() string { return KubernetesVersions[0] }

// SupportsKubernetes reports whether v is a supported Kubernetes version.
func SupportsKubernetes(v string) bool {
	for _, s := range KubernetesVersions {
		if s == v {
			return true
		}
	}
	return false
}
