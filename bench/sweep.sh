#!/usr/bin/env bash
# Latency against throughput, the form of the Electrode paper's figures:
# per replica count (3, 5, 7) and configuration (default userspace and all
# fast paths), on a fresh namespace cluster (scripts/cluster.sh), in each
# CPU placement:
#   "shared": the client next to the leader on CPU 0, followers on CPU 1
#             (bench/lib.sh, the placement of every other bench);
#   "split":  the leader alone on CPU 0, the client with the followers on
#             CPU 1, closer to the paper's clients on their own machines;
# (a) saturation: a closed loop (-T threads x -S sessions outstanding) for
#     -s seconds after a -w second warm-up: its throughput is the saturated
#     rate, and the leader's CPU per committed op is measured there; -R
#     rounds, the configurations in reverse order every other round, so
#     that a drift in the shared machine's other load favours neither;
# (b) the curve: open-loop points at -p percents of the highest saturated rate
#     (latency from each request's intended send time, as wrk2), -d seconds
#     each after a -w second warm-up at the same rate: achieved throughput,
#     p50, p99, the leader's CPU per op and the client's own.
# (c) at one outstanding request (first replica count, shared placement,
#     -1 OPS closed-loop ops of one thread and one session per
#     configuration, null app): p50 against the bound 1.5 x (client <->
#     leader UDP round trip + one XDP_TX round trip), both floors measured
#     first on the same cluster (bench/pingpong.rs, as bench/run.sh does).
# Then the ratios all / userspace of saturated throughput (null and KV
# application) and of the leader's CPU per op at saturation, per replica
# count and placement; the highest saturated rate against the original
# artifact's peak on this machine kind (ELECTRODE_ARTIFACT_PEAK_OPS, default
# 20000: issue 13's measurement of it here, 3 replicas; a reference, not
# measured by this script); and the p50 bound. Results: bench/results/sweep-<stamp>.json, .md and
# .svg (the figure, drawn by bench/plot_sweep.rs).
#
#   bench/sweep.sh [-r "3 5 7"] [-p "10 25 50 70 85 95 100 110"] [-d 2]
#                  [-w 0.5] [-s 2.5] [-R 2] [-a "null"] [-k "null kv"]
#                  [-P "shared split"] [-T 2] [-S 16] [-1 20000]
#
# -a: applications with curves; -k: applications measured at saturation
# only. -P: the placements. A smaller run (about 30 s):
#   bench/sweep.sh -r 3 -p "25 70 100" -d 1 -R 1 -k "" -P shared
#
# The leader's CPU: utime + stime of replica 0's process (/proc/PID/stat,
# all its threads) over the whole client run, warm-up included, divided by
# the operations the client completed (ops + warm-up - failed). On veth the
# sender's CPU runs the receiver's network stack (docs/PLATFORM.md, "Where
# kernel work runs"), so part of the leader's receive path is charged to
# the client; each run also records every CPU's busy time per op
# (/proc/stat; it includes whatever else runs on the machine).
#
# Run as root, or as a user with sudo (builds as the user, runs the cluster
# through sudo). Configurations: ELECTRODE_BENCH_CONFIGURATIONS as in
# bench/lib.sh, default here "userspace| all|fast_paths"; the ratios need
# both of those. ELECTRODE_REPLICA_ARGS passes extra replica flags.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
select_configurations "userspace| all|fast_paths"

REPLICA_COUNTS="3 5 7"
PERCENTS="10 25 50 70 85 95 100 110"
POINT_S=2
WARMUP_S=0.5
SATURATION_S=2.5
ROUNDS=2
CURVE_APPS="null"
SATURATION_APPS="null kv"
PLACEMENTS="shared split"
THREADS=2
SESSIONS=16
SINGLE_OPS=20000
USAGE='[-r "3 5 7"] [-p "10 25 ..."] [-d SECONDS] [-w SECONDS] [-s SECONDS] [-R ROUNDS] [-a "null"]'
USAGE+=' [-k "null kv"] [-P "shared split"] [-T THREADS] [-S SESSIONS] [-1 OPS]'
parse_options "r:REPLICA_COUNTS p:PERCENTS d:POINT_S w:WARMUP_S s:SATURATION_S R:ROUNDS a:CURVE_APPS
    k:SATURATION_APPS P:PLACEMENTS T:THREADS S:SESSIONS 1:SINGLE_OPS"
