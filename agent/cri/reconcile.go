package cri

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Reconcile makes the pods of cluster on this runtime match desired:
//
//   - a desired pod with no ready sandbox of its spec hash is created (after
//     its images are ensured: when one is missing, the pod's old sandbox, if
//     any, is left running and the status says ImageNotFound);
//   - a sandbox whose spec hash differs, or that is not ready, is stopped and
//     removed before its replacement starts (host ports are reused);
//   - an exited container of a kept sandbox is restarted in place (a new
//     attempt in the same sandbox) after a back-off, RestartBackoff doubled
//     per restart; meanwhile the pod reports Failed with the reason,
//     exit code and the last lines of the container's log;
//   - exited containers are collected: only the latest exited instance per
//     container is kept, for its log and LastTermination;
//   - our pods of this cluster that are not desired are stopped (containers
//     first, with StopTimeout of grace) and removed, with their logs.
//
// Pods of other clusters and pods without our labels are never touched. An
// unchanged running pod is left alone, whichever Runtime instance made it.
//
// It returns one status per desired pod (in order) and the errors met,
// joined; every status is filled in even when err is not nil.
func (r *Runtime) Reconcile(ctx context.Context, cluster string, desired []Pod) ([]PodStatus, error) {
	if err := validate(cluster, desired); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()

	existing, err := r.ourSandboxes(ctx, map[string]string{LabelCluster: cluster})
	if err != nil {
		return nil, err
	}
	byKey := map[podKey][]*runtimeapi.PodSandbox{}
	for _, sb := range existing {
		k := sandboxKey(sb)
		byKey[k] = append(byKey[k], sb)
	}
	want := map[podKey]bool{}
	for _, p := range desired {
		want[p.key()] = true
	}

	var errs []error
	// Unwanted pods go first: that frees their ports and memory.
	var gone []*runtimeapi.PodSandbox
	for k, sbs := range byKey {
		if !want[k] {
			gone = append(gone, sbs...)
		}
	}
	sortSandboxes(gone)
	for _, sb := range gone {
		if err := r.removeSandbox(ctx, sb, "no longer desired"); err != nil {
			errs = append(errs, fmt.Errorf("cluster %s: %w", cluster, err))
		}
	}

	statuses := make([]PodStatus, 0, len(desired))
	for _, p := range desired {
		st, err := r.syncPod(ctx, cluster, p.normalized(), byKey[p.key()])
		statuses = append(statuses, st)
		if err != nil {
			errs = append(errs, fmt.Errorf("cluster %s pod %s: %w", cluster, p.key(), err))
		}
	}
	return statuses, errors.Join(errs...)
}

// RemoveComponent stops and removes every pod of a component of a cluster.
func (r *Runtime) RemoveComponent(ctx context.Context, cluster, component string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	sbs, err := r.ourSandboxes(ctx, map[string]string{LabelCluster: cluster, LabelComponent: component})
	if err != nil {
		return err
	}
	var errs []error
	for _, sb := range sbs {
		if err := r.removeSandbox(ctx, sb, "component removed"); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// RemoveCluster stops and removes every pod of a cluster.
func (r *Runtime) RemoveCluster(ctx context.Context, cluster string) error {
	_, err := r.Reconcile(ctx, cluster, nil)
	return err
}

// Clusters lists the clusters that have pods (ours) on this runtime, so
// that an agent can remove those it is no longer assigned.
func (r *Runtime) Clusters(ctx context.Context) ([]string, error) {
	sbs, err := r.ourSandboxes(ctx, nil)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	for _, sb := range sbs {
		if c := sb.Labels[LabelCluster]; !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	sort.Strings(out)
	return out, nil
}

// ours says whether a sandbox or container carries all of our labels.
func ours(labels map[string]string) bool {
	for _, l := range []string{LabelCluster, LabelComponent, LabelPod, LabelSpecHash} {
		if labels[l] == "" {
			return false
		}
	}
	return true
}

func sandboxKey(sb *runtimeapi.PodSandbox) podKey {
	return podKey{sb.Labels[LabelComponent], sb.Labels[LabelPod]}
}

func sortSandboxes(sbs []*runtimeapi.PodSandbox) {
	sort.Slice(sbs, func(i, j int) bool { return sbs[i].CreatedAt < sbs[j].CreatedAt })
}

// ourSandboxes lists the sandboxes with our labels matching selector.
func (r *Runtime) ourSandboxes(ctx context.Context, selector map[string]string) ([]*runtimeapi.PodSandbox, error) {
	var resp *runtimeapi.ListPodSandboxResponse
	err := r.call(ctx, 1, func(ctx context.Context) (err error) {
		resp, err = r.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{LabelSelector: selector}})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listing pod sandboxes: %w", err)
	}
	var out []*runtimeapi.PodSandbox
	for _, sb := range resp.Items {
		if ours(sb.Labels) {
			out = append(out, sb)
		}
	}
	sortSandboxes(out)
	return out, nil
}

func (r *Runtime) containers(ctx context.Context, sandboxID string) ([]*runtimeapi.Container, error) {
	var resp *runtimeapi.ListContainersResponse
	err := r.call(ctx, 1, func(ctx context.Context) (err error) {
		resp, err = r.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: sandboxID}})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listing containers of sandbox %s: %w", short(sandboxID), err)
	}
	return resp.Containers, nil
}

