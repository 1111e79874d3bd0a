package gossip

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/testutil"
)

func testKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func startMember(t *testing.T, name string, key []byte, join ...string) *Member {
	t.Helper()
	m, err := Start(Config{
		Name: name, Addr: "127.0.0.1:0", Join: join, Key: key, Local: true,
		RejoinInterval: 200 * time.Millisecond, Meta: []byte(name),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	t.Cleanup(func() { _ = m.Kill() })
	return m
}

// sees checks that m sees each of names in the given state.
func sees(m *Member, st State, names ...string) error {
	view := m.View()
	for _, n := range names {
		if o, ok := view[n]; !ok || o.State != st {
			return fmt.Errorf("%s sees %s as %+v (known %v), want %s", m.ml.LocalNode().Name, n, o, ok, st)
		}
	}
	return nil
}

func TestMembersSeeEachOtherAndRefuseAWrongKey(t *testing.T) {
	key := testKey(t)
	observer := startMember(t, ServerMember("s1"), key)
	a := startMember(t, HypervisorMember("hv-a"), key, observer.Addr())
	b := startMember(t, HypervisorMember("hv-b"), key, a.Addr())
	all := []string{ServerMember("s1"), HypervisorMember("hv-a"), HypervisorMember("hv-b")}
	testutil.Eventually(t, 30*time.Second, "members see each other", func() error {
		for _, m := range []*Member{observer, a, b} {
			if err := sees(m, Alive, all...); err != nil {
				return err
			}
		}
		return nil
	})
	for _, n := range a.ml.Members() {
		if n.Name == HypervisorMember("hv-b") && !bytes.Equal(n.Meta, []byte("hv/hv-b")) {
			t.Errorf("hv-b's metadata as hv-a sees it: %q", n.Meta)
		}
	}

	// A member with another key is refused: its join fails and nobody
	// lists it.
	intruder := startMember(t, HypervisorMember("intruder"), testKey(t))
	if n, err := intruder.Join([]string{observer.Addr(), a.Addr()}); err == nil || n != 0 {
		t.Errorf("join with a wrong key: %d answered, err %v", n, err)
	}
	time.Sleep(time.Second) // a few gossip rounds
	for _, m := range []*Member{observer, a, b} {
		if _, ok := m.View()[HypervisorMember("intruder")]; ok {
			t.Errorf("%s lists the intruder", m.ml.LocalNode().Name)
		}
	}
	if got := len(intruder.ml.Members()); got != 1 {
		t.Errorf("the intruder sees %d members, want only itself", got)
	}

	// A member that crashes goes suspect, then dead, with the time since.
	if err := b.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	testutil.Eventually(t, 20*time.Second, "hv-b dead", func() error {
		return sees(observer, Dead, HypervisorMember("hv-b"))
	})
	if o, _ := observer.Observe(HypervisorMember("hv-b")); o.Since.Before(killed) {
		t.Errorf("dead since %v, before it was killed (%v)", o.Since, killed)
	}
	if err := sees(observer, Alive, HypervisorMember("hv-a")); err != nil {
		t.Error(err)
	}
}

func TestStartRefusesABadKey(t *testing.T) {
	if _, err := Start(Config{Name: "hv/x", Addr: "127.0.0.1:0", Key: []byte("short")}); err == nil {
		t.Fatal("a 5-byte key was accepted")
	}
}

func TestLogWriterLevels(t *testing.T) {
	var buf bytes.Buffer
	w := &logWriter{logger: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	fmt.Fprintln(w, "[DEBUG] memberlist: Stream connection from=127.0.0.1:1")
	fmt.Fprintln(w, "[WARN] memberlist: Refuting a suspect message")
	out := buf.String()
	if bytes.Contains(buf.Bytes(), []byte("Stream connection")) {
		t.Errorf("debug line logged at info: %s", out)
	}
	if !bytes.Contains(buf.Bytes(), []byte(`level=WARN msg="Refuting a suspect message"`)) {
		t.Errorf("warning not logged as one: %s", out)
	}
}