# 2f+1 replicas, at most ELECTRODE_MAX_REPLICAS (9, bpf/electrode.h).
for n in $REPLICA_COUNTS; do
    if ! [[ "$n" =~ ^[0-9]+$ ]] || [ "$n" -lt 3 ] || [ "$n" -gt 9 ] || [ $((n % 2)) -ne 1 ]; then
        echo "$0: replica counts are 3, 5, 7 or 9 (got $n)" >&2
        exit 2
    fi
done
for value in "$POINT_S" "$WARMUP_S" "$SATURATION_S"; do
    if ! [[ "$value" =~ ^[0-9]*\.?[0-9]+$ ]] || ! awk "BEGIN { exit !($value > 0) }"; then
        echo "$0: -d, -w and -s are seconds > 0 (got $value)" >&2
        exit 2
    fi
done
[[ "$SINGLE_OPS" =~ ^[0-9]+$ ]] || { echo "$0: -1 is a count of ops, 0 to skip (got $SINGLE_OPS)" >&2; exit 2; }
ARTIFACT_PEAK="${ELECTRODE_ARTIFACT_PEAK_OPS:-20000}"
[[ "$ARTIFACT_PEAK" =~ ^[1-9][0-9]*$ ]] || { echo "$0: ELECTRODE_ARTIFACT_PEAK_OPS is ops/s (got $ARTIFACT_PEAK)" >&2; exit 2; }
for value in "$THREADS" "$SESSIONS" "$ROUNDS"; do
    [[ "$value" =~ ^[1-9][0-9]*$ ]] || { echo "$0: -T, -S and -R are counts >= 1 (got $value)" >&2; exit 2; }
done
for p in $PERCENTS; do
    if ! [[ "$p" =~ ^[0-9]+$ ]] || [ "$p" -lt 1 ]; then
        echo "$0: percents are integers >= 1 (got $p)" >&2
        exit 2
    fi
done
for placement in $PLACEMENTS; do
    case "$placement" in shared | split) ;; *) echo "$0: placements are shared and split" >&2; exit 2 ;; esac
done
[ -n "$PLACEMENTS" ] || { echo "$0: -P needs a placement" >&2; exit 2; }
APPS=""
for app in $CURVE_APPS $SATURATION_APPS; do
    case "$app" in null | kv) ;; *) echo "$0: applications are null and kv (got $app)" >&2; exit 2 ;; esac
    case " $APPS " in *" $app "*) ;; *) APPS="$APPS $app" ;; esac
done
[ -n "$APPS" ] || { echo "$0: -a and -k name no application" >&2; exit 2; }

# plot_sweep draws the figure; pingpong, built with fast_reply for the
# XDP_TX floor (pingpong xdp-*), after the variants are copied out.
build_then_rerun_as_root "--example plot_sweep" "--example pingpong --features fast_reply"

STARTED=$SECONDS
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="bench/results/sweep-$STAMP"
WORK="$(mktemp -d /tmp/electrode-sweep.XXXXXX)"
CONFIG=config.txt # cleanup_replicas names one; cluster.sh down removes every el- namespace
trap cleanup_replicas EXIT
trap 'exit 130' INT TERM
mkdir -p bench/results
: >"$WORK/manifest"

# cpu_sample -> a line: the monotonic clock (s), the utime+stime ticks of
# replica 0 (the leader) and of the other replicas together, then the busy
# ticks of each CPU (/proc/stat: everything but idle and iowait).
cpu_sample() {
    local pid stat followers=0 leader=0 i=0
    for pid in "${PIDS[@]}"; do
        stat="$(proc_cpu_ticks "$pid")"
        if [ "$i" -eq 0 ]; then leader="$stat"; else followers=$((followers + stat)); fi
        i=$((i + 1))
    done
    {
        awk '{print $1}' /proc/uptime
        echo "$leader $followers"
        awk '/^cpu[0-9]+ / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat
    } | tr '\n' ' '
    echo
}

json_number() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

