/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * intake.h - leader intake (cargo feature fast_intake, -DFAST_INTAKE).
 *
 * On the leader in normal status, each well-formed client Request the
 * socket would have delivered is copied, with its source address, into the
 * `intake_ring` ring buffer and dropped from the stack; user space drains
 * the ring in batches and feeds each request to the same code as a socket
 * datagram. Everything else passes, counted by reason. The rules, the
 * wake-up policy and the handover with user space are in the fast_intake
 * section of electrode.h.
 *
 * Included by electrode.bpf.c under #ifdef FAST_INTAKE.
 */
#ifndef ELECTRODE_INTAKE_H
#define ELECTRODE_INTAKE_H

#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct electrode_intake_config);
} intake_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, ELECTRODE_INTAKE_RING_BYTES);
} intake_ring SEC(".maps");

/* Ring buffers have no value type (docs/PLATFORM.md gotcha 2). */
struct electrode_intake_record _btf_intake_record = {};

/* Written by user space only (through the mmap of .bss): 1 while it runs
 * and will drain the ring before it sleeps, 0 from just before it sleeps.
 * electrode.h, "Wake-ups", has the protocol. */
volatile __u32 electrode_intake_awake = 0;
/* Target of the atomic exchange that orders our reserve before the read
 * of electrode_intake_awake (a fetching atomic: a full barrier). Its value
 * means nothing. */
__u64 electrode_intake_barrier = 0;

/* What user space armed, read under the lock in one piece. */
struct in_snapshot {
	__u64 view;
	__u32 armed;
	__be32 self_ip;
};

static __always_inline void in_read(struct electrode_intake_config *config, struct in_snapshot *s)
{
	bpf_spin_lock(&config->lock); /* plain loads only inside */
	s->armed = config->armed;
	s->view = config->view;
	s->self_ip = config->self_ip;
	bpf_spin_unlock(&config->lock);
}

/* 1 if armed for the same view as the snapshot, under the lock. */
static __always_inline int in_still_armed(struct electrode_intake_config *config,
					  const struct in_snapshot *s)
{
	int same;

	bpf_spin_lock(&config->lock);
	same = config->armed && config->view == s->view && config->self_ip == s->self_ip;
	bpf_spin_unlock(&config->lock);
	return same;
}

/*
 * 1 if the stack would hand this datagram to the socket bound to self_ip:
 * addressed to it, from a source the stack does not refuse as a martian,
 * IPv4 total length exactly the header and the UDP datagram, and an IPv4
 * header checksum that verifies. (parse_frame already refused fragments,
 * other protocols and UDP lengths beyond the frame.)
 */
static __always_inline int in_for_us(void *data, void *data_end, const struct parsed *p, __be32 self_ip)
{
	struct iphdr *ip = p->ip;
	if (ip->daddr != self_ip || ip->saddr == self_ip)
		return 0;
	__u32 source = bpf_ntohl(ip->saddr);
	__u8 first = source >> 24;
	if (first == 0 || first == 127 || first >= 224)
		return 0; /* 0/8, loopback, multicast, reserved and broadcast */
	__u32 ihl_bytes = ip->ihl * 4;
	if (bpf_ntohs(ip->tot_len) != ihl_bytes + bpf_ntohs(p->udp->len))
		return 0;
	__u16 folded;
	return ipv4_header_fold(data, data_end, ihl_bytes, &folded) && folded == 0xffff;
}

/*
 * The fast path for a well-formed Request (parse_frame returned
 * ELECTRODE_MSG_REQUEST and filled *p). Returns the XDP verdict and counts
 * what it did.
 */
static __always_inline int fast_intake(struct xdp_md *ctx, struct parsed *p)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 key = 0;
	struct in_snapshot s = {};

	struct electrode_intake_config *config = bpf_map_lookup_elem(&intake_config, &key);
	if (!config) /* cannot happen: a 1-entry array */
		return count_and_pass(ELECTRODE_CNT_INTAKE_PASS_DISARMED);
	in_read(config, &s);
	if (!s.armed)
		return count_and_pass(ELECTRODE_CNT_INTAKE_PASS_DISARMED);
	if (p->hdr->sender != ELECTRODE_SENDER_CLIENT)
		return count_and_pass(ELECTRODE_CNT_INTAKE_PASS_NOT_CLIENT);
	if (!in_for_us(data, data_end, p, s.self_ip))
		return count_and_pass(ELECTRODE_CNT_INTAKE_PASS_NOT_FOR_US);
	struct electrode_request *request =
		ptr_at(data, data_end, p->hdr_off + sizeof(struct electrode_hdr), sizeof(*request));
	if (!request) /* cannot happen: parse checked body_min */
		return count_and_pass(ELECTRODE_CNT_CLASSIFY_MALFORMED);
	/* wire::decode of a Request: read_request, then the body is exactly it. */
	__u32 op_len = bpf_ntohs(request->op_len);
	if (op_len > ELECTRODE_MAX_OP_SIZE || p->body_len != sizeof(*request) + op_len)
		return count_and_pass(ELECTRODE_CNT_INTAKE_PASS_BAD_BODY);

	/* The ring-buffer steps of common.h. */
	__u32 len = sizeof(struct electrode_hdr) + p->body_len;
	if (len > ELECTRODE_MAX_REQUEST_DATAGRAM) /* implied above; bounds it for the verifier */
		return count_and_pass(ELECTRODE_CNT_INTAKE_PASS_BAD_BODY);
	struct electrode_intake_record *record = bpf_ringbuf_reserve(&intake_ring, sizeof(*record), 0);
	if (!record)
		return count_and_pass(ELECTRODE_CNT_INTAKE_PASS_RINGBUF_FULL);
	/* The reserve moved the producer position; only after a full barrier
	 * read whether user space is awake. Either it sees our record before
	 * it sleeps, or we see it asleep and the socket wakes it.
	 * The barrier must be a fetching atomic (BPF_FETCH): JITs order those
	 * fully, like the kernel's atomic_fetch_add(), but a plain BPF atomic
	 * add not at all, like atomic_add() (arm64: swpal or ldaddal against
	 * stadd). clang emits the plain add for a __sync_fetch_and_add whose
	 * result is unused; an exchange has no non-fetching form. */
	__atomic_exchange_n(&electrode_intake_barrier, 1, __ATOMIC_SEQ_CST);
	if (!electrode_intake_awake)
		return discard_and_pass(record, ELECTRODE_CNT_INTAKE_PASS_ASLEEP);
	record->view = s.view;
	record->src_ip = p->ip->saddr;
	record->src_port = p->udp->source;
	record->len = len;
	__u32 refused = ring_fill(ctx, p, record->data, len, ELECTRODE_CNT_INTAKE_PASS_BAD_CHECKSUM);
	if (!refused && !in_still_armed(config, &s))
		refused = ELECTRODE_CNT_INTAKE_PASS_DISARMED;
	if (refused)
		return discard_and_pass(record, refused);
	/* Never a wake-up: user space is awake and drains before it sleeps
	 * (electrode.h, "Wake-ups"). */
	bpf_ringbuf_submit(record, BPF_RB_NO_WAKEUP);
	count(ELECTRODE_CNT_INTAKE_RING);
	return XDP_DROP;
}

#endif /* ELECTRODE_INTAKE_H */
