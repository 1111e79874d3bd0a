// Package testutil holds helpers shared by tests.
package testutil

import (
	"testing"
	"time"
)

// Eventually retries f every poll until it returns nil, and fails the test
// with f's last error when timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
