// SPDX-License-Identifier: GPL-2.0
/*
 * chain.c: descriptor chains (multi-buffer AF_XDP): the receive path of a
 * port whose socket is bound with XDP_USE_SG (port_receive_chains_as) and
 * the fwd rings' chains onto our TX ring (port_take_chains), and step 4's
 * entry, port_receive(), which picks a receive path.  Part of _fastpath.c's
 * unity build, after rx.c (whose helpers it uses); port_receive() and
 * port_take_handoffs() take these paths when p->max_segs is set, so a
 * port without chains never runs them.  Must
 * never publish part of a chain, nor lend, send or free a fragment that is
 * not a whole frame of its home's.
 *
 * Descriptor chains.  With XDP_USE_SG, a packet longer than a frame (less
 * its headroom) arrives as several RX descriptors, each a frame of its
 * own; every one but the last carries XDP_PKT_CONTD.  The kernel publishes
 * whole packets only (Documentation/networking/af_xdp.rst, "Multi-Buffer
 * Support"), and a batch here is at least max_segs descriptors
 * (port_check_cfg), so taking descriptors only up to a chain's end never
 * leaves a packet half taken: nothing partial is ever noted for the
 * commit, and a worker killed mid-chain leaves the whole chain on the RX
 * ring for its replacement.  A chain moves as one run of descriptors, with
 * XDP_PKT_CONTD (RING_CONTD on a fwd ring) on all but the last, and room
 * is checked for the whole run before its first descriptor is written.
 * Every fragment is a frame for the ledger (fastpath.h, "Frame
 * ownership"): it is counted, lent, completed and returned on its own, as
 * without chains; the packet counters count packets, rx_frags and
 * tx_descs the descriptors.
 *
 * Rules read fragment 0 only: the match (pkt_parse), the MAC rewrite and
 * the VLAN push or pop (which move fragment 0's start).  A chain whose
 * fragment 0 is shorter than FRAG0_MIN could hide headers a rule reads in
 * fragment 1 and is dropped; the kernel fills fragment 0 first and whole
 * (frame size less headroom: 1792 B and more in copy mode), so only a
 * lying descriptor is.  max_len is judged on the whole packet, and a
 * partial checksum is completed over every fragment (csum_complete_sg).
 *
 * A chain that lies, from the kernel or from a peer worker, is dropped
 * whole and counted once as chain_invalid: no end within max_segs
 * descriptors, a zero-length fragment, a fragment that is not a whole
 * frame of its home's (also counted in bad_descs, and not freed when it
 * is not ours).  One-descriptor packets keep the checks and counters of
 * the paths without chains (invalid, bad_descs).
 */

/* Fragment 0 holds at least this much of a chain: Ethernet, two VLAN
 * tags, an IPv4 header with options (60 B) or IPv6's, and the TCP
 * checksum field (the farthest byte pkt_parse or csum_complete read). */
#define FRAG0_MIN	128

/* One packet's descriptors, fragment 0 first, as gathered (and checked
 * on the way: one pass over the descriptors, no second read of them). */
struct pkt_chain {
	uint32_t n;			/* descriptors */
	bool ended;			/* the last has no XDP_PKT_CONTD */
	bool frames_ok;			/* every fragment a whole, non-empty frame
					 * of its home's */
	uint64_t total;			/* bytes, every fragment */
	uint64_t addr[FP_MAX_SEGS];
	uint32_t len[FP_MAX_SEGS];
};

/* Fragment j of c is a whole, non-empty frame of home's. */
static inline bool frag_ok(PortObject *p, const struct pkt_chain *c, uint32_t j, uint32_t home)
{
	return c->len[j] && frame_ok(p, c->addr[j], c->len[j], home);
}

/* One more fragment onto c; true when it ends the chain (contd clear). */
static inline __attribute__((always_inline)) bool
chain_add(PortObject *p, struct pkt_chain *c, uint64_t addr, uint32_t len, bool contd,
	  uint32_t home)
{
	c->addr[c->n] = addr;
	c->len[c->n] = len;
	c->total += len;
	c->frames_ok = c->frames_ok && len && frame_ok(p, addr, len, home);
	c->n++;
	c->ended = !contd;
	return c->ended;
}

static inline void chain_start(struct pkt_chain *c)
{
	c->n = 0;
	c->total = 0;
	c->ended = false;
	c->frames_ok = true;
}

