/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * fast_reply.h - follower fast path (cargo feature fast_reply, -DFAST_REPLY).
 *
 * On a normal follower, each in-order Prepare of the current view from the
 * leader is copied into the `prepare_ring` ring buffer for user space to
 * append to its log, and the same packet is rewritten in place into the
 * PrepareOK for the leader and sent back with XDP_TX: the follower's ack
 * never waits for user space. Everything else passes unchanged, counted by
 * reason. The state and the handover rule with user space are in the
 * ownership table of electrode.h.
 *
 * Included by electrode.bpf.c under #ifdef FAST_REPLY; other fast paths
 * live in their own headers.
 */
#ifndef ELECTRODE_FAST_REPLY_H
#define ELECTRODE_FAST_REPLY_H

#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct electrode_follower_state);
} follower_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, ELECTRODE_RINGBUF_BYTES);
} prepare_ring SEC(".maps");

/* A ring buffer has no value type: this unused global puts the record into
 * the skeleton's `types::` (docs/PLATFORM.md gotcha 2). */
struct electrode_prepare_record _btf_prepare_record = {};

/* The PrepareOK frame: Ethernet + IPv4 without options + UDP + header + body. */
#define FR_IP_OFF 14
#define FR_UDP_OFF (FR_IP_OFF + 20)
#define FR_HDR_OFF (FR_UDP_OFF + 8)
#define FR_BODY_OFF (FR_HDR_OFF + 24)
#define FR_FRAME_LEN (FR_BODY_OFF + 16)
#define FR_UDP_LEN (FR_FRAME_LEN - FR_UDP_OFF)
#define FR_IP_LEN (FR_FRAME_LEN - FR_IP_OFF)
_Static_assert(FR_FRAME_LEN == 82, "PrepareOK frame length");
_Static_assert(sizeof(struct electrode_prepare_ok) == 16, "PrepareOK body");

/* What user space armed, read under the lock in one piece. */
struct fr_snapshot {
	__u64 view;
	__u64 next_op;
	__u32 armed;
	__be32 leader_ip;
	__be16 leader_port;
	__u8 leader_index;
	__u8 self_index;
};

static __always_inline void fr_read(struct electrode_follower_state *state, struct fr_snapshot *s)
{
	/* No helper calls between lock and unlock (verifier rule): plain loads. */
	bpf_spin_lock(&state->lock);
	s->armed = state->armed;
	s->view = state->view;
	s->next_op = state->next_op;
	s->leader_ip = state->leader_ip;
	s->leader_port = state->leader_port;
	s->leader_index = state->leader_index;
	s->self_index = state->self_index;
	bpf_spin_unlock(&state->lock);
}

/*
 * Shrinks the frame to FR_FRAME_LEN and rewrites it into the PrepareOK for
 * `ack_op` back to where it came from. The caller has checked that the frame
 * is a Prepare with a 20-byte IPv4 header (so the Prepare is longer than the
 * PrepareOK) and read everything it needs from it. Returns XDP_TX, or
 * XDP_ABORTED if the kernel refuses the shrink (cannot happen for a frame
 * that parsed; ABORTED shows up in the xdp:xdp_exception tracepoint).
 */
