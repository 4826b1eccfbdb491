#!/usr/bin/env bash
# Where the leader's time goes at saturation: per configuration, a closed
# loop of -t threads x -S sessions for -d seconds against a fresh cluster,
# with `perf record` (software event cpu-clock: this VM has no hardware
# counters) sampling the leader process and `perf stat` counting its
# task-clock, context switches and migrations. Also every CPU's busy time
# per op (/proc/stat), since on veth part of the leader's network work runs
# in the client's softirqs and part of the client's in the leader's sends
# (docs/PLATFORM.md, "Where kernel work runs").
#
#   bench/profile.sh [-c CONFIG] [-d 3] [-t 2] [-S 16] [-a null] [-N 25]
#
# -N: functions listed per configuration. Configurations: as bench/run.sh
# (ELECTRODE_BENCH_CONFIGURATIONS, default here "userspace| all|fast_paths";
# ELECTRODE_REPLICA_ARGS, extra replica flags: bench/lib.sh).
# Results: bench/results/profile-<stamp>.md (the top functions by share of
# the leader's samples, grouped by user space, kernel network stack, BPF and
# the rest) and .json. Run as root, or as a user with sudo.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
select_configurations "userspace| all|fast_paths"

CONFIG=config.txt
SECONDS_RUN=3
THREADS=2
SESSIONS=16
APP=null
TOP=25
USAGE="[-c CONFIG] [-d SECONDS] [-t THREADS] [-S SESSIONS] [-a APP] [-N TOP]"
parse_options "c:@CONFIG d:SECONDS_RUN t:THREADS S:SESSIONS a:APP N:TOP"
[ -f "$CONFIG" ] || { echo "$0: no config file $CONFIG" >&2; exit 2; }
command -v perf >/dev/null || { echo "$0: perf is not installed (apt-get install linux-perf)" >&2; exit 2; }

# shellcheck disable=SC2119 # no extra builds
build_then_rerun_as_root

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="bench/results/profile-$STAMP"
WORK="$(mktemp -d /tmp/electrode-profile.XXXXXX)"
PERF_PIDS=()
cleanup() {
    local pid
    for pid in "${PERF_PIDS[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
    for pid in "${PERF_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    cleanup_replicas
}
trap cleanup EXIT
trap 'exit 130' INT TERM

scripts/cluster.sh up "$CONFIG" >/dev/null

cpu_busy() { awk '/^cpu[0-9]/ {print $1, $2 + $3 + $4 + $7 + $8}' /proc/stat; }

RUNS=()
for name in "${CONFIGURATION_NAMES[@]}"; do
    bin="$(variant_bin "$name")"
    run="$name-$APP"
    echo "==> $run: ${SECONDS_RUN} s, $THREADS threads x $SESSIONS sessions"
    start_replicas "$bin" "$run" --app "$APP"
    leader="${PIDS[0]}"
    # perf stops at SIGINT, which it gets when the client is done.
    perf record -q -g -e cpu-clock -F 4999 -p "$leader" -o "$WORK/$run.data" 2>"$WORK/$run.record.err" &
    PERF_PIDS=("$!")
    perf stat -x, -e task-clock,context-switches,cpu-migrations -p "$leader" -o "$WORK/$run.stat" &
    PERF_PIDS+=("$!")
    sleep 0.3
    cpu_busy >"$WORK/$run.cpu_before"
    scripts/cluster.sh exec client -- taskset -c "$CLIENT_CPU" "$bin" client -c "$CONFIG" \
        --duration "$SECONDS_RUN" -t "$THREADS" --sessions "$SESSIONS" --app "$APP" --json >"$WORK/$run.json"
    cpu_busy >"$WORK/$run.cpu_after"
    for pid in "${PERF_PIDS[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
    for pid in "${PERF_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PERF_PIDS=()
    stop_replicas
    perf report -i "$WORK/$run.data" --no-children --sort dso,symbol --stdio -q -g none --percent-limit 0.01 \
        2>/dev/null >"$WORK/$run.report" || true
    perf script -i "$WORK/$run.data" -F ip,sym,dso 2>/dev/null >"$WORK/$run.stacks" || true
    RUNS+=("$run")
