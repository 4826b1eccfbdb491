#!/usr/bin/env bash
# Benchmarks on the namespace cluster (scripts/cluster.sh), side by side in
# one run so that the noisy 2-vCPU machine affects every column alike:
#   (a) the floor: UDP ping-pong between the client and replica-0 namespaces;
#   (b) electrode, per configuration, with the null and the KV application at
#       several client thread counts: throughput, p50/p99, and per replica
#       process CPU time per committed op, voluntary context switches
#       (wake-ups) per op, and datagrams handled in user space per op.
# Results: bench/results/<stamp>.json and .md.
#
#   bench/run.sh [-n OPS] [-t "1 2 4 8"] [-s SESSIONS] [-a "null kv"] [-c CONFIG]
#
# -s: client sessions per client thread (electrode client --sessions; each
# a request outstanding), default 1: one request per thread, as before.
#
# Run as root, or as a user with sudo: it builds as the user and runs the
# cluster through sudo. CONFIG is relative to the caller's directory;
# binaries go to CARGO_TARGET_DIR if set. ELECTRODE_BENCH_CONFIGURATIONS
# chooses the configurations, ELECTRODE_REPLICA_ARGS passes extra replica
# flags (bench/lib.sh).
#
# Configurations and CPU placement: bench/lib.sh (the same as the demo);
# the floor's server and client are placed like the leader and the client.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

OPS=20000
THREAD_COUNTS="1 2 4 8"
SESSIONS=1
APPS="null kv"
CONFIG=config.txt
USAGE='[-n OPS] [-t "1 2 4 8"] [-s SESSIONS] [-a "null kv"] [-c CONFIG]'
parse_options "n:OPS t:THREAD_COUNTS s:SESSIONS a:APPS c:@CONFIG"
WARMUP=$((OPS / 10))

# fast_reply for the XDP_TX floor (pingpong xdp-*); the variants are
# already copied out, so this rebuild of the library touches none.
build_then_rerun_as_root "--example pingpong --features fast_reply"

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="bench/results/$STAMP"
WORK="$(mktemp -d /tmp/electrode-bench.XXXXXX)"
trap cleanup_replicas EXIT
trap 'exit 130' INT TERM
N_REPLICAS="$(replica_count)"

scripts/cluster.sh up "$CONFIG" >/dev/null

# proc_stats PID -> "cpu_ticks voluntary_switches"
proc_stats() {
    echo "$(proc_cpu_ticks "$1") $(awk '/^voluntary_ctxt_switches/ {print $2}' "/proc/$1/status")"
}

echo "==> floor: UDP ping-pong client -> replica 0 namespace"
floor_udp "$OPS" "$WARMUP" "$WORK/floor.json"
cat "$WORK/floor.json"

# The other half of the p50 bound at one outstanding request: one XDP_TX
# round trip, a Prepare from replica 0's address to replica 1, logged and
# answered by the fast_reply program (pingpong xdp-*), pinned as the leader
# and a follower are.
echo "==> floor: XDP_TX round trip replica 0 -> replica 1 (fast_reply Prepare -> PrepareOK)"
floor_xdp "$OPS" "$WARMUP" "$WORK/xdp_floor.json"
cat "$WORK/xdp_floor.json"

RUNS=()
for name in "${CONFIGURATION_NAMES[@]}"; do
    bin="$(variant_bin "$name")"
    for app in $APPS; do
        for t in $THREAD_COUNTS; do
            run="$name-$app-t$t"
            echo "==> $run: $OPS ops, $SESSIONS session(s) per client thread"
            start_replicas "$bin" "$run" --app "$app"
            for ((i = 0; i < N_REPLICAS; i++)); do proc_stats "${PIDS[$i]}" >"$WORK/$run.before$i"; done
            scripts/cluster.sh exec client -- taskset -c "$CLIENT_CPU" "$bin" client -c "$CONFIG" -n "$OPS" \
                -w "$WARMUP" -t "$t" --sessions "$SESSIONS" --app "$app" --json >"$WORK/$run.json"
            for ((i = 0; i < N_REPLICAS; i++)); do proc_stats "${PIDS[$i]}" >"$WORK/$run.after$i"; done
            stop_replicas
            RUNS+=("$run")
        done
    done
done

