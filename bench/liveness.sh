#!/usr/bin/env bash
# Liveness benchmarks on the namespace cluster (issue 11), per configuration
# and state size, side by side in one run:
#   (a) leader SIGKILL under load: failure detection (kill -> first
#       view-change line of a survivor) and view change (that line -> the
#       first commit of the new view), from the replicas' CLOCK_MONOTONIC
#       log stamps;
#   (b) the killed leader restarted: recovery + snapshot stream until it
#       logs "caught up";
#   (c) a follower killed and restarted at once under load: the longest
#       client wait (max latency) and its catch-up time;
#   (d) throughput under 0%, 1% and 10% loss of every datagram on the bridge
#       (nftables numgen), 8 closed-loop client threads;
#   (e) 5 replicas, the leader SIGSTOPped for 2 s three times: views started
#       per stop and the longest client wait.
# State: `electrode client --fill` puts KEYS keys of 500 bytes (size in MiB
# x 2^20 / 500 keys). Results: bench/results/liveness-<stamp>.json and .md.
#
#   bench/liveness.sh [-s "1 64 256 1024"] [-c CONFIG] [-f CONFIG_F2]
#
# Configurations: ELECTRODE_BENCH_CONFIGURATIONS (default: userspace and
# all fast paths). Parts: ELECTRODE_LIVENESS_PARTS, any of "failover loss
# sigstop" (default all three; failover is (a)-(c)). Run as root, or as a user with sudo (builds as the user).
set -euo pipefail
CALLER_DIR="$PWD"
cd "$(dirname "$0")/.."
: "${ELECTRODE_BENCH_CONFIGURATIONS:=userspace| all|fast_paths}"
export ELECTRODE_BENCH_CONFIGURATIONS
: "${ELECTRODE_LIVENESS_PARTS:=failover loss sigstop}"
export ELECTRODE_LIVENESS_PARTS
for part in $ELECTRODE_LIVENESS_PARTS; do
    case "$part" in
    failover | loss | sigstop) ;;
    *) echo "ELECTRODE_LIVENESS_PARTS: unknown part '$part' (failover, loss, sigstop)" >&2; exit 2 ;;
    esac
done
part() { [[ " $ELECTRODE_LIVENESS_PARTS " == *" $1 "* ]]; }
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

SIZES="1 64 256 1024"
CONFIG=config.txt
CONFIG_F2=bench/config-f2.txt
VALUE_SIZE=500
while getopts "s:c:f:h" opt; do
    case "$opt" in
    s) SIZES="$OPTARG" ;;
    c) CONFIG="$(resolve_path "$OPTARG")" ;;
    f) CONFIG_F2="$(resolve_path "$OPTARG")" ;;
    *) echo "usage: $0 [-s \"1 64 256 1024\"] [-c CONFIG] [-f CONFIG_F2]" >&2; exit 2 ;;
    esac
done

if [ -z "${ELECTRODE_PREBUILT:-}" ]; then
    echo "==> building in $TARGET_DIR"
    build_variants
fi
if [ "$(id -u)" -ne 0 ]; then
    as_root env ELECTRODE_PREBUILT=1 CARGO_TARGET_DIR="$TARGET_DIR" \
        ELECTRODE_BENCH_CONFIGURATIONS="$ELECTRODE_BENCH_CONFIGURATIONS" ELECTRODE_LIVENESS_PARTS="$ELECTRODE_LIVENESS_PARTS" "$0" -s "$SIZES" -c "$CONFIG" -f "$CONFIG_F2"
    exit
fi

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="bench/results/liveness-$STAMP"
WORK="$(mktemp -d /tmp/electrode-liveness.XXXXXX)"
trap cleanup_replicas EXIT
trap 'exit 130' INT TERM
ROWS="$WORK/rows.jsonl"
: >"$ROWS"

now_ms() { python3 -c 'import time; print(f"{time.monotonic() * 1000:.3f}")'; }

