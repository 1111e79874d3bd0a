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

// Run runs a host command; its error carries the command's standard error.
func Run(name string, args ...string) error {
	_, err := Output(name, args...)
	return err
}

// Output runs a host command and returns its standard output, or an error
// with its standard error.
func Output(name string, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.String(), nil
}

// IP runs `ip ARGS...`.
func IP(args ...string) error { return Run("ip", args...) }

// IPTables runs `iptables -w ARGS...`.
func IPTables(args ...string) error { return Run("iptables", append([]string{"-w"}, args...)...) }

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
	return Run("iptables", append([]string{"-w", "-t", table, "-A", chain}, rule...)...)
}

// EnsureChain makes chain of table hold exactly rules, in order, creating
// it if missing; it is rebuilt only when it differs.
func EnsureChain(table, chain string, rules [][]string) error {
	ipt := func(args ...string) error { return IPTables(append([]string{"-t", table}, args...)...) }
	if ipt("-S", chain) != nil {
		if err := ipt("-N", chain); err != nil {
			return err
		}
	}
	same := true
	for _, r := range rules {
		if ipt(append([]string{"-C", chain}, r...)...) != nil {
			same = false
			break
		}
	}
	if same {
		out, err := Output("iptables", "-w", "-t", table, "-S", chain)
		if err != nil {
			return err
		}
		// -S lists "-N CHAIN" and then one line per rule.
		same = len(strings.Split(strings.TrimSpace(out), "\n")) == 1+len(rules)
	}
	if same {
		return nil
	}
	if err := ipt("-F", chain); err != nil {
		return err
	}
	for _, r := range rules {
		if err := ipt(append([]string{"-A", chain}, r...)...); err != nil {
			return err
		}
	}
	return nil
}

// RemoveChain empties and deletes chain of table, if it exists.
func RemoveChain(table, chain string) {
	_ = IPTables("-t", table, "-F", chain)
	_ = IPTables("-t", table, "-X", chain)
}

// DeleteRule removes an iptables rule from chain of table if it is there.
func DeleteRule(table, chain string, rule ...string) error {
	check := append([]string{"-w", "-t", table, "-C", chain}, rule...)
	if exec.Command("iptables", check...).Run() != nil {
		return nil
	}
	return Run("iptables", append([]string{"-w", "-t", table, "-D", chain}, rule...)...)
}

// EnsureTableRule makes the packets a policy routing rule selects (by
// selector and value: "iif" and an interface, or "from" and an address)
// be routed with table, so networks that overlap between interfaces (two
// clusters' pod CIDRs) are kept apart.
func EnsureTableRule(selector, value string, table int) error {
	out, err := exec.Command("ip", "rule", "show", selector, value).Output()
	if err != nil {
		return fmt.Errorf("ip rule show %s %s: %w", selector, value, err)
	}
	if strings.Contains(string(out), fmt.Sprintf("lookup %d", table)) {
		return nil
	}
	return IP("rule", "add", selector, value, "lookup", fmt.Sprint(table))
}

// RemoveTableRule removes the rules EnsureTableRule made.
func RemoveTableRule(selector, value string, table int) {
	for IP("rule", "del", selector, value, "lookup", fmt.Sprint(table)) == nil {
	}
}