/*
 * The chain at RX ring position i (n descriptors available there) into
 * *c: up to the first descriptor without XDP_PKT_CONTD, or max_segs
 * descriptors whatever they say (then c->ended is false: it lies).
 * Returns its descriptors; 0 when its end is not among the n yet.
 */
static inline uint32_t rx_chain_at(PortObject *p, uint32_t i, uint32_t n, struct pkt_chain *c)
{
	const struct xdp_desc *rxd = p->rx.descs;

	chain_start(c);
	for (; i < n && c->n < p->max_segs; i++) {
		const struct xdp_desc *d = &rxd[(p->rx.cached_cons + i) & p->rx.mask];

		if (chain_add(p, c, d->addr, d->len, d->options & XDP_PKT_CONTD, p->owner))
			return c->n;
	}
	return c->n == p->max_segs ? c->n : 0;
}

/* A chain of several descriptors that does not lie (see the top). */
static inline bool chain_ok(const struct pkt_chain *c)
{
	return c->ended && c->frames_ok && c->len[0] >= FRAG0_MIN;
}

/* Every fragment of a received chain let go of (rx_drop()); the ones
 * that are not whole frames of the RX home's counted bad, and those
 * outside its frames not ours to free (foreign). */
static inline void rx_chain_drop(PortObject *p, const bool member, const struct pkt_chain *c,
				 struct rx_tally *t)
{
	for (uint32_t j = 0; j < c->n; j++) {
		if (!frag_ok(p, c, j, p->owner)) {
			t->bad++;
			if (!frame_rx_home(p, c->addr[j])) {
				t->foreign++;
				continue;
			}
		}
		rx_drop(p, member, c->addr[j]);
	}
}

/* Room for a chain of need descriptors where it goes: our TX ring
 * (tx_room left) or egress e's fwd ring (less what this batch put there). */
static inline bool chain_room(PortObject *p, uint32_t e, uint32_t tx_room, uint32_t need)
{
	uint32_t room;

	if (e == p->id)
		return tx_room >= need;
	room = hring_free(p->fwd_out[e], p->ring_entries);
	if (room > p->ring_entries)
		room = 0;	/* a peer's garbage index */
	return p->fwd_pending[e] + need <= room;
}

/* A chain that leaves, out_len bytes in all, onto our TX ring or egress
 * e's fwd ring (room checked by chain_room()): one descriptor per
 * fragment, XDP_PKT_CONTD (RING_CONTD) on all but the last. */
static inline __attribute__((always_inline)) void
chain_put(PortObject *p, const bool member, uint32_t e, const struct pkt_chain *c,
	  uint32_t out_len)
{
	uint32_t last = c->n - 1;

	if (e == p->id) {
		struct xdp_desc *txd = p->tx.descs;

		for (uint32_t j = 0; j < c->n; j++) {
			struct xdp_desc *d = &txd[p->tx.cached_prod++ & p->tx.mask];

			d->addr = c->addr[j];
			d->len = c->len[j];
			d->options = j < last ? XDP_PKT_CONTD : 0;
		}
		if (member)
			p->fan.took_tx += c->n;	/* the owner's frames */
		else
			p->n_tx += c->n;
		p->st.tx_packets++;
		p->st.tx_descs += c->n;
		p->st.tx_bytes += out_len;
		return;
	}
	struct fp_ring *out = p->fwd_out[e];
	uint32_t mask = p->ring_entries - 1;

	for (uint32_t j = 0; j < c->n; j++)
		out->slots[(out->prod + p->fwd_pending[e]++) & mask] =
			c->addr[j] | (j < last ? RING_CONTD : 0) |
			(uint64_t)c->len[j] << RING_LEN_SHIFT;
	if (!member)
		p->n_handoff += c->n;
	p->st.handoff_out++;
}

/* A partial checksum completed over every fragment of c. */
static inline void chain_csum(PortObject *p, const struct pkt_chain *c)
{
	struct frag rest[FP_MAX_SEGS];

	for (uint32_t j = 1; j < c->n; j++) {
		rest[j - 1].b = p->umem + c->addr[j];
		rest[j - 1].len = c->len[j];
	}
	p->st.csum_completed += csum_complete_sg(p->umem + c->addr[0], c->len[0],
						 (uint32_t)c->total, rest, c->n - 1);
}

/* The chain at RX position i, checked: false when it was refused (and
 * dropped, counted in t); *packets counts it if any of it was ours. */