# first_stamp LOG AFTER_MS PATTERN: the [ms] stamp of the first line of LOG
# matching PATTERN with a stamp after AFTER_MS (empty if none).
first_stamp() {
    { grep -E "$3" "$1" 2>/dev/null || true; } | sed -nE 's/.*: \[([0-9.]+)\].*/\1/p' |
        awk -v after="$2" '$1 > after { print; exit }'
}

# start_one BIN RUN I: starts replica I (appending to its log).
start_one() {
    local cpu=$FOLLOWER_CPU
    [ "$3" -eq 0 ] && cpu=$LEADER_CPU
    scripts/cluster.sh exec replica "$3" -- "$1" replica -c "$CONFIG" -i "$3" --cpu "$cpu" \
        2>>"$WORK/$2.replica$3.log" &
    PIDS[$3]=$!
}

# wait_log LOG AFTER_MS PATTERN SECONDS: the stamp once it appears.
wait_log() {
    local tries stamp
    for ((tries = 0; tries < $4 * 10; tries++)); do
        stamp="$(first_stamp "$1" "$2" "$3")"
        [ -n "$stamp" ] && { echo "$stamp"; return 0; }
        sleep 0.1
    done
    echo ""
}

client() { scripts/cluster.sh exec client -- "$BIN" client -c "$CONFIG" --cpu "$CLIENT_CPU" "$@"; }
# Exit 1 of status (views differ for a moment) is an answer, not a failure.
status_json() { scripts/cluster.sh exec client -- "$BIN" status -c "$CONFIG" --json || true; }
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)[\"$1\"])"; }
sub() { python3 -c "a='$1'; b='$2'; print(f'{float(a) - float(b):.1f}' if a and b else 'null')"; }

# bridge_loss PERCENT: drops PERCENT% of the datagrams the bridge forwards
# (every link of every replica, and the client's, each direction drawn on
# its own) with nftables numgen in the bridge namespace, where it comes
# before any XDP program of a replica; 0 removes it.
BR="${ELECTRODE_NS_PREFIX:-el-}br"
bridge_loss() {
    ip netns exec "$BR" nft delete table bridge electrode_loss 2>/dev/null || true
    [ "$1" -gt 0 ] || return 0
    printf 'table bridge electrode_loss {\n chain forward {\n  type filter hook forward priority 0;\n  numgen random mod 100 < %d counter drop\n }\n}\n' "$1" |
        ip netns exec "$BR" nft -f -
}