done

python3 - "$WORK" "$OUT" "$(getconf CLK_TCK)" "$TOP" "$THREADS" "$SESSIONS" "$SECONDS_RUN" "${RUNS[@]}" <<'PY'
import json, re, sys
work, out, hz, top, threads, sessions, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), \
    int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
runs = sys.argv[8:]

# What the leader was doing, from each sample's kernel stack (leaf first):
# the first rule whose function appears anywhere in the stack wins.
KINDS = [
    ("receivers' network stack run in the leader's softirq (bridge, veth, UDP delivery, waking the receiver)",
     ("net_rx_action", "__netif_receive_skb", "process_backlog", "veth_poll", "do_softirq", "handle_softirqs")),
    ("send syscalls: UDP/IP output, routing, veth xmit, TC egress",
     ("__sys_sendmmsg", "__sys_sendmsg", "__sys_sendto", "udp_sendmsg", "__x64_sys_sendmmsg",
      "__x64_sys_sendto", "__x64_sys_sendmsg")),
    ("receive syscalls: socket reads (recvmmsg/recvfrom)",
     ("__sys_recvmmsg", "__sys_recvfrom", "__sys_recvmsg", "udp_recvmsg", "__x64_sys_recvmmsg",
      "__x64_sys_recvfrom")),
    ("sleeping and waking: epoll, context switches, timers",
     ("do_epoll_wait", "ep_poll", "schedule", "finish_task_switch.isra.0", "__x64_sys_epoll_wait",
      "hrtimer_interrupt", "__sysvec_apic_timer_interrupt", "do_nanosleep", "futex_wait", "__x64_sys_futex")),
    ("bpf() syscalls: map reads and writes", ("__sys_bpf", "__x64_sys_bpf", "map_lookup_elem", "map_update_elem")),
    ("other kernel (page faults, other syscalls, interrupts)", ()),
]

def classify(frames):
    """frames: [(symbol, dso)], leaf first."""
    if not frames:
        return "unknown"
    leaf_sym, leaf_dso = frames[0]
    if not leaf_dso.startswith("[kernel") and not leaf_dso.startswith("bpf_prog") and leaf_dso != "[unknown]":
        if "electrode" in leaf_dso:
            return "user space: electrode"
        if "libc" in leaf_dso:
            return "user space: libc (malloc, memcpy, syscall stubs)"
        return "user space: " + leaf_dso.rsplit("/", 1)[-1]
    names = {sym for sym, _ in frames}
    for kind, anchors in KINDS:
        if not anchors or any(a in names for a in anchors):
            return kind
    return KINDS[-1][0]

def stacks(path):
    frames = []
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        if not line.strip():
            if frames:
                yield frames
            frames = []
            continue
        m = re.match(r"\s*[0-9a-f]+\s+(.+?)\s+\((.*)\)\s*$", line)
        if m:
            sym = re.sub(r"\+0x[0-9a-f]+$", "", m.group(1))
            frames.append((sym, m.group(2).rsplit("/", 1)[-1]))
    if frames:
        yield frames

