# shellcheck shell=bash
# Shared by the bench scripts (bench/*.sh) and scripts/demo.sh (sourced,
# not run): the compiled configurations ("variants"), their builds and
# binaries, the re-run as root, options, CPU placement, and starting and
# stopping a cluster of replicas on the namespaces of scripts/cluster.sh.
# It sources scripts/lib.sh, the lower layer (set-up, as_root,
# rerun_as_root, resolve_path, TARGET_DIR). A script reads
#
#   set -euo pipefail
#   . "$(dirname "$0")/lib.sh"                # scripts/demo.sh: "$(dirname "$0")/../bench/lib.sh"
#   select_configurations ["DEFAULT"]         # CONFIGURATIONS, CONFIGURATION_NAMES
#   USAGE="[-n OPS] [-c CONFIG]"
#   OPS=20000 CONFIG=config.txt               # the defaults
#   parse_options "n:OPS c:@CONFIG"
#   build_then_rerun_as_root ["--example pingpong --features fast_reply"...]
#   ... as root from here on ...
#
# The caller sets CONFIG (cluster config) and WORK (a directory for logs)
# before calling start_replicas, and installs `trap cleanup_replicas EXIT`.
#
# Environment (all ELECTRODE_* variables reach the re-run as root):
#   ELECTRODE_BENCH_CONFIGURATIONS  the configurations to run (select_configurations)
#   ELECTRODE_REPLICA_ARGS          extra flags for every replica started here
#   ELECTRODE_PREBUILT              set: do not build (the re-run as root sets it)
#   CARGO_TARGET_DIR                where to build, and where the variants are

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

# "name|cargo features" of every configuration: the userspace baseline, each
# fast path alone, and all four.
ALL_CONFIGURATIONS=(
    "userspace|"
    "fast_reply|fast_reply"
    "fast_quorum_prune|fast_quorum_prune"
    "tc_broadcast|tc_broadcast"
    "fast_intake|fast_intake"
    "all|fast_paths"
)

# select_configurations [DEFAULT]: CONFIGURATIONS, the entries to build and
# run: ELECTRODE_BENCH_CONFIGURATIONS if set (space-separated entries, e.g.
# "userspace| all|fast_paths"), else DEFAULT (the same form), else every
# one; CONFIGURATION_NAMES, their names in the same order.
# shellcheck disable=SC2120 # DEFAULT is optional
select_configurations() {
    local entry
    if [ -n "${ELECTRODE_BENCH_CONFIGURATIONS:-}" ]; then
        read -r -a CONFIGURATIONS <<<"$ELECTRODE_BENCH_CONFIGURATIONS"
    elif [ -n "${1:-}" ]; then
        read -r -a CONFIGURATIONS <<<"$1"
    else
        CONFIGURATIONS=("${ALL_CONFIGURATIONS[@]}")
    fi
    CONFIGURATION_NAMES=()
    for entry in "${CONFIGURATIONS[@]}"; do CONFIGURATION_NAMES+=("${entry%%|*}"); done
}
# shellcheck disable=SC2119 # every configuration until the script chooses
select_configurations

# variant_bin NAME: the binary of configuration NAME, copied there by
# build_variants (under the target directory in use).
variant_bin() { printf '%s\n' "$TARGET_DIR/variants/$1/electrode"; }

# Builds every configuration in one target directory (dependencies built
# once) and copies each binary to variant_bin NAME, since the next build
# replaces it.
build_variants() {
    local entry name features
    for entry in "${CONFIGURATIONS[@]}"; do
        name="${entry%%|*}" features="${entry#*|}"
        cargo build --release --quiet --features "$features" --bin electrode
        mkdir -p "$TARGET_DIR/variants/$name"
        cp "$TARGET_DIR/release/electrode" "$(variant_bin "$name")"
    done
}

# build_then_rerun_as_root ["CARGO BUILD ARGS"...]: unless
# ELECTRODE_PREBUILT is set, builds every configuration, then per argument
# `cargo build --release --quiet ARGS` (split into words); then, when not
# root, runs the script again as root with ELECTRODE_PREBUILT=1
# (rerun_as_root), so that cargo runs as the user (no root-owned files in
# the user's build) and only the cluster as root.
# shellcheck disable=SC2120 # the extra builds are optional
build_then_rerun_as_root() {
    local extra
    if [ -z "${ELECTRODE_PREBUILT:-}" ]; then
        echo "==> building (release) for ${#CONFIGURATIONS[@]} configuration(s) in $TARGET_DIR"
        build_variants
        for extra in "$@"; do
            # shellcheck disable=SC2086 # cargo arguments, split on purpose
            cargo build --release --quiet $extra
        done
    fi
    rerun_as_root ELECTRODE_PREBUILT=1
}

# usage: the script's usage line (USAGE, set by the script) on stderr, exit 2.
usage() {
    echo "usage: $0 ${USAGE:-}" >&2
    exit 2
}

# parse_options "LETTER:VAR ...": getopts over the script's arguments, each
# -LETTER VALUE setting VAR (LETTER:@VAR: VALUE is a path, made absolute
# against the caller's directory); -h or an unknown option: usage. The
# script sets the defaults before.
parse_options() {
    local optstring="h" entry opt var OPTIND=1 OPTARG
    local -A vars=()
    for entry in $1; do
        optstring+="${entry%%:*}:"
        vars["${entry%%:*}"]="${entry#*:}"
    done
    while getopts "$optstring" opt "${SCRIPT_ARGS[@]}"; do
        if [ "$opt" = "?" ] || [ "$opt" = h ]; then usage; fi
        var="${vars[$opt]}"
        if [ "${var#@}" != "$var" ]; then
            printf -v "${var#@}" '%s' "$(resolve_path "$OPTARG")"
        else
            printf -v "$var" '%s' "$OPTARG"
        fi
    done
}

