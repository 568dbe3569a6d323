#!/usr/bin/env bash
# Peak server RSS while a 1 GiB object goes up and comes back through the CLI.
# Usage: benches/rss.sh [SIZE_MIB] [BIN]   (default 1024, a release build)
#   BIN: the sealgate binary to measure; CI passes its dev build with a few
#   MiB as a smoke run (.ci/run).
# Reports the server's peak RSS (from /usr/bin/time -v) and, as a baseline in
# the same run, the peak RSS of an idle server that only started and stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
if [ -n "${2:-}" ]; then
  bin=$2
else
  cargo build --release --bin sealgate >/dev/null
  bin=${CARGO_TARGET_DIR:-target}/release/sealgate
fi
work=$(mktemp -d)
timer=""
trap '[ -n "$timer" ] && kill "$timer" 2>/dev/null; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ep=http://127.0.0.1:$port

serve() { # $1: time output file
  /usr/bin/time -v -o "$1" "$bin" serve --data-dir "$work/data" --listen 127.0.0.1:$port 2>"$work/serve.log" &
  timer=$!
  for _ in $(seq 300); do
    grep -q "sealgate listening" "$work/serve.log" 2>/dev/null && return
    sleep 0.1
  done
  echo "server did not start" >&2; cat "$work/serve.log" >&2; exit 1
}
# The server is the timer's only child: stopped by its pid (SIGINT, a clean
# shutdown), then the timer, which reports, is waited for.
stop() { kill -INT "$(pgrep -P "$timer")"; wait "$timer" || true; timer=""; }
peak() { awk -F: '/Maximum resident set size/ {gsub(/ /,"",$2); print $2}' "$1"; }

serve "$work/idle.time"; stop
head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$work/in.bin"
serve "$work/load.time"
start=$(date +%s.%N)
"$bin" put --endpoint "$ep" --user bench --space channels --id big "$work/in.bin" >/dev/null
mid=$(date +%s.%N)
"$bin" get --endpoint "$ep" --user bench --space channels --id big -o "$work/out.bin"
end=$(date +%s.%N)
stop
cmp "$work/in.bin" "$work/out.bin"
idle=$(peak "$work/idle.time"); load=$(peak "$work/load.time")
python3 - "$size_mib" "$idle" "$load" "$start" "$mid" "$end" <<'PY'
import sys
size, idle, load, s, m, e = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), *map(float, sys.argv[4:])
print(f"object: {size} MiB, round trip verified")
print(f"server peak RSS idle: {idle/1024:.1f} MiB; during upload+download: {load/1024:.1f} MiB "
      f"(ratio to idle {load/idle:.2f}, object/peak {size*1024/load:.1f}x)")
print(f"upload {size/(m-s):.0f} MiB/s, download {size/(e-m):.0f} MiB/s (CLI on loopback)")
PY
