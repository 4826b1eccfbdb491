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
#       per stop and the longest client wait;
#   (f) 10% loss of every datagram on the bridge and a 4-thread load, the
#       current leader SIGKILLed 20 times in a row: per try detection and
#       the new view's first commit after it (goal: within 1 s, 20 of 20;
#       a try with no commit within 10 s of the kill fails and counts as
#       10 s), the killed replica restarted and caught up before the next.
# State: `electrode client --fill` puts KEYS keys of 500 bytes (size in MiB
# x 2^20 / 500 keys). Results: bench/results/liveness-<stamp>.json and .md.
#
#   bench/liveness.sh [-s "1 64 256 1024"] [-c CONFIG] [-f CONFIG_F2]
#
# Configurations: ELECTRODE_BENCH_CONFIGURATIONS (default: userspace and
# all fast paths). Parts: ELECTRODE_LIVENESS_PARTS, any of "failover
# losskill loss sigstop" (default all four; failover is (a)-(c), losskill
# (f), per state size like failover). ELECTRODE_LIVENESS_LOSS_KILL_TRIES:
# tries of (f) (default 20); ELECTRODE_LIVENESS_LOSS_KILL_PERCENT: its loss
# (default 10). ELECTRODE_REPLICA_ARGS: extra replica flags (bench/lib.sh).
# Run as root, or as a user with sudo (builds as the user).
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
select_configurations "userspace| all|fast_paths"
: "${ELECTRODE_LIVENESS_PARTS:=failover losskill loss sigstop}"
for part in $ELECTRODE_LIVENESS_PARTS; do
    case "$part" in
    failover | losskill | loss | sigstop) ;;
    *) echo "ELECTRODE_LIVENESS_PARTS: unknown part '$part' (failover, losskill, loss, sigstop)" >&2; exit 2 ;;
    esac
done
part() { [[ " $ELECTRODE_LIVENESS_PARTS " == *" $1 "* ]]; }

SIZES="1 64 256 1024"
CONFIG=config.txt
CONFIG_F2=bench/config-f2.txt
VALUE_SIZE=500
USAGE='[-s "1 64 256 1024"] [-c CONFIG] [-f CONFIG_F2]'
parse_options "s:SIZES c:@CONFIG f:@CONFIG_F2"

# shellcheck disable=SC2119 # no extra builds
build_then_rerun_as_root

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="bench/results/liveness-$STAMP"
WORK="$(mktemp -d /tmp/electrode-liveness.XXXXXX)"
LOAD_PID=""
trap 'stop_load; cleanup_replicas' EXIT
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

# kill_replica I: SIGKILL replica I and reap it.
kill_replica() {
    kill -KILL "${PIDS[$1]}"
    wait "${PIDS[$1]}" 2>/dev/null || true
}

# kill_under_load SECONDS NAME I: a 4-thread client load of SECONDS in the
# background (its report $WORK/$run.NAME.json, its PID in LOAD); 1.5 s
# into it, replica I SIGKILLed, the kill's stamp in KILLED.
kill_under_load() {
    client --duration "$1" -t 4 --keys 100 --json >"$WORK/$run.$2.json" &
    LOAD=$!
    sleep 1.5
    KILLED=$(now_ms)
    kill_replica "$3"
}

# max_wait_ms REPORT: the longest client wait of a client report, ms.
max_wait_ms() { python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['max_us'] / 1000)" "$1"; }

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

# (f) leader SIGKILL under loss, LOSS_KILL_TRIES times on one cluster.
LOSS_KILL_PERCENT="${ELECTRODE_LIVENESS_LOSS_KILL_PERCENT:-10}"
LOSS_KILL_TRIES="${ELECTRODE_LIVENESS_LOSS_KILL_TRIES:-20}"
# A try whose new view has not committed this long after the kill failed;
# the goal is a commit within 1 s of detection.
LOSS_KILL_COMMIT_MAX_S=10
LOSS_KILL_GOAL_MS=1000
# Before each try: every replica normal in one view with one leader.
LOSS_KILL_NORMAL_MAX_S=30
# A killed replica's restart, to its "caught up" line (as in (b)).
CATCH_UP_MAX_S=300