static inline __attribute__((always_inline)) bool
rx_chain_checked(PortObject *p, const bool member, struct pkt_chain *c, struct rx_tally *t,
		 uint32_t *packets)
{
	uint32_t foreign = t->foreign;

	if (c->n == 1) {
		if (!rx_refused(p, member, c->addr[0], c->len[0], t))
			return true;
	} else if (chain_ok(c)) {
		return true;
	} else {
		rx_chain_drop(p, member, c, t);
		p->st.drops[FP_DROP_CHAIN_INVALID]++;
	}
	*packets += t->foreign - foreign < c->n;
	return false;
}

/*
 * 4, with chains: each packet (one descriptor or a chain) checked,
 * classified by fragment 0, then dropped or sent where its rule says, as
 * port_receive_rules_as() does for one descriptor: room checked per
 * packet, for all its descriptors, and the first packet with no room
 * stops the batch (back-pressure); a chain whose end is not in this batch
 * waits for the next (the batch is at least max_segs, so it is whole
 * there).  Direct sockets are not used (direct_load()).
 */
static inline __attribute__((always_inline)) uint32_t
port_receive_chains_as(PortObject *p, const bool member, const bool cap)
{
	struct rx_tally t = {0};
	struct pkt_chain c;
	uint32_t n, i = 0, packets = 0, tx_room;

	n = rx_avail(p, p->batch);
	if (!n)
		return 0;
	tx_room = ring_prod_free(&p->tx, n);
	while (i < n && rx_chain_at(p, i, n, &c)) {
		uint32_t len0 = c.len[0], k, e, out_len, total;
		const struct fp_rule *r;
		int32_t delta = 0;
		uint8_t *pkt;
		int why;

		if (!rx_chain_checked(p, member, &c, &t, &packets)) {
			i += c.n;
			continue;
		}
		/* only now: a lying address past the UMEM overflows the sum */
		pkt = p->umem + c.addr[0];
		total = (uint32_t)c.total;
		k = p->parse ? port_classify(p, pkt, len0) : 0;	/* one rule takes all */
		r = &p->rules[k < p->n_rules ? k : 0];
		e = k < p->n_rules ? p->rule_egress[k] : p->id;
		if (k < p->n_rules && r->vlan_op != FP_VLAN_NONE && len0 >= ETH_HLEN)
			delta = vlan_delta(r, c.addr[0] & (p->frame_size - 1), pkt, len0);
		out_len = total + (delta == VLAN_NO_ROOM ? 0 : delta);
		why = k < p->n_rules ? rule_verdict(p, r, e, len0, delta, out_len) :
				       FP_DROP_NO_RULE;
		if (why < 0 && !chain_room(p, e, tx_room, c.n))
			break;			/* stays on the RX ring */
		CAPTURE(cap, p, FP_CAP_RX, pkt, len0, total, -1, -1);
		p->st.rx_bytes += total;
		packets++;
		i += c.n;
		if (k < p->n_rules) {
			p->st.rule_packets[k]++;
			p->st.rule_bytes[k] += total;
		}
		if (why >= 0) {
			CAPTURE(cap, p, FP_CAP_DROP, pkt, len0, total, why,
				k < p->n_rules ? (int)k : -1);
			for (uint32_t j = 0; j < c.n; j++)
				rx_drop(p, member, c.addr[j]);
			p->st.drops[why]++;
			continue;
		}
		if (p->csum)
			chain_csum(p, &c);
		rewrite_macs(r, pkt);
		if (delta) {
			vlan_apply(r, p->umem, &c.addr[0], delta);
			c.len[0] += delta;
		}
		CAPTURE(cap, p, FP_CAP_TX, p->umem + c.addr[0], c.len[0], out_len, -1, (int)k);
		if (e == p->id)
			tx_room -= c.n;
		chain_put(p, member, e, &c, out_len);
	}
	rx_done(p, member, i, packets, &t);
	rules_sent(p, 0);
	return i;
}

/*
 * The entries of fwd ring r from cons + i on (n published) into *c, as
 * rx_chain_at() does: one chain, RING_CONTD on all but its last entry.
 */
static inline uint32_t fwd_chain_at(PortObject *p, struct fp_ring *r, uint32_t cons, uint32_t i,
				    uint32_t n, uint32_t home, struct pkt_chain *c)
{
	uint32_t mask = p->ring_entries - 1;

	chain_start(c);
	for (; i < n && c->n < p->max_segs; i++) {
		uint64_t e = r->slots[(cons + i) & mask];

		if (chain_add(p, c, e & RING_ADDR_MASK & ~RING_CONTD,
			      (uint32_t)(e >> RING_LEN_SHIFT), e & RING_CONTD, home))
			return c->n;
	}
	return c->n == p->max_segs ? c->n : 0;
}

