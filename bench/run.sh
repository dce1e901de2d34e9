#!/usr/bin/env bash
# End-to-end benchmark: the release bandgate binary, a private Mosquitto on a free loopback
# port, frames fed through the replay source (a FIFO) and a subscriber that timestamps what a
# phone receives. Prints one table; writes bench/results.json. See README, "Performance".
#
#   bench/run.sh            # the full run (~10 min on a quiet 2-core box)
#   bench/run.sh --quick    # a smaller version (~2 min) to check that it works
#   bench/run.sh --only latency    # one part (latency, search, steady, timers, ble)
#   bench/run.sh --only ble        # the BLE intake through the mock BlueZ (examples/ble_bench.rs);
#                                  # prints its own table, writes bench/results-ble.json
#   bench/run.sh --only ble --compare /path/to/older/bandgate   # both binaries, same feed
#   bench/run.sh --soak 120        # only the soak, 120 minutes (writes bench/soak.json)
#   bench/run.sh --only console    # SOS -> alert visible on the duty console in headless Chromium
#                                  # (examples/console_bench.rs; needs chromium and
#                                  # `npm ci --prefix tests/console`); writes bench/results-console.json
set -euo pipefail
cd "$(dirname "$0")/.."

quick=()
only=""
console_sos=100
ble_args=()
out=bench/results.json
soak=false
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick+=(--quick); ble_args+=(--trials 20 --flood 20000); console_sos=20 ;;
        # e.g. --only latency,timers (parts: latency, search, steady, timers, ble)
        --only) only="$2"; shift ;;
        --compare) ble_args+=(--bin "before=$2"); shift ;;
        --soak) quick+=(--soak "$2"); out=bench/soak.json; soak=true; shift ;;
        *) echo "usage: bench/run.sh [--quick] [--only latency,search,steady,timers,ble,console] [--compare BIN] [--soak MINUTES]" >&2; exit 64 ;;
    esac
    shift
done
# The BLE and console parts run apart from the replay-source parts (examples/e2e.rs).
run_ble=false
run_console=false
e2e_only=""
if [ -z "$only" ]; then
    run_ble=true
    run_console=true
else
    IFS=, read -ra parts <<< "$only"
    for p in "${parts[@]}"; do
        case "$p" in
            ble) run_ble=true ;;
            console) run_console=true ;;
            *) e2e_only="${e2e_only:+$e2e_only,}$p" ;;
        esac
    done
fi
run_e2e=true
if [ -n "$only" ] && [ -z "$e2e_only" ]; then run_e2e=false; fi
[ -n "$e2e_only" ] && quick+=(--only "$e2e_only")
# The soak runs alone.
if $soak; then run_e2e=true; run_ble=false; run_console=false; fi
ble_python=python3
if ! python3 -c 'import dbus, dbusmock' 2>/dev/null && [ -x /usr/bin/python3 ]; then
    ble_python=/usr/bin/python3
fi

mosquitto=$(command -v mosquitto || ls /usr/sbin/mosquitto 2>/dev/null || true)
if [ -z "$mosquitto" ]; then
    echo "bench/run.sh needs mosquitto: apt-get install -y mosquitto" >&2
    exit 1
fi

echo "== building (release)" >&2
cargo build --release --quiet --bin bandgate --example e2e --example ble_bench --example console_bench

work=target/bench-e2e
mkdir -p "$work"
tmpfs=/dev/shm/bandgate-bench-$$
broker=""
cleanup() {
    [ -n "$broker" ] && { kill "$broker" 2>/dev/null || true; wait "$broker" 2>/dev/null || true; }
    rm -rf "$tmpfs"
}
trap cleanup EXIT
# The replay-source parts (examples/e2e.rs) start their own Mosquitto through the library's
# launcher (bandgate::cmd::demo::mosquitto, as the demo and the tests do); the BLE part gets one
# here.
if $run_ble; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    mkdir -p target/bench-ble
    cat > target/bench-ble/mosquitto.conf <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence false
user $(id -un)
max_queued_messages 0
max_inflight_messages 0
# As config/mosquitto.conf ships it (without it a new alert waited ~45 ms behind a QoS 0 message).
set_tcp_nodelay true
log_dest file $PWD/target/bench-ble/mosquitto.log
log_type error
log_type warning
CONF
    "$mosquitto" -c target/bench-ble/mosquitto.conf &
    broker=$!
    for _ in $(seq 100); do
        if (echo > /dev/tcp/127.0.0.1/"$port") 2>/dev/null; then break; fi
        sleep 0.1
    done
fi

echo "== machine" >&2
model=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
echo "cpu: $model, $(nproc) cores; $(uptime | sed 's/.*load/load/')" >&2
before=$(uptime | sed 's/.*load average: //')

stamp() {
    python3 - "$1" "$model" "$(nproc)" "$before" "$(uptime | sed 's/.*load average: //')" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
r["machine"] = {"cpu": sys.argv[2], "cores": int(sys.argv[3]),
                "load_before": sys.argv[4], "load_after": sys.argv[5]}
json.dump(r, open(sys.argv[1], "w"), indent=2, ensure_ascii=False)
PY
}

if $run_e2e; then
    target/release/examples/e2e --bin target/release/bandgate --work "$work" \
        --tmpfs "$tmpfs" --out "$out" "${quick[@]}"
    stamp "$out"
    echo "results: $out"
fi
if $run_ble; then
    command -v dbus-daemon >/dev/null || { echo "the ble part needs dbus-daemon (apt-get install dbus)" >&2; exit 1; }
    target/release/examples/ble_bench "${ble_args[@]}" --bin "now=target/release/bandgate" \
        --port "$port" --work target/bench-ble --out bench/results-ble.json --python "$ble_python"
    stamp bench/results-ble.json
    echo "results: bench/results-ble.json"
fi
if $run_console; then
    target/release/examples/console_bench --bin target/release/bandgate --sos "$console_sos" \
        --json bench/results-console.json
    stamp bench/results-console.json
    echo "results: bench/results-console.json"
fi
after=$(uptime | sed 's/.*load average: //')
echo "machine: $model, $(nproc) cores; load average before: $before; after: $after"
