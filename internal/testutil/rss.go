package testutil

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// RSSKiB is the resident memory of process pid ("self" for this one), in
// KiB, from /proc/PID/status.
func RSSKiB(pid string) (int64, error) { return StatusKiB(pid, "VmRSS") }

// StatusKiB is a memory figure of /proc/PID/status in KiB, by its name:
// VmRSS, or its parts RssAnon (heap, stacks) and RssFile (mapped files:
// the executable's own pages).
func StatusKiB(pid, name string) (int64, error) {
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+":"); ok {
			var kib int64
			_, err := fmt.Sscan(v, &kib)
			return kib, err
		}
	}
	return 0, fmt.Errorf("/proc/%s/status: no %s", pid, name)
}
