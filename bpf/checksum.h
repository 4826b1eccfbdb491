/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * checksum.h - the Internet checksums the fast paths need: the IPv4
 * header's (fast_intake verifies it, fast_reply writes its PrepareOK's),
 * and the UDP checksum of a datagram a fast path copied out of the packet
 * (fast_reply's Prepares, fast_intake's Requests). See "UDP checksum" in
 * electrode.h for which values are skipped and why.
 *
 * Sums are of 16-bit words as loaded, which is byte-order neutral: network
 * order fields and constants (bpf_htons) go in as they are.
 */
#ifndef ELECTRODE_CHECKSUM_H
#define ELECTRODE_CHECKSUM_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

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
 * The folded sum of the IPv4 header right after the Ethernet header,
 * `ihl_bytes` long (20..60: options make it up to 30 words), in *folded.
 * A header whose checksum verifies folds to 0xffff; with its check field
 * zeroed, ~*folded is the value to store. Returns 0 if the packet is
 * shorter than the header, else 1. Every word is bounds-checked: ihl is
 * not a constant for the verifier.
 */
static __always_inline int ipv4_header_fold(void *data, void *data_end, __u32 ihl_bytes,
					    __u16 *folded)
{
	__u64 sum = 0;
	for (__u32 i = 0; i < 30; i++) {
		if (2 * i >= ihl_bytes)
			break;
		__u16 *word = ptr_at(data, data_end, sizeof(struct ethhdr) + 2 * i, 2);
		if (!word)
			return 0;
		sum += *word;
	}
	*folded = csum_fold(sum);
	return 1;
}

/* The UDP pseudo-header's sum: addresses, protocol, UDP length (all as
 * they are on the wire). */
static __always_inline __u64 udp_pseudo_sum(__be32 saddr, __be32 daddr, __be16 udp_len)
{
	return (__u64)saddr + daddr + bpf_htons(IPPROTO_UDP_) + udp_len;
}

/*
 * 1 unless the UDP checksum is a full one that does not verify. The
 * datagram is the `len` bytes at `datagram` (electrode header onwards,
 * copied from the packet into a buffer of at least ELECTRODE_MAX_DATAGRAM
 * bytes); the pseudo-header and UDP header come from the packet.
 */
static __always_inline int udp_checksum_ok(const struct parsed *p, const __u8 *datagram, __u32 len)
{
	__u16 field = p->udp->check;
	if (field == 0)
		return 1; /* IPv4: the sender computed none */
	__u64 pseudo = udp_pseudo_sum(p->ip->saddr, p->ip->daddr, p->udp->len);
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
