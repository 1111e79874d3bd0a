package cri

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"time"
)

// Labels every pod (and container) made by this package carries. A pod
// without all of LabelCluster, LabelComponent, LabelPod and LabelSpecHash is
// not ours and is never touched.
const (
	LabelCluster   = "oneinfra.io/cluster"
	LabelComponent = "oneinfra.io/component"
	LabelPod       = "oneinfra.io/pod"
	LabelSpecHash  = "oneinfra.io/spec-hash"
	// LabelContainer is set on containers only.
	LabelContainer = "oneinfra.io/container"
)

// Sentinel errors, matched with errors.Is.
var (
	// ErrImageNotFound: an image is not on this machine and pulling it
	// failed (or pulling is disabled). The wrapping error names the image
	// and the pull error.
	ErrImageNotFound = errors.New("image not found")
	// ErrInvalidPod: a desired pod is malformed (names, duplicates).
	ErrInvalidPod = errors.New("invalid pod")
)

// Pod is the desired state of one pod sandbox: always in the host network
// (no CNI), each container its own PID namespace.
type Pod struct {
	// Component is the oneinfra component this pod belongs to (label
	// oneinfra.io/component). A component may have several pods.
	Component string `json:"component"`
	// Name identifies the pod within its component (label oneinfra.io/pod);
	// empty means the component's name.
	Name string `json:"name,omitempty"`
	// Labels are extra labels; the package's own labels win.
	Labels     map[string]string `json:"labels,omitempty"`
	Containers []Container       `json:"containers"`
}

// Container is one container of a Pod.
type Container struct {
	Name  string `json:"name"`
	Image string `json:"image"`
	// Command replaces the image's entrypoint, Args its command.
	Command    []string          `json:"command,omitempty"`
	Args       []string          `json:"args,omitempty"`
	Env        map[string]string `json:"env,omitempty"`
	Mounts     []Mount           `json:"mounts,omitempty"`
	WorkingDir string            `json:"workingDir,omitempty"`
	// RunAsUser overrides the image's user (the official haproxy image runs
	// as uid 99, for example).
	RunAsUser *int64 `json:"runAsUser,omitempty"`
}

// Mount is a bind mount of a host path. A missing host path is created as a
// directory by the runtime.
type Mount struct {
	HostPath      string `json:"hostPath"`
	ContainerPath string `json:"containerPath"`
	ReadOnly      bool   `json:"readOnly,omitempty"`
}

// SpecHash is a stable hash of the whole pod spec (every field, map order
// irrelevant). It is stored in the label oneinfra.io/spec-hash: a pod whose
// hash differs from the desired one is replaced.
//
// Fields added to Pod or Container later must be omitempty, so that the hash
// of existing specs does not change (which would restart every pod on an
// agent upgrade).
func SpecHash(p Pod) string {
	p = p.normalized()
	b, err := json.Marshal(p) // maps are encoded with sorted keys
	if err != nil {
		panic(fmt.Sprintf("cri: encoding pod spec: %v", err)) // only plain types: cannot happen
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:10])
}

func (p Pod) normalized() Pod {
	if p.Name == "" {
		p.Name = p.Component
	}
	return p
}

// key identifies a pod within a cluster.
func (p Pod) key() podKey { return podKey{p.Component, p.normalized().Name} }

type podKey struct{ component, name string }

func (k podKey) String() string { return k.component + "/" + k.name }

var nameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$`)

func validName(kind, s string) error {
	if !nameRE.MatchString(s) {
		return fmt.Errorf("%w: %s name %q must be 1 to 63 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit", ErrInvalidPod, kind, s)
	}
	return nil
}

func validate(cluster string, pods []Pod) error {
	if err := validName("cluster", cluster); err != nil {
		return err
	}
	seen := map[podKey]bool{}
	for _, p := range pods {
		if err := validName("component", p.Component); err != nil {
			return err
		}
		p = p.normalized()
		if err := validName("pod", p.Name); err != nil {
			return err
		}
		if seen[p.key()] {
			return fmt.Errorf("%w: pod %s appears twice", ErrInvalidPod, p.key())
		}
		seen[p.key()] = true
		if len(p.Containers) == 0 {
			return fmt.Errorf("%w: pod %s has no container", ErrInvalidPod, p.key())
		}
		names := map[string]bool{}
		for _, c := range p.Containers {
			if err := validName("container", c.Name); err != nil {
				return fmt.Errorf("pod %s: %w", p.key(), err)
			}
			if names[c.Name] {
				return fmt.Errorf("%w: pod %s has two containers named %s", ErrInvalidPod, p.key(), c.Name)
			}
			names[c.Name] = true
			if c.Image == "" {
				return fmt.Errorf("%w: pod %s container %s has no image", ErrInvalidPod, p.key(), c.Name)
			}
			for _, m := range c.Mounts {
				if len(m.HostPath) == 0 || m.HostPath[0] != '/' || len(m.ContainerPath) == 0 || m.ContainerPath[0] != '/' {
					return fmt.Errorf("%w: pod %s container %s: mount paths must be absolute (%q -> %q)", ErrInvalidPod, p.key(), c.Name, m.HostPath, m.ContainerPath)
				}
			}
		}
	}
	return nil
}

func sortedKeys(env map[string]string) []string {
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// PodState summarises a pod.
type PodState string

const (
	// PodPending: being created, or waiting for something (an image).
	PodPending PodState = "Pending"
	// PodRunning: sandbox ready and every container running.
	PodRunning PodState = "Running"
	// PodFailed: a container exited and waits for its restart, or could not
	// be created or started.
	PodFailed PodState = "Failed"
)

// ContainerState is the state of a container's latest instance.
type ContainerState string

const (
	ContainerWaiting ContainerState = "Waiting" // not created or not started yet
	ContainerRunning ContainerState = "Running"
	ContainerExited  ContainerState = "Exited"
)

// Reasons reported in PodStatus.Reason and ContainerStatus.Reason.
const (
	ReasonImageNotFound    = "ImageNotFound"
	ReasonCrashLoopBackOff = "CrashLoopBackOff"
	ReasonCreateFailed     = "CreateContainerError"
	ReasonStartFailed      = "StartContainerError"
	ReasonSandboxFailed    = "SandboxError"
	ReasonContainerCreated = "ContainerCreating"
)

// PodStatus is what a Reconcile found and did for one desired pod.
type PodStatus struct {
	Cluster   string
	Component string
	Name      string
	SandboxID string
	SpecHash  string
	State     PodState
	// Reason (one of the Reason constants, or the runtime's) and Message
	// say why a pod is not Running.
	Reason     string
	Message    string
	CreatedAt  time.Time
	Containers []ContainerStatus
	// RequeueAfter, when positive, is when a reconcile has something to do
	// for this pod (a container restart after its back-off).
	RequeueAfter time.Duration
}

// ContainerStatus is the state of a container's latest instance.
type ContainerStatus struct {
	Name  string
	ID    string
	Image string
	State ContainerState
	// RestartCount is how often the container was restarted in this pod.
	RestartCount int
	StartedAt    time.Time
	FinishedAt   time.Time
	ExitCode     int32
	Reason       string
	Message      string
	// LogTail holds the last lines of the log of an exited container.
	LogTail []string
	// LastTermination describes the previous instance when the container
	// was restarted.
	LastTermination *Termination
}

// Termination describes an exited container instance.
type Termination struct {
	ExitCode   int32
	Reason     string
	Message    string
	StartedAt  time.Time
	FinishedAt time.Time
	LogTail    []string
}
