/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * tc_broadcast.h - the leader sends a message for all followers once; the
 * clsact egress program electrode_tc emits one copy per follower.
 *
 * Included by electrode.bpf.c under #ifdef TC_BROADCAST; holds the
 * SEC("tc") program electrode_tc itself.
 *
 * Fan-out without recursion: the marked datagram's BROADCAST flag is cleared
 * first, then for every follower but the last the packet is rewritten (MAC,
 * IP, port, checksums) and cloned to the egress of the same device; the last
 * follower gets the original, rewritten in place. A clone re-enters this
 * program once (bpf_clone_redirect to our own egress), sees an unmarked
 * datagram and passes: the transmit nesting is 1 whatever the cluster size,
 * where the original re-injected one nested clone per replica and hit the
 * kernel's recursion limit at about 7 replicas.
 *
 * Follower MACs are learned by electrode_xdp (broadcast_learn below) from the
 * source MAC of valid datagrams whose source IP/port match the follower's
 * configured address, so they follow the follower (or its next hop) when it
 * changes. Ownership of the three maps: see the table in electrode.h.
 */
#ifndef ELECTRODE_TC_BROADCAST_H
#define ELECTRODE_TC_BROADCAST_H

#include "common.h"

/* uapi/linux/pkt_cls.h: #defines, so not in vmlinux.h. */
#define TC_ACT_OK 0
#define TC_ACT_SHOT 2

#define ETH_HLEN_ 14

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct electrode_broadcast_config);
} broadcast_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ELECTRODE_MAX_REPLICAS);
	__type(key, __u32);
	__type(value, struct electrode_broadcast_target);
} broadcast_targets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ELECTRODE_MAX_REPLICAS);
	__type(key, __u32);
	__type(value, struct electrode_broadcast_mac);
} broadcast_macs SEC(".maps");

/* Map values into the skeleton's `types::` (see electrode.bpf.c). */
struct electrode_broadcast_config _btf_broadcast_config = {};
struct electrode_broadcast_target _btf_broadcast_target = {};
struct electrode_broadcast_mac _btf_broadcast_mac = {};

/* TC_ACT_OK (the frame goes on as it is), counted under `reason`. */
static __always_inline int tc_count_and_pass(__u32 reason)
{
	count(reason);
	return TC_ACT_OK;
}

/* ---------------------------------------------------------------------- */
/* Learning (called by electrode_xdp for every valid datagram)            */
/* ---------------------------------------------------------------------- */

static __always_inline void broadcast_learn(const struct parsed *p)
{
	__u32 index = p->hdr->sender;
	if (index >= ELECTRODE_MAX_REPLICAS)
		return; /* clients (ELECTRODE_SENDER_CLIENT) and garbage */

	__u32 zero = 0;
	struct electrode_broadcast_config *config = bpf_map_lookup_elem(&broadcast_config, &zero);
	if (!config || index >= config->replica_count || index == config->self_index)
		return;
	struct electrode_broadcast_target *target = bpf_map_lookup_elem(&broadcast_targets, &index);
	if (!target || !target->in_use)
		return;
	/* The membership rule (electrode.h): only the configured address and
	 * port of that replica teach us its MAC; a datagram claiming to be
	 * replica 2 from elsewhere changes nothing. The target's own address
	 * must agree too (set_broadcast_targets writes both from the config). */
	if (!from_member(p, index) || p->ip->saddr != target->ip || p->udp->source != target->port)
		return;

	struct electrode_broadcast_mac learned = {};
	__builtin_memcpy(learned.mac, p->eth->h_source, sizeof(learned.mac));
	learned.known = 1;
	__u64 word;
	__builtin_memcpy(&word, &learned, sizeof(word));

	__u64 *slot = bpf_map_lookup_elem(&broadcast_macs, &index);
	if (!slot)
		return;
	/* One 64-bit load and store: electrode_tc on another CPU reads the old
	 * or the new MAC, never half of each. */
	if (*(volatile __u64 *)slot == word)
		return;
	*(volatile __u64 *)slot = word;
	count(ELECTRODE_CNT_TC_MAC_LEARNED);
}

/* ---------------------------------------------------------------------- */
/* Fan-out                                                                */
/* ---------------------------------------------------------------------- */

/* One follower's destination, copied from the maps once per datagram so the
 * two passes below see the same set even if a MAC changes meanwhile. */
struct tc_dest {
	__u8 mac[6];
	__be16 port;
	__be32 ip;
};

/* Where the rewritten fields live (UDP offset depends on IP options). */
struct tc_offsets {
	__u32 ip_check;
	__u32 ip_daddr;
	__u32 udp_dest;
	__u32 udp_check;
};

