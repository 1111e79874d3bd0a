package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/oneinfra/oneinfra/coordinator"
	"github.com/oneinfra/oneinfra/internal/resources"
	"github.com/oneinfra/oneinfra/internal/vocab"
	pb "github.com/oneinfra/oneinfra/proto/oneinfra/v1"
	"github.com/spf13/cobra"
)

// maxLine is the widest line, in columns, that progress output and the
// timeout errors of --wait print; describe has the full detail.
const maxLine = 120

// step is where a followed operation is: its state ("Provisioning:
// control plane 2/3 ready, ingress ready") and the one thing it waits for
// now ("waiting for demo-cp-1: etcd learner not promoted yet").
type step struct{ state, waiting string }

// String is the step as progress prints it, without the elapsed time.
func (s step) String() string {
	if s.state == "" || s.waiting == "" {
		return s.state + s.waiting
	}
	return s.state + "; " + s.waiting
}

// blocking is what a step is held up by, for a timeout error: what it
// waits for, else its state.
func (s step) blocking() string {
	if s.waiting != "" {
		return s.waiting
	}
	return dash(s.state)
}

// printer writes a progress line, at most maxLine columns, for each step
// that differs from the last one it wrote.
type printer struct {
	w    io.Writer
	last step
}

func (p *printer) print(elapsed time.Duration, s step) {
	if s == p.last {
		return
	}
	p.last = s
	fmt.Fprintln(p.w, clip(fmt.Sprintf("[%4.0fs] %s", elapsed.Seconds(), s), maxLine))
}

// followEvery is how often follow checks: a wait ends within a quarter
// second of what it waits for (cluster creation is timed by it).
const followEvery = 250 * time.Millisecond

// errNotYet is follow's error when the time is up.
var errNotYet = errors.New("not done in time")

// follow calls check every quarter second until it says done, for at most
// timeout, printing a line for each step that differs from the one before
// (not the final one: the caller says it is done). It returns the last
// step and how long it took; errNotYet when the time ran out.
func follow(cmd *cobra.Command, g *globals, timeout time.Duration, check func(ctx context.Context, s *session) (step, bool, error)) (step, time.Duration, error) {
	s, err := g.connect()
	if err != nil {
		return step{}, 0, err
	}
	defer s.close()
	ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
	defer cancel()
	start := time.Now()
	var last step
	out := &printer{w: cmd.OutOrStdout()}
	for {
		cctx, ccancel := s.ctx(ctx)
		st, done, err := check(cctx, s)
		ccancel()
		s.keepTrust() // a wait for a CA rotation waits for this file too
		if err != nil && ctx.Err() == nil {
			return last, time.Since(start), err
		}
		if err == nil {
			last = st
			if done {
				return last, time.Since(start), nil
			}
			out.print(time.Since(start), st)
		}
		select {
		case <-ctx.Done():
			return last, time.Since(start), errNotYet
		case <-time.After(followEvery):
		}
	}
}

// clusterStep summarizes a cluster on its way to Ready: its phase, how
// many control-plane replicas and whether the ingress are ready, and the
// first thing in the way, in the order the cluster needs them (placement,
// the replicas, the ingress, the API through the ingress). A replica is
// ready when it runs and none of its conditions (voting etcd member, API
// server answering /readyz) is false; the ingress when it runs.
func clusterStep(c *pb.Cluster, comps []*pb.Component) step {
	var cps, ingresses []*pb.Component
	for _, comp := range comps {
		switch {
		case comp.GetMetadata().GetDeletionTimestamp() != nil:
		case comp.GetSpec().GetRole() == resources.RoleIngress:
			ingresses = append(ingresses, comp)
		default:
			cps = append(cps, comp)
		}
	}
	slices.SortFunc(cps, byName)
	slices.SortFunc(ingresses, byName)

	want := int(c.GetSpec().GetControlPlane().GetReplicas())
	ready, waiting := 0, ""
	for _, comp := range cps {
		if why := componentWaits(comp, true); why == "" {
			ready++
		} else if waiting == "" {
			waiting = waitingFor(comp.GetMetadata().GetName(), why)
		}
	}
	ingress := "no ingress"
	if len(ingresses) > 0 {
		ingress = "ingress ready"
		if why := componentWaits(ingresses[0], false); why != "" {
			ingress = "ingress not ready"
			if waiting == "" {
				waiting = waitingFor(ingresses[0].GetMetadata().GetName(), why)
			}
		}
	}
	phase := c.GetStatus().GetPhase()
	if phase == "" {
		phase = resources.PhasePending
	}
	state := fmt.Sprintf("%s: control plane %d/%d ready, %s", phase, min(ready, want), want, ingress)

	conds := c.GetStatus().GetConditions()
	switch sched := resources.FindCondition(conds, coordinator.CondScheduled); {
	case sched != nil && sched.Status == "False":
		waiting = cause(sched.Message)
	case waiting != "":
	case len(cps) < want:
		waiting = fmt.Sprintf("waiting for %d more control-plane replica(s) to be placed", want-len(cps))
	case len(ingresses) == 0:
		waiting = "waiting for the ingress to be placed"
	default:
		api := resources.FindCondition(ingresses[0].GetStatus().GetConditions(), vocab.CondAPIReachable)
		readyCond := resources.FindCondition(conds, coordinator.CondReady)
		switch {
		case api == nil:
			waiting = "waiting for the API: no report from the ingress yet"
		case api.Status != "True":
			waiting = "waiting for the API: " + summarize(api.Message)
		case readyCond != nil && readyCond.Status != "True":
			waiting = "waiting: " + summarize(readyCond.Message)
		}
	}
	return step{state: state, waiting: waiting}
}