# client ID CPU ARGS...: one client run pinned to CPU, its report in
# $WORK/ID.json, the leader's and the CPUs' ticks around it.
client() {
    local id="$1" cpu="$2"
    shift 2
    cpu_sample >"$WORK/$id.before"
    scripts/cluster.sh exec client -- taskset -c "$cpu" "$BIN" client -c "$CONFIG" --app "$APP" \
        -t "$THREADS" --sessions "$SESSIONS" --json "$@" >"$WORK/$id.json"
    cpu_sample >"$WORK/$id.after"
}

# calc AWK-EXPRESSION [FORMAT]: arithmetic on decimals (default format %.3f).
calc() { awk "BEGIN { printf \"${2:-%.3f}\", $1 }"; }

# saturation PLACEMENT: a closed-loop probe of WARMUP_S (the replicas'
# warm-up, and the rate that sizes the measured run's warm-up), then the
# measured closed loop; sets RATE to its throughput.
saturation() {
    local placement="$1" cpu="$CLIENT_CPU" id
    [ "$placement" = split ] && cpu="$FOLLOWER_CPU"
    id="$RUN-saturation-$placement"
    client "$id-probe" "$cpu" --duration "$WARMUP_S"
    RATE="$(json_number "$WORK/$id-probe.json" throughput_ops_per_s)"
    client "$id" "$cpu" --duration "$(calc "$WARMUP_S + $SATURATION_S")" -w "$(calc "$RATE * $WARMUP_S" %.0f)"
    echo "$id $N $ROUND $NAME $APP saturation $placement -" >>"$WORK/manifest"
    RATE="$(json_number "$WORK/$id.json" throughput_ops_per_s)"
}

# curve PLACEMENT SATURATED_RATE: the open-loop points at PERCENTS of the
# rate, each after a warm-up at its own rate.
curve() {
    local placement="$1" saturated="$2" cpu="$CLIENT_CPU" p offered id
    [ "$placement" = split ] && cpu="$FOLLOWER_CPU"
    for p in $PERCENTS; do
        offered="$(calc "$saturated * $p / 100" %.0f)"
        [ "$offered" -ge 1 ] || offered=1
        id="$RUN-open-$placement-$p"
        client "$id" "$cpu" --rate "$offered" --duration "$(calc "$WARMUP_S + $POINT_S")" \
            -w "$(calc "$offered * $WARMUP_S" %.0f)"
        echo "$id $N $ROUND $NAME $APP open $placement $p" >>"$WORK/manifest"
        printf '    %3d%%: offered %7d, achieved %7.0f ops/s, p50 %6.0f us, p99 %8.0f us\n' "$p" "$offered" \
            "$(json_number "$WORK/$id.json" throughput_ops_per_s)" "$(json_number "$WORK/$id.json" p50_us)" \
            "$(json_number "$WORK/$id.json" p99_us)"
    done
}

# single: the floors (UDP ping-pong client <-> replica 0, one XDP_TX round
# trip replica 0 -> replica 1 through fast_reply's program), then per
# configuration one thread with one session, shared placement, null app.
single() {
    local id
    echo "==> $N replicas: floors, then one outstanding request per configuration"
    floor_udp "$SINGLE_OPS" "$((SINGLE_OPS / 10))" "$WORK/floor.json"
    floor_xdp "$SINGLE_OPS" "$((SINGLE_OPS / 10))" "$WORK/xdp_floor.json"
    for NAME in "${CONFIGURATION_NAMES[@]}"; do
        BIN="$(variant_bin "$NAME")"
        APP=null
        RUN="n$N-single-$NAME-$APP"
        id="$RUN-single-shared"
        start_replicas "$BIN" "$RUN" --app "$APP"
        THREADS=1 SESSIONS=1 client "$id" "$CLIENT_CPU" -n "$SINGLE_OPS" -w "$((SINGLE_OPS / 10))"
        stop_replicas
        echo "$id $N 0 $NAME $APP single shared -" >>"$WORK/manifest"
        printf '    %s: p50 %s us, p99 %s us\n' "$NAME" "$(json_number "$WORK/$id.json" p50_us)" \
            "$(json_number "$WORK/$id.json" p99_us)"
    done
}