/* First pass: is replica `index` a follower we can reach? Fills dest. */
static __always_inline int tc_eligible(const struct electrode_broadcast_config *config, __u32 index,
				       struct tc_dest *dest)
{
	if (index >= config->replica_count || index == config->self_index)
		return 0;
	struct electrode_broadcast_target *target = bpf_map_lookup_elem(&broadcast_targets, &index);
	if (!target || !target->in_use)
		return 0;
	__u64 *slot = bpf_map_lookup_elem(&broadcast_macs, &index);
	if (!slot)
		return 0;
	__u64 word = *(volatile __u64 *)slot;
	struct electrode_broadcast_mac mac;
	__builtin_memcpy(&mac, &word, sizeof(mac));
	if (!mac.known)
		return 0; /* user space unicasts to it until electrode_xdp learns it */
	__builtin_memcpy(dest->mac, mac.mac, sizeof(dest->mac));
	dest->ip = target->ip;
	dest->port = target->port;
	return 1;
}

/* Points the packet at `dest`, keeping the IP and UDP checksums right:
 * the IP address is in the UDP pseudo-header (BPF_F_PSEUDO_HDR, which also
 * does the right thing for a CHECKSUM_PARTIAL skb from a local socket, see
 * docs/PLATFORM.md gotcha 5); MARK_MANGLED_0 keeps a 0 ("no checksum") UDP check 0. */
static __always_inline int tc_rewrite(struct __sk_buff *skb, const struct tc_offsets *off,
				      const struct tc_dest *dest, __be32 *cur_ip, __be16 *cur_port)
{
	if (bpf_skb_store_bytes(skb, 0, dest->mac, sizeof(dest->mac), 0))
		return -1;
	if (dest->ip != *cur_ip) {
		if (bpf_l4_csum_replace(skb, off->udp_check, *cur_ip, dest->ip,
					BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0 | sizeof(dest->ip)))
			return -1;
		if (bpf_l3_csum_replace(skb, off->ip_check, *cur_ip, dest->ip, sizeof(dest->ip)))
			return -1;
		if (bpf_skb_store_bytes(skb, off->ip_daddr, &dest->ip, sizeof(dest->ip), 0))
			return -1;
		*cur_ip = dest->ip;
	}
	if (dest->port != *cur_port) {
		if (bpf_l4_csum_replace(skb, off->udp_check, *cur_port, dest->port,
					BPF_F_MARK_MANGLED_0 | sizeof(dest->port)))
			return -1;
		if (bpf_skb_store_bytes(skb, off->udp_dest, &dest->port, sizeof(dest->port), 0))
			return -1;
		*cur_port = dest->port;
	}
	return 0;
}

/* Second pass for replica `index`: rewrite, then clone unless it is the
 * last one (which leaves as the original). Returns -1 on a helper error.
 *
 * A copy is counted once it is on its way (ELECTRODE_CNT_TC_COPIES: copies
 * sent): a clone bpf_clone_redirect refused (any non-zero return) never
 * left, and the original is then dropped, so counting it would report a
 * copy for a follower that got none. The fuzz in tests/tc_broadcast.rs
 * checks the count with every clone refused (`lo` down). */
static __always_inline int tc_emit(struct __sk_buff *skb, const struct tc_offsets *off,
				   const struct tc_dest *dests, __u32 index, __u32 *remaining,
				   __be32 *cur_ip, __be16 *cur_port)
{
	if (!(*remaining & (1u << index)))
		return 0;
	*remaining &= ~(1u << index);
	if (tc_rewrite(skb, off, &dests[index], cur_ip, cur_port))
		return -1;
	/* Flags 0: to the egress of our own device; the clone re-enters this
	 * program unmarked and passes. The last copy is the original itself,
	 * sent when the program returns TC_ACT_OK right after. */
	if (*remaining && bpf_clone_redirect(skb, skb->ifindex, 0))
		return -1;
	count(ELECTRODE_CNT_TC_COPIES);
	return 0;
}

