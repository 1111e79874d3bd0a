#!/usr/bin/env bash
# Stops what `make demo` started and removes its files.
set -u
DEMO=${DEMO_DIR:-/tmp/oneinfra-demo}
for pid in "$DEMO"/*.pid; do
  [ -e "$pid" ] && kill "$(cat "$pid")" 2>/dev/null
done
sleep 1
for pid in "$DEMO"/*.pid; do
  [ -e "$pid" ] && kill -9 "$(cat "$pid")" 2>/dev/null
done
rm -rf "$DEMO"
echo "demo stopped"