func short(id string) string {
	if len(id) > 13 {
		return id[:13]
	}
	return id
}

// logDir is the sandbox's log directory, derived from its metadata.
func (r *Runtime) logDir(m *runtimeapi.PodSandboxMetadata) string {
	return filepath.Join(r.opts.LogDir, m.Namespace+"_"+m.Name+"_"+m.Uid)
}

// removeSandbox stops the containers of a sandbox with their grace period,
// stops and removes the sandbox, and removes its log directory.
func (r *Runtime) removeSandbox(ctx context.Context, sb *runtimeapi.PodSandbox, why string) error {
	log := r.log.With("cluster", sb.Labels[LabelCluster], "component", sb.Labels[LabelComponent], "pod", sb.Labels[LabelPod], "sandbox", short(sb.Id))
	start := time.Now()
	// Containers first, with their grace period (StopPodSandbox would kill
	// them at once); also in a sandbox that is not ready, whose containers
	// may outlive its pause process.
	cs, err := r.containers(ctx, sb.Id)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	for _, c := range cs {
		if c.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
			continue
		}
		wg.Add(1)
		go func(id string) {
			defer wg.Done()
			// Errors are not fatal: StopPodSandbox kills what is left.
			_ = r.stopContainer(ctx, id)
		}(c.Id)
	}
	wg.Wait()
	err = r.call(ctx, 1, func(ctx context.Context) error {
		_, err := r.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.Id})
		return err
	})
	if err != nil && status.Code(err) != codes.NotFound {
		return fmt.Errorf("stopping sandbox %s of %s: %w", short(sb.Id), sandboxKey(sb), err)
	}
	err = r.call(ctx, 1, func(ctx context.Context) error {
		_, err := r.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.Id})
		return err
	})
	if err != nil && status.Code(err) != codes.NotFound {
		return fmt.Errorf("removing sandbox %s of %s: %w", short(sb.Id), sandboxKey(sb), err)
	}
	// Only a log dir right in LogDir is ours: a sandbox's name, which
	// anyone with the CRI socket can choose, could point elsewhere.
	if m := sb.Metadata; m != nil && m.Uid != "" {
		if dir := r.logDir(m); filepath.Dir(dir) == filepath.Clean(r.opts.LogDir) {
			_ = os.RemoveAll(dir)
		}
	}
	log.Info("removed pod", "why", why, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

func (r *Runtime) stopContainer(ctx context.Context, id string) error {
	grace := int64((r.opts.StopTimeout + time.Second - 1) / time.Second)
	cctx, cancel := context.WithTimeout(ctx, r.opts.StopTimeout+r.opts.Timeout)
	defer cancel()
	_, err := r.rt.StopContainer(cctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: grace})
	return err
}

var namespaceOptions = &runtimeapi.NamespaceOption{
	Network: runtimeapi.NamespaceMode_NODE,
	Pid:     runtimeapi.NamespaceMode_CONTAINER,
	Ipc:     runtimeapi.NamespaceMode_POD,
}

func podLabels(cluster string, p Pod, hash string) map[string]string {
	l := map[string]string{}
	for k, v := range p.Labels {
		l[k] = v
	}
	l[LabelCluster] = cluster
	l[LabelComponent] = p.Component
	l[LabelPod] = p.Name
	l[LabelSpecHash] = hash
	return l
}

