package health

import (
	"strings"
	"testing"
	"time"

	"github.com/oneinfra/oneinfra/internal/gossip"
	"github.com/oneinfra/oneinfra/internal/resources"
)

const (
	alive   = resources.HealthAlive
	suspect = resources.HealthSuspect
	dead    = resources.HealthDead
)

var t0 = time.Date(2026, 11, 27, 16, 0, 0, 0, time.UTC)

// at is t0 plus d: the fake clock.
func at(d time.Duration) time.Time { return t0.Add(d) }

func obs(st gossip.State, since time.Duration) *gossip.Observation {
	return &gossip.Observation{State: st, Since: at(since)}
}

func TestDecide(t *testing.T) {
	rules := Rules{} // the defaults: 90 s, 150 s, 15 s
	// The leader has led since t0 unless a case says otherwise; the
	// hypervisor last reported at t0+10m unless a case says otherwise.
	seen := 10 * time.Minute
	tests := []struct {
		name        string
		current     string
		now         time.Duration
		lastSeen    *time.Duration // nil: seen
		leaderSince time.Duration
		gossip      *gossip.Observation
		want        string
		reason      string
		msg         string
	}{
		{name: "fresh report", current: alive, now: seen + 5*time.Second, want: alive, reason: ReasonReporting},
		{name: "one missed heartbeat", current: alive, now: seen + 65*time.Second, want: alive},
		{name: "two missed heartbeats", current: alive, now: seen + 89*time.Second, want: alive},
		{name: "no report for SuspectAfter", current: alive, now: seen + 90*time.Second, want: suspect, reason: ReasonNoRecentReport, msg: "last report 1m30s ago"},
		{name: "suspect stays suspect short of DeadAfter", current: suspect, now: seen + 149*time.Second, want: suspect},
		{name: "no report for DeadAfter", current: suspect, now: seen + 151*time.Second, want: dead, reason: ReasonNotReporting, msg: "last report 2m31s ago"},
		{name: "straight from alive to dead on a long silence", current: alive, now: seen + 10*time.Minute, want: dead},
		{name: "dead, gossip dead too", current: suspect, now: seen + 151*time.Second, gossip: obs(gossip.Dead, seen+30*time.Second), want: dead,
			msg: "gossip reports it dead since 16:10:30"},
		{name: "gossip alive does not keep a silent one alive", current: suspect, now: seen + 151*time.Second, gossip: obs(gossip.Alive, 0), want: dead},
		{name: "gossip suspect does not hold off dead", current: suspect, now: seen + 151*time.Second, gossip: obs(gossip.Suspect, seen), want: dead},
		{name: "dead stays dead when gossip comes back", current: dead, now: seen + 10*time.Minute, gossip: obs(gossip.Alive, seen+9*time.Minute), want: dead},

		{name: "gossip dead briefly moves nothing", current: alive, now: seen + 5*time.Second, gossip: obs(gossip.Dead, seen+time.Second), want: alive},
		{name: "gossip suspect moves nothing", current: alive, now: seen + 20*time.Second, gossip: obs(gossip.Suspect, seen), want: alive},
		{name: "gossip dead for 15s: suspect", current: alive, now: seen + 20*time.Second, gossip: obs(gossip.Dead, seen+5*time.Second), want: suspect, reason: ReasonGossipDead,
			msg: "gossip reports it dead since 16:10:05"},
		{name: "gossip dead alone never makes dead", current: suspect, now: seen + 80*time.Second, gossip: obs(gossip.Dead, seen), want: suspect},
		{name: "gossip dead, reports flow: stays suspect", current: suspect, now: seen + 10*time.Second, gossip: obs(gossip.Dead, 0), want: suspect},

		{name: "a report brings a suspect back", current: suspect, now: seen + time.Second, want: alive, reason: ReasonReporting},
		{name: "a report brings a dead one back", current: dead, now: seen + time.Second, want: alive},
		{name: "a report brings a dead one back, gossip alive", current: dead, now: seen + time.Second, gossip: obs(gossip.Alive, seen), want: alive},
		{name: "empty health counts as alive", current: "", now: seen, want: alive},

		{name: "new leader: old silence is not blamed", current: alive, now: seen + 10*time.Minute, leaderSince: seen + 9*time.Minute, want: alive},
		{name: "new leader: suspect after SuspectAfter of its own", current: alive, now: seen + 10*time.Minute, leaderSince: seen + 10*time.Minute - 90*time.Second, want: suspect},
		{name: "new leader waits DeadAfter before dead", current: suspect, now: seen + 10*time.Minute, leaderSince: seen + 10*time.Minute - 149*time.Second, want: suspect},
		{name: "new leader after DeadAfter: dead", current: suspect, now: seen + 10*time.Minute, leaderSince: seen + 10*time.Minute - 150*time.Second, want: dead},
		{name: "new leader keeps a committed suspect", current: suspect, now: seen + 10*time.Minute, leaderSince: seen + 10*time.Minute - time.Second, want: suspect},
		{name: "new leader keeps a committed dead", current: dead, now: seen + 10*time.Minute, leaderSince: seen + 10*time.Minute - time.Second, want: dead},
		{name: "never reported, new leader", current: alive, now: seen, lastSeen: ptr(-1), leaderSince: seen - 100*time.Second, want: suspect, msg: "no report yet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := Input{Name: "hv-2", Current: tt.current, Now: at(tt.now), LastSeen: at(seen), LeaderSince: at(tt.leaderSince), Gossip: tt.gossip}
			if tt.lastSeen != nil {
				in.LastSeen = time.Time{}
			}
			d := rules.Decide(in)
			if d.Health != tt.want {
				t.Fatalf("health %s, want %s (%+v)", d.Health, tt.want, d)
			}
			current := tt.current
			if current == "" {
				current = alive
			}
			if d.Changed != (tt.want != current) {
				t.Errorf("changed %v", d.Changed)
			}
			if tt.reason != "" && d.Reason != tt.reason {
				t.Errorf("reason %q, want %q", d.Reason, tt.reason)
			}
			if tt.msg != "" && !strings.Contains(d.Message, tt.msg) {
				t.Errorf("message %q lacks %q", d.Message, tt.msg)
			}
			wantStatus := map[string]string{alive: "True", suspect: "Unknown", dead: "False"}[tt.want]
			if d.Status != wantStatus {
				t.Errorf("condition status %q, want %q", d.Status, wantStatus)
			}
		})
	}
}

