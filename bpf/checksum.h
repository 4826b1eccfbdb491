/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * checksum.h - Internet checksums of a datagram a fast path copied out of
 * the packet (fast_reply's Prepares, fast_intake's Requests). See "UDP
 * checksum" in electrode.h for which values are skipped and why.
 */
#ifndef ELECTRODE_CHECKSUM_H
#define ELECTRODE_CHECKSUM_H

#include "electrode.h"
#include "parse.h"

/* One's complement sum of 32-bit partial sums, folded to 16 bits. */
static __always_inline __u16 csum_fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

/*
 * 1 unless the UDP checksum is a full one that does not verify. The
 * datagram is the `len` bytes at `datagram` (electrode header onwards,
 * copied from the packet into a buffer of at least ELECTRODE_MAX_DATAGRAM
 * bytes); the pseudo-header and UDP header come from the packet. Sums
 * 16-bit words as loaded (byte-order neutral).
 */
static __always_inline int udp_checksum_ok(const struct parsed *p, const __u8 *datagram, __u32 len)
{
	__u16 field = p->udp->check;
	if (field == 0)
		return 1; /* IPv4: the sender computed none */
	__u64 pseudo = (__u64)p->ip->saddr + p->ip->daddr + bpf_htons(IPPROTO_UDP_) + p->udp->len;
	if (field == csum_fold(pseudo))
		return 1; /* CHECKSUM_PARTIAL from a local socket: not computed yet */
	__u64 sum = pseudo + p->udp->source + p->udp->dest + p->udp->len + field;
	const __u16 *words = (const __u16 *)datagram;
	for (__u32 i = 0; i < ELECTRODE_MAX_DATAGRAM / 2; i++) {
		if (2 * i + 1 >= len)
			break;
		sum += words[i];
	}
	if (len & 1) {
		__u32 last = len - 1;
		if (last >= ELECTRODE_MAX_DATAGRAM)
			return 0; /* the caller bounded len; the verifier wants it here */
		__u8 tail[2] = { datagram[last], 0 };
		__u16 word;
		__builtin_memcpy(&word, tail, 2);
		sum += word;
	}
	return csum_fold(sum) == 0xffff;
}

#endif /* ELECTRODE_CHECKSUM_H */
