/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * common.h - what every electrode program uses, included first by
 * electrode.bpf.c and by each per-path header (fast_reply.h,
 * quorum_prune.h, intake.h, tc_broadcast.h), so no header depends on what
 * another file happened to define before it:
 *   - the read-only config user space sets before load;
 *   - the `counters` map, count() and count_and_pass() (a frame handed to
 *     the stack, counted under its reason);
 *   - the `replica_addrs` map and from_member(), the membership rule;
 *   - ring_fill() and discard_and_pass(), how fast_reply and fast_intake
 *     fill a ring-buffer record;
 *   - through parse.h and checksum.h: bounds-checked parsing and the
 *     Internet checksums.
 * The shared definitions (wire structs, counters, maps and their owners)
 * are in electrode.h.
 */
#ifndef ELECTRODE_COMMON_H
#define ELECTRODE_COMMON_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "electrode.h"
#include "parse.h"
#include "checksum.h"

/* Set by user space before load (see "Maps and their owners" in electrode.h). */
const volatile __u16 electrode_port = 0;
const volatile __u32 cluster_id = 0;
const volatile __u32 replica_count = 0;

/* ---------------------------------------------------------------------- */
/* Counters and verdicts                                                  */
/* ---------------------------------------------------------------------- */

/* Slot layout and names: "Counters" in electrode.h. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ELECTRODE_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &index);
	if (value)
		*value += 1; /* per-CPU slot: no atomics needed */
}

/* XDP_PASS, counted under `reason` (an ELECTRODE_CNT_*): how a fast path
 * hands the stack a frame it does not take. */
static __always_inline int count_and_pass(__u32 reason)
{
	count(reason);
	return XDP_PASS;
}

/* ---------------------------------------------------------------------- */
/* Membership                                                             */
/* ---------------------------------------------------------------------- */

/* Configured address of each replica: the membership rule of electrode.h
 * ("Membership"). Written once by user space before anything is armed. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ELECTRODE_MAX_REPLICAS);
	__type(key, __u32);
	__type(value, struct electrode_replica_addr);
} replica_addrs SEC(".maps");

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

/* ---------------------------------------------------------------------- */
/* Ring-buffer records: fast_reply's prepare_ring, fast_intake's intake_ring */
/* ---------------------------------------------------------------------- */
/*
 * Both paths hand user space a datagram the same way:
 *   1. bound its length by the record's data (the verifier wants it, and
 *      parse_frame already implies it);
 *   2. reserve a record (fixed size: bpf_ringbuf_reserve wants a
 *      constant); none -> count_and_pass(<path>_PASS_RINGBUF_FULL);
 *   3. the path's own step, if any (fast_intake: the wake-up handshake);
 *   4. ring_fill: copy the datagram in and verify its UDP checksum;
 *   5. re-check under the path's lock that user space still wants it
 *      (still armed, same view: the handover rules in electrode.h);
 *   6. submit. A refusal after the reserve: discard_and_pass(reason).
 * Nothing is submitted that user space would not take from the socket,
 * and nothing is lost: a refused datagram passes to the stack.
 */

/* Step 4: copies the datagram parse_frame accepted (electrode header
 * onwards, `len` bytes, at most the size of `dst`) into `dst`, the data of
 * a reserved record, and verifies its UDP checksum (checksum.h). Returns
 * 0, or the reason to refuse it: `bad_checksum`, or CLASSIFY_MALFORMED if
 * the copy fails (cannot happen: parse_frame proved the bytes are there). */
static __always_inline __u32 ring_fill(struct xdp_md *ctx, const struct parsed *p, __u8 *dst,
				       __u32 len, __u32 bad_checksum)
{
	if (bpf_xdp_load_bytes(ctx, p->hdr_off, dst, len))
		return ELECTRODE_CNT_CLASSIFY_MALFORMED;
	if (!udp_checksum_ok(p, dst, len))
		return bad_checksum;
	return 0;
}

/* Gives back a reserved record (no wake-up: nothing was added) and
 * passes the frame, counted under `reason`. */
static __always_inline int discard_and_pass(void *record, __u32 reason)
{
	bpf_ringbuf_discard(record, BPF_RB_NO_WAKEUP);
	return count_and_pass(reason);
}

#endif /* ELECTRODE_COMMON_H */