/* A chain from a peer that lies, every fragment of it sent back home when
 * it is home's (bad_descs: those not whole frames; chain_invalid: a chain
 * of several), as port_take_handoffs() does with one entry. */
static void fwd_chain_refuse(PortObject *p, const struct pkt_chain *c, uint32_t home)
{
	for (uint32_t j = 0; j < c->n; j++) {
		bool good = frag_ok(p, c, j, home) && (j || c->len[0] >= ETH_HLEN);

		if (!good)
			p->st.bad_descs++;
		if (good || frame_homed(p, c->addr[j], home))
			ret_push(p, home, c->addr[j]);
	}
	if (c->n > 1)
		p->st.drops[FP_DROP_CHAIN_INVALID]++;
}

/* 3, with chains: packets other workers handed to us, whole chains only,
 * onto our TX ring (a chain waits there until the ring has room for all
 * of it; one whose end the peer has not published waits too: a peer
 * publishes whole chains, so only a lying one holds its own ring up). */
static uint32_t port_take_chains(PortObject *p)
{
	struct pkt_chain c;
	uint32_t total = 0, mask = p->ring_entries - 1;

	for (uint32_t w = 0; w < p->nworkers; w++) {
		struct fp_ring *r = p->fwd_in[w];
		uint32_t n, cons, i = 0, home;

		if (w == p->id || !(n = hring_take(p, r)))
			continue;
		home = lender_home(p, w);
		cons = r->cons;
		while (i < n) {
			uint64_t e = r->slots[(cons + i) & mask];

			if (!(e & RING_CONTD)) {	/* a packet of one frame */
				if (!ring_prod_free(&p->tx, 1))
					break;
				if (handoff_put(p, home, e)) {
					p->st.tx_packets++;
					p->st.tx_descs++;
					p->st.handoff_in++;
				}
				i++;
				continue;
			}
			if (!fwd_chain_at(p, r, cons, i, n, home, &c))
				break;		/* its end not published */
			if (!c.ended || !c.frames_ok || c.len[0] < ETH_HLEN) {
				fwd_chain_refuse(p, &c, home);
				i += c.n;
				continue;
			}
			if (ring_prod_free(&p->tx, c.n) < c.n)
				break;
			/* borrowed frames: the ledger is the lender's */
			for (uint32_t j = 0; j < c.n; j++) {
				struct xdp_desc *d = &((struct xdp_desc *)p->tx.descs)
							 [p->tx.cached_prod++ & p->tx.mask];

				d->addr = c.addr[j];
				d->len = c.len[j];
				d->options = j + 1 < c.n ? XDP_PKT_CONTD : 0;
			}
			p->st.tx_packets++;
			p->st.tx_descs += c.n;
			p->st.tx_bytes += c.total;
			p->st.handoff_in++;
			i += c.n;
		}
		if (i)
			redo_note(p, FP_REDO_FWD_IN_CONS, w, cons + i);
		total += i;
	}
	return total;
}

/* The next packet on the RX ring is a chain (XDP_PKT_CONTD). */
static inline bool rx_chain_next(PortObject *p)
{
	const struct xdp_desc *rxd = p->rx.descs;

	return ring_cons_avail(&p->rx, 1) &&
	       (rxd[p->rx.cached_cons & p->rx.mask].options & XDP_PKT_CONTD);
}

/* The receive paths compiled twice, so that a worker that is not a fanout
 * member pays no per-packet test for being one, and once more with
 * capture (fastpath.h, "Capture"), so that no path pays for it unarmed.  On a socket with chains,
 * a batch that starts with a chain takes the path above (and the packets
 * of one descriptor behind it in the batch too); one that starts with a
 * packet of one descriptor takes rx.c's paths, up to the first chain
 * (rx_singles()), at their cost. */
static uint32_t port_receive(PortObject *p)
{
	if (p->cap_on)			/* capture armed for us: the rare case */
		return p->max_segs && rx_chain_next(p) ?
		       port_receive_chains_as(p, p->member, true) :
		       port_receive_as(p, p->member, true);
	if (p->max_segs && rx_chain_next(p))
		return p->member ? port_receive_chains_as(p, true, false) :
				   port_receive_chains_as(p, false, false);
	return p->member ? port_receive_as(p, true, false) : port_receive_as(p, false, false);
}
