#!/usr/bin/env bash
# End-to-end benchmark: the release bandgate binary, a private Mosquitto on a free loopback
# port, frames fed through the replay source (a FIFO) and a subscriber that timestamps what a
# phone receives. Prints one table; writes bench/results.json. See README, "Performance".
#
#   bench/run.sh            # the full run (~10 min on a quiet 2-core box)
#   bench/run.sh --quick    # a smaller version (~2 min) to check that it works
#   bench/run.sh --only latency    # one part (latency, search, steady, timers)
set -euo pipefail
cd "$(dirname "$0")/.."

quick=()
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick+=(--quick) ;;
        # e.g. --only latency,timers (parts: latency, search, steady, timers)
        --only) quick+=(--only "$2"); shift ;;
        *) echo "usage: bench/run.sh [--quick] [--only latency,search,steady,timers]" >&2; exit 64 ;;
    esac
    shift
done

# The broker: a private Mosquitto on a free loopback port, started by examples/e2e.rs through
# bandgate::demo::mosquitto (the launcher the demo and the tests use).
if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
    echo "bench/run.sh needs mosquitto: apt-get install -y mosquitto" >&2
    exit 1
fi

echo "== building (release)" >&2
cargo build --release --quiet --bin bandgate --example e2e

work=target/bench-e2e
mkdir -p "$work"
tmpfs=/dev/shm/bandgate-bench-$$
cleanup() {
    rm -rf "$tmpfs"
}
trap cleanup EXIT

echo "== machine" >&2
model=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
echo "cpu: $model, $(nproc) cores; $(uptime | sed 's/.*load/load/')" >&2
before=$(uptime | sed 's/.*load average: //')

target/release/examples/e2e --bin target/release/bandgate --work "$work" \
    --tmpfs "$tmpfs" --out bench/results.json "${quick[@]}"

after=$(uptime | sed 's/.*load average: //')
python3 - "$model" "$(nproc)" "$before" "$after" <<'PY'
import json, sys
r = json.load(open("bench/results.json"))
r["machine"] = {"cpu": sys.argv[1], "cores": int(sys.argv[2]),
                "load_before": sys.argv[3], "load_after": sys.argv[4]}
json.dump(r, open("bench/results.json", "w"), indent=2, ensure_ascii=False)
PY
echo "machine: $model, $(nproc) cores; load average before: $before; after: $after"
echo "results: bench/results.json"
