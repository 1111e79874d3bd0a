// Package ingress runs a cluster's ingress on a public hypervisor: haproxy
// in TCP mode in front of every API server of the cluster.
//
// Render turns an ingress assignment into a host.Plan: files in the
// component's config dir (haproxy.cfg, the cluster CA, the health-check
// client certificate, an empty server state file) and one pod "ingress"
// with one haproxy container in the host network. The config dir is
// bind-mounted at the same path in the container (the directory, not the
// files, so that files replaced by rename are seen), and haproxy runs with
// its working directory there.
//
// # The pod does not depend on the backends
//
// The pod spec names only the image and paths; the frontend port, the
// backends and the certificates live in the files. A change of API servers
// (or of the port, or a renewed certificate) therefore leaves the spec hash
// alone, so the CRI layer keeps the pod; the agent writes the files and
// calls Reload when any of them changed and the pod did not.
//
// # Reload
//
// haproxy runs in master-worker mode (-W, and master-worker in the config)
// with the master CLI on a unix socket in the config dir (-S, given as a
// path relative to the working directory, because the absolute path can
// exceed the 108 bytes a unix socket path may have). Reload asks the master
// to "reload": it re-executes itself with the same arguments, reads the
// configuration again and starts a new worker. The listening sockets are
// handed from the old worker to the new one through the master's internal
// socket pairs (in master-worker mode haproxy 2.6 needs no
// "expose-fd listeners" stats socket for that), so no connection is
// refused during the reload; the old worker stops accepting and keeps
// serving the connections it has until they close or hard-stop-after
// (HardStopAfter) runs out. If the new configuration is rejected, the old
// worker simply goes on.
//
// haproxy 2.6 answers "reload" by closing the connection, without a
// status; Reload reads the outcome from "show proc" (the master's reload
// and failure counters, the worker PIDs). Before reloading it saves the
// servers' states ("show servers state" of the current worker) to the file
// the new configuration loads them from (load-server-state-from-file), so
// an API server that was down stays down across the reload instead of
// getting traffic until its checks fail again. Only the states of servers
// whose name, address and port are unchanged are kept: haproxy would apply
// a saved port to a server that moved, and the address of the
// configuration must win (init-addr libc,none). The file is emptied once
// the reload is over, so a stale state is never loaded by a fresh pod.
//
// The master runs as root (it binds the port and reads the 0600 key); the
// workers, which face the network, run as WorkerUID. fd-hard-limit caps the
// automatic maxconn where the container's file limit is huge.
//
// # Health checks
//
// Each API server is checked with GET /readyz over TLS (check-ssl), status
// 200 expected. The server's certificate must chain to the cluster CA
// (vocab.ClusterCA, which signs API server serving certificates only) and be
// valid for the name "kubernetes" (check-sni and verifyhost). haproxy 2.6
// cannot verify a certificate by IP address: its host name check compares
// DNS names (and the CN) only, never IP SANs, so verifying by the backend's
// address (the hypervisor's IP, which is in the certificate) makes every
// check fail. "kubernetes" is a DNS SAN of every API server certificate of
// the cluster, and the CA proves that the peer is one of the cluster's API
// servers. The checks present the ingress-health client certificate
// (vocab.IngressHealthCert): /readyz works for it even where anonymous
// requests are refused.
//
// Checks run every 2s while a server is up, every 500ms while it is down
// or its state is changing: an API server is out after two failed checks
// and back after two good ones, so a new one takes connections about a
// second after it is ready.
// Balancing is leastconn: API clients hold long-lived connections (watches,
// HTTP/2), which round robin would spread unevenly.
//
// Probe checks the whole path the way a client does: GET /readyz through
// the ingress's frontend, verifying the server against the cluster CA.
package ingress