# new_view_stamp LOG AFTER_MS VIEW WORDS [I N]: the stamp of the first line
# "[ms] view V WORDS" of LOG with V above VIEW and a stamp after AFTER_MS
# (empty if none); with I and N, only of views that replica I of N leads.
new_view_stamp() {
    { grep -E "\] view [0-9]+ $4" "$1" 2>/dev/null || true; } |
        sed -nE "s/.*: \[([0-9.]+)\] view ([0-9]+) $4.*/\1 \2/p" |
        awk -v after="$2" -v view="$3" -v i="${5:--1}" -v n="${6:-1}" \
            '$1 > after && $2 > view && (i < 0 || $2 % n == i) { print $1; exit }'
}

# earliest A B: the earlier of two stamps, either of which may be empty.
earliest() {
    if [ -z "$1" ]; then
        echo "$2"
    elif [ -z "$2" ]; then
        echo "$1"
    else
        awk -v a="$1" -v b="$2" 'BEGIN { print (a + 0 <= b + 0) ? a : b }'
    fi
}

# wait_normal_leader SECONDS: "VIEW LEADER" once every replica answers
# normal in one view (so the last restarted one has rejoined), empty if
# that does not happen within SECONDS.
wait_normal_leader() {
    local tries answer end=$((SECONDS + $1))
    for ((tries = 0; tries < $1 * 5 && SECONDS < end; tries++)); do
        answer="$(status_json 2>/dev/null | python3 -c '
import json, sys
try:
    r = json.load(sys.stdin)["replicas"]
except ValueError:
    sys.exit(0)
leaders = [x["replica"] for x in r if x.get("role") == "leader"]
if all(x.get("status") == "normal" for x in r) and len({x.get("view") for x in r}) == 1 and len(leaders) == 1:
    print(r[0]["view"], leaders[0])')"
        [ -n "$answer" ] && { echo "$answer"; return 0; }
        sleep 0.2
    done
    echo ""
}

# The loss-kill part's client load (LOAD_PID), restarted by ensure_load if
# it ended (its duration ran out, or it gave up on a cluster that stayed
# silent).
ensure_load() {
    if [ -n "$LOAD_PID" ] && kill -0 "$LOAD_PID" 2>/dev/null; then
        return 0
    fi
    [ -z "$LOAD_PID" ] || wait "$LOAD_PID" 2>/dev/null || true
    # Not through client(): $! must be the client process itself (cluster.sh
    # execs into it), so that stop_load stops exactly it.
    scripts/cluster.sh exec client -- "$BIN" client -c "$CONFIG" --cpu "$CLIENT_CPU" \
        --duration 600 -t 4 --keys 100 --json >>"$WORK/$1.load.json" 2>>"$WORK/$1.load.err" &
    LOAD_PID=$!
}
stop_load() {
    [ -n "${LOAD_PID:-}" ] || return 0
    kill -TERM "$LOAD_PID" 2>/dev/null || true
    wait "$LOAD_PID" 2>/dev/null || true
    LOAD_PID=""
}

