// Package cri is the hypervisor agent's container layer: it runs
// oneinfra's pods (control-plane components, ingresses) through the CRI API
// (k8s.io/cri-api over gRPC, usually containerd) and reports their state.
//
// What it owns: pod sandboxes and containers that carry the labels
// oneinfra.io/cluster, oneinfra.io/component, oneinfra.io/pod and
// oneinfra.io/spec-hash, and their log directories under Options.LogDir.
// Nothing else on the runtime is ever changed, not even a pod that carries
// some of these labels but not all.
//
// How: Runtime.Reconcile is level-triggered and keeps no state besides the
// runtime's own, so it can be called on every change and on a periodic
// resync, by a new Runtime after an agent restart, and after a crash at any
// point. A pod is identified by (cluster, component, pod name); its spec
// hash (SpecHash) decides whether its sandbox is kept:
//
//   - ready sandbox with the desired hash: kept, whichever Runtime made it;
//     exited containers in it are restarted in place (a new attempt, same
//     sandbox) after a back-off of RestartBackoff doubled per restart, like
//     the kubelet's CrashLoopBackOff; meanwhile the pod is Failed with the
//     exit code and the last lines of the container's log.
//   - hash differs or sandbox not ready: containers stopped with their
//     grace period, sandbox stopped (StopPodSandbox) and removed
//     (RemovePodSandbox), then a new sandbox made. Stop first, then start:
//     the pods are host-network and reuse their host ports. Images are
//     ensured before the old sandbox is stopped, so a missing image keeps
//     the old pod running and reports ImageNotFound.
//   - pods of the cluster that are not desired: removed the same way.
//
// Only the newest exited instance of each container is kept (for its log
// and LastTermination); older ones are removed with their log files.
//
// Every sandbox is in the host network, each container in its own PID
// namespace; logs are in the CRI format under
// LogDir/oneinfra-CLUSTER_COMPONENT-POD_UID/CONTAINER/ATTEMPT.log.
//
// Connection: plain gRPC to the runtime's unix socket with a CRI v1
// version check at Connect and a timeout per call (twice as long for
// RunPodSandbox, PullTimeout for pulls). k8s.io/cri-client was not used:
// it would add OpenTelemetry, klog and component-base to the module for
// these few lines.
package cri