static __always_inline int fr_reply(struct xdp_md *ctx, __u64 ack_op, __u8 self_index)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__s64 shrink = (__s64)FR_FRAME_LEN - (__s64)(data_end - data);

	if (shrink > 0 || bpf_xdp_adjust_tail(ctx, (int)shrink))
		return XDP_ABORTED;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + FR_FRAME_LEN > data_end)
		return XDP_ABORTED;

	struct ethhdr *eth = data;
	struct iphdr *ip = data + FR_IP_OFF;
	struct udphdr *udp = data + FR_UDP_OFF;
	struct electrode_hdr *hdr = data + FR_HDR_OFF;
	struct electrode_prepare_ok *ok = data + FR_BODY_OFF;

	__u8 mac[6];
	__builtin_memcpy(mac, eth->h_source, 6);
	__builtin_memcpy(eth->h_source, eth->h_dest, 6);
	__builtin_memcpy(eth->h_dest, mac, 6);

	/* IPv4: addresses swapped, fresh TTL, id/tos/DF kept (the datagram is
	 * never fragmented, so its id means nothing: RFC 6864). */
	__be32 addr = ip->saddr;
	ip->saddr = ip->daddr;
	ip->daddr = addr;
	ip->tot_len = bpf_htons(FR_IP_LEN);
	ip->ttl = 64;
	ip->check = 0;
	__u16 folded;
	if (!ipv4_header_fold(data, data_end, sizeof(*ip), &folded))
		return XDP_ABORTED; /* cannot happen: the frame holds FR_FRAME_LEN bytes */
	ip->check = ~folded;

	__be16 port = udp->source;
	udp->source = udp->dest;
	udp->dest = port;
	udp->len = bpf_htons(FR_UDP_LEN);
	udp->check = 0;

	/* magic, version, cluster_id and view stay those of the Prepare. */
	hdr->msg_type = ELECTRODE_MSG_PREPARE_OK;
	hdr->sender = self_index;
	hdr->flags = 0;
	hdr->body_len = bpf_htons(sizeof(struct electrode_prepare_ok));
	hdr->pad[0] = 0;
	hdr->pad[1] = 0;
	ok->op = bpf_cpu_to_be64(ack_op);
	ok->replica = self_index;
	ok->flags = 0;
	__builtin_memset(ok->pad, 0, sizeof(ok->pad));

	/* A real UDP checksum (docs/PLATFORM.md gotcha 5: the Prepare's field may hold
	 * only a CHECKSUM_PARTIAL pseudo-header sum). */
	__u64 sum = udp_pseudo_sum(ip->saddr, ip->daddr, bpf_htons(FR_UDP_LEN));
	__u16 *segment = (__u16 *)udp;
	for (int i = 0; i < FR_UDP_LEN / 2; i++)
		sum += segment[i];
	__u16 check = ~csum_fold(sum);
	udp->check = check ? check : 0xffff; /* 0 means "no checksum" on the wire */
	return XDP_TX;
}

/*
 * 1 if the Prepare body has exactly the lengths wire::decode (read_batch,
 * read_request in src/wire/mod.rs) accepts: 1..MAX_BATCH requests, each a
 * 24-byte electrode_request and op_len <= MAX_OP_SIZE bytes, together
 * exactly batch_len bytes, and body_len == 24 + batch_len. parse_frame
 * proved the body lies inside the frame; every request header is re-proved
 * by ptr_at. A constant-bound loop with no helper calls (docs/PLATFORM.md gotcha 1
 * is about helpers in unrolled loops); `at` is clamped to a constant so the
 * verifier keeps the offset bounded on every iteration.
 */
static __always_inline int fr_batch_ok(void *data, void *data_end, const struct parsed *p,
				       const struct electrode_prepare *prepare)
{
	__u32 count = bpf_ntohs(prepare->request_count);
	__u32 batch_len = bpf_ntohs(prepare->batch_len);

	if (count == 0 || count > ELECTRODE_MAX_BATCH)
		return 0;
	if (batch_len > ELECTRODE_MAX_BODY - sizeof(struct electrode_prepare))
		return 0;
	if (p->body_len != sizeof(struct electrode_prepare) + batch_len)
		return 0;
	__u32 batch_off = p->hdr_off + sizeof(struct electrode_hdr) + sizeof(struct electrode_prepare);
	__u32 at = 0;
	for (__u32 i = 0; i < ELECTRODE_MAX_BATCH; i++) {
		if (i >= count)
			break;
		if (at > ELECTRODE_MAX_BODY)
			return 0; /* implied by at <= batch_len; bounds it for the verifier */
		struct electrode_request *request =
			ptr_at(data, data_end, batch_off + at, sizeof(*request));
		if (!request)
			return 0;
		__u32 op_len = bpf_ntohs(request->op_len);
		if (op_len > ELECTRODE_MAX_OP_SIZE)
			return 0;
		at += sizeof(*request) + op_len;
		if (at > batch_len)
			return 0;
	}
	return at == batch_len;
}

/* The re-check of the ring-buffer steps (common.h), under the lock: 0 if
 * still armed for the same view and leader and `op` is still next_op, and
 * then next_op advances; else why the in-order Prepare is refused. */
static __always_inline __u32 fr_recheck(struct electrode_follower_state *state,
					const struct fr_snapshot *s, __u64 op)
{
	__u32 reason = 0;

	bpf_spin_lock(&state->lock);
	if (!state->armed)
		reason = ELECTRODE_CNT_REPLY_PASS_DISARMED;
	else if (state->view != s->view || state->leader_ip != s->leader_ip ||
		 state->leader_port != s->leader_port || state->leader_index != s->leader_index)
		reason = ELECTRODE_CNT_REPLY_PASS_VIEW; /* re-armed for another view meanwhile */
	else if (state->next_op != op)
		reason = ELECTRODE_CNT_REPLY_PASS_GAP;  /* another CPU acked this op first */
	else
		state->next_op = op + 1;
	bpf_spin_unlock(&state->lock);
	return reason;
}

