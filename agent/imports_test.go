package agent

import (
	"os/exec"
	"strings"
	"testing"
)

// TestAgentImportsNoCoordinator holds the boundary between the two sides:
// the agents (hypervisor and worker) share only internal/vocab and the
// other internal packages with the coordinator, never coordinator/...
// (tests may use its packages to make their fixtures).
func TestAgentImportsNoCoordinator(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/oneinfra/oneinfra/agent/...", "github.com/oneinfra/oneinfra/cmd/oneinfra-agent").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/oneinfra/oneinfra/coordinator") {
			t.Errorf("the agent imports %s: what both sides share belongs in internal/vocab", pkg)
		}
	}
}