# loss_kill NAME SIZE_MIB: on a fresh cluster filled with SIZE_MIB, with
# LOSS_KILL_PERCENT loss on the bridge and a 4-thread load, LOSS_KILL_TRIES
# times: SIGKILL the current leader, time detection (kill -> a survivor's
# first view-change line of a later view) and the new view's first commit
# (-> its leader's "first commit" line), restart the killed replica and
# wait until it has caught up and every replica is normal. Appends a row to
# $ROWS and prints the tries.
loss_kill() {
    local name="$1" size="$2" run="$1-$2-losskill" keys try answer view leader killed detected committed
    local stamp i polls end restarted caught tries=() n attempt voided=0
    keys=$((size * 1048576 / VALUE_SIZE))
    n="$(replica_count)"
    echo "==> $name, $size MiB: leader kill under $LOSS_KILL_PERCENT% loss, $LOSS_KILL_TRIES tries"
    start_replicas "$BIN" "$run"
    client --fill --keys "$keys" --value-size "$VALUE_SIZE" -t 8 --json >/dev/null
    bridge_loss "$LOSS_KILL_PERCENT"
    # An attempt whose status answer was stale (the view changed on its
    # own between it and the kill: a follower died, no leader) is void and
    # repeated, at most LOSS_KILL_TRIES times in all.
    try=1
    for ((attempt = 1; try <= LOSS_KILL_TRIES; attempt++)); do
        if ((attempt > 2 * LOSS_KILL_TRIES)); then
            echo "  $((attempt - 1)) attempts made for $((try - 1)) tries; the remaining tries failed" >&2
            for (( ; try <= LOSS_KILL_TRIES; try++)); do tries+=("$try - - - - - no-valid-kill"); done
            break
        fi
        ensure_load "$run"
        answer="$(wait_normal_leader "$LOSS_KILL_NORMAL_MAX_S")"
        if [ -z "$answer" ]; then
            echo "  try $try: not every replica normal in one view within $LOSS_KILL_NORMAL_MAX_S s; this and the remaining tries failed" >&2
            for (( ; try <= LOSS_KILL_TRIES; try++)); do tries+=("$try - - - - - no-leader"); done
            break
        fi
        # Under load in this view for a while, so the DoViewChanges carry
        # a log window as in (a); then the leader asked again just before
        # the kill, so the answer is at most one status query old.
        sleep 1
        answer="$(wait_normal_leader 1)"
        [ -n "$answer" ] || continue
        view="${answer% *}" leader="${answer#* }"
        killed=$(now_ms)
        kill_replica "$leader"
        # Any line of a later view stamped before the kill: it was not a
        # leader kill.
        stamp=""
        for ((i = 0; i < n; i++)); do
            stamp="$(earliest "$stamp" "$(new_view_stamp "$WORK/$run.replica$i.log" 0 "$view" '')")"
        done
        if [ -n "$stamp" ] && awk -v s="$stamp" -v k="$killed" 'BEGIN { exit !(s < k) }'; then
            voided=$((voided + 1))
            echo "  (attempt $attempt: view $view ended on its own $(sub "$killed" "$stamp") ms before the kill of" \
                "replica $leader; restarted, try $try repeated)"
            restarted=$(now_ms)
            start_replica "$BIN" "$run" "$leader"
            wait_log "$WORK/$run.replica$leader.log" "$restarted" 'caught up' "$CATCH_UP_MAX_S" >/dev/null
            continue
        fi
        committed=""
        end=$((SECONDS + LOSS_KILL_COMMIT_MAX_S + 1))
        for ((polls = 0; polls < LOSS_KILL_COMMIT_MAX_S * 10 && SECONDS < end; polls++)); do
            for ((i = 0; i < n; i++)); do
                [ "$i" -eq "$leader" ] && continue
                # The new leader's line: a follower still catching up logs
                # "first commit" when it learns ops the old view committed.
                stamp="$(new_view_stamp "$WORK/$run.replica$i.log" "$killed" "$view" 'first commit' "$i" "$n")"
                committed="$(earliest "$committed" "$stamp")"
            done
            [ -n "$committed" ] && break
            sleep 0.1
        done
        # The poll may have stopped a little past the bound: a commit
        # stamped later than the bound after the kill is a failure too.
        if [ -n "$committed" ] && ! awk -v c="$committed" -v k="$killed" -v max="$LOSS_KILL_COMMIT_MAX_S" \
            'BEGIN { exit !(c - k <= max * 1000) }'; then
            committed=""
        fi
        detected=""
        for ((i = 0; i < n; i++)); do
            [ "$i" -eq "$leader" ] && continue
            stamp="$(new_view_stamp "$WORK/$run.replica$i.log" "$killed" "$view" 'view-change')"
            detected="$(earliest "$detected" "$stamp")"
        done
        restarted=$(now_ms)
        start_replica "$BIN" "$run" "$leader"
        caught=$(wait_log "$WORK/$run.replica$leader.log" "$restarted" 'caught up' "$CATCH_UP_MAX_S")
        tries+=("$try $leader $killed ${detected:--} ${committed:--} $(sub "$caught" "$restarted" | sed 's/^null$/-/') killed")
        # (null: no such line within the bound.)
        echo "  try $try: replica $leader killed in view $view; detection $(sub "$detected" "$killed") ms," \
            "first commit $(sub "$committed" "${detected:-$killed}") ms after it, restart caught up in" \
            "$(sub "$caught" "$restarted") ms"
        try=$((try + 1))
    done
    stop_load
    bridge_loss 0
    stop_replicas
    python3 - "$name" "$size" "$keys" "$LOSS_KILL_PERCENT" "$LOSS_KILL_COMMIT_MAX_S" "$LOSS_KILL_GOAL_MS" \
        "$voided" "${tries[@]}" >>"$ROWS" <<'PY'
import json, sys
name, size, keys, loss, commit_max_s, goal_ms, voided, *tries = sys.argv[1:]
rows = []
for t in tries:
    number, leader, killed, detected, committed, caught, outcome = t.split()
    num = lambda v: None if v == "-" else float(v)
    killed, detected, committed = num(killed), num(detected), num(committed)
    row = {"try": int(number), "outcome": outcome, "killed_replica": None if leader == "-" else int(leader),
           "detection_ms": round(detected - killed, 1) if killed is not None and detected is not None else None,
           "committed": committed is not None,
           "restarted_caught_up_ms": num(caught)}
    # From detection; without a view-change line, from the kill. A try
    # that never committed counts as its timeout.
    start = detected if detected is not None else killed
    row["first_commit_after_detection_ms"] = (round(committed - start, 1) if committed is not None
                                              else float(commit_max_s) * 1000)
    rows.append(row)
values = [r["first_commit_after_detection_ms"] for r in rows]
print(json.dumps({
    "kind": "loss_kill", "configuration": name, "state_mib": int(size), "keys": int(keys),
    "loss_percent": int(loss), "commit_max_s": int(commit_max_s), "goal_ms": int(goal_ms), "tries": rows,
    "worst_first_commit_after_detection_ms": max(values) if values else None,
    "views_ended_before_the_kill": int(voided),
    "committed_within_goal": sum(1 for r in rows if r["committed"] and r["first_commit_after_detection_ms"] <= int(goal_ms)),
}))
PY
    python3 - "$(tail -1 "$ROWS")" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
print(f"{r['configuration']}, {r['state_mib']} MiB, leader kill under {r['loss_percent']}% loss:")
print(f"{'try':>4} {'killed':>6} {'detection ms':>13} {'first commit after detection ms':>32} {'restarted caught up ms':>23}")
cell = lambda v: "-" if v is None else str(v)
for t in r["tries"]:
    commit = t["first_commit_after_detection_ms"] if t["committed"] else f"timeout ({t['first_commit_after_detection_ms']:.0f})"
    print(f"{t['try']:>4} {cell(t['killed_replica']):>6} {cell(t['detection_ms']):>13} {commit:>32} {cell(t['restarted_caught_up_ms']):>23}")
print(f"worst {r['worst_first_commit_after_detection_ms']} ms; committed within {r['goal_ms']} ms of detection: "
      f"{r['committed_within_goal']} of {len(r['tries'])}; attempts repeated because the view had ended on its own "
      f"before the kill: {r['views_ended_before_the_kill']}")
PY
}

