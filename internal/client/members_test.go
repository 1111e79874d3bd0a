package client

import (
	"slices"
	"testing"

	"google.golang.org/grpc/metadata"
)

func TestMembers(t *testing.T) {
	header := metadata.Pairs(MembersHeader, FormatMembers(map[string]string{"s1": "10.0.0.1:7443", "s2": "10.0.0.2:7443"}))
	got := ParseMembers(header)
	if len(got) != 2 || got["s2"] != "10.0.0.2:7443" {
		t.Fatalf("ParseMembers: %v", got)
	}
	for _, bad := range []string{"", "s1", "=a", "s1=", "s1=a,,s2=b"} {
		if m := ParseMembers(metadata.Pairs(MembersHeader, bad)); m != nil {
			t.Errorf("ParseMembers(%q) = %v", bad, m)
		}
	}
	m := NewMembers([]string{"10.0.0.1:7443"}, nil)
	var saved []string
	m.OnChange(func(addrs []string, ids map[string]string) { saved = addrs })
	m.learn(got)
	if !slices.Equal(m.Addrs(), []string{"10.0.0.1:7443", "10.0.0.2:7443"}) || m.expected("10.0.0.2:7443") != "s2" || len(saved) != 2 {
		t.Errorf("learned: %v %q %v", m.Addrs(), m.expected("10.0.0.2:7443"), saved)
	}
	// A connection to given servers dials those only, whatever it hears:
	// a server forwarding to the leader must not wander to another.
	fixed := &Members{addrs: []string{"10.0.0.9:7443"}, fixed: true}
	fixed.learn(got)
	if !slices.Equal(fixed.Addrs(), []string{"10.0.0.9:7443"}) || fixed.expected("10.0.0.2:7443") != "" {
		t.Errorf("a fixed connection learned: %v", fixed.Addrs())
	}
}
