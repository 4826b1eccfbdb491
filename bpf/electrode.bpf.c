// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * electrode.bpf.c - the eBPF side of electrode: one object, shared maps.
 *
 * electrode_xdp classifies every frame that reaches a replica's interface
 * and counts it (per message type, or per reason it is not ours/valid).
 * Fast paths are compiled in by the cargo features (-DFAST_REPLY,
 * -DFAST_QUORUM_PRUNE, -DTC_BROADCAST, -DFAST_INTAKE); without them
 * everything passes to the kernel stack and the userspace replica.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "electrode.h"
#include "parse.h"

/* Set by user space before load (see ownership table in electrode.h). */
const volatile __u16 electrode_port = 0;
const volatile __u32 cluster_id = 0;
const volatile __u32 replica_count = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ELECTRODE_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Unused globals that make libbpf-cargo emit every wire struct into the
 * skeleton's `types::`, so the Rust layout test can compare against them. */
struct electrode_hdr _btf_hdr = {};
struct electrode_request _btf_request = {};
struct electrode_reply _btf_reply = {};
struct electrode_prepare _btf_prepare = {};
struct electrode_prepare_ok _btf_prepare_ok = {};
struct electrode_commit _btf_commit = {};
struct electrode_start_view_change _btf_start_view_change = {};
struct electrode_chunk _btf_chunk = {};
struct electrode_do_view_change _btf_do_view_change = {};
struct electrode_start_view _btf_start_view = {};
struct electrode_get_state _btf_get_state = {};
struct electrode_new_state _btf_new_state = {};
struct electrode_recovery _btf_recovery = {};
struct electrode_recovery_response _btf_recovery_response = {};
struct electrode_status_request _btf_status_request = {};
struct electrode_status_reply _btf_status_reply = {};
struct electrode_snapshot_request _btf_snapshot_request = {};
struct electrode_snapshot_chunk _btf_snapshot_chunk = {};
struct electrode_state_blob _btf_state_blob = {};
struct electrode_log_entry _btf_log_entry = {};

static __always_inline void count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &index);
	if (value)
		*value += 1; /* per-CPU slot: no atomics needed */
}

/* Configured address of each replica: the membership rule of electrode.h
 * ("Membership"). Written once by user space before anything is armed. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ELECTRODE_MAX_REPLICAS);
	__type(key, __u32);
	__type(value, struct electrode_replica_addr);
} replica_addrs SEC(".maps");

struct electrode_replica_addr _btf_replica_addr = {};

/* 1 if the datagram parse_frame accepted (p filled) comes from replica
 * `index`'s configured IPv4 address and UDP port, else 0. The one place a
 * kernel program decides whether a sender id is believed. */
static __always_inline int from_member(const struct parsed *p, __u32 index)
{
	if (index >= replica_count || index >= ELECTRODE_MAX_REPLICAS)
		return 0;
	struct electrode_replica_addr *member = bpf_map_lookup_elem(&replica_addrs, &index);
	if (!member || !member->configured)
		return 0;
	return p->ip->saddr == member->ip && p->udp->source == member->port;
}

#ifdef FAST_REPLY
#include "fast_reply.h"
#endif
#ifdef FAST_QUORUM_PRUNE
#include "quorum_prune.h"
#endif
#ifdef FAST_INTAKE
#include "intake.h"
#endif
#ifdef TC_BROADCAST
#include "tc_broadcast.h"
struct electrode_broadcast_config _btf_broadcast_config = {};
struct electrode_broadcast_target _btf_broadcast_target = {};
struct electrode_broadcast_mac _btf_broadcast_mac = {};
#endif

SEC("xdp")
int electrode_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct parsed p = {};

	__u32 kind = parse_frame(data, data_end, electrode_port, cluster_id, &p);
	count(kind);
#ifdef TC_BROADCAST
	if (kind >= 1 && kind <= ELECTRODE_MSG_TYPE_MAX)
		broadcast_learn(&p);
#endif
#ifdef FAST_REPLY
	if (kind == ELECTRODE_MSG_PREPARE)
		return fast_reply(ctx, &p);
#endif
#ifdef FAST_QUORUM_PRUNE
	if (kind == ELECTRODE_MSG_PREPARE_OK)
		return quorum_prune(data, data_end, &p);
#endif
#ifdef FAST_INTAKE
	if (kind == ELECTRODE_MSG_REQUEST)
		return fast_intake(ctx, &p);
#endif
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