result = {"seconds": seconds, "threads": threads, "sessions": sessions, "runs": []}
for run in runs:
    client = json.load(open(f"{work}/{run}.json"))
    ops = client["ops"] - client.get("failed", 0)
    stat = {}
    for line in open(f"{work}/{run}.stat"):
        parts = line.strip().split(",")
        if len(parts) > 3 and parts[0] and parts[0][0].isdigit():
            stat[parts[2]] = float(parts[0])
    before = {l.split()[0]: int(l.split()[1]) for l in open(f"{work}/{run}.cpu_before")}
    after = {l.split()[0]: int(l.split()[1]) for l in open(f"{work}/{run}.cpu_after")}
    busy = {cpu: (after[cpu] - before[cpu]) * 1e6 / hz / ops for cpu in sorted(after)}
    funcs, groups, samples = [], {}, 0
    for line in open(f"{work}/{run}.report"):
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[[.kgu]\]\s+(.+?)\s*$", line)
        if m:
            funcs.append({"percent": float(m.group(1)), "dso": m.group(2), "symbol": m.group(3)})
    for frames in stacks(f"{work}/{run}.stacks"):
        samples += 1
        kind = classify(frames)
        groups[kind] = groups.get(kind, 0) + 1
    groups = {k: v * 100.0 / samples for k, v in groups.items()} if samples else {}
    task_ms = stat.get("task-clock", 0.0)
    result["runs"].append({
        "run": run, "ops": ops, "ops_per_s": client["throughput_ops_per_s"],
        "leader_cpu_us_per_op": task_ms * 1e3 / ops if ops else 0,
        "leader_context_switches_per_op": stat.get("context-switches", 0) / ops if ops else 0,
        "leader_migrations": stat.get("cpu-migrations", 0),
        "cpu_busy_us_per_op": busy, "groups": groups, "functions": funcs[:200],
    })
json.dump(result, open(f"{out}.json", "w"), indent=1)

lines = [f"Profile of the leader at saturation: closed loop, {threads} client threads x {sessions} sessions, "
         f"{seconds} s per configuration; perf record -e cpu-clock -F 4999 on the leader's process (software "
         "event: no hardware counters in this VM), perf stat for its task-clock and context switches. "
         "Shares are of the leader's samples; us/op is the share times the leader's CPU per op. A cpu-clock "
         "sample due while interrupts are off lands where they come back on: finish_task_switch (the "
         "context switch before it) and _raw_spin_unlock_irqrestore (waking a thread) stand for the work "
         "done with interrupts off, so the kinds below, taken from each sample's whole kernel stack, say "
         "more than the top functions.", ""]
lines += ["| run | ops/s | leader CPU us/op | leader switches/op | " +
          " | ".join(f"{c} busy us/op" for c in result["runs"][0]["cpu_busy_us_per_op"]) + " |",
          "|---|---|---|---|" + "---|" * len(result["runs"][0]["cpu_busy_us_per_op"])]
for r in result["runs"]:
    lines.append(f"| {r['run']} | {r['ops_per_s']:.0f} | {r['leader_cpu_us_per_op']:.2f} | "
                 f"{r['leader_context_switches_per_op']:.3f} | " +
                 " | ".join(f"{v:.1f}" for v in r["cpu_busy_us_per_op"].values()) + " |")
names = [k for k, _ in KINDS] + sorted({g for r in result["runs"] for g in r["groups"]} - {k for k, _ in KINDS})
lines += ["", "Leader CPU by what it was doing (each sample's kernel stack), us/op (share of its samples):", "",
          "| kind | " + " | ".join(r["run"] for r in result["runs"]) + " |",
          "|---|" + "---|" * len(result["runs"])]
for g in names:
    cells = []
    for r in result["runs"]:
        p = r["groups"].get(g, 0.0)
        cells.append(f"{p * r['leader_cpu_us_per_op'] / 100:.2f} ({p:.1f}%)")
    lines.append(f"| {g} | " + " | ".join(cells) + " |")
for r in result["runs"]:
    lines += ["", f"Top {top} functions, {r['run']}:", "", "| % | us/op | where | function |", "|---|---|---|---|"]
    for f in r["functions"][:top]:
        lines.append(f"| {f['percent']:.2f} | {f['percent'] * r['leader_cpu_us_per_op'] / 100:.2f} | "
                     f"{f['dso']} | `{f['symbol'][:90]}` |")
open(f"{out}.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
print(f"\nwritten {out}.json and {out}.md")
PY