SEC("tc")
int electrode_tc(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct electrode_broadcast_config *config = bpf_map_lookup_elem(&broadcast_config, &zero);
	if (!config)
		return tc_count_and_pass(ELECTRODE_CNT_TC_PASS_OTHER);

	struct ethhdr eth;
	struct iphdr ip;
	struct udphdr udp;
	struct electrode_hdr hdr;
	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) || eth.h_proto != bpf_htons(ETH_P_IP) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN_, &ip, sizeof(ip)) || ip.version != 4 ||
	    ip.protocol != IPPROTO_UDP_ || ip.ihl < 5)
		return tc_count_and_pass(ELECTRODE_CNT_TC_PASS_OTHER);
	__u32 udp_off = ETH_HLEN_ + ip.ihl * 4; /* ihl is 4 bits: at most 74 */
	if (bpf_skb_load_bytes(skb, udp_off, &udp, sizeof(udp)) || udp.source != config->self_port)
		return tc_count_and_pass(ELECTRODE_CNT_TC_PASS_OTHER);

	/* From our port: anything odd is passed untouched and counted. A GSO
	 * skb would carry several datagrams behind one header; we never send
	 * one (every datagram fits the MTU), so it is not ours to rewrite. */
	__u32 udp_len = bpf_ntohs(udp.len);
	if (skb->gso_size || (ip.frag_off & bpf_htons(IP_MF | IP_OFFSET)) ||
	    udp_len < sizeof(udp) + sizeof(hdr) || udp_len > sizeof(udp) + ELECTRODE_MAX_DATAGRAM ||
	    udp_off + udp_len > skb->len ||
	    bpf_skb_load_bytes(skb, udp_off + sizeof(udp), &hdr, sizeof(hdr)) ||
	    hdr.magic != bpf_htonl(ELECTRODE_MAGIC) || hdr.version != ELECTRODE_PROTOCOL_VERSION ||
	    hdr.cluster_id != bpf_htonl(cluster_id) ||
	    bpf_ntohs(hdr.body_len) + sizeof(hdr) + sizeof(udp) != udp_len)
		return tc_count_and_pass(ELECTRODE_CNT_TC_MALFORMED);
	if (!(hdr.flags & ELECTRODE_FLAG_BROADCAST))
		return tc_count_and_pass(ELECTRODE_CNT_TC_PASS_UNMARKED); /* also each of our clones */
	count(ELECTRODE_CNT_TC_MARKED);

	/* First pass: who gets a copy. Hand-unrolled with constant indices
	 * (docs/PLATFORM.md gotcha 1: clang 14 drops `#pragma unroll` here and the
	 * verifier then loses the index). */
	_Static_assert(ELECTRODE_MAX_REPLICAS == 9, "unrolled for 9 replicas");
	struct tc_dest dests[ELECTRODE_MAX_REPLICAS] = {};
	__u32 remaining = 0;
	if (config->armed) {
#define TC_ELIGIBLE(i) \
		if (tc_eligible(config, i, &dests[i])) \
			remaining |= 1u << (i);
		TC_ELIGIBLE(0) TC_ELIGIBLE(1) TC_ELIGIBLE(2) TC_ELIGIBLE(3) TC_ELIGIBLE(4)
		TC_ELIGIBLE(5) TC_ELIGIBLE(6) TC_ELIGIBLE(7) TC_ELIGIBLE(8)
#undef TC_ELIGIBLE
	}
	if (!remaining) {
		/* Disarmed, or no follower MAC known yet: user space is meant to
		 * unicast then, so this is unexpected; the datagram still goes to
		 * whoever it was addressed to (receivers ignore the flag). */
		return tc_count_and_pass(ELECTRODE_CNT_TC_NO_TARGET);
	}

	struct tc_offsets off = {
		.ip_check = ETH_HLEN_ + __builtin_offsetof(struct iphdr, check),
		.ip_daddr = ETH_HLEN_ + __builtin_offsetof(struct iphdr, daddr),
		.udp_dest = udp_off + __builtin_offsetof(struct udphdr, dest),
		.udp_check = udp_off + __builtin_offsetof(struct udphdr, check),
	};

	/* Clear the flag before the first clone, so no copy matches again. The
	 * flag shares a 16-bit word with `sender` at an even offset from the
	 * UDP header, which is how the checksum sums it. */
	__u32 word_off = udp_off + sizeof(udp) + __builtin_offsetof(struct electrode_hdr, sender);
	__u8 old_word[2] = { hdr.sender, hdr.flags };
	__u8 new_word[2] = { hdr.sender, hdr.flags & ~ELECTRODE_FLAG_BROADCAST };
	__be16 old_sum, new_sum;
	__builtin_memcpy(&old_sum, old_word, 2);
	__builtin_memcpy(&new_sum, new_word, 2);
	if (bpf_l4_csum_replace(skb, off.udp_check, old_sum, new_sum, BPF_F_MARK_MANGLED_0 | 2) ||
	    bpf_skb_store_bytes(skb, word_off, new_word, 2, 0)) {
		count(ELECTRODE_CNT_TC_ERROR);
		return TC_ACT_SHOT;
	}

	__be32 cur_ip = ip.daddr;
	__be16 cur_port = udp.dest;
#define TC_EMIT(i) \
	if (tc_emit(skb, &off, dests, i, &remaining, &cur_ip, &cur_port)) \
		goto error;
	TC_EMIT(0) TC_EMIT(1) TC_EMIT(2) TC_EMIT(3) TC_EMIT(4)
	TC_EMIT(5) TC_EMIT(6) TC_EMIT(7) TC_EMIT(8)
#undef TC_EMIT
	return TC_ACT_OK; /* the original, rewritten for the last follower */

error:
	/* The packet may be half rewritten: never send it. The followers not
	 * reached are covered by VR's retransmissions. */
	count(ELECTRODE_CNT_TC_ERROR);
	return TC_ACT_SHOT;
}

#endif /* ELECTRODE_TC_BROADCAST_H */
