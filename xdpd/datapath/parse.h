/* SPDX-License-Identifier: GPL-2.0 */
/*
 * parse.h: what the fast path reads and writes in a packet's bytes:
 * pkt_parse() and match_fits() (a rule's match, the same fields, read the
 * same way, as the XDP program's), partial checksum completion (csum_*),
 * a rule's VLAN action (vlan_delta, vlan_apply) and rewrite_macs().  Part
 * of _fastpath.c's unity build.  Pure functions of a packet and a rule:
 * they must not touch a ring, a port or the control area, and must not
 * read or write past the length they are given.
 */
#ifndef XDPD_PARSE_H
#define XDPD_PARSE_H

#define ETH_ALEN 6
#define ETH_HLEN 14

/*
 * What a rule's match can compare, read from the frame (the same fields,
 * the same way, as pkt_parse() in bpf/rr_redirect.c): up to two VLAN tags,
 * IPv4 (IHL-aware) or the fixed IPv6 header, TCP/UDP ports of unfragmented
 * or first fragments.  Every read is checked against len; a field the
 * frame is too short to carry is not in `have` and never matches.
 */
struct pkt_info {
	uint32_t have;			/* FP_MATCH_* present */
	uint16_t ethertype;		/* network byte order */
	uint16_t vlan;
	uint8_t ip_proto;
	uint16_t src_port, dst_port;	/* network byte order */
	uint32_t src[4], dst[4];
};

static inline uint16_t get16(const uint8_t *b)
{
	uint16_t v;

	memcpy(&v, b, sizeof(v));
	return v;
}

static inline bool is_vlan(uint16_t proto_be)
{
	return proto_be == htons(0x8100) || proto_be == htons(0x88a8);
}

/*
 * A rule's VLAN action, in two steps so that nothing is written before the
 * packet is known to leave: vlan_delta() says by how much the length will
 * change (max_len is judged on the length the egress gets), vlan_apply()
 * moves the MACs and the packet's start.  A push needs 4 bytes before the
 * packet inside its frame: the kernel puts packets XDP_PACKET_HEADROOM
 * (256) bytes in, so only a descriptor no kernel writes lacks them, and
 * that packet is dropped as invalid.  A pop on an untagged packet (or one
 * too short to hold a whole tag) changes nothing: a rule that must see a
 * tag says so in its match (vlan: ID).
 */
#define VLAN_HLEN	4
#define VLAN_NO_ROOM	INT32_MIN

/* headroom: the packet's offset in its frame */
static inline int32_t vlan_delta(const struct fp_rule *r, uint64_t headroom,
				 const uint8_t *pkt, uint32_t len)
{
	if (r->vlan_op == FP_VLAN_PUSH)
		return headroom >= VLAN_HLEN ? VLAN_HLEN : VLAN_NO_ROOM;
	if (r->vlan_op == FP_VLAN_POP && len >= ETH_HLEN + VLAN_HLEN &&
	    is_vlan(get16(pkt + 2 * ETH_ALEN)))
		return -VLAN_HLEN;
	return 0;
}

/* delta from vlan_delta(), not VLAN_NO_ROOM; the packet is at *addr */
static inline void vlan_apply(const struct fp_rule *r, uint8_t *umem, uint64_t *addr,
			      int32_t delta)
{
	uint8_t *pkt = umem + *addr;

	if (delta > 0) {
		memmove(pkt - VLAN_HLEN, pkt, 2 * ETH_ALEN);
		memcpy(pkt + 2 * ETH_ALEN - VLAN_HLEN, &r->vlan_tpid, 2);
		memcpy(pkt + 2 * ETH_ALEN - VLAN_HLEN + 2, &r->vlan_tci, 2);
		*addr -= VLAN_HLEN;
	} else if (delta < 0) {
		memmove(pkt + VLAN_HLEN, pkt, 2 * ETH_ALEN);
		*addr += VLAN_HLEN;
	}
}

