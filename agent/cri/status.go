package cri

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fillStatus sets st.Containers and the pod's state from the sandbox's
// containers (by name, newest first) and the failures met while syncing.
func (r *Runtime) fillStatus(ctx context.Context, p Pod, by map[string][]*runtimeapi.Container, failures map[string][2]string, st *PodStatus) {
	st.Containers = nil
	running := 0
	var failed, pending *ContainerStatus
	for _, c := range p.Containers {
		cs := ContainerStatus{Name: c.Name, Image: c.Image, State: ContainerWaiting}
		insts := by[c.Name]
		if len(insts) > 0 {
			cs.RestartCount = int(insts[0].Metadata.Attempt)
		}
		// The newest exited instance that is not the current one.
		var lastExited *runtimeapi.Container
		for i, in := range insts {
			if i > 0 && exited(in) {
				lastExited = in
				break
			}
		}
		if f, ok := failures[c.Name]; ok {
			cs.Reason, cs.Message = f[0], f[1]
			if len(insts) > 0 && exited(insts[0]) {
				lastExited = insts[0]
			}
		} else if len(insts) > 0 {
			latest := insts[0]
			cs.ID = latest.Id
			cst, err := r.containerStatus(ctx, latest.Id)
			switch {
			case err != nil:
				cs.Message = err.Error()
			case latest.State == runtimeapi.ContainerState_CONTAINER_RUNNING:
				cs.StartedAt = nsTime(cst.StartedAt)
				cs.State = ContainerRunning
			case latest.State == runtimeapi.ContainerState_CONTAINER_CREATED:
				cs.Reason, cs.Message = ReasonContainerCreated, "created, not started yet"
			default:
				cs.StartedAt = nsTime(cst.StartedAt)
				t := r.termination(cst)
				cs.State = ContainerExited
				cs.ExitCode, cs.FinishedAt, cs.LogTail = t.ExitCode, t.FinishedAt, t.LogTail
				cs.Reason = ReasonCrashLoopBackOff
				due := t.FinishedAt.Add(r.backoff(latest.Metadata.Attempt, t.FinishedAt.Sub(t.StartedAt)))
				cs.Message = fmt.Sprintf("exited with code %d", t.ExitCode)
				if t.Reason != "" {
					cs.Message += " (" + t.Reason + ")"
				}
				if t.Message != "" {
					cs.Message += ": " + t.Message
				}
				if wait := due.Sub(r.opts.now()); wait > 0 {
					cs.Message += fmt.Sprintf("; restart %d in %s", cs.RestartCount+1, wait.Round(100*time.Millisecond))
				}
			}
		}
		if lastExited != nil && lastExited.Id != cs.ID {
			if cst, err := r.containerStatus(ctx, lastExited.Id); err == nil {
				t := r.termination(cst)
				cs.LastTermination = &t
			}
		}
		st.Containers = append(st.Containers, cs)
		last := &st.Containers[len(st.Containers)-1]
		switch {
		case cs.State == ContainerRunning:
			running++
		case cs.Reason == ReasonImageNotFound || cs.State == ContainerWaiting && cs.Reason == ReasonContainerCreated:
			if pending == nil {
				pending = last
			}
		default:
			if failed == nil {
				failed = last
			}
		}
	}
	switch {
	case failed != nil:
		st.State, st.Reason = PodFailed, failed.Reason
		st.Message = fmt.Sprintf("container %s: %s", failed.Name, failed.Message)
		if n := len(failed.LogTail); n > 0 {
			st.Message += "; last log line: " + failed.LogTail[n-1]
		}
	case pending != nil:
		st.State, st.Reason = PodPending, pending.Reason
		st.Message = fmt.Sprintf("container %s: %s", pending.Name, pending.Message)
	case running == len(p.Containers):
		st.State, st.Reason, st.Message = PodRunning, "", ""
	default:
		st.State = PodPending
	}
}

func nsTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

func (r *Runtime) termination(cst *runtimeapi.ContainerStatus) Termination {
	t := Termination{
		ExitCode:   cst.ExitCode,
		Reason:     cst.Reason,
		Message:    strings.TrimSpace(cst.Message),
		StartedAt:  nsTime(cst.StartedAt),
		FinishedAt: nsTime(cst.FinishedAt),
	}
	if cst.LogPath != "" {
		t.LogTail, _ = TailLog(cst.LogPath, r.opts.LogTailLines)
	}
	return t
}

// TailLog returns the last n lines of a container log in the CRI format
// ("TIMESTAMP STREAM P|F CONTENT" per line; P marks a partial line continued
// on the next), content only, partial lines joined.
func TailLog(path string, n int) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	const window = 64 << 10
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := max(info.Size()-window, 0)
	buf := make([]byte, info.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
		return nil, err
	}
	raw := bytes.Split(buf, []byte("\n"))
	if off > 0 && len(raw) > 0 {
		raw = raw[1:] // starts mid-line
	}
	var lines []string
	var partial strings.Builder
	for _, l := range raw {
		if len(l) == 0 {
			continue
		}
		parts := bytes.SplitN(l, []byte(" "), 4)
		if len(parts) < 3 {
			lines = append(lines, string(l)) // not CRI format: keep as is
			continue
		}
		content := ""
		if len(parts) == 4 {
			content = string(parts[3])
		}
		partial.WriteString(content)
		if string(parts[2]) == "P" {
			continue
		}
		lines = append(lines, partial.String())
		partial.Reset()
	}
	if partial.Len() > 0 {
		lines = append(lines, partial.String())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines, nil
}
