#!/usr/bin/env bash
# Stops what `make demo` started and removes the lab: processes, pods,
# containerds, namespaces, links and files.
set -u
cd "$(dirname "$0")/../.."
_output/bin/lab down --prefix oilab && echo "demo removed"
