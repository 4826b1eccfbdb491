# Shared by scripts/demo.sh and bench/run.sh (sourced, not run): the
# configurations compared, their builds, CPU placement, and starting and
# stopping a cluster of replicas on the namespaces of scripts/cluster.sh.
#
# The caller sets CONFIG (cluster config) and WORK (a directory for logs)
# before calling start_replicas, and installs `trap cleanup_replicas EXIT`.
# Every script sets CALLER_DIR="$PWD" before it changes to the repository,
# so paths given on its command line mean what they meant to the caller.

# as_root CMD...: runs CMD as root: directly when already root (no sudo
# needed on PATH), else through sudo for a user allowed to use it.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        echo "$(basename "$0"): needs root (namespaces, BPF): run it as root, or install sudo" >&2
        return 1
    fi
}

# resolve_path PATH: PATH made absolute against the caller's directory.
resolve_path() {
    case "$1" in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s\n' "${CALLER_DIR:-$PWD}/$1" ;;
    esac
}

# Cargo's target directory: CARGO_TARGET_DIR if set (relative to the
# caller, as cargo would take it there), else target/ of the repository.
# Exported absolute, so every cargo run here builds where the binaries are
# then looked for.
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    TARGET_DIR="$(resolve_path "$CARGO_TARGET_DIR")"
else
    TARGET_DIR="$PWD/target"
fi
export CARGO_TARGET_DIR="$TARGET_DIR"

# "column name|cargo features": the userspace baseline, each fast path
# alone, and all four. ELECTRODE_BENCH_CONFIGURATIONS overrides it
# (space-separated entries, e.g. "userspace| all|fast_paths").
CONFIGURATIONS=(
    "userspace|"
    "fast_reply|fast_reply"
    "fast_quorum_prune|fast_quorum_prune"
    "tc_broadcast|tc_broadcast"
    "fast_intake|fast_intake"
    "all|fast_paths"
)
if [ -n "${ELECTRODE_BENCH_CONFIGURATIONS:-}" ]; then
    read -r -a CONFIGURATIONS <<<"$ELECTRODE_BENCH_CONFIGURATIONS"
fi

# CPU placement, the same for every configuration (PLATFORM.md: a cross-CPU
# wake-up costs ~40 us, a same-CPU one ~12 us): replica 0, the leader of
# view 0, on CPU 0 together with the client threads, so request/reply
# hand-offs stay on one CPU; the followers on CPU 1, so the leader's
# Prepare fan-out runs in parallel with their work.
LEADER_CPU=0
FOLLOWER_CPU=1
CLIENT_CPU=0
[ "$(nproc)" -ge 2 ] || FOLLOWER_CPU=0

PIDS=()

# Builds every configuration in one target directory (dependencies built
# once) and copies each binary to $TARGET_DIR/variants/<name>/electrode,
# since the next build replaces it.
build_variants() {
    local entry name features
    for entry in "${CONFIGURATIONS[@]}"; do
        name="${entry%%|*}" features="${entry#*|}"
        cargo build --release --quiet --features "$features" --bin electrode
        mkdir -p "$TARGET_DIR/variants/$name"
        cp "$TARGET_DIR/release/electrode" "$TARGET_DIR/variants/$name/electrode"
    done
}

replica_count() {
    grep -cE '^[[:space:]]*replica[[:space:]]' "$CONFIG"
}

# start_replicas BIN RUN [REPLICA ARGS...]: replica 0 first (it attaches
# its programs and waits for peers before the others boot, so it leads
# view 0 as the placement assumes), then the rest; logs in
# $WORK/RUN.replicaN.log. Waits (bounded) until replica 0 leads in normal
# status.
start_replicas() {
    local bin="$1" run="$2" i cpu tries n
    shift 2
    n="$(replica_count)"
    PIDS=()
    for ((i = 0; i < n; i++)); do
        cpu=$FOLLOWER_CPU
        [ "$i" -eq 0 ] && cpu=$LEADER_CPU
        scripts/cluster.sh exec replica "$i" -- "$bin" replica -c "$CONFIG" -i "$i" --cpu "$cpu" "$@" \
            2>"$WORK/$run.replica$i.log" &
        PIDS+=("$!")
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

# SIGTERM: each replica prints its counters and detaches its programs.
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
