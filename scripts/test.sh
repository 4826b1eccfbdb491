#!/usr/bin/env bash
# The test command of the README: formatting, lints, every feature subset
# builds, the unit/property/fixture/end-to-end tests, and the simulator
# sweep. Run as root (CI is root): the BPF fixture and namespace tests need
# it, skip loudly without it, and fail instead of skipping when CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

SIM_SEEDS_RELEASE="${ELECTRODE_SIM_SEEDS_RELEASE:-2000}"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, all features)"
cargo clippy --all-targets --all-features -- -D warnings

step "every feature subset builds"
for features in "" tc_broadcast fast_quorum_prune fast_reply fast_intake \
    tc_broadcast,fast_quorum_prune tc_broadcast,fast_reply fast_quorum_prune,fast_reply \
    fast_reply,fast_intake fast_quorum_prune,fast_intake tc_broadcast,fast_intake fast_paths; do
    echo "  --features '${features}'"
    cargo build --quiet --no-default-features --features "${features}"
done

step "cargo test: userspace baseline build (unit, property, eBPF fixtures, simulator, end-to-end)"
cargo test --no-fail-fast -- --test-threads=1 --show-output

# Each fast path alone and all four: their fixtures, and the same four
# end-to-end tests, which then also check that the fast path carried the
# load (kernel counters).
# The 64 MiB large-state test (tests/large_state.rs, ~35 s) and the 20
# random-order boots (tests/boot.rs, ~10 s) run for the baseline and for all
# fast paths together, not for each one alone.
for features in fast_reply fast_quorum_prune tc_broadcast fast_intake fast_paths; do
    step "cargo test --features ${features}"
    skip=()
    [ "$features" = fast_paths ] || skip=(--skip large_state --skip boots_in_random_orders)
    # fast_intake alone: its fixtures, the classifier's and the end-to-end
    # tests (the rest of the suite does not touch the leader's intake and
    # runs with it in fast_paths), to keep CI time in check.
    targets=(--tests)
    [ "$features" != fast_intake ] || targets=(--lib --test intake --test bpf --test e2e)
    cargo test --no-fail-fast --features "${features}" "${targets[@]}" -- --test-threads=1 --show-output "${skip[@]}"
done

if [ -f tests/sim.rs ]; then
    step "simulator sweeps (memory and durable): ${SIM_SEEDS_RELEASE} seeds each in release"
    ELECTRODE_SIM_SEEDS="${SIM_SEEDS_RELEASE}" ELECTRODE_SIM_DURABLE_SEEDS="${SIM_SEEDS_RELEASE}" \
        cargo test --release --test sim -- --nocapture --test-threads=1
fi

step "all tests passed"
