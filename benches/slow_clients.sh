#!/usr/bin/env bash
# What the gateway holds per slow client: N GetObject streams that never
# read, or N PutObject streams that trickle one byte a second, each on its
# own connection (examples/slow_clients.rs), held for HOLD seconds.
#
# Usage: benches/slow_clients.sh readers|trickle N [HOLD] [BIN]
#   BIN: the sealgate binary to measure (default: target/debug/sealgate,
#   built here). SEALGATE_* variables reach the server, e.g.
#   SEALGATE_LIMITS_STREAM_TIMEOUT_SECONDS=10 to see streams ended sooner.
#
# Prints the server's RSS before the clients, then every 5 s while they are
# held, each as the difference per client. glibc's mmap threshold is fixed
# at 128 KiB (MALLOC_MMAP_THRESHOLD_, with heap trimming on every free and
# two arenas) so that freed buffers leave the RSS instead of staying in the
# heap, where RSS would not show them freed; small allocations freed may
# still stay resident.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=$1; n=$2; hold=${3:-40}
cargo build --quiet --example slow_clients --bin sealgate
target=${CARGO_TARGET_DIR:-target}
bin=${4:-$target/debug/sealgate}
work=$(mktemp -d)
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
MALLOC_MMAP_THRESHOLD_=131072 MALLOC_TRIM_THRESHOLD_=0 MALLOC_ARENA_MAX=2 "$bin" serve --data-dir "$work/data" --listen 127.0.0.1:0 2>"$work/serve.log" &
server=$!
for _ in $(seq 100); do
  grep -q "sealgate listening" "$work/serve.log" 2>/dev/null && break
  sleep 0.1
done
addr=$(sed -n 's/.*address=Some(\([^)]*\)).*/\1/p' "$work/serve.log" | head -1)
[ -n "$addr" ] || { echo "server did not start" >&2; cat "$work/serve.log" >&2; exit 1; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$server/status"; }
base=$(rss)
echo "server RSS before the clients: $base KiB"
"$target/debug/examples/slow_clients" "http://$addr" "$mode" "$n" "$hold" >"$work/client.log" 2>&1 &
client=$!
for _ in $(seq 600); do
  grep -q "^open" "$work/client.log" 2>/dev/null && break
  sleep 0.1
done
start=$(date +%s)
while kill -0 "$client" 2>/dev/null; do
  now=$(rss)
  echo "t=$(( $(date +%s) - start ))s RSS $now KiB: $(( (now - base) / n )) KiB per $mode client"
  sleep 5
done
cat "$work/client.log"
# The clients' own exit status: a broken client fails the run.
wait "$client"
