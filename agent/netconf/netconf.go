// Package netconf changes this host's network configuration the way an
// operator would, with iproute2 and iptables, idempotently: every function
// leaves the host as wanted whether or not it already was.
package netconf

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// run runs a command and returns its error with its output.
func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// IP runs `ip ARGS...`.
func IP(args ...string) error { return run("ip", args...) }

// IPTables runs `iptables -w ARGS...`.
func IPTables(args ...string) error { return run("iptables", append([]string{"-w"}, args...)...) }

// EnableForwarding turns IPv4 forwarding on.
func EnableForwarding() error {
	const path = "/proc/sys/net/ipv4/ip_forward"
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enabling IPv4 forwarding: %w", err)
	}
	return nil
}

// EnsureRule appends an iptables rule to chain of table unless it is there.
func EnsureRule(table, chain string, rule ...string) error {
	check := append([]string{"-w", "-t", table, "-C", chain}, rule...)
	if exec.Command("iptables", check...).Run() == nil {
		return nil
	}
	return run("iptables", append([]string{"-w", "-t", table, "-A", chain}, rule...)...)
}

// DeleteRule removes an iptables rule from chain of table if it is there.
func DeleteRule(table, chain string, rule ...string) error {
	check := append([]string{"-w", "-t", table, "-C", chain}, rule...)
	if exec.Command("iptables", check...).Run() != nil {
		return nil
	}
	return run("iptables", append([]string{"-w", "-t", table, "-D", chain}, rule...)...)
}

// EnsureInputTable makes packets that arrive on iface be routed with table
// (a policy routing rule), so networks that overlap between interfaces
// (two clusters' pod CIDRs) are kept apart.
func EnsureInputTable(iface string, table int) error {
	out, err := exec.Command("ip", "rule", "show", "iif", iface).Output()
	if err != nil {
		return fmt.Errorf("ip rule show iif %s: %w", iface, err)
	}
	if strings.Contains(string(out), fmt.Sprintf("lookup %d", table)) {
		return nil
	}
	return IP("rule", "add", "iif", iface, "lookup", fmt.Sprint(table))
}

// RemoveInputTable removes the rules EnsureInputTable made for iface.
func RemoveInputTable(iface string, table int) {
	for IP("rule", "del", "iif", iface, "lookup", fmt.Sprint(table)) == nil {
	}
}