// sandboxConfig is the CRI config of a pod's sandbox; meta names it (a
// fresh uid per sandbox, so that a replacement never collides with the
// name of the sandbox it replaces).
func (r *Runtime) sandboxConfig(cluster string, p Pod, hash string, meta *runtimeapi.PodSandboxMetadata) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     meta,
		LogDirectory: r.logDir(meta),
		Labels:       podLabels(cluster, p, hash),
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent:    r.opts.CgroupParent,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: namespaceOptions},
		},
	}
}

func sandboxMetadata(cluster string, p Pod) *runtimeapi.PodSandboxMetadata {
	var b [8]byte
	_, _ = rand.Read(b[:])
	name := p.Component
	if p.Name != p.Component {
		name += "-" + p.Name
	}
	return &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "oneinfra-" + cluster, Uid: hex.EncodeToString(b[:])}
}

func (r *Runtime) syncPod(ctx context.Context, cluster string, p Pod, existing []*runtimeapi.PodSandbox) (PodStatus, error) {
	hash := SpecHash(p)
	st := PodStatus{Cluster: cluster, Component: p.Component, Name: p.Name, SpecHash: hash, State: PodPending}
	log := r.log.With("cluster", cluster, "component", p.Component, "pod", p.Name)

	var keep *runtimeapi.PodSandbox
	for _, sb := range existing {
		if sb.State == runtimeapi.PodSandboxState_SANDBOX_READY && sb.Labels[LabelSpecHash] == hash &&
			(keep == nil || sb.CreatedAt > keep.CreatedAt) {
			keep = sb
		}
	}
	if keep == nil {
		// Images before anything is stopped: a missing image leaves the
		// running (older) pod in place.
		for _, c := range p.Containers {
			if err := r.EnsureImage(ctx, c.Image); err != nil {
				st.Reason, st.Message = ReasonImageNotFound, err.Error()
				if !errors.Is(err, ErrImageNotFound) {
					st.Reason = ""
				}
				st.Containers = waitingContainers(p, c.Name, st.Reason, err.Error())
				return st, fmt.Errorf("container %s: %w", c.Name, err)
			}
		}
	}
	for _, sb := range existing {
		if sb == keep {
			continue
		}
		why := "spec changed"
		if sb.State != runtimeapi.PodSandboxState_SANDBOX_READY {
			why = "sandbox not ready"
		} else if sb.Labels[LabelSpecHash] == hash {
			why = "duplicate"
		}
		if err := r.removeSandbox(ctx, sb, why); err != nil {
			st.Reason, st.Message = ReasonSandboxFailed, err.Error()
			return st, err
		}
	}

	var cfg *runtimeapi.PodSandboxConfig
	if keep == nil {
		cfg = r.sandboxConfig(cluster, p, hash, sandboxMetadata(cluster, p))
		if err := os.MkdirAll(cfg.LogDirectory, 0o755); err != nil {
			return st, err
		}
		start := time.Now()
		var resp *runtimeapi.RunPodSandboxResponse
		err := r.call(ctx, 2, func(ctx context.Context) (err error) {
			resp, err = r.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
			return err
		})
		if err != nil {
			_ = os.RemoveAll(cfg.LogDirectory)
			st.State, st.Reason, st.Message = PodFailed, ReasonSandboxFailed, status.Convert(err).Message()
			return st, fmt.Errorf("running sandbox: %w", err)
		}
		keep = &runtimeapi.PodSandbox{Id: resp.PodSandboxId, Metadata: cfg.Metadata, State: runtimeapi.PodSandboxState_SANDBOX_READY, CreatedAt: time.Now().UnixNano(), Labels: cfg.Labels}
		log.Info("started sandbox", "sandbox", short(resp.PodSandboxId), "hash", hash, "took", time.Since(start).Round(time.Millisecond))
	} else {
		cfg = r.sandboxConfig(cluster, p, hash, keep.Metadata)
	}
	st.SandboxID = keep.Id
	st.CreatedAt = time.Unix(0, keep.CreatedAt)
	err := r.syncContainers(ctx, cluster, p, hash, keep.Id, cfg, &st)
	return st, err
}