static void pkt_parse(const uint8_t *pkt, uint32_t len, struct pkt_info *pi)
{
	uint32_t off = ETH_HLEN, l4;
	uint16_t proto;

	memset(pi, 0, sizeof(*pi));
	if (len < ETH_HLEN)
		return;
	proto = get16(pkt + 12);
	if (!is_vlan(proto))
		pi->have |= FP_MATCH_UNTAGGED;
	for (int i = 0; i < 2 && is_vlan(proto); i++) {
		if (len < off + 4)
			return;
		if (i == 0) {
			pi->vlan = ntohs(get16(pkt + off)) & 0x0fff;
			pi->have |= FP_MATCH_VLAN;
		}
		proto = get16(pkt + off + 2);
		off += 4;
	}
	if (is_vlan(proto))		/* a third tag: not parsed further */
		return;
	pi->ethertype = proto;
	pi->have |= FP_MATCH_ETHERTYPE;
	if (proto == htons(0x0800)) {
		const uint8_t *ip = pkt + off;
		uint32_t ihl;

		if (len < off + 20)
			return;
		ihl = (ip[0] & 0x0f) * 4;
		if (ihl < 20)
			return;
		memcpy(&pi->src[0], ip + 12, 4);
		memcpy(&pi->dst[0], ip + 16, 4);
		pi->ip_proto = ip[9];
		pi->have |= FP_MATCH_SRC | FP_MATCH_DST | FP_MATCH_IP_PROTO;
		if (get16(ip + 6) & htons(0x1fff))	/* not the first fragment */
			return;
		l4 = off + ihl;
	} else if (proto == htons(0x86dd)) {
		const uint8_t *ip6 = pkt + off;

		if (len < off + 40)
			return;
		memcpy(pi->src, ip6 + 8, 16);
		memcpy(pi->dst, ip6 + 24, 16);
		pi->ip_proto = ip6[6];
		pi->have |= FP_MATCH_SRC | FP_MATCH_DST | FP_MATCH_IP_PROTO;
		l4 = off + 40;
	} else {
		return;
	}
	if (pi->ip_proto != 6 && pi->ip_proto != 17)
		return;
	if (len < l4 + 4)
		return;
	pi->src_port = get16(pkt + l4);
	pi->dst_port = get16(pkt + l4 + 2);
	pi->have |= FP_MATCH_SRC_PORT | FP_MATCH_DST_PORT;
}

static inline bool prefix_matches(const uint32_t *addr, const uint32_t *net,
				  const uint32_t *mask)
{
	for (int i = 0; i < 4; i++)
		if ((addr[i] & mask[i]) != net[i])
			return false;
	return true;
}

/* fields 0 takes every packet (unlike the XDP program's unused slots) */
static bool match_fits(const struct fp_match *m, const struct pkt_info *pi)
{
	uint32_t f = m->fields;

	if (f & ~pi->have)
		return false;
	if ((f & FP_MATCH_ETHERTYPE) && m->ethertype != pi->ethertype)
		return false;
	if ((f & FP_MATCH_VLAN) && m->vlan != pi->vlan)
		return false;
	if ((f & FP_MATCH_IP_PROTO) && m->ip_proto != pi->ip_proto)
		return false;
	if ((f & FP_MATCH_SRC_PORT) && m->src_port != pi->src_port)
		return false;
	if ((f & FP_MATCH_DST_PORT) && m->dst_port != pi->dst_port)
		return false;
	if ((f & FP_MATCH_SRC) && !prefix_matches(pi->src, m->src, m->src_mask))
		return false;
	if ((f & FP_MATCH_DST) && !prefix_matches(pi->dst, m->dst, m->dst_mask))
		return false;
	return true;
}