scripts/cluster.sh up "$CONFIG" >/dev/null
for name in "${CONFIGURATION_NAMES[@]}"; do
    BIN="$(variant_bin "$name")"
    part failover || part losskill || SIZES=""
    for size in $SIZES; do
        if part losskill; then
            loss_kill "$name" "$size"
        fi
        part failover || continue
        run="$name-$size"
        keys=$((size * 1048576 / VALUE_SIZE))
        echo "==> $name, $size MiB ($keys keys x $VALUE_SIZE B)"
        start_replicas "$BIN" "$run"
        t0=$(now_ms)
        client --fill --keys "$keys" --value-size "$VALUE_SIZE" -t 8 --json >"$WORK/$run.fill.json"
        fill_s=$(sub "$(now_ms)" "$t0")

        # (a) leader SIGKILL under load.
        kill_under_load 5 kill 0
        killed=$KILLED
        wait "$LOAD"
        detected=""
        committed=""
        started=""
        for i in 1 2; do
            detected="$(earliest "$detected" "$(first_stamp "$WORK/$run.replica$i.log" "$killed" 'view-change')")"
            # The new leader's normal line, and the first commit in the new view.
            s="$(first_stamp "$WORK/$run.replica$i.log" "$killed" 'DoViewChanges: new leader')"
            [ -n "$s" ] && started="$s"
            committed="$(earliest "$committed" "$(first_stamp "$WORK/$run.replica$i.log" "$killed" 'first commit')")"
        done
        kill_max_ms=$(max_wait_ms "$WORK/$run.kill.json")

        # (b) the killed leader restarts and catches up.
        restarted=$(now_ms)
        start_replica "$BIN" "$run" 0
        caught=$(wait_log "$WORK/$run.replica0.log" "$restarted" 'caught up' 300)

        # (c) a follower (not the new leader, replica 1) killed and restarted at once.
        kill_under_load 6 restart 2
        frestart=$KILLED
        start_replica "$BIN" "$run" 2
        wait "$LOAD"
        fcaught=$(wait_log "$WORK/$run.replica2.log" "$frestart" 'caught up' 300)
        restart_max_ms=$(max_wait_ms "$WORK/$run.restart.json")
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
for name in "${CONFIGURATION_NAMES[@]}"; do
    part sigstop || break
    BIN="$(variant_bin "$name")"
    run="$name-sigstop"
    start_replicas "$BIN" "$run"
    client --fill --keys 20000 --value-size "$VALUE_SIZE" -t 8 --json >/dev/null
    client --duration 16 -t 4 --keys 100 --json >"$WORK/$run.json" &
    load=$!
    sleep 1
    views=()
    for _ in 1 2 3; do
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
# Only the sections of the parts that ran (ELECTRODE_LIVENESS_PARTS).
kinds = {r["kind"] for r in rows}
lines = ["# Liveness: failover and recovery against state size"]
if "failover" in kinds:
    lines += ["", "| configuration | state | detection ms | view change: new leader normal ms | view change: first commit ms | max client wait at leader kill ms | restarted leader caught up ms | max client wait at follower restart ms | restarted follower caught up ms |",
              "|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    if r["kind"] == "failover":
        lines.append(f"| {r['configuration']} | {r['state_mib']} MiB | {cell(r['leader_kill_detection_ms'])} | {cell(r['view_change_to_new_leader_ms'])} | {cell(r['view_change_to_first_commit_ms'])} | {r['leader_kill_max_client_wait_ms']} | {cell(r['restarted_leader_caught_up_ms'])} | {r['follower_restart_max_client_wait_ms']} | {cell(r['restarted_follower_caught_up_ms'])} |")
if "loss" in kinds:
    lines += ["", "## Throughput under loss (8 threads, every datagram on the bridge)", "",
              "| configuration | loss | ops/s | of loss-free | p50 us | p99 us | retries |", "|---|---|---|---|---|---|---|"]
base = {}
for r in rows:
    if r["kind"] == "loss":
        if r["loss_percent"] == 0:
            base[r["configuration"]] = r["ops_per_s"]
        ratio = r["ops_per_s"] / base.get(r["configuration"], r["ops_per_s"])
        lines.append(f"| {r['configuration']} | {r['loss_percent']}% | {r['ops_per_s']} | {ratio:.0%} | {r['p50_us']} | {r['p99_us']} | {r['retries']} |")
for r in rows:
    if r["kind"] == "loss_kill":
        tries = r["tries"]
        lines += ["", f"## {r['configuration']}, {r['state_mib']} MiB: leader SIGKILL under {r['loss_percent']}% loss "
                  f"on the bridge, {len(tries)} tries", "",
                  "First commit of the new view after detection, ms, per try (a try with no commit within "
                  f"{r['commit_max_s']} s of the kill counts as {r['commit_max_s'] * 1000}):", "",
                  ", ".join(str(t["first_commit_after_detection_ms"]) + ("" if t["committed"] else " (timeout)") for t in tries),
                  "", f"Worst {r['worst_first_commit_after_detection_ms']} ms; committed within {r['goal_ms']} ms of "
                  f"detection: {r['committed_within_goal']} of {len(tries)}. Attempts repeated because the view "
                  f"had ended on its own before the kill (the replica killed was not leading): "
                  f"{r['views_ended_before_the_kill']}.", "",
                  "| try | killed replica | detection ms | first commit after detection ms | restarted replica caught up ms |",
                  "|---|---|---|---|---|"]
        for t in tries:
            commit = t["first_commit_after_detection_ms"] if t["committed"] else "timeout"
            lines.append(f"| {t['try']} | {cell(t['killed_replica'])} | {cell(t['detection_ms'])} | {commit} | "
                         f"{cell(t['restarted_caught_up_ms'])} |")
if "sigstop" in kinds:
    lines += ["", "## 5 replicas, leader SIGSTOPped 2 s three times", "",
              "| configuration | views started per stop | max client wait ms | ops/s | failed |", "|---|---|---|---|---|"]
for r in rows:
    if r["kind"] == "sigstop":
        lines.append(f"| {r['configuration']} | {r['views_started_per_stop']} | {r['max_client_wait_ms']} | {r['ops_per_s']} | {r['failed']} |")
open(out + ".md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
print(f"\nresults: {out}.json, {out}.md")
PY