// drainStep summarizes a draining hypervisor from every component: how
// many are left on it (two named) and the first thing in the way: a
// component being removed, else a replacement (a component of the same
// cluster and role elsewhere) not ready yet. It is done when nothing is
// left.
func drainStep(hypervisor string, comps []*pb.Component) (step, bool) {
	var left []*pb.Component
	for _, comp := range comps {
		if comp.GetSpec().GetHypervisor() == hypervisor {
			left = append(left, comp)
		}
	}
	if len(left) == 0 {
		return step{state: "nothing left"}, true
	}
	slices.SortFunc(left, byName)

	const named = 2
	var names []string
	for _, comp := range left[:min(len(left), named)] {
		names = append(names, comp.GetMetadata().GetName())
	}
	if len(left) > named {
		names = append(names, fmt.Sprintf("+%d more", len(left)-named))
	}
	st := step{state: fmt.Sprintf("%d left: %s", len(left), strings.Join(names, ", "))}

	for _, comp := range left {
		if comp.GetMetadata().GetDeletionTimestamp() == nil {
			continue
		}
		name := comp.GetMetadata().GetName()
		why, _ := strings.CutPrefix(comp.GetStatus().GetMessage(), "removing")
		if why = summarize(strings.TrimPrefix(why, ": ")); why == "" {
			st.waiting = "waiting for " + name + " to be removed"
		} else {
			st.waiting = waitingFor(name, why)
		}
		return st, false
	}
	for _, comp := range left {
		for _, r := range comps {
			if r.GetSpec().GetHypervisor() == hypervisor || r.GetMetadata().GetDeletionTimestamp() != nil ||
				r.GetSpec().GetCluster() != comp.GetSpec().GetCluster() || r.GetSpec().GetRole() != comp.GetSpec().GetRole() {
				continue
			}
			if why := componentWaits(r, r.GetSpec().GetRole() != resources.RoleIngress); why != "" {
				st.waiting = waitingFor(r.GetMetadata().GetName()+" on "+r.GetSpec().GetHypervisor(), why)
				return st, false
			}
		}
	}
	st.waiting = "waiting for " + left[0].GetMetadata().GetName() + " to move"
	return st, false
}

// byName orders components by name.
func byName(a, b *pb.Component) int {
	return strings.Compare(a.GetMetadata().GetName(), b.GetMetadata().GetName())
}

// componentWaits says, summarized, what keeps a component from being
// ready, or "" when it is: no report yet, a state other than Running, or
// (withConditions) the first of its conditions that is false.
func componentWaits(comp *pb.Component, withConditions bool) string {
	s := comp.GetStatus()
	switch {
	case s.GetState() == "":
		return "no report from its agent yet"
	case s.GetState() != vocab.StateRunning:
		why := summarize(s.GetMessage())
		switch {
		case why == "":
			return strings.ToLower(s.GetState())
		case s.GetState() == vocab.StateFailed && !strings.HasPrefix(s.GetMessage(), "pod "):
			return "failed: " + why
		}
		return why
	}
	if withConditions {
		for _, cond := range s.GetConditions() {
			if cond.GetStatus() == "False" {
				return dash(summarize(cond.GetMessage()))
			}
		}
	}
	return ""
}

// waitingFor words what a component waits for: "demo-cp-1 waits to join
// etcd as a learner" when the reason says what it is waiting for, else
// "waiting for demo-cp-1: etcd: ContainerCreating".
func waitingFor(name, why string) string {
	if rest, ok := strings.CutPrefix(why, "waiting "); ok {
		return name + " waits " + rest
	}
	return "waiting for " + name + ": " + why
}

var (
	learnerNotPromoted = regexp.MustCompile(`is a learner not promoted yet`)
	podState           = regexp.MustCompile(`^pod (\S+): (\w+)(?: \(([^)]*)\))?(?:: (.*))?$`)
	exitCode           = regexp.MustCompile(`^container \S+: exited with code (\d+)`)
	readyzAnswer       = regexp.MustCompile(`/readyz: (\d{3})\b[^:]*(?::\s*(.*))?$`)
	failingCheck       = regexp.MustCompile(`(?:\[-\]|^|; )([\w./-]+) failed\b`)
)