func waitingContainers(p Pod, failed, reason, msg string) []ContainerStatus {
	var out []ContainerStatus
	for _, c := range p.Containers {
		cs := ContainerStatus{Name: c.Name, Image: c.Image, State: ContainerWaiting}
		if c.Name == failed {
			cs.Reason, cs.Message = reason, msg
		}
		out = append(out, cs)
	}
	return out
}

// instances groups a sandbox's containers by name, newest attempt first.
func instances(cs []*runtimeapi.Container) map[string][]*runtimeapi.Container {
	by := map[string][]*runtimeapi.Container{}
	for _, c := range cs {
		if c.Metadata == nil {
			continue
		}
		by[c.Metadata.Name] = append(by[c.Metadata.Name], c)
	}
	for _, l := range by {
		sort.Slice(l, func(i, j int) bool {
			if l[i].Metadata.Attempt != l[j].Metadata.Attempt {
				return l[i].Metadata.Attempt > l[j].Metadata.Attempt
			}
			return l[i].CreatedAt > l[j].CreatedAt
		})
	}
	return by
}

func exited(c *runtimeapi.Container) bool {
	return c.State == runtimeapi.ContainerState_CONTAINER_EXITED || c.State == runtimeapi.ContainerState_CONTAINER_UNKNOWN
}

// backoff is the delay before restarting a container whose instance number
// attempt exited after running for ran.
func (r *Runtime) backoff(attempt uint32, ran time.Duration) time.Duration {
	if ran >= 10*time.Minute {
		return r.opts.RestartBackoff
	}
	d := r.opts.RestartBackoff
	for i := uint32(0); i < attempt && d < r.opts.MaxRestartBackoff; i++ {
		d *= 2
	}
	return min(d, r.opts.MaxRestartBackoff)
}