/*
 * Partial checksums.  A local stack sending through a virtual link (a veth
 * peer in a container or namespace, a tap) with TX checksum offload on
 * hands its TCP and UDP packets over with CHECKSUM_PARTIAL: the checksum
 * field holds only the pseudo-header's sum (not complemented), and the
 * "hardware" is to finish it.  XDP and AF_XDP see the raw bytes, and a
 * receiver that gets them as they are drops every one (TcpInCsumErrors).
 * On the interfaces where this can happen (netdev flag
 * FP_NETDEV_CSUM_COMPLETE, decided by the supervisor), a worker finishes
 * such a checksum before the packet leaves, as the NIC would have.
 *
 * A frame is completed only when both hold: its checksum field equals the
 * folded pseudo-header sum, and the checksum does not verify.  A frame
 * whose checksum verifies (complete already, e.g. from a wire, or from a
 * peer with offload off) is never touched; a frame with a wrong checksum
 * that is not a partial one is left wrong, for its receiver to drop.  The
 * common cost is the pseudo-header sum (a few adds); the whole packet is
 * summed only when the field matches it.  Only TCP and UDP straight after
 * the IPv4 header (not a fragment) or the fixed IPv6 header, after up to
 * two VLAN tags: where Linux puts partial checksums.
 */
static inline uint64_t csum_add(uint64_t sum, const uint8_t *b, uint32_t len)
{
	while (len >= 4) {
		uint32_t w;

		memcpy(&w, b, 4);
		sum += w;
		b += 4;
		len -= 4;
	}
	if (len >= 2) {
		uint16_t w;

		memcpy(&w, b, 2);
		sum += w;
		b += 2;
		len -= 2;
	}
	if (len) {
		uint16_t w = 0;

		memcpy(&w, b, 1);	/* the odd byte, padded with zero after it */
		sum += w;
	}
	return sum;
}

/* The ones' complement sum folded to 16 bits (in the packet's byte order). */
static inline uint16_t csum_fold16(uint64_t sum)
{
	sum = (sum & 0xffffffffULL) + (sum >> 32);
	sum = (sum & 0xffffffffULL) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)sum;
}

enum { CSUM_LEFT, CSUM_COMPLETED };

/* A packet's fragments after the first (a descriptor chain, rx.c): each
 * one's bytes and length, in order. */
struct frag {
	uint8_t *b;
	uint32_t len;
};

/*
 * The ones' complement sum of the L4 segment, len bytes from pkt + l4
 * on: what fragment 0 holds of it, then the following fragments.  A piece
 * that starts at an odd offset of the segment is summed as if at an even
 * one and its folded sum byte-swapped (RFC 1071: the sum is byte-order
 * independent, so a swap moves it by one byte).
 */
static inline uint64_t csum_segment(uint64_t sum, const uint8_t *pkt, uint32_t len0,
				    uint32_t l4, uint32_t len, const struct frag *rest,
				    uint32_t nrest)
{
	uint32_t take = len0 - l4 < len ? len0 - l4 : len, done = take;

	sum = csum_add(sum, pkt + l4, take);
	for (uint32_t j = 0; j < nrest && done < len; j++) {
		uint32_t n = rest[j].len < len - done ? rest[j].len : len - done;
		uint16_t part = csum_fold16(csum_add(0, rest[j].b, n));

		sum += done & 1 ? (uint16_t)(part << 8 | part >> 8) : part;
		done += n;
	}
	return sum;
}

/*
 * The headers are read from fragment 0 (len bytes at pkt) alone; total is
 * the whole packet's length, rest its other fragments (none: total ==
 * len, and the compiler drops the fragment walk from csum_complete()).
 */