scripts/cluster.sh up "$CONFIG" >/dev/null
for entry in "${CONFIGURATIONS[@]}"; do
    name="${entry%%|*}"
    BIN="$TARGET_DIR/variants/$name/electrode"
    part failover || SIZES=""
    for size in $SIZES; do
        run="$name-$size"
        keys=$((size * 1048576 / VALUE_SIZE))
        echo "==> $name, $size MiB ($keys keys x $VALUE_SIZE B)"
        start_replicas "$BIN" "$run"
        t0=$(now_ms)
        client --fill --keys "$keys" --value-size "$VALUE_SIZE" -t 8 --json >"$WORK/$run.fill.json"
        fill_s=$(sub "$(now_ms)" "$t0")

        # (a) leader SIGKILL under load.
        client --duration 5 -t 4 --keys 100 --json >"$WORK/$run.kill.json" &
        load=$!
        sleep 1.5
        killed=$(now_ms)
        kill -KILL "${PIDS[0]}"
        wait "${PIDS[0]}" 2>/dev/null || true
        wait "$load"
        detected=""
        committed=""
        started=""
        for i in 1 2; do
            d="$(first_stamp "$WORK/$run.replica$i.log" "$killed" 'view-change')"
            [ -n "$d" ] || continue
            if [ -z "$detected" ] || python3 -c "import sys; sys.exit(0 if float('$d') < float('$detected') else 1)"; then
                detected="$d"
            fi
        done
        for i in 1 2; do
            # The new leader's normal line, and the first commit in the new view.
            s="$(first_stamp "$WORK/$run.replica$i.log" "$killed" 'DoViewChanges: new leader')"
            [ -n "$s" ] && started="$s"
            c="$(first_stamp "$WORK/$run.replica$i.log" "$killed" 'first commit')"
            if [ -n "$c" ] && { [ -z "$committed" ] || python3 -c "import sys; sys.exit(0 if float('$c') < float('$committed') else 1)"; }; then
                committed="$c"
            fi
        done
        kill_max_ms=$(python3 -c "import json; print(json.load(open('$WORK/$run.kill.json'))['max_us'] / 1000)")

        # (b) the killed leader restarts and catches up.
        restarted=$(now_ms)
        start_one "$BIN" "$run" 0
        caught=$(wait_log "$WORK/$run.replica0.log" "$restarted" 'caught up' 300)

        # (c) a follower (not the new leader, replica 1) killed and restarted at once.
        client --duration 6 -t 4 --keys 100 --json >"$WORK/$run.restart.json" &
        load=$!
        sleep 1.5
        frestart=$(now_ms)
        kill -KILL "${PIDS[2]}"
        wait "${PIDS[2]}" 2>/dev/null || true
        start_one "$BIN" "$run" 2
        wait "$load"
        fcaught=$(wait_log "$WORK/$run.replica2.log" "$frestart" 'caught up' 300)
        restart_max_ms=$(python3 -c "import json; print(json.load(open('$WORK/$run.restart.json'))['max_us'] / 1000)")
        stop_replicas

        python3 - "$name" "$size" "$keys" "$fill_s" "$killed" "$detected" "$started" "$committed" "$kill_max_ms" \
            "$restarted" "$caught" "$frestart" "$fcaught" "$restart_max_ms" >>"$ROWS" <<'PY'
import json, sys
(name, size, keys, fill_ms, killed, detected, started, committed, kill_max, restarted, caught, frestart, fcaught,
 restart_max) = sys.argv[1:]
def diff(a, b):
    return round(float(a) - float(b), 1) if a and b else None
print(json.dumps({
    "kind": "failover", "configuration": name, "state_mib": int(size), "keys": int(keys),
    "fill_s": round(float(fill_ms) / 1000, 1),
    "leader_kill_detection_ms": diff(detected, killed),
    "view_change_to_new_leader_ms": diff(started, detected),
    "view_change_to_first_commit_ms": diff(committed, detected),
    "leader_kill_max_client_wait_ms": round(float(kill_max), 1),
    "restarted_leader_caught_up_ms": diff(caught, restarted),
    "follower_restart_max_client_wait_ms": round(float(restart_max), 1),
    "restarted_follower_caught_up_ms": diff(fcaught, frestart),
}))
PY
        tail -1 "$ROWS"
    done

    # (d) throughput under loss, at a small state.
    part loss || continue
    run="$name-loss"
    start_replicas "$BIN" "$run"
    client --fill --keys 2000 --value-size "$VALUE_SIZE" -t 8 --json >/dev/null
    for loss in 0 1 10; do
        bridge_loss "$loss"
        client --duration 5 -t 8 --keys 1000 --json >"$WORK/$run.$loss.json"
        python3 - "$name" "$loss" "$WORK/$run.$loss.json" >>"$ROWS" <<'PY'
import json, sys
name, loss, path = sys.argv[1:]
r = json.load(open(path))
print(json.dumps({"kind": "loss", "configuration": name, "loss_percent": int(loss),
                  "ops_per_s": round(r["throughput_ops_per_s"]), "p50_us": r["p50_us"], "p99_us": r["p99_us"],
                  "retries": r["retries"], "failed": r["failed"]}))
PY
        tail -1 "$ROWS"
    done
    bridge_loss 0
    stop_replicas
done
scripts/cluster.sh down "$CONFIG" >/dev/null 2>&1 || true

