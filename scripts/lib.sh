# shellcheck shell=bash
# The lower layer of the scripts (sourced, not run): set-up, root, paths
# and cargo's target directory. scripts/cluster.sh sources it directly; the
# bench scripts and scripts/demo.sh through bench/lib.sh, which adds the
# compiled configurations and the replicas on top.
#
# Sourced first thing after `set -euo pipefail`, with no arguments:
#   . "$(dirname "$0")/lib.sh"
# it records how the script was called (SCRIPT, its absolute path;
# SCRIPT_ARGS, its arguments; CALLER_DIR, the caller's directory) and
# changes to the repository, so that relative paths in the scripts are the
# repository's while paths on their command lines keep the meaning they had
# for the caller (resolve_path).

SCRIPT="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
SCRIPT_ARGS=("$@")
CALLER_DIR="$PWD"
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit

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

# rerun_as_root [VAR=VALUE...]: as root, returns at once and the script
# goes on. Otherwise runs the script again as root (as_root), from the
# caller's directory, with its original arguments verbatim, every exported
# ELECTRODE_* variable, CARGO_TARGET_DIR and the VAR=VALUE given (sudo
# resets the environment), and exits with the re-run's status.
rerun_as_root() {
    [ "$(id -u)" -ne 0 ] || return 0
    local name names vars=("CARGO_TARGET_DIR=$TARGET_DIR") status=0
    mapfile -t names < <(compgen -e ELECTRODE_ || true)
    for name in "${names[@]}"; do vars+=("$name=${!name}"); done
    (cd "$CALLER_DIR" && as_root env "${vars[@]}" "$@" "$SCRIPT" "${SCRIPT_ARGS[@]}") || status=$?
    exit "$status"
}

# resolve_path PATH: PATH made absolute against the caller's directory.
resolve_path() {
    case "$1" in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s\n' "$CALLER_DIR/$1" ;;
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