static inline int csum_complete_sg(uint8_t *pkt, uint32_t len, uint32_t total,
				   const struct frag *rest, uint32_t nrest)
{
	uint32_t off = ETH_HLEN, l4, l4len, field_off;
	uint64_t pseudo, sum;
	uint16_t proto, field, now;
	uint8_t ip_proto;

	if (len < ETH_HLEN)
		return CSUM_LEFT;
	proto = get16(pkt + 12);
	for (int i = 0; i < 2 && is_vlan(proto); i++) {
		if (len < off + 4)
			return CSUM_LEFT;
		proto = get16(pkt + off + 2);
		off += 4;
	}
	if (proto == htons(0x0800)) {
		const uint8_t *ip = pkt + off;
		uint32_t ihl, ip_total;

		if (len < off + 20 || (ip[0] >> 4) != 4)
			return CSUM_LEFT;
		ihl = (ip[0] & 0x0f) * 4;
		ip_total = ntohs(get16(ip + 2));
		if (ihl < 20 || ip_total < ihl || total < off + ip_total)
			return CSUM_LEFT;
		if (get16(ip + 6) & htons(0x3fff))	/* a fragment (MF or offset) */
			return CSUM_LEFT;
		ip_proto = ip[9];
		l4 = off + ihl;
		l4len = ip_total - ihl;
		pseudo = csum_add(0, ip + 12, 8);
	} else if (proto == htons(0x86dd)) {
		const uint8_t *ip6 = pkt + off;

		if (len < off + 40 || (ip6[0] >> 4) != 6)
			return CSUM_LEFT;
		ip_proto = ip6[6];
		l4 = off + 40;
		l4len = ntohs(get16(ip6 + 4));
		if (total < l4 + l4len)
			return CSUM_LEFT;
		pseudo = csum_add(0, ip6 + 8, 32);
	} else {
		return CSUM_LEFT;
	}
	if (ip_proto == 6)
		field_off = 16;
	else if (ip_proto == 17)
		field_off = 6;
	else
		return CSUM_LEFT;
	if (l4len < field_off + 2 || (ip_proto == 6 && l4len < 20) ||
	    (ip_proto == 17 && l4len < 8) || len < l4 + field_off + 2)
		return CSUM_LEFT;
	/* the rest of the pseudo header, as words in the packet's byte order:
	 * (0, protocol) and the L4 length (< 64 KiB: its upper word is 0) */
	pseudo += htons(ip_proto) + htons((uint16_t)l4len);
	field = get16(pkt + l4 + field_off);
	if (field != csum_fold16(pseudo))
		return CSUM_LEFT;		/* not a partial checksum */
	/* the field included */
	sum = csum_segment(pseudo, pkt, len, l4, l4len, rest, nrest);
	if (csum_fold16(sum) == 0xffff)
		return CSUM_LEFT;		/* verifies: complete already */
	/* the sum with the field as zero: take the field out again (adding
	 * its ones' complement), rather than summing the segment twice */
	now = (uint16_t)~csum_fold16(sum + (uint16_t)~field);
	if (ip_proto == 17 && now == 0)
		now = 0xffff;			/* UDP: 0 means "no checksum" */
	memcpy(pkt + l4 + field_off, &now, 2);
	return CSUM_COMPLETED;
}

static inline int csum_complete(uint8_t *pkt, uint32_t len)
{
	return csum_complete_sg(pkt, len, len, NULL, 0);
}

static inline void rewrite_macs(const struct fp_rule *r, uint8_t *pkt)
{
	uint32_t f = r->mac_flags;

	if (f & FP_MAC_SWAP) {
		uint8_t tmp[ETH_ALEN];

		memcpy(tmp, pkt, ETH_ALEN);
		memcpy(pkt, pkt + ETH_ALEN, ETH_ALEN);
		memcpy(pkt + ETH_ALEN, tmp, ETH_ALEN);
		return;
	}
	if (f & FP_MAC_SET_DST)
		memcpy(pkt, r->dst_mac, ETH_ALEN);
	if (f & FP_MAC_SET_SRC)
		memcpy(pkt + ETH_ALEN, r->src_mac, ETH_ALEN);
}

#endif /* XDPD_PARSE_H */