func ptr(d time.Duration) *time.Duration { return &d }

// A run on a fake clock: a hypervisor reports every 30 s, stops, a single
// flaky gossip packet comes and goes, then it is dead, then it reports
// again.
func TestTimeline(t *testing.T) {
	rules := Rules{}
	health := alive
	var lastSeen time.Time
	var g *gossip.Observation
	var changes []string
	step := func(now time.Time) {
		d := rules.Decide(Input{Current: health, Now: now, LastSeen: lastSeen, LeaderSince: t0, Gossip: g})
		if d.Changed {
			changes = append(changes, now.Sub(t0).String()+" "+d.Health)
			health = d.Health
		}
	}
	for s := time.Duration(0); s <= 20*time.Minute; s += 5 * time.Second {
		now := at(s)
		switch {
		case s < 5*time.Minute && s%(30*time.Second) == 0:
			lastSeen = now // reports every 30 s
		case s >= 15*time.Minute && s%(30*time.Second) == 0:
			lastSeen = now // back
		}
		switch s {
		case 2 * time.Minute:
			g = &gossip.Observation{State: gossip.Dead, Since: now} // one flaky packet...
		case 2*time.Minute + 10*time.Second:
			g = &gossip.Observation{State: gossip.Alive, Since: now} // ...refuted
		case 5*time.Minute + 5*time.Second:
			g = &gossip.Observation{State: gossip.Dead, Since: now} // the machine is gone
		case 15 * time.Minute:
			g = &gossip.Observation{State: gossip.Alive, Since: now}
		}
		step(now)
	}
	// Last report at 4m30s: gossip dead for 15 s at 5m20s (suspect), no
	// report for 150 s at 7m00s (dead), back at 15m.
	want := []string{"5m20s suspect", "7m0s dead", "15m0s alive"}
	if strings.Join(changes, ", ") != strings.Join(want, ", ") {
		t.Errorf("transitions %v, want %v", changes, want)
	}
}
