package ingress

import (
	"context"
	"encoding/csv"
	"fmt"
	"sort"
	"strings"

	"github.com/oneinfra/oneinfra/agent/host"
)

// ServerStatus is haproxy's view of one API server of the ingress.
type ServerStatus struct {
	// Name is the API server's component name.
	Name string
	// Address is host:port.
	Address string
	// Status is haproxy's: UP, DOWN, MAINT, or a transition such as
	// "UP 1/2" (one failed check of the two that take it down).
	Status string
	// Check is the last check's result, such as "L7OK 200", "L7STS 500"
	// or "L6RSP" (a TLS failure, an untrusted certificate for example).
	Check string
	// Detail says more about the last check, for example "Server presented
	// an SSL certificate different from the configured one".
	Detail string
}

// Up reports whether haproxy sends new connections to the server.
func (s ServerStatus) Up() bool { return strings.HasPrefix(s.Status, "UP") }

// Servers returns the state of every API server in the running haproxy of
// the ingress at paths, sorted by name, as its current worker sees it.
func Servers(ctx context.Context, paths host.Paths) ([]ServerStatus, error) {
	out, err := masterCommand(ctx, paths.Config(MasterSocket), "@1 show stat")
	if err != nil {
		return nil, fmt.Errorf("haproxy servers: %w", err)
	}
	return parseShowStat(out)
}

// parseShowStat reads the CSV of "show stat": a header line "# pxname,..."
// then one line per frontend, server and backend.
func parseShowStat(out string) ([]ServerStatus, error) {
	out = strings.TrimPrefix(strings.TrimSpace(out), "# ")
	r := csv.NewReader(strings.NewReader(out))
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil || len(rows) == 0 {
		return nil, fmt.Errorf("haproxy servers: unexpected show stat output %q: %v", firstLine(out), err)
	}
	col := map[string]int{}
	for i, name := range rows[0] {
		col[name] = i
	}
	for _, need := range []string{"pxname", "svname", "status", "check_status"} {
		if _, ok := col[need]; !ok {
			return nil, fmt.Errorf("haproxy servers: show stat has no %s column", need)
		}
	}
	get := func(row []string, name string) string {
		if i, ok := col[name]; ok && i < len(row) {
			return row[i]
		}
		return ""
	}
	var servers []ServerStatus
	for _, row := range rows[1:] {
		sv := get(row, "svname")
		if get(row, "pxname") != backendName || sv == "FRONTEND" || sv == "BACKEND" {
			continue
		}
		s := ServerStatus{Name: sv, Address: get(row, "addr"), Status: get(row, "status"), Check: get(row, "check_status")}
		if code := get(row, "check_code"); code != "" {
			s.Check += " " + code
		}
		s.Detail = get(row, "last_chk")
		if s.Detail == "" {
			s.Detail = get(row, "check_desc")
		}
		servers = append(servers, s)
	}
	sort.Slice(servers, func(i, j int) bool { return servers[i].Name < servers[j].Name })
	return servers, nil
}
