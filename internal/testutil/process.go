package testutil

import (
	"bytes"
	"os/exec"
	"testing"
)

// logTail is how much of a process's output a failed test logs.
const logTail = 200000

// StartProcess starts cmd for the rest of the test: killed when it ends,
// its output kept and, if the test failed, the tail logged under name.
func StartProcess(t testing.TB, name string, cmd *exec.Cmd) {
	t.Helper()
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			out := logs.String()
			t.Logf("%s log (tail):\n%s", name, out[max(0, len(out)-logTail):])
		}
	})
}
