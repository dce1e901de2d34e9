#!/usr/bin/env bash
# End-to-end benchmark: the release bandgate binary, a private Mosquitto on a free loopback
# port, frames fed through the replay source (a FIFO) and a subscriber that timestamps what a
# phone receives. Prints one table; writes bench/results.json. See README, "Performance".
#
#   bench/run.sh            # the full run (~10 min on a quiet 2-core box)
#   bench/run.sh --quick    # a smaller version (~2 min) to check that it works
#   bench/run.sh --only latency    # one part (latency, search, steady, timers)
#   bench/run.sh --soak 120        # only the soak, 120 minutes (writes bench/soak.json)
set -euo pipefail
cd "$(dirname "$0")/.."

quick=()
out=bench/results.json
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick+=(--quick) ;;
        # e.g. --only latency,timers (parts: latency, search, steady, timers)
        --only) quick+=(--only "$2"); shift ;;
        --soak) quick+=(--soak "$2"); out=bench/soak.json; shift ;;
        *) echo "usage: bench/run.sh [--quick] [--only latency,search,steady,timers] [--soak MINUTES]" >&2; exit 64 ;;
    esac
    shift
done

mosquitto=$(command -v mosquitto || ls /usr/sbin/mosquitto 2>/dev/null || true)
if [ -z "$mosquitto" ]; then
    echo "bench/run.sh needs mosquitto: apt-get install -y mosquitto" >&2
    exit 1
fi

echo "== building (release)" >&2
cargo build --release --quiet --bin bandgate --example e2e

work=target/bench-e2e
mkdir -p "$work"
tmpfs=/dev/shm/bandgate-bench-$$
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence false
user $(id -un)
max_queued_messages 0
max_inflight_messages 0
log_dest file $PWD/$work/mosquitto.log
log_type error
log_type warning
CONF

"$mosquitto" -c "$work/mosquitto.conf" &
broker=$!
cleanup() {
    kill "$broker" 2>/dev/null || true
    wait "$broker" 2>/dev/null || true
    rm -rf "$tmpfs"
}
trap cleanup EXIT
for _ in $(seq 100); do
    if (echo > /dev/tcp/127.0.0.1/"$port") 2>/dev/null; then break; fi
    sleep 0.1
done

echo "== machine" >&2
model=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
echo "cpu: $model, $(nproc) cores; $(uptime | sed 's/.*load/load/')" >&2
before=$(uptime | sed 's/.*load average: //')

target/release/examples/e2e --bin target/release/bandgate --port "$port" --work "$work" \
    --tmpfs "$tmpfs" --out "$out" "${quick[@]}"

after=$(uptime | sed 's/.*load average: //')
python3 - "$model" "$(nproc)" "$before" "$after" "$out" <<'PY'
import json, sys
r = json.load(open(sys.argv[5]))
r["machine"] = {"cpu": sys.argv[1], "cores": int(sys.argv[2]),
                "load_before": sys.argv[3], "load_after": sys.argv[4]}
json.dump(r, open(sys.argv[5], "w"), indent=2, ensure_ascii=False)
PY
echo "machine: $model, $(nproc) cores; load average before: $before; after: $after"
echo "results: $out"
