/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * parse.h - bounds-checked access to eth -> IPv4 -> UDP -> electrode header.
 *
 * Every read of packet memory goes through ptr_at(), which proves to the
 * verifier (and to us) that [off, off + len) lies inside the packet. Nothing
 * here trusts a length field until it has been compared with data_end.
 */
#ifndef ELECTRODE_PARSE_H
#define ELECTRODE_PARSE_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "electrode.h"

#define ETH_P_IP 0x0800
#define IPPROTO_UDP_ 17
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

/* The one bounds check: a pointer to len bytes at off, or NULL. */
static __always_inline void *ptr_at(void *data, void *data_end, __u64 off, __u64 len)
{
	if (off > ELECTRODE_MTU + 64)  /* keeps off bounded for the verifier */
		return NULL;
	if (data + off + len > data_end)
		return NULL;
	return data + off;
}

struct parsed {
	struct ethhdr *eth;
	struct iphdr *ip;
	struct udphdr *udp;
	struct electrode_hdr *hdr;
	__u32 hdr_off;      /* offset of the electrode header from data */
	__u32 body_len;     /* validated: hdr + body_len is inside the packet */
};

/* Smallest legal body for each message type (its fixed part). */
static __always_inline __u32 body_min(__u8 type)
{
	switch (type) {
	case ELECTRODE_MSG_REQUEST: return sizeof(struct electrode_request);
	case ELECTRODE_MSG_REPLY: return sizeof(struct electrode_reply);
	case ELECTRODE_MSG_PREPARE: return sizeof(struct electrode_prepare);
	case ELECTRODE_MSG_PREPARE_OK: return sizeof(struct electrode_prepare_ok);
	case ELECTRODE_MSG_COMMIT: return sizeof(struct electrode_commit);
	case ELECTRODE_MSG_START_VIEW_CHANGE: return sizeof(struct electrode_start_view_change);
	case ELECTRODE_MSG_DO_VIEW_CHANGE: return sizeof(struct electrode_do_view_change);
	case ELECTRODE_MSG_START_VIEW: return sizeof(struct electrode_start_view);
	case ELECTRODE_MSG_GET_STATE: return sizeof(struct electrode_get_state);
	case ELECTRODE_MSG_NEW_STATE: return sizeof(struct electrode_new_state);
	case ELECTRODE_MSG_RECOVERY: return sizeof(struct electrode_recovery);
	case ELECTRODE_MSG_RECOVERY_RESPONSE: return sizeof(struct electrode_recovery_response);
	case ELECTRODE_MSG_STATUS_REQUEST: return sizeof(struct electrode_status_request);
	case ELECTRODE_MSG_STATUS_REPLY: return sizeof(struct electrode_status_reply);
	case ELECTRODE_MSG_SNAPSHOT_REQUEST: return sizeof(struct electrode_snapshot_request);
	case ELECTRODE_MSG_SNAPSHOT_CHUNK: return sizeof(struct electrode_snapshot_chunk);
	}
	return 0xffff; /* unknown types never pass the length check */
}

/*
 * Classify a frame. Returns the message type (1..ELECTRODE_MSG_TYPE_MAX) for
 * a well-formed electrode datagram to `port` of `cluster_id`, filling *p;
 * otherwise the ELECTRODE_CNT_* reason it is not one.
 */
static __always_inline __u32 parse_frame(void *data, void *data_end, __u16 port,
					 __u32 cluster_id, struct parsed *p)
{
	struct ethhdr *eth = ptr_at(data, data_end, 0, sizeof(*eth));
	if (!eth)
		return ELECTRODE_CNT_CLASSIFY_FOREIGN; /* runt: not even an Ethernet header */
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return ELECTRODE_CNT_CLASSIFY_FOREIGN; /* ARP, IPv6, VLAN, ... */

	struct iphdr *ip = ptr_at(data, data_end, sizeof(*eth), sizeof(*ip));
	if (!ip)
		return ELECTRODE_CNT_CLASSIFY_FOREIGN;
	if (ip->protocol != IPPROTO_UDP_ || ip->version != 4)
		return ELECTRODE_CNT_CLASSIFY_FOREIGN;
	__u32 ihl_bytes = ip->ihl * 4;
	if (ihl_bytes < sizeof(*ip))
		return ELECTRODE_CNT_CLASSIFY_FOREIGN;

	__u32 udp_off = sizeof(*eth) + ihl_bytes;
	struct udphdr *udp = ptr_at(data, data_end, udp_off, sizeof(*udp));
	if (!udp)
		return ELECTRODE_CNT_CLASSIFY_FOREIGN;
	if (udp->dest != bpf_htons(port))
		return ELECTRODE_CNT_CLASSIFY_FOREIGN;

	/* From here on the datagram is addressed to us: anything wrong is ours
	 * to count. We never fragment, so a fragment is malformed. */
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return ELECTRODE_CNT_CLASSIFY_MALFORMED;
	__u32 udp_len = bpf_ntohs(udp->len);
	if (udp_len < sizeof(*udp) + sizeof(struct electrode_hdr))
		return ELECTRODE_CNT_CLASSIFY_MALFORMED;
	if (udp_len > sizeof(*udp) + ELECTRODE_MAX_DATAGRAM)
		return ELECTRODE_CNT_CLASSIFY_MALFORMED;
	if (!ptr_at(data, data_end, udp_off, udp_len))
		return ELECTRODE_CNT_CLASSIFY_MALFORMED; /* UDP length beyond the frame */

	__u32 hdr_off = udp_off + sizeof(*udp);
	struct electrode_hdr *hdr = ptr_at(data, data_end, hdr_off, sizeof(*hdr));
	if (!hdr)
		return ELECTRODE_CNT_CLASSIFY_MALFORMED;
	if (hdr->magic != bpf_htonl(ELECTRODE_MAGIC) ||
	    hdr->version != ELECTRODE_PROTOCOL_VERSION)
		return ELECTRODE_CNT_CLASSIFY_BAD_MAGIC;
	if (hdr->cluster_id != bpf_htonl(cluster_id))
		return ELECTRODE_CNT_CLASSIFY_WRONG_CLUSTER;
	if (hdr->msg_type == 0 || hdr->msg_type > ELECTRODE_MSG_TYPE_MAX)
		return ELECTRODE_CNT_CLASSIFY_UNKNOWN_TYPE;
	__u32 body_len = bpf_ntohs(hdr->body_len);
	if (body_len + sizeof(*hdr) + sizeof(*udp) != udp_len)
		return ELECTRODE_CNT_CLASSIFY_MALFORMED;
	if (body_len < body_min(hdr->msg_type))
		return ELECTRODE_CNT_CLASSIFY_MALFORMED;

	p->eth = eth;
	p->ip = ip;
	p->udp = udp;
	p->hdr = hdr;
	p->hdr_off = hdr_off;
	p->body_len = body_len;
	return hdr->msg_type;
}

#endif /* ELECTRODE_PARSE_H */