func (r *Runtime) syncContainers(ctx context.Context, cluster string, p Pod, hash, sandboxID string, cfg *runtimeapi.PodSandboxConfig, st *PodStatus) error {
	cs, err := r.containers(ctx, sandboxID)
	if err != nil {
		return err
	}
	by := instances(cs)
	var errs []error
	failures := map[string][2]string{} // container -> reason, message of a failed create/start
	desired := map[string]bool{}
	for _, c := range p.Containers {
		desired[c.Name] = true
		insts := by[c.Name]
		var latest *runtimeapi.Container
		if len(insts) > 0 {
			latest = insts[0]
		}
		attempt := uint32(0)
		switch {
		case latest == nil:
		case latest.State == runtimeapi.ContainerState_CONTAINER_RUNNING:
			continue
		case latest.State == runtimeapi.ContainerState_CONTAINER_CREATED:
			// Created but never started (an agent stopped in between).
			if err := r.startContainer(ctx, latest.Id); err != nil {
				failures[c.Name] = [2]string{ReasonStartFailed, err.Error()}
				errs = append(errs, fmt.Errorf("starting container %s: %w", c.Name, err))
			}
			continue
		default: // exited
			cst, err := r.containerStatus(ctx, latest.Id)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			ran := time.Duration(cst.FinishedAt - cst.StartedAt)
			if cst.StartedAt == 0 {
				ran = 0
			}
			due := time.Unix(0, cst.FinishedAt).Add(r.backoff(latest.Metadata.Attempt, ran))
			if wait := due.Sub(r.opts.now()); wait > 0 {
				if st.RequeueAfter == 0 || wait < st.RequeueAfter {
					st.RequeueAfter = wait
				}
				continue
			}
			attempt = latest.Metadata.Attempt + 1
		}
		if err := r.EnsureImage(ctx, c.Image); err != nil {
			reason := ""
			if errors.Is(err, ErrImageNotFound) {
				reason = ReasonImageNotFound
			}
			failures[c.Name] = [2]string{reason, err.Error()}
			errs = append(errs, fmt.Errorf("container %s: %w", c.Name, err))
			continue
		}
		id, err := r.createContainer(ctx, cluster, p, hash, sandboxID, cfg, c, attempt)
		if err != nil {
			failures[c.Name] = [2]string{ReasonCreateFailed, status.Convert(err).Message()}
			errs = append(errs, fmt.Errorf("creating container %s: %w", c.Name, err))
			continue
		}
		if err := r.startContainer(ctx, id); err != nil {
			// The runtime records the failure on the container (exited,
			// reason StartError): the status below reports it.
			errs = append(errs, fmt.Errorf("starting container %s: %w", c.Name, err))
		}
		r.log.Info("started container", "cluster", cluster, "component", p.Component, "pod", p.Name, "container", c.Name, "attempt", attempt, "id", short(id))
	}

	// Collect: containers not in the spec, and exited instances beyond the
	// newest exited one of each container.
	if cs, err = r.containers(ctx, sandboxID); err != nil {
		return errors.Join(append(errs, err)...)
	}
	by = instances(cs)
	for name, insts := range by {
		keptExited := false
		for _, c := range insts {
			switch {
			case !desired[name] && c.State == runtimeapi.ContainerState_CONTAINER_RUNNING:
				_ = r.stopContainer(ctx, c.Id)
			case !desired[name]:
			case !exited(c):
				continue
			case !keptExited:
				keptExited = true
				continue
			}
			if err := r.removeContainer(ctx, c.Id); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if cs, err = r.containers(ctx, sandboxID); err != nil {
		return errors.Join(append(errs, err)...)
	}
	r.fillStatus(ctx, p, instances(cs), failures, st)
	return errors.Join(errs...)
}

func (r *Runtime) createContainer(ctx context.Context, cluster string, p Pod, hash, sandboxID string, cfg *runtimeapi.PodSandboxConfig, c Container, attempt uint32) (string, error) {
	labels := map[string]string{
		LabelCluster:   cluster,
		LabelComponent: p.Component,
		LabelPod:       p.Name,
		LabelSpecHash:  hash,
		LabelContainer: c.Name,
	}
	var envs []*runtimeapi.KeyValue
	for _, k := range sortedKeys(c.Env) {
		envs = append(envs, &runtimeapi.KeyValue{Key: k, Value: []byte(c.Env[k])})
	}
	var mounts []*runtimeapi.Mount
	for _, m := range c.Mounts {
		mounts = append(mounts, &runtimeapi.Mount{HostPath: m.HostPath, ContainerPath: m.ContainerPath, Readonly: m.ReadOnly})
	}
	sc := &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: namespaceOptions}
	if c.RunAsUser != nil {
		sc.RunAsUser = &runtimeapi.Int64Value{Value: *c.RunAsUser}
	}
	config := &runtimeapi.ContainerConfig{
		Metadata:   &runtimeapi.ContainerMetadata{Name: c.Name, Attempt: attempt},
		Image:      &runtimeapi.ImageSpec{Image: c.Image},
		Command:    c.Command,
		Args:       c.Args,
		WorkingDir: c.WorkingDir,
		Envs:       envs,
		Mounts:     mounts,
		Labels:     labels,
		LogPath:    fmt.Sprintf("%s/%d.log", c.Name, attempt),
		Linux:      &runtimeapi.LinuxContainerConfig{SecurityContext: sc},
	}
	// A log file left by an earlier instance with the same attempt would
	// be appended to.
	_ = os.Remove(filepath.Join(cfg.LogDirectory, config.LogPath))
	var resp *runtimeapi.CreateContainerResponse
	err := r.call(ctx, 1, func(ctx context.Context) (err error) {
		resp, err = r.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sandboxID, Config: config, SandboxConfig: cfg})
		return err
	})
	if err != nil {
		return "", err
	}
	return resp.ContainerId, nil
}

func (r *Runtime) startContainer(ctx context.Context, id string) error {
	return r.call(ctx, 1, func(ctx context.Context) error {
		_, err := r.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id})
		return err
	})
}

func (r *Runtime) removeContainer(ctx context.Context, id string) error {
	var logPath string
	if st, err := r.containerStatus(ctx, id); err == nil {
		logPath = st.LogPath
	}
	err := r.call(ctx, 1, func(ctx context.Context) error {
		_, err := r.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id})
		return err
	})
	if err != nil && status.Code(err) != codes.NotFound {
		return fmt.Errorf("removing container %s: %w", short(id), err)
	}
	if logPath != "" && strings.HasPrefix(logPath, r.opts.LogDir+string(filepath.Separator)) {
		_ = os.Remove(logPath)
	}
	return nil
}

func (r *Runtime) containerStatus(ctx context.Context, id string) (*runtimeapi.ContainerStatus, error) {
	var resp *runtimeapi.ContainerStatusResponse
	err := r.call(ctx, 1, func(ctx context.Context) (err error) {
		resp, err = r.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("status of container %s: %w", short(id), err)
	}
	return resp.Status, nil
}