LOADAVG_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
FIRST_COUNT=1
for n in $REPLICA_COUNTS; do
    N="$n"
    CONFIG="$WORK/config-$n.txt"
    {
        echo "# $n replicas for bench/sweep.sh: config.txt's namespace subnet, only inside the namespaces."
        echo "f $(((n - 1) / 2))"
        for ((i = 0; i < n; i++)); do echo "replica 10.77.0.$((11 + i)):7001"; done
    } >"$CONFIG"
    scripts/cluster.sh up "$CONFIG" >/dev/null
    if [ "$FIRST_COUNT" -eq 1 ] && [ "$SINGLE_OPS" -gt 0 ]; then
        single
    fi
    FIRST_COUNT=0
    declare -A SATURATED=()
    for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
        # The configurations in reverse order every other round, so that a
        # drift in the machine's other load does not favour one of them.
        order=("${CONFIGURATION_NAMES[@]}")
        if [ $((ROUND % 2)) -eq 0 ]; then
            order=()
            for ((i = ${#CONFIGURATION_NAMES[@]} - 1; i >= 0; i--)); do order+=("${CONFIGURATION_NAMES[$i]}"); done
        fi
        for NAME in "${order[@]}"; do
            BIN="$(variant_bin "$NAME")"
            for APP in $APPS; do
                RUN="n$n-r$ROUND-$NAME-$APP"
                start_replicas "$BIN" "$RUN" --app "$APP"
                for placement in $PLACEMENTS; do
                    saturation "$placement"
                    echo "==> $n replicas, round $ROUND, $NAME, $APP, $placement: saturated closed loop" \
                        "$(calc "$RATE" %.0f) ops/s"
                    SATURATED["$NAME|$APP|$placement"]+=" $RATE"
                done
                stop_replicas
            done
        done
    done
    # The curves, at percents of the highest saturated rate of the rounds:
    # other load on the machine only ever lowers a round's rate (one round
    # measured next to a compile gave a quarter of the next one's).
    for NAME in "${CONFIGURATION_NAMES[@]}"; do
        BIN="$(variant_bin "$NAME")"
        for APP in $CURVE_APPS; do
            RUN="n$n-curve-$NAME-$APP"
            ROUND=0 # not a saturation round
            start_replicas "$BIN" "$RUN" --app "$APP"
            for placement in $PLACEMENTS; do
                rates="${SATURATED["$NAME|$APP|$placement"]}"
                best="$(echo "$rates" | awk '{ for (i = 1; i <= NF; i++) if ($i > m) m = $i; printf "%.0f", m }')"
                echo "==> $n replicas, $NAME, $APP, $placement: open loop at percents of $best ops/s"
                curve "$placement" "$best"
            done
            stop_replicas
        done
    done
    scripts/cluster.sh down >/dev/null
done
LOADAVG_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$WORK" "$OUT" "$(getconf CLK_TCK)" "$STAMP" "$THREADS" "$SESSIONS" "$POINT_S" "$WARMUP_S" \
    "$SATURATION_S" "$ROUNDS" "$PERCENTS" "$(uname -r)" "$(nproc)" "$LEADER_CPU" "$CLIENT_CPU" "$FOLLOWER_CPU" \
    "$LOADAVG_BEFORE" "$LOADAVG_AFTER" "$ARTIFACT_PEAK" <<'PY'
import json, os, sys
(work, out, hz, stamp, threads, sessions, point_s, warmup_s, saturation_s, rounds, percents, kernel, cpus,
 leader_cpu, client_cpu, follower_cpu, loadavg_before, loadavg_after, artifact_peak) = sys.argv[1:]
hz = int(hz)
artifact_peak = int(artifact_peak)
result = {
    "stamp": stamp, "kernel": kernel, "cpus": int(cpus),
    "loadavg_before": loadavg_before, "loadavg_after": loadavg_after,
    "client_threads": int(threads), "client_sessions_per_thread": int(sessions),
    "point_seconds": float(point_s), "warmup_seconds": float(warmup_s), "saturation_seconds": float(saturation_s),
    "rounds": int(rounds), "percents": [int(p) for p in percents.split()],
    "placements": {
        "shared": f"leader on CPU {leader_cpu} with the client, followers on CPU {follower_cpu}",
        "split": f"leader alone on CPU {leader_cpu}, client with the followers on CPU {follower_cpu}",
    },
    "leader_cpu": "utime+stime of replica 0 over the client run (warm-up included) / (ops + warm-up - failed)",
    "runs": [], "ratios": [],
}
for line in open(f"{work}/manifest"):
    rid, n, rnd, name, app, kind, placement, percent = line.split()
    client = json.load(open(f"{work}/{rid}.json"))
    before = [float(x) for x in open(f"{work}/{rid}.before").read().split()]
    after = [float(x) for x in open(f"{work}/{rid}.after").read().split()]
    wall_s = after[0] - before[0]
    leader, followers = after[1] - before[1], after[2] - before[2]
    busy = [a - b for a, b in zip(after[3:], before[3:])]
    completed = client["ops"] + client["warmup"] - client["failed"]
    per_op = lambda ticks: ticks * 1e6 / hz / completed if completed > 0 else None
    result["runs"].append({
        "replicas": int(n), "f": (int(n) - 1) // 2, "round": int(rnd) or None, "configuration": name, "app": app,
        "kind": kind, "placement": placement, "percent": None if percent == "-" else int(percent),
        "ops_completed": completed,
        "wall_s": wall_s,
        "leader_cpu_s": leader / hz,
        "leader_cpu_us_per_op": per_op(leader),
        "followers_cpu_us_per_op": per_op(followers),
        "cpu_busy_us_per_op": [per_op(x) for x in busy],
        # Busy CPU time (/proc/stat, tick samples) less the replicas' and the
        # client's own CPU time, in CPUs over the run's wall time: other
        # work on the shared machine. The two clocks differ (the process
        # times are scaled to exact run times), so values within about
        # +-0.4 say nothing; a clearly positive one marks a noisy run.
        "other_cpus_busy": (sum(busy) / hz - (leader + followers) / hz - client["client_cpu_s"]) / wall_s
        if wall_s > 0 else None,
        "client": client,
    })

def saturations(n, name, app, placement):
    return [r for r in result["runs"] if r["kind"] == "saturation" and r["replicas"] == n
            and r["configuration"] == name and r["app"] == app and r["placement"] == placement]

def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None

def ratio(a, b):
    return a / b if a is not None and b else None

keys = []
for r in result["runs"]:
    key = (r["replicas"], r["placement"], r["app"])
    if r["kind"] == "saturation" and key not in keys:
        keys.append(key)
for n, placement, app in keys:
    u, a = saturations(n, "userspace", app, placement), saturations(n, "all", app, placement)
    if not u or not a:
        continue
    tput = lambda runs: [r["client"]["throughput_ops_per_s"] for r in runs]
    cpu = lambda runs: [r["leader_cpu_us_per_op"] for r in runs]
    by_round = lambda runs: {r["round"]: r for r in runs}
    ur, ar = by_round(u), by_round(a)
    both = sorted(set(ur) & set(ar))
    result["ratios"].append({
        "replicas": n, "placement": placement, "app": app,
        "userspace_ops_per_s": tput(u), "all_ops_per_s": tput(a),
        "throughput_all_over_userspace": ratio(mean(tput(a)), mean(tput(u))),
        "throughput_all_over_userspace_per_round": [
            ratio(ar[k]["client"]["throughput_ops_per_s"], ur[k]["client"]["throughput_ops_per_s"]) for k in both],
        "userspace_leader_cpu_us_per_op": cpu(u), "all_leader_cpu_us_per_op": cpu(a),
        "leader_cpu_all_over_userspace": ratio(mean(cpu(a)), mean(cpu(u))),
        "leader_cpu_all_over_userspace_per_round": [
            ratio(ar[k]["leader_cpu_us_per_op"], ur[k]["leader_cpu_us_per_op"]) for k in both],
    })
# The other goals: the highest saturated rate against the artifact's peak
# (3 replicas, its configuration), and p50 at one outstanding request
# against its bound.
result["artifact_peak_ops_per_s"] = artifact_peak
result["artifact_ratios"] = []
for n, placement, app in keys:
    if n != 3:
        continue
    for name in sorted({r["configuration"] for r in result["runs"]}):
        rates = [r["client"]["throughput_ops_per_s"] for r in saturations(n, name, app, placement)]
        if rates:
            result["artifact_ratios"].append({"replicas": n, "placement": placement, "app": app,
                                              "configuration": name, "best_ops_per_s": max(rates),
                                              "over_artifact": max(rates) / artifact_peak})
result["single"] = None
if os.path.exists(f"{work}/floor.json") and os.path.exists(f"{work}/xdp_floor.json"):
    floor, xdp = json.load(open(f"{work}/floor.json")), json.load(open(f"{work}/xdp_floor.json"))
    bound = 1.5 * (floor["p50_us"] + xdp["p50_us"])
    result["single"] = {"floor": floor, "xdp_floor": xdp, "bound_us": bound, "runs": [
        {"configuration": r["configuration"], "replicas": r["replicas"], "p50_us": r["client"]["p50_us"],
         "p99_us": r["client"]["p99_us"], "over_bound": r["client"]["p50_us"] / bound,
         "leader_cpu_us_per_op": r["leader_cpu_us_per_op"]}
        for r in result["runs"] if r["kind"] == "single"]}
json.dump(result, open(f"{out}.json", "w"), indent=1)

f0 = lambda x: "-" if x is None else f"{x:.0f}"
f1 = lambda x: "-" if x is None else f"{x:.1f}"
f2 = lambda x: "-" if x is None else f"{x:.2f}"
each = lambda xs, f: " / ".join(f(x) for x in xs)


def table_rows(kind, cells):
    """A markdown row per run of KIND, its cells from cells(run, run's client report)."""
    return ["| " + " | ".join(str(x) for x in cells(r, r["client"])) + " |" for r in result["runs"]
            if r["kind"] == kind]


name = out.rsplit("/", 1)[-1]
lines = [
    f"Sweep {stamp}: kernel {kernel}, {cpus} CPUs, load average {loadavg_before} before and {loadavg_after} "
    f"after (the machine is shared). Client: {threads} threads x {sessions} sessions (at most "
    f"{int(threads) * int(sessions)} requests outstanding). Placements: "
    + "; ".join(f"{k}: {v}" for k, v in result["placements"].items()) + ".", "",
    f"Saturation: closed loop, {saturation_s} s after {warmup_s} s of warm-up, {rounds} round(s) (configurations "
    "in reverse order every other round). Curve points: open loop at a percentage of the highest "
    f"saturated rate of the rounds in the same placement, {point_s} s after {warmup_s} s of warm-up at the same rate, latency from each "
    "request's intended send time. Leader CPU: " + result["leader_cpu"] + "; followers: the same, all followers "
    "together. CPU busy: each CPU's busy time (/proc/stat, everything on the machine) per op. Other CPUs busy: "
    "the CPUs' busy time less the replicas' and the client's CPU time, in CPUs over the run: other work on the "
    "shared machine. The busy time is tick samples and the process times exact run times, so values within "
    "about +-0.4 say nothing; a clearly positive one marks a run measured next to other load.", "",
]
if any(r["kind"] == "open" for r in result["runs"]):
    lines += [f"![latency against throughput]({name}.svg)", ""]
lines += [
    "## Ratios, all fast paths over userspace, at saturation", "",
    "Ratio of the means over the rounds; per round in parentheses; raw numbers per round separated by /.", "",
    "| replicas | placement | app | userspace ops/s | all ops/s | throughput all/userspace | "
    "userspace leader CPU us/op | all leader CPU us/op | leader CPU all/userspace |",
    "|---|---|---|---|---|---|---|---|---|",
]
for q in result["ratios"]:
    lines.append(f"| {q['replicas']} | {q['placement']} | {q['app']} | {each(q['userspace_ops_per_s'], f0)} | "
                 f"{each(q['all_ops_per_s'], f0)} | {f2(q['throughput_all_over_userspace'])} "
                 f"({', '.join(f2(x) for x in q['throughput_all_over_userspace_per_round'])}) | "
                 f"{each(q['userspace_leader_cpu_us_per_op'], f1)} | {each(q['all_leader_cpu_us_per_op'], f1)} | "
                 f"{f2(q['leader_cpu_all_over_userspace'])} "
                 f"({', '.join(f2(x) for x in q['leader_cpu_all_over_userspace_per_round'])}) |")
if not result["ratios"]:
    lines.append("| (needs the userspace and all configurations) |||||||||")
if result["artifact_ratios"]:
    lines += ["", f"## Highest saturated rate against the original artifact's peak ({artifact_peak} ops/s, 3 replicas: "
              "issue 13's measurement on this machine kind, ELECTRODE_ARTIFACT_PEAK_OPS; not measured here)", "",
              "| placement | app | configuration | best ops/s of the rounds | over the artifact |", "|---|---|---|---|---|"]
    for q in result["artifact_ratios"]:
        lines.append(f"| {q['placement']} | {q['app']} | {q['configuration']} | {q['best_ops_per_s']:.0f} | "
                     f"{q['over_artifact']:.2f} |")
if result["single"]:
    sg = result["single"]
    fl, xf = sg["floor"], sg["xdp_floor"]
    lines += ["", "## p50 at one outstanding request against its bound", "",
              f"Floors on the same cluster: UDP ping-pong client <-> leader p50 {fl['p50_us']} us (p99 {fl['p99_us']}); "
              f"XDP_TX round trip leader -> follower through fast_reply's program p50 {xf['p50_us']} us "
              f"(p99 {xf['p99_us']}, {xf['lost']} lost). Bound: 1.5 x ({fl['p50_us']} + {xf['p50_us']}) = "
              f"{sg['bound_us']:.0f} us. One client thread, one session, null app, shared placement.", "",
              "| replicas | configuration | p50 us | p99 us | p50 over the bound | leader CPU us/op |",
              "|---|---|---|---|---|---|"]
    for q in sg["runs"]:
        lines.append(f"| {q['replicas']} | {q['configuration']} | {q['p50_us']:.0f} | {q['p99_us']:.0f} | "
                     f"{q['over_bound']:.2f} | {f1(q['leader_cpu_us_per_op'])} |")
ncpu = max((len(r["cpu_busy_us_per_op"]) for r in result["runs"]), default=0)
cpu_cols = "".join(f" CPU{i} busy us/op |" for i in range(ncpu))
lines += ["", "## Saturation (closed loop)", "",
          "| replicas | round | configuration | app | placement | ops/s | p50 us | p99 us | leader CPU us/op | "
          "followers CPU us/op |" + cpu_cols + " client CPU us/op | other CPUs busy | failed |",
          "|---|---|---|---|---|---|---|---|---|---|" + "---|" * ncpu + "---|---|---|"]
lines += table_rows("saturation", lambda r, c: [
    r["replicas"], r["round"], r["configuration"], r["app"], r["placement"], f0(c["throughput_ops_per_s"]),
    f0(c["p50_us"]), f0(c["p99_us"]), f1(r["leader_cpu_us_per_op"]), f1(r["followers_cpu_us_per_op"]),
    *(f1(x) for x in r["cpu_busy_us_per_op"]), f1(c["client_cpu_us_per_op"]), f2(r["other_cpus_busy"]), c["failed"]])
lines += ["", "## Curves (open loop)", "",
          "late: sent over 1 ms after the intended time (of those, client behind: a session was free, the client "
          "was not scheduled in time; the others waited for a session); unsent: due before the end, never sent.", "",
          "| replicas | placement | configuration | app | % of saturated | offered ops/s | achieved ops/s | p50 us | "
          "p99 us | leader CPU us/op | client CPU us/op | other CPUs busy | late | client behind | unsent | failed |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
lines += table_rows("open", lambda r, c: [
    r["replicas"], r["placement"], r["configuration"], r["app"], r["percent"], f0(c["offered_ops_per_s"]),
    f0(c["throughput_ops_per_s"]), f0(c["p50_us"]), f0(c["p99_us"]), f1(r["leader_cpu_us_per_op"]),
    f1(c["client_cpu_us_per_op"]), f2(r["other_cpus_busy"]), c["late_sends"], c["late_sends_client_behind"],
    c["unsent"], c["failed"]])
open(f"{out}.md", "w").write("\n".join(lines) + "\n")
print("\n".join(l for l in lines if not l.startswith("![")))
PY
written="$OUT.json and $OUT.md"
if [ -n "$CURVE_APPS" ]; then
    "$TARGET_DIR/release/examples/plot_sweep" "$OUT.json" "$OUT.svg" >/dev/null
    written="$OUT.json, $OUT.md and $OUT.svg"
fi
echo "written $written in $((SECONDS - STARTED)) s (replica logs and client reports in $WORK)"