python3 - "$WORK" "$OUT" "$OPS" "$N_REPLICAS" "$(getconf CLK_TCK)" "$SESSIONS" "${RUNS[@]}" <<'PY'
import json, sys
sys.path.insert(0, "bench")
from exit_counters import count, exit_counters
work, out, ops, n, hz, sessions, runs = (sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                                         int(sys.argv[5]), int(sys.argv[6]), sys.argv[7:])
floor = json.load(open(f"{work}/floor.json"))
xdp_floor = json.load(open(f"{work}/xdp_floor.json"))
result = {"ops_per_run": ops, "replicas": n, "sessions_per_client_thread": sessions, "floor": floor,
          "xdp_floor": xdp_floor, "runs": []}

for run in runs:
    client = json.load(open(f"{work}/{run}.json"))
    replicas = []
    for i in range(n):
        b = [int(x) for x in open(f"{work}/{run}.before{i}").read().split()]
        a = [int(x) for x in open(f"{work}/{run}.after{i}").read().split()]
        counters = exit_counters(f"{work}/{run}.replica{i}.log")
        replicas.append({
            "replica": i,
            "cpu_us_per_op": (a[0] - b[0]) * 1e6 / hz / ops,
            "wakeups_per_op": (a[1] - b[1]) / ops,
            "datagrams_per_op": count(counters, "received") / ops,
            "acks_per_op": count(counters, "prepare_ok") / ops,
            "sendto_per_op": count(counters, "sent") / ops,
        })
    config, app, threads = run.rsplit("-", 2)
    result["runs"].append({"run": run, "configuration": config, "app": app, "threads": int(threads[1:]),
                           "client": client, "replicas": replicas})
json.dump(result, open(f"{out}.json", "w"), indent=1)

bound = 1.5 * (floor["p50_us"] + xdp_floor["p50_us"])
lines = [f"Floor (UDP ping-pong, plain sockets, same topology, {n} replicas config): p50 {floor['p50_us']} us, "
         f"p99 {floor['p99_us']} us, {floor['throughput_ops_per_s']:.0f} round trips/s", "",
         f"XDP_TX round trip (replica 0 -> replica 1, fast_reply Prepare -> PrepareOK): p50 {xdp_floor['p50_us']} us, "
         f"p99 {xdp_floor['p99_us']} us, {xdp_floor['lost']} lost", "",
         f"p50 bound at one outstanding request: 1.5 x ({floor['p50_us']} + {xdp_floor['p50_us']}) = {bound:.0f} us", ""]
for r in result["runs"]:
    if r["threads"] == 1 and sessions == 1:
        p50 = r["client"]["p50_us"]
        lines.append(f"- {r['run']}: p50 {p50:.0f} us = {p50 / bound:.2f} x the bound")
lines += ["",
         f"Client: {sessions} session(s) per client thread (tN = N threads). "
         "Per replica process, per committed client op: CPU us, voluntary context switches (wake-ups), "
         "datagrams received in user space; leader: PrepareOKs reaching user space and sendto calls. "
         "Client CPU: the client process's own user+sys us per op.", "",
         "| run | ops/s | p50 us | p99 us | leader CPU | follower CPU | leader wake-ups | follower wake-ups | "
         "leader dgrams in | follower dgrams in | leader acks in | leader sendto | client CPU |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
for r in result["runs"]:
    c, reps = r["client"], r["replicas"]
    fol = reps[1:]
    avg = lambda key: sum(x[key] for x in fol) / len(fol)
    lines.append(f"| {r['run']} | {c['throughput_ops_per_s']:.0f} | {c['p50_us']:.0f} | {c['p99_us']:.0f} | "
                 f"{reps[0]['cpu_us_per_op']:.1f} | {avg('cpu_us_per_op'):.1f} | {reps[0]['wakeups_per_op']:.2f} | "
                 f"{avg('wakeups_per_op'):.2f} | {reps[0]['datagrams_per_op']:.2f} | {avg('datagrams_per_op'):.2f} | "
                 f"{reps[0]['acks_per_op']:.2f} | {reps[0]['sendto_per_op']:.2f} | "
                 f"{c.get('client_cpu_us_per_op') or 0:.1f} |")
open(f"{out}.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
print(f"\nwritten {out}.json and {out}.md")
PY
