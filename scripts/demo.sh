#!/usr/bin/env bash
# The main job: build, bring up the namespace cluster of config.txt, run
# every configuration (the userspace baseline and each compiled fast path)
# against the same client load, print one results table, tear down.
#
#   ./scripts/demo.sh [-n OPS] [-t CLIENT_THREADS] [-c CONFIG]
#
# Run as root, or as a user with sudo: it builds as the user and runs the
# cluster through sudo. CONFIG is relative to the caller's directory;
# binaries go to CARGO_TARGET_DIR if set. ELECTRODE_BENCH_CONFIGURATIONS
# chooses the configurations, ELECTRODE_REPLICA_ARGS passes extra replica
# flags.
#
# Configurations, CPU placement, builds: bench/lib.sh (the same as bench/).
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/../bench/lib.sh"

OPS=100000
THREADS=4
CONFIG=config.txt
USAGE="[-n OPS] [-t CLIENT_THREADS] [-c CONFIG]"
parse_options "n:OPS t:THREADS c:@CONFIG"
WARMUP=$((OPS / 10))

# install_packages: the Debian packages the build and the cluster need
# (docs/PLATFORM.md, "Packages"), those missing.
install_packages() {
    local tool need_packages=()
    for tool in clang:clang llc:llvm pkg-config:pkg-config ip:iproute2 nft:nftables python3:python3 taskset:util-linux; do
        command -v "${tool%%:*}" >/dev/null || need_packages+=("${tool#*:}")
    done
    [ -e /usr/include/libelf.h ] || need_packages+=(libelf-dev)
    [ -e /usr/include/zlib.h ] || need_packages+=(zlib1g-dev)
    if [ "${#need_packages[@]}" -gt 0 ]; then
        echo "==> installing ${need_packages[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_packages[@]}" >/dev/null
    fi
    command -v cargo >/dev/null || { echo "demo.sh: cargo not found: install Rust (rustup) first" >&2; exit 1; }
}
[ -n "${ELECTRODE_PREBUILT:-}" ] || install_packages
# shellcheck disable=SC2119 # no extra builds
build_then_rerun_as_root

WORK="$(mktemp -d /tmp/electrode-demo.XXXXXX)"
trap cleanup_replicas EXIT
trap 'echo "demo.sh: interrupted" >&2; exit 130' INT TERM

N_REPLICAS="$(replica_count)"

echo "==> cluster up ($CONFIG: $N_REPLICAS replicas)"
scripts/cluster.sh up "$CONFIG"

results=()
for name in "${CONFIGURATION_NAMES[@]}"; do
    bin="$(variant_bin "$name")"
    echo "==> $name: $OPS ops ($WARMUP warm-up), $THREADS client threads"
    start_replicas "$bin" "$name"
    scripts/cluster.sh exec client -- taskset -c "$CLIENT_CPU" "$bin" client -c "$CONFIG" \
        -n "$OPS" -w "$WARMUP" -t "$THREADS" --json >"$WORK/$name.json"
    scripts/cluster.sh exec client -- "$bin" status -c "$CONFIG" >"$WORK/$name.status"
    stop_replicas
    results+=("$name")
done

echo
echo "electrode demo: $N_REPLICAS replicas, KV app, $OPS ops ($WARMUP warm-up excluded), $THREADS closed-loop client threads"
echo "CPUs: replica 0 (leader) cpu $LEADER_CPU, other replicas cpu $FOLLOWER_CPU, client cpu $CLIENT_CPU"
python3 - "$WORK" "$OPS" "$N_REPLICAS" "${results[@]}" <<'PY'
import json, sys
sys.path.insert(0, "bench")
from exit_counters import count, exit_counters
work, ops, n, names = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]

counters = {(name, i): exit_counters(f"{work}/{name}.replica{i}.log") for name in names for i in range(n)}

def summary(name, replica, key):
    return count(counters[(name, replica)], key)

rows = [("throughput (ops/s)", lambda n_, d: f"{d['throughput_ops_per_s']:.0f}"),
        ("p50 latency (us)", lambda n_, d: f"{d['p50_us']:.0f}"),
        ("p90 latency (us)", lambda n_, d: f"{d['p90_us']:.0f}"),
        ("p99 latency (us)", lambda n_, d: f"{d['p99_us']:.0f}"),
        ("p99.9 latency (us)", lambda n_, d: f"{d['p999_us']:.0f}"),
        ("leader acks in user space / op", lambda n_, d: f"{summary(n_, 0, 'prepare_ok') / ops:.2f}"),
        ("leader sendto / op", lambda n_, d: f"{summary(n_, 0, 'sent') / ops:.2f}"),
        ("follower dgrams in user space / op",
         lambda n_, d: f"{sum(summary(n_, i, 'received') for i in range(1, n)) / (n - 1) / ops:.2f}"),
        ("client retries", lambda n_, d: f"{d['retries']}"),
        ("failed ops", lambda n_, d: f"{d['failed']}")]
data = {name: json.load(open(f"{work}/{name}.json")) for name in names}
width = max(12, *(len(name) for name in names))
label_width = max(len(r[0]) for r in rows)
print(f"| {'metric':<{label_width}} | " + " | ".join(f"{name:>{width}}" for name in names) + " |")
print(f"|{'-' * (label_width + 2)}|" + "|".join("-" * (width + 2) for _ in names) + "|")
for label, value in rows:
    print(f"| {label:<{label_width}} | " + " | ".join(f"{value(name, data[name]):>{width}}" for name in names) + " |")
PY
