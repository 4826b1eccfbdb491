/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * quorum_prune.h - fast_quorum_prune: on the leader, pass only the
 * PrepareOK that completes a quorum and drop the others.
 *
 * The maps, the rules and who owns what are described once, in the
 * "fast_quorum_prune" section of electrode.h; this file only implements
 * them. Included by electrode.bpf.c under #ifdef FAST_QUORUM_PRUNE.
 */
#ifndef ELECTRODE_QUORUM_PRUNE_H
#define ELECTRODE_QUORUM_PRUNE_H

#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct electrode_qp_config);
} qp_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct electrode_qp_state);
} qp_state SEC(".maps");

/* Ops and window bases stay below 2^62 (arm refuses larger bases, the
 * window adds 64), so a - b of two of them is negative exactly when a < b. */
#define QP_OP_LIMIT (1ULL << 62)

/* 1 if a >= b, else 0, without a branch: a branchy count of acks gives the
 * verifier one path per outcome of 81 comparisons (it gave up after 10^6
 * instructions); arithmetic keeps it to one path. Both below QP_OP_LIMIT. */
static __always_inline __u64 qp_at_least(__u64 a, __u64 b)
{
	return ((a - b) >> 63) ^ 1;
}

/* The f-th largest acked_op over the followers in `followers` (a bitmap of
 * replica indices), 0 when fewer than f have acked anything: the highest op
 * acked by at least f of them. Called with qp_state locked (no helper
 * calls); constant bounds, unrolled. */
static __always_inline __u64 qp_quorum_op(const struct electrode_qp_state *st, __u64 followers,
					  __u64 f)
{
	__u64 best = 0;

#pragma unroll
	for (__u32 i = 0; i < ELECTRODE_MAX_REPLICAS; i++) {
		__u64 candidate = st->acked_op[i];
		__u64 at_least = 0; /* followers that vouched for `candidate` */
#pragma unroll
		for (__u32 j = 0; j < ELECTRODE_MAX_REPLICAS; j++)
			at_least += qp_at_least(st->acked_op[j], candidate) & (followers >> j);
		/* take = 1 if i is a follower, f of them vouched, and it beats best */
		__u64 take = (followers >> i) & qp_at_least(at_least, f) & qp_at_least(candidate, best);
		best ^= (best ^ candidate) & (0 - take);
	}
	return best;
}

/* The verdict a counter names (drop_ counters drop, the others pass),
 * counted. */
static __always_inline int qp_verdict(__u32 counter)
{
	switch (counter) {
	case ELECTRODE_CNT_QP_DROP_BELOW_QUORUM:
	case ELECTRODE_CNT_QP_DROP_REDUNDANT:
	case ELECTRODE_CNT_QP_DROP_FOREIGN_SOURCE:
		count(counter);
		return XDP_DROP;
	}
	return count_and_pass(counter);
}