# (e) 5 replicas, the leader SIGSTOPped for 2 s, three times.
CONFIG="$CONFIG_F2"
part sigstop && scripts/cluster.sh up "$CONFIG" >/dev/null
for entry in "${CONFIGURATIONS[@]}"; do
    part sigstop || break
    name="${entry%%|*}"
    BIN="$TARGET_DIR/variants/$name/electrode"
    run="$name-sigstop"
    start_replicas "$BIN" "$run"
    client --fill --keys 20000 --value-size "$VALUE_SIZE" -t 8 --json >/dev/null
    client --duration 16 -t 4 --keys 100 --json >"$WORK/$run.json" &
    load=$!
    sleep 1
    views=()
    for stop in 1 2 3; do
        view_before=$(status_json |
            python3 -c 'import json,sys; r=[x for x in json.load(sys.stdin)["replicas"] if x.get("role")=="leader"]; print(r[0]["view"], r[0]["replica"])')
        leader="${view_before#* }"
        kill -STOP "${PIDS[$leader]}"
        sleep 2
        kill -CONT "${PIDS[$leader]}"
        sleep 2
        view_after=$(status_json |
            python3 -c 'import json,sys; print(max(x["view"] for x in json.load(sys.stdin)["replicas"] if x.get("view") is not None))')
        views+=("$((view_after - ${view_before% *}))")
    done
    wait "$load"
    stop_replicas
    python3 - "$name" "$WORK/$run.json" "${views[@]}" >>"$ROWS" <<'PY'
import json, sys
name, path, *views = sys.argv[1:]
r = json.load(open(path))
print(json.dumps({"kind": "sigstop", "configuration": name, "replicas": 5,
                  "views_started_per_stop": [int(v) for v in views],
                  "max_client_wait_ms": round(r["max_us"] / 1000, 1), "ops_per_s": round(r["throughput_ops_per_s"]),
                  "failed": r["failed"]}))
PY
    tail -1 "$ROWS"
done
scripts/cluster.sh down "$CONFIG" >/dev/null 2>&1 || true

python3 - "$ROWS" "$OUT" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
out = sys.argv[2]
json.dump(rows, open(out + ".json", "w"), indent=1)
def cell(v):
    return "-" if v is None else str(v)
lines = ["# Liveness: failover and recovery against state size", "",
         "| configuration | state | detection ms | view change: new leader normal ms | view change: first commit ms | max client wait at leader kill ms | restarted leader caught up ms | max client wait at follower restart ms | restarted follower caught up ms |",
         "|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    if r["kind"] == "failover":
        lines.append(f"| {r['configuration']} | {r['state_mib']} MiB | {cell(r['leader_kill_detection_ms'])} | {cell(r['view_change_to_new_leader_ms'])} | {cell(r['view_change_to_first_commit_ms'])} | {r['leader_kill_max_client_wait_ms']} | {cell(r['restarted_leader_caught_up_ms'])} | {r['follower_restart_max_client_wait_ms']} | {cell(r['restarted_follower_caught_up_ms'])} |")
lines += ["", "## Throughput under loss (8 threads, every datagram on the bridge)", "",
          "| configuration | loss | ops/s | of loss-free | p50 us | p99 us | retries |", "|---|---|---|---|---|---|---|"]
base = {}
for r in rows:
    if r["kind"] == "loss":
        if r["loss_percent"] == 0:
            base[r["configuration"]] = r["ops_per_s"]
        ratio = r["ops_per_s"] / base.get(r["configuration"], r["ops_per_s"])
        lines.append(f"| {r['configuration']} | {r['loss_percent']}% | {r['ops_per_s']} | {ratio:.0%} | {r['p50_us']} | {r['p99_us']} | {r['retries']} |")
lines += ["", "## 5 replicas, leader SIGSTOPped 2 s three times", "",
          "| configuration | views started per stop | max client wait ms | ops/s | failed |", "|---|---|---|---|---|"]
for r in rows:
    if r["kind"] == "sigstop":
        lines.append(f"| {r['configuration']} | {r['views_started_per_stop']} | {r['max_client_wait_ms']} | {r['ops_per_s']} | {r['failed']} |")
open(out + ".md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
print(f"\nresults: {out}.json, {out}.md")
PY
