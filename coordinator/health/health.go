// Package health decides a hypervisor's health (alive, suspect, dead) from
// the time of its agent's last report, with the leader's gossip view as
// advice. It is pure: the leader loop gives it the inputs and commits what
// changes.
//
// The rules, with hysteresis:
//   - a fresh report (within SuspectAfter) means alive, unless gossip has
//     said dead for GossipDeadAfter (then suspect: the agent reports, but
//     the leader cannot reach it);
//   - no report for SuspectAfter, or gossip saying dead for
//     GossipDeadAfter, means suspect;
//   - no report for DeadAfter means dead, whatever gossip says, and dead
//     stays dead until a fresh report;
//   - gossip can hasten suspicion but never keeps a silent hypervisor
//     alive (any member of the pool can claim to see it), nor alone makes
//     one dead; and a leader only counts
//     the silence it has observed itself: the time since it began leading
//     bounds how long a report is missing, so a new leader waits
//     SuspectAfter and DeadAfter before blaming anybody.
package health

import (
	"fmt"
	"time"

	"github.com/oneinfra/oneinfra/internal/gossip"
	"github.com/oneinfra/oneinfra/internal/resources"
)

// Defaults: the agent reports at least every 30 s.
const (
	DefaultSuspectAfter    = 90 * time.Second
	DefaultDeadAfter       = 150 * time.Second
	DefaultGossipDeadAfter = 15 * time.Second
)

// Condition reasons.
const (
	ReasonReporting        = "Reporting"
	ReasonNoRecentReport   = "NoRecentReport"
	ReasonGossipDead       = "GossipUnreachable"
	ReasonNotReporting     = "NotReporting"
	ConditionHealthy       = "Healthy"
	conditionTrue          = "True"
	conditionFalse         = "False"
	conditionUnknown       = "Unknown"
	timeFormat             = "15:04:05"
	defaultHealthIfMissing = resources.HealthAlive
)

// Rules are the thresholds.
type Rules struct {
	SuspectAfter    time.Duration
	DeadAfter       time.Duration
	GossipDeadAfter time.Duration
}

// Defaulted fills in the zero thresholds.
func (r Rules) Defaulted() Rules {
	if r.SuspectAfter <= 0 {
		r.SuspectAfter = DefaultSuspectAfter
	}
	if r.DeadAfter <= 0 {
		r.DeadAfter = DefaultDeadAfter
	}
	if r.DeadAfter < r.SuspectAfter {
		r.DeadAfter = r.SuspectAfter
	}
	if r.GossipDeadAfter <= 0 {
		r.GossipDeadAfter = DefaultGossipDeadAfter
	}
	return r
}

// Input is what the leader knows of one hypervisor now.
type Input struct {
	Name    string
	Current string    // committed health; "" counts as alive
	Now     time.Time // the leader's clock
	// LastSeen is the committed time of the agent's last report (zero:
	// none).
	LastSeen time.Time
	// LeaderSince is when this leader began leading (after its barrier).
	LeaderSince time.Time
	// Gossip is the leader's gossip view of the hypervisor; nil when the
	// leader has no gossip or has never seen the member.
	Gossip *gossip.Observation
}

// Decision is the health the rules give, with the reason and a message a
// person can act on. Changed says it differs from Input.Current.
type Decision struct {
	Health  string
	Changed bool
	// Condition status (True, Unknown, False), reason and message.
	Status, Reason, Message string
}

// Decide applies the rules.
func (r Rules) Decide(in Input) Decision {
	r = r.Defaulted()
	current := in.Current
	if current == "" {
		current = defaultHealthIfMissing
	}
	fresh := !in.LastSeen.IsZero() && in.Now.Sub(in.LastSeen) < r.SuspectAfter
	// The silence this leader has observed: never more than its reign.
	observedFrom := in.LastSeen
	if observedFrom.Before(in.LeaderSince) {
		observedFrom = in.LeaderSince
	}
	silent := in.Now.Sub(observedFrom)
	gossipDead := in.Gossip != nil && in.Gossip.State == gossip.Dead && in.Now.Sub(in.Gossip.Since) >= r.GossipDeadAfter

	var health, reason string
	switch {
	case fresh && !gossipDead:
		health, reason = resources.HealthAlive, ReasonReporting
	case fresh:
		health, reason = resources.HealthSuspect, ReasonGossipDead
	case current == resources.HealthDead:
		health, reason = resources.HealthDead, ReasonNotReporting
	case silent >= r.DeadAfter:
		health, reason = resources.HealthDead, ReasonNotReporting
	case silent >= r.SuspectAfter:
		health, reason = resources.HealthSuspect, ReasonNoRecentReport
	case gossipDead:
		health, reason = resources.HealthSuspect, ReasonGossipDead
	default:
		// Not silent long enough to blame: keep what was decided.
		health, reason = current, ""
	}
	d := Decision{Health: health, Changed: health != current, Reason: reason}
	switch health {
	case resources.HealthAlive:
		d.Status = conditionTrue
	case resources.HealthSuspect:
		d.Status = conditionUnknown
	default:
		d.Status = conditionFalse
	}
	d.Message = r.message(in, health, gossipDead)
	return d
}

// message says what the decision rests on, for `describe`.
func (r Rules) message(in Input, health string, gossipDead bool) string {
	var report string
	if in.LastSeen.IsZero() {
		report = "no report yet"
	} else {
		report = fmt.Sprintf("last report %s ago (at %s)", in.Now.Sub(in.LastSeen).Round(time.Second), in.LastSeen.UTC().Format(timeFormat))
	}
	var g string
	switch {
	case in.Gossip == nil:
		g = ""
	case gossipDead:
		g = fmt.Sprintf("gossip reports it dead since %s", in.Gossip.Since.UTC().Format(timeFormat))
	default:
		g = fmt.Sprintf("gossip reports it %s since %s", in.Gossip.State, in.Gossip.Since.UTC().Format(timeFormat))
	}
	with := func(s string) string {
		if g != "" {
			return s + " and " + g
		}
		return s
	}
	switch health {
	case resources.HealthAlive:
		return with(fmt.Sprintf("its agent reports: %s", report))
	case resources.HealthSuspect:
		if gossipDead && !in.LastSeen.IsZero() && in.Now.Sub(in.LastSeen) < r.SuspectAfter {
			return fmt.Sprintf("its agent reports (%s) but %s: check that gossip (UDP and TCP, --gossip-addr) gets through between it and the coordinator", report, g)
		}
		return with(fmt.Sprintf("%s, more than %s; dead after %s without one", report, r.SuspectAfter, r.DeadAfter)) +
			": check the agent (systemctl status oneinfra-agent) and its network"
	default:
		return with(fmt.Sprintf("%s, more than %s", report, r.DeadAfter)) +
			": check the machine, its network and its agent (systemctl status oneinfra-agent)"
	}
}