/* Decide the fate of a PrepareOK that parse_frame accepted (p filled). */
static __always_inline int quorum_prune(void *data, void *data_end, const struct parsed *p)
{
	__u32 zero = 0;
	struct electrode_qp_config *shared = bpf_map_lookup_elem(&qp_config, &zero);
	struct electrode_qp_state *st = bpf_map_lookup_elem(&qp_state, &zero);
	if (!shared || !st)
		return XDP_PASS; /* ARRAY entry 0 always exists; the verifier wants the check */

	/* A consistent snapshot of what user space armed. */
	struct electrode_qp_config cfg = {};
	bpf_spin_lock(&shared->lock);
	cfg.armed = shared->armed;
	cfg.generation = shared->generation;
	cfg.view = shared->view;
	cfg.window_base_op = shared->window_base_op;
	cfg.quorum_followers = shared->quorum_followers;
	cfg.replica_count = shared->replica_count;
	cfg.self_index = shared->self_index;
	bpf_spin_unlock(&shared->lock);

	if (!cfg.armed || cfg.window_base_op == 0 || cfg.window_base_op >= QP_OP_LIMIT)
		return qp_verdict(ELECTRODE_CNT_QP_PASS_DISARMED); /* arm never writes such a base */
	if (bpf_be64_to_cpu(p->hdr->view) != cfg.view)
		return qp_verdict(ELECTRODE_CNT_QP_PASS_VIEW);

	/* parse_frame proved body_len >= 16 inside the packet; the verifier
	 * needs its own proof. user space decodes only exactly 16 bytes. */
	struct electrode_prepare_ok *ok =
		ptr_at(data, data_end, p->hdr_off + sizeof(struct electrode_hdr), sizeof(*ok));
	if (!ok || p->body_len != sizeof(*ok))
		return qp_verdict(ELECTRODE_CNT_QP_PASS_NOT_MEMBER);
	/* Flag bits user space does not know make the ack malformed there:
	 * never record what user space would refuse. */
	if (ok->flags & ~ELECTRODE_PREPARE_OK_GAP)
		return qp_verdict(ELECTRODE_CNT_QP_PASS_NOT_MEMBER);
	__u32 replica = ok->replica;
	if (replica != p->hdr->sender || replica >= cfg.replica_count || replica == cfg.self_index ||
	    replica >= ELECTRODE_MAX_REPLICAS)
		return qp_verdict(ELECTRODE_CNT_QP_PASS_NOT_MEMBER);
	/* The membership rule (electrode.h): the id is believed only from
	 * replica's configured address and port. A forged ack must never
	 * reach acked_op, which user space turns into PrepareOKs. */
	if (!from_member(p, replica))
		return qp_verdict(ELECTRODE_CNT_QP_DROP_FOREIGN_SOURCE);

	/* A follower's negative ack: user space must see it to re-send. */
	if (ok->flags & ELECTRODE_PREPARE_OK_GAP)
		return qp_verdict(ELECTRODE_CNT_QP_PASS_GAP);

	__u64 op = bpf_be64_to_cpu(ok->op);
	__u64 base = cfg.window_base_op;
	if (op >= base + ELECTRODE_QP_WINDOW)
		return qp_verdict(ELECTRODE_CNT_QP_PASS_WINDOW);

	/* Bit i set: replica i is a follower. arm keeps replica_count <=
	 * MAX_REPLICAS and self_index below it; the masks keep the shifts
	 * defined whatever the map holds. */
	__u32 replicas = cfg.replica_count < ELECTRODE_MAX_REPLICAS ? cfg.replica_count
								   : ELECTRODE_MAX_REPLICAS;
	__u64 followers = ((1ULL << replicas) - 1) & ~(1ULL << (cfg.self_index & 63));

	__u32 counter;
	bpf_spin_lock(&st->lock);
	if (st->generation != cfg.generation) {
		if (st->generation > cfg.generation) {
			/* User space re-armed between our two locks and another CPU
			 * already reset the state for it: our snapshot is stale. */
			bpf_spin_unlock(&st->lock);
			return qp_verdict(ELECTRODE_CNT_QP_PASS_VIEW);
		}
		st->generation = cfg.generation;
		st->quorum_op = 0;
#pragma unroll
		for (__u32 i = 0; i < ELECTRODE_MAX_REPLICAS; i++)
			st->acked_op[i] = 0;
	}
	/* Ops below the window count as having a quorum: user space committed them. */
	__u64 quorum_before = st->quorum_op > base - 1 ? st->quorum_op : base - 1;
	if (op < base) {
		/* Already committed. acked_op still follows the follower (user
		 * space reads it to know how far a lagging follower got), and a
		 * repeat of its last ack passes: a follower re-acks the same op
		 * when Prepares past a gap reach it, and user space re-sends the
		 * missing one on that (fast retransmit). First acks drop: pruning
		 * late acks is this program's purpose. */
		if (op == st->acked_op[replica]) {
			counter = ELECTRODE_CNT_QP_PASS_AFTER_QUORUM;
		} else {
			if (op > st->acked_op[replica])
				st->acked_op[replica] = op;
			counter = ELECTRODE_CNT_QP_DROP_REDUNDANT;
		}
	} else if (op <= st->acked_op[replica]) {
		counter = op <= quorum_before ? ELECTRODE_CNT_QP_PASS_AFTER_QUORUM
					      : ELECTRODE_CNT_QP_DROP_REDUNDANT;
	} else {
		st->acked_op[replica] = op;
		__u64 quorum_after = qp_quorum_op(st, followers, cfg.quorum_followers);
		if (quorum_after > st->quorum_op)
			st->quorum_op = quorum_after;
		if (quorum_after > quorum_before)
			counter = ELECTRODE_CNT_QP_PASS_QUORUM;
		else if (op <= quorum_before)
			counter = ELECTRODE_CNT_QP_DROP_REDUNDANT; /* a late follower */
		else
			counter = ELECTRODE_CNT_QP_DROP_BELOW_QUORUM;
	}
	bpf_spin_unlock(&st->lock);
	return qp_verdict(counter);
}

#endif /* ELECTRODE_QUORUM_PRUNE_H */
