// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * electrode.bpf.c - the eBPF side of electrode: one object, shared maps.
 *
 * electrode_xdp classifies every frame that reaches a replica's interface
 * and counts it (per message type, or per reason it is not ours/valid).
 * Fast paths are compiled in by the cargo features (-DFAST_REPLY,
 * -DFAST_QUORUM_PRUNE, -DTC_BROADCAST, -DFAST_INTAKE); without them
 * everything passes to the kernel stack and the userspace replica.
 *
 * What every program shares (config, counters, membership, ring-buffer
 * records) is in common.h; each fast path is one header with its maps and
 * code; electrode.h describes them all.
 */
#include "common.h"

/* Unused globals that make libbpf-cargo emit every wire struct into the
 * skeleton's `types::`, so the Rust layout test can compare against them.
 * (Each per-path header does the same for its own map values.) */
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
struct electrode_replica_addr _btf_replica_addr = {};

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
#include "tc_broadcast.h" /* also the SEC("tc") program electrode_tc */
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