/*
 * The fast path for a well-formed Prepare (parse_frame returned
 * ELECTRODE_MSG_PREPARE and filled *p). Returns the XDP verdict and counts
 * what it did.
 */
static __always_inline int fast_reply(struct xdp_md *ctx, struct parsed *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 key = 0;
	struct fr_snapshot s = {};

	struct electrode_follower_state *state = bpf_map_lookup_elem(&follower_state, &key);
	if (!state) /* cannot happen: a 1-entry array */
		return count_and_pass(ELECTRODE_CNT_REPLY_PASS_DISARMED);
	fr_read(state, &s);
	if (!s.armed)
		return count_and_pass(ELECTRODE_CNT_REPLY_PASS_DISARMED);
	/* The membership rule (electrode.h) for the leader's id, and the
	 * address user space armed (the same configured one). */
	if (p->ip->saddr != s.leader_ip || p->udp->source != s.leader_port ||
	    p->hdr->sender != s.leader_index || !from_member(p, s.leader_index))
		return count_and_pass(ELECTRODE_CNT_REPLY_PASS_NOT_LEADER);
	if (bpf_be64_to_cpu(p->hdr->view) != s.view)
		return count_and_pass(ELECTRODE_CNT_REPLY_PASS_VIEW);
	if (p->ip->ihl != 5)
		return count_and_pass(ELECTRODE_CNT_REPLY_PASS_IP_OPTIONS);
	struct electrode_prepare *prepare =
		ptr_at(data, data_end, p->hdr_off + sizeof(struct electrode_hdr), sizeof(*prepare));
	if (!prepare) /* cannot happen: parse checked body_min */
		return count_and_pass(ELECTRODE_CNT_CLASSIFY_MALFORMED);
	/* Never ack what user space cannot log: a body it would not decode
	 * passes (user space drops and counts it), and is never acked. */
	if (!fr_batch_ok(data, data_end, p, prepare))
		return count_and_pass(ELECTRODE_CNT_REPLY_PASS_BAD_BATCH);
	__u64 op = bpf_be64_to_cpu(prepare->op);

	if (op < s.next_op) {
		/* A retransmit: our ack was lost or is late. Everything below
		 * next_op is logged or in the ring, so ack cumulatively. */
		count(ELECTRODE_CNT_REPLY_REACK_TX);
		return fr_reply(ctx, s.next_op - 1, s.self_index);
	}
	if (op > s.next_op)
		return count_and_pass(ELECTRODE_CNT_REPLY_PASS_GAP);
	/* next_op = op + 1 would wrap to 0, after which op 0 would be "in
	 * order" and every op a retransmit. No log gets there honestly; user
	 * space decides about such a Prepare. */
	if (op == ~0ULL)
		return count_and_pass(ELECTRODE_CNT_REPLY_PASS_OP_LIMIT);

	/* In order: the ring-buffer steps of common.h. The record is reserved
	 * and filled BEFORE next_op advances (in the re-check), so an op is
	 * never acked without its record: the only step after the critical
	 * section is the submit, which cannot fail. */
	__u32 len = sizeof(struct electrode_hdr) + p->body_len;
	if (len > ELECTRODE_MAX_DATAGRAM) /* parse checked it; bounds it for the verifier */
		return count_and_pass(ELECTRODE_CNT_CLASSIFY_MALFORMED);
	struct electrode_prepare_record *record =
		bpf_ringbuf_reserve(&prepare_ring, sizeof(*record), 0);
	if (!record)
		return count_and_pass(ELECTRODE_CNT_REPLY_PASS_RINGBUF_FULL);
	record->len = len;
	__u32 refused = ring_fill(ctx, p, record->data, len, ELECTRODE_CNT_REPLY_PASS_BAD_CHECKSUM);
	if (!refused)
		refused = fr_recheck(state, &s, op);
	if (refused)
		return discard_and_pass(record, refused);
	/* User space drains on its own schedule (timer, Commit), so no wake-up
	 * per Prepare; only when the ring is more than half full. */
	__u64 wakeup = BPF_RB_NO_WAKEUP;
	if (bpf_ringbuf_query(&prepare_ring, BPF_RB_AVAIL_DATA) > ELECTRODE_RINGBUF_BYTES / 2)
		wakeup = BPF_RB_FORCE_WAKEUP;
	bpf_ringbuf_submit(record, wakeup);
	count(ELECTRODE_CNT_REPLY_TX);
	return fr_reply(ctx, op, s.self_index);
}

#endif /* ELECTRODE_FAST_REPLY_H */
