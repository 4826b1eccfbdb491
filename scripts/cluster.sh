#!/usr/bin/env bash
# The local cluster: one network namespace per replica of CONFIG plus one for
# clients, each joined by a veth pair to a bridge in its own namespace.
#
#   scripts/cluster.sh up   [CONFIG]   # default the repository's config.txt
#   scripts/cluster.sh down [CONFIG]   # safe to run twice or after a failed up
#   scripts/cluster.sh exec replica N -- CMD...   |   exec client -- CMD...
#
# Namespaces: ${PREFIX}br (bridge br0), ${PREFIX}r0..r<n-1> (replica i, its
# config address on eth0), ${PREFIX}cl (clients, CLIENT_IP on eth0).
# Every interface has a fixed MAC and every namespace static neighbours for
# every other host, because an XDP_TX reply never answers ARP
# (docs/PLATFORM.md, gotcha 9). Each bridge-side veth peer carries a
# trivial XDP_PASS program, since native XDP_TX on a veth is delivered only
# if the peer has an XDP program (gotcha 4). MTU 1500. Nothing outside
# these namespaces is ever addressed: the replica subnet exists only here.
#
# Needs root; run by a user, it re-runs itself through sudo (rerun_as_root
# in scripts/lib.sh, with the ELECTRODE_* variables). CONFIG is taken
# relative to the caller's directory.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

PREFIX="${ELECTRODE_NS_PREFIX:-el-}"
CLIENT_IP="${ELECTRODE_CLIENT_IP:-}"
BR="${PREFIX}br"
CL="${PREFIX}cl"
PASS_OBJ="${ELECTRODE_PASS_OBJ:-/tmp/electrode-xdp-pass.o}"

usage() { echo "usage: $0 up|down [CONFIG] | exec replica N -- CMD... | exec client -- CMD..." >&2; exit 2; }

# Replica addresses (ip port) from the config, in order.
replica_ips() {
    grep -E '^[[:space:]]*replica[[:space:]]' "$1" | sed -E 's/#.*//; s/^[[:space:]]*replica[[:space:]]+//; s/[[:space:]]+$//' |
        sed -E 's/:[0-9]+$//'
}

client_ip_for() {
    # Same /24 as replica 0, host .100 unless given.
    if [ -n "$CLIENT_IP" ]; then echo "$CLIENT_IP"; return; fi
    echo "$1" | sed -E 's/\.[0-9]+$/.100/'
}

mac_for() { printf '02:77:00:00:00:%02x' "$1"; }

pass_program() {
    [ -s "$PASS_OBJ" ] && return 0
    local src
    src="$(mktemp --suffix=.c)"
    cat >"$src" <<'C'
/* XDP_PASS on the bridge side of each veth, so that native XDP_TX on the
 * replica side is delivered (docs/PLATFORM.md, gotcha 4). */
#define SEC(name) __attribute__((section(name), used))
SEC("xdp") int xdp_pass(void *ctx) { return 2; /* XDP_PASS */ }
char _license[] SEC("license") = "GPL";
C
    clang -O2 -target bpf -c "$src" -o "$PASS_OBJ"
    rm -f "$src"
}

down() {
    local ns
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${PREFIX}(br|cl|r[0-9]+)$" || true); do
        ip netns del "$ns" 2>/dev/null || true
    done
}

# host_ns index ip: creates namespace $1 with eth0 (MAC index $2, address $3)
# whose peer v<name> sits on br0.
add_host() {
    local ns="$1" idx="$2" ip="$3" peer="v${1#"$PREFIX"}"
    ip netns add "$ns"
    ip -n "$BR" link add "$peer" type veth peer name eth0 netns "$ns"
    ip -n "$ns" link set eth0 address "$(mac_for "$idx")" mtu 1500
    ip -n "$BR" link set "$peer" mtu 1500 master br0 up
    ip -n "$ns" addr add "$ip/24" dev eth0
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    ip -n "$BR" link set dev "$peer" xdpdrv obj "$PASS_OBJ" sec xdp
}

up() {
    local config="$1"
    [ -f "$config" ] || { echo "cluster.sh: no config file $config" >&2; exit 1; }
    mapfile -t ips < <(replica_ips "$config")
    [ "${#ips[@]}" -ge 1 ] || { echo "cluster.sh: $config has no replica lines" >&2; exit 1; }
    local cip
    cip="$(client_ip_for "${ips[0]}")"
    down
    trap 'echo "cluster.sh: up failed, removing what was made" >&2; down' ERR
    pass_program
    ip netns add "$BR"
    ip -n "$BR" link add br0 type bridge
    ip -n "$BR" link set lo up
    ip -n "$BR" link set br0 up
    local i
    for i in "${!ips[@]}"; do
        add_host "${PREFIX}r$i" $((0x10 + i)) "${ips[$i]}"
    done
    add_host "$CL" $((0x64)) "$cip"
    # Static neighbours everywhere, both ways.
    local hosts=("${ips[@]}" "$cip") macs=() ns_list=()
    for i in "${!ips[@]}"; do macs+=("$(mac_for $((0x10 + i)))"); ns_list+=("${PREFIX}r$i"); done
    macs+=("$(mac_for $((0x64)))"); ns_list+=("$CL")
    local a b
    for a in "${!ns_list[@]}"; do
        for b in "${!hosts[@]}"; do
            [ "$a" = "$b" ] && continue
            ip -n "${ns_list[$a]}" neigh replace "${hosts[$b]}" lladdr "${macs[$b]}" dev eth0 nud permanent
        done
    done
    trap - ERR
    echo "cluster up: ${#ips[@]} replica namespaces ${PREFIX}r0..${PREFIX}r$((${#ips[@]} - 1)) (${ips[*]}), client namespace $CL ($cip), bridge $BR"
}

cmd="${1:-}"
# shellcheck disable=SC2119 # the arguments are the script's, saved by lib.sh
[ -z "$cmd" ] || rerun_as_root
if [ "$cmd" = up ] && [ -n "${2:-}" ]; then
    set -- up "$(resolve_path "$2")"
fi
case "$cmd" in
up) up "${2:-config.txt}" ;;
down) down; echo "cluster down" ;;
exec)
    shift
    case "${1:-}" in
    replica) ns="${PREFIX}r${2:?replica index}"; shift 2 ;;
    client) ns="$CL"; shift ;;
    *) usage ;;
    esac
    [ "${1:-}" = "--" ] && shift
    exec ip netns exec "$ns" "$@"
    ;;
*) usage ;;
esac