# CPU placement, the same for every configuration (docs/PLATFORM.md,
# "Wake-ups": a cross-CPU wake-up costs ~40 us, a same-CPU one ~12 us):
# replica 0, the leader of view 0, on CPU 0 together with the client
# threads, so request/reply hand-offs stay on one CPU; the followers on
# CPU 1, so the leader's Prepare fan-out runs in parallel with their work.
LEADER_CPU=0
FOLLOWER_CPU=1
CLIENT_CPU=0
[ "$(nproc)" -ge 2 ] || FOLLOWER_CPU=0

PIDS=()

replica_count() {
    grep -cE '^[[:space:]]*replica[[:space:]]' "$CONFIG"
}

# leader_address: replica 0's address (ip:port) in CONFIG.
leader_address() {
    grep -E '^[[:space:]]*replica[[:space:]]' "$CONFIG" | head -1 | awk '{print $2}'
}

# start_replica BIN RUN I [REPLICA ARGS...]: starts replica I of CONFIG
# (PIDS[I]) on its CPU with ELECTRODE_REPLICA_ARGS after the arguments given,
# its log appended to $WORK/RUN.replicaI.log.
start_replica() {
    local bin="$1" run="$2" i="$3" cpu=$FOLLOWER_CPU
    shift 3
    [ "$i" -eq 0 ] && cpu=$LEADER_CPU
    # shellcheck disable=SC2086 # extra replica flags, split on purpose
    scripts/cluster.sh exec replica "$i" -- "$bin" replica -c "$CONFIG" -i "$i" --cpu "$cpu" "$@" \
        ${ELECTRODE_REPLICA_ARGS:-} 2>>"$WORK/$run.replica$i.log" &
    PIDS[i]=$!
}

# start_replicas BIN RUN [REPLICA ARGS...]: replica 0 first (it attaches
# its programs and waits for peers before the others boot, so it leads
# view 0 as the placement assumes), then the rest (start_replica). Waits
# (bounded) until replica 0 leads in normal status.
start_replicas() {
    local bin="$1" run="$2" i tries n
    shift 2
    n="$(replica_count)"
    PIDS=()
    for ((i = 0; i < n; i++)); do
        start_replica "$bin" "$run" "$i" "$@"
        if [ "$i" -eq 0 ]; then
            for ((tries = 0; tries < 100; tries++)); do
                grep -q recovering "$WORK/$run.replica0.log" 2>/dev/null && break
                sleep 0.05
            done
        fi
    done
    for ((tries = 0; tries < 100; tries++)); do
        if scripts/cluster.sh exec client -- "$bin" status -c "$CONFIG" 2>/dev/null | grep -qE '^0 .* normal .* leader'; then
            return 0
        fi
        sleep 0.2
    done
    echo "replica 0 did not become a normal leader in $run; logs in $WORK" >&2
    return 1
}

# SIGTERM: each replica prints its exit counters (bench/exit_counters.py
# reads them) and detaches its programs.
stop_replicas() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}

# For `trap cleanup_replicas EXIT`: kill what is left (only the PIDs this
# script started) and remove the namespaces.
cleanup_replicas() {
    local pid
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
    scripts/cluster.sh down "$CONFIG" >/dev/null 2>&1 || true
}

# proc_cpu_ticks PID: utime + stime of the process (all its threads), in
# clock ticks (getconf CLK_TCK).
proc_cpu_ticks() {
    local stat
    stat="$(cat "/proc/$1/stat")"
    stat="${stat##*) }"
    # fields after the command: state(1) ... utime(12) stime(13)
    echo "$stat" | awk '{print $12 + $13}'
}

# The floors of one outstanding request, measured on the cluster of CONFIG
# with bench/pingpong.rs (built with --features fast_reply), pinned as the
# leader, a follower and the client are:
# floor_udp OPS WARMUP OUT: UDP ping-pong client -> replica 0's namespace.
floor_udp() {
    local pp="$TARGET_DIR/release/examples/pingpong" leader
    leader="$(leader_address)"
    scripts/cluster.sh exec replica 0 -- taskset -c "$LEADER_CPU" "$pp" server "$leader" &
    PIDS=("$!")
    sleep 0.3
    scripts/cluster.sh exec client -- taskset -c "$CLIENT_CPU" "$pp" client "$leader" -n "$1" -w "$2" >"$3"
    stop_replicas # the ping-pong server: same stop by PID
}

# floor_xdp OPS WARMUP OUT: one XDP_TX round trip, a Prepare from replica
# 0's address to replica 1, logged and answered by the fast_reply program.
floor_xdp() {
    local pp="$TARGET_DIR/release/examples/pingpong"
    scripts/cluster.sh exec replica 1 -- taskset -c "$FOLLOWER_CPU" "$pp" xdp-follower "$CONFIG" &
    PIDS=("$!")
    sleep 0.5
    scripts/cluster.sh exec replica 0 -- taskset -c "$LEADER_CPU" "$pp" xdp-leader "$CONFIG" -n "$1" -w "$2" >"$3"
    stop_replicas
}