// summarize shortens a component's status message or a condition's
// message to what a person needs on a progress line: a pod's name and
// reason without its log lines, the failing checks of a /readyz answer,
// the context and root cause of an error.
func summarize(msg string) string {
	msg = strings.Join(strings.Fields(msg), " ")
	switch {
	case msg == "":
		return ""
	case learnerNotPromoted.MatchString(msg):
		return "etcd learner not promoted yet"
	case strings.HasPrefix(msg, "pod "):
		return podSummary(msg)
	case strings.Contains(msg, "/readyz"):
		return readyzSummary(msg)
	}
	segs := segments(firstClause(msg))
	if len(segs) == 1 {
		return segs[0]
	}
	return segs[0] + ": " + friendly(segs[len(segs)-1])
}

// podSummary is the first pod of a component's message ("pod etcd:
// Failed (CrashLoopBackOff): container etcd: exited with code 1; ... last
// log: ...") as the exit code of its container that exited ("etcd exited
// with code 1"), else its reason or state ("etcd: ContainerCreating").
func podSummary(msg string) string {
	m := podState.FindStringSubmatch(msg)
	switch {
	case m == nil:
		return firstClause(msg)
	case exitCode.MatchString(m[4]):
		return m[1] + " exited with code " + exitCode.FindStringSubmatch(m[4])[1]
	case m[3] != "":
		return m[1] + ": " + m[3]
	}
	return m[1] + ": " + m[2]
}

// readyzSummary is a failed /readyz probe as the names of its failing
// checks (at most three), else its HTTP status, else the root cause of
// the failed request: "readyz: informer-sync, etcd failing".
func readyzSummary(msg string) string {
	m := readyzAnswer.FindStringSubmatch(msg)
	if m == nil {
		_, rest, _ := strings.Cut(msg, "/readyz")
		segs := segments(strings.TrimPrefix(rest, ": "))
		return "readyz: " + friendly(segs[len(segs)-1])
	}
	var failing []string
	for _, f := range failingCheck.FindAllStringSubmatch(m[2], -1) {
		if !slices.Contains(failing, f[1]) {
			failing = append(failing, f[1])
		}
	}
	const named = 3
	switch {
	case len(failing) == 0:
		return "readyz: HTTP " + m[1]
	case len(failing) > named:
		return fmt.Sprintf("readyz: %s and %d more failing", strings.Join(failing[:named], ", "), len(failing)-named)
	}
	return "readyz: " + strings.Join(failing, ", ") + " failing"
}

// firstClause cuts msg at its first "; " outside parentheses: what follows
// is detail (log lines, a restart countdown, advice, other pods).
func firstClause(msg string) string {
	depth := 0
	for i := 0; i < len(msg); i++ {
		switch msg[i] {
		case '(':
			depth++
		case ')':
			depth = max(0, depth-1)
		case ';':
			if depth == 0 && strings.HasPrefix(msg[i:], "; ") {
				return msg[:i]
			}
		}
	}
	return msg
}

// maxParenthetical is the longest parenthetical aside segments keeps.
const maxParenthetical = 40

// segments splits an error chain ("a: b: c") at the ": " outside
// parentheses, dropping parenthetical asides longer than
// maxParenthetical; it returns at least one segment.
func segments(msg string) []string {
	var segs []string
	var cur, paren strings.Builder
	depth := 0
	for i := 0; i < len(msg); i++ {
		ch := msg[i]
		switch {
		case ch == '(':
			depth++
			paren.WriteByte(ch)
			continue
		case depth > 0:
			paren.WriteByte(ch)
			if ch == ')' {
				if depth--; depth == 0 {
					if paren.Len() <= maxParenthetical+2 {
						cur.WriteString(paren.String())
					}
					paren.Reset()
				}
			}
			continue
		case ch == ':' && strings.HasPrefix(msg[i:], ": "):
			segs = append(segs, strings.TrimSpace(cur.String()))
			cur.Reset()
			i++
			continue
		}
		cur.WriteByte(ch)
	}
	if paren.Len() <= maxParenthetical+2 {
		cur.WriteString(paren.String())
	}
	segs = append(segs, strings.TrimSpace(cur.String()))
	if segs = slices.DeleteFunc(segs, func(s string) bool { return s == "" }); len(segs) == 0 {
		return []string{""}
	}
	return segs
}

// friendly words a root cause for a person: timeouts as "timed out", a
// connection the other side closed as "connection closed".
func friendly(cause string) string {
	switch {
	case strings.Contains(cause, "deadline exceeded"), strings.Contains(strings.ToLower(cause), "timeout"):
		return "timed out"
	case cause == "EOF", strings.HasSuffix(cause, "connection reset by peer"):
		return "connection closed"
	}
	return cause
}

// cause is the root cause of an error message: the last segment of its
// first clause.
func cause(msg string) string {
	segs := segments(firstClause(strings.Join(strings.Fields(msg), " ")))
	return friendly(segs[len(segs)-1])
}

// clip cuts s to at most n columns, marking the cut with "...".
func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-3]) + "..."
}
