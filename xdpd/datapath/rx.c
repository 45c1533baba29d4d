// SPDX-License-Identifier: GPL-2.0
/*
 * rx.c: step 4 of the loop step, the RX ring: the two receive paths (one
 * rule without a match, port_receive_as; several rules, a match or a VLAN
 * action, port_receive_rules_as), each compiled for a fanout member and
 * for anyone else, and what they share (rx_*, tx_put, fwd_put, fwd_sent).
 * Part of _fastpath.c's unity build, inlined into port_step() through
 * port_receive() (chain.c, which adds the path with descriptor chains).  Must take no more off the RX ring than the egress has
 * room for (back-pressure, never a drop), and publishes nothing itself:
 * ring indices are noted for the commit (commit.c).
 */

/* An egress that is running, draining, or starting (a replacement taking
 * over a dead worker's socket: what is handed to it waits on the fwd ring
 * and back-pressure holds the rest).  The supervisor marks a worker it gave
 * up on STOPPED, and then its packets are dropped as egress_down. */
static inline bool egress_running(PortObject *p, uint32_t w)
{
	uint32_t state;

	if (w >= p->nworkers)		/* a table naming no worker (port_load_rule) */
		return false;
	state = __atomic_load_n(&ctl_worker(p->v, w)->state, __ATOMIC_RELAXED);
	return state == FP_STATE_RUNNING || state == FP_STATE_DRAINING ||
	       state == FP_STATE_STARTING;
}

/* The first of our rules the packet fits; n_rules: none. */
static inline uint32_t port_classify(PortObject *p, const uint8_t *pkt, uint32_t len)
{
	struct pkt_info pi;

	pkt_parse(pkt, len, &pi);
	for (uint32_t k = 0; k < p->n_rules; k++)
		if (match_fits(&p->rules[k].match, &pi))
			return k;
	return p->n_rules;
}

/*
 * What a batch off the RX ring counts as it goes; rx_done() adds it to the
 * port's counters once, at the end of the batch.
 */
struct rx_tally {
	uint32_t bad;		/* descriptors not a whole frame of the RX home's */
	uint32_t foreign;	/* of those, not in its frames at all: not received */
	uint32_t invalid;	/* frames dropped as invalid */
	uint32_t too_long;	/* frames dropped as longer than max_len */
};

/* Of the n descriptors at the head of the RX ring, how many come before
 * the first chain (XDP_PKT_CONTD): what the paths here take on a socket
 * with chains, leaving chains to chain.c (port_receive()). */
static inline uint32_t rx_singles(PortObject *p, uint32_t n)
{
	const struct xdp_desc *rxd = p->rx.descs;

	for (uint32_t i = 0; i < n; i++)
		if (rxd[(p->rx.cached_cons + i) & p->rx.mask].options & XDP_PKT_CONTD)
			return i;
	return n;
}

/* Up to want descriptors waiting on the RX ring.  ring_cons_avail re-read
 * the producer if it had nothing cached, so rx_empty tells empty apart
 * from held back by a full egress (want 0). */
static inline __attribute__((always_inline)) uint32_t rx_avail(PortObject *p, uint32_t want)
{
	uint32_t n = ring_cons_avail(&p->rx, want);

	p->rx_empty = p->rx.cached_prod == p->rx.cached_cons;
	return n;
}

/* rx_avail() for this file's paths: on a socket with chains, only the
 * packets of one descriptor before the first chain. */
static inline __attribute__((always_inline)) uint32_t rx_avail_singles(PortObject *p,
								       uint32_t want)
{
	uint32_t n = rx_avail(p, want);

	return p->max_segs ? rx_singles(p, n) : n;
}

/* A descriptor that is not a whole frame of the RX home's (the kernel
 * fills only frames we gave it): true, counted bad.  A frame of ours with
 * a bad length is dropped; anything else is not ours to free or send. */
static inline __attribute__((always_inline)) bool
rx_refused(PortObject *p, const bool member, uint64_t addr, uint32_t len, struct rx_tally *t)
{
	if (frame_ok(p, addr, len, p->owner))
		return false;
	t->bad++;
	if (frame_rx_home(p, addr)) {
		rx_drop(p, member, addr);
		t->invalid++;
	} else {
		t->foreign++;
	}
	return true;
}

/* A packet that leaves: its partial checksum completed where its netdev
 * asks for it (p->csum), its MACs rewritten as rule r says. */
static inline __attribute__((always_inline)) void
rx_rewrite(PortObject *p, const struct fp_rule *r, uint8_t *pkt, uint32_t len)
{
	if (p->csum)
		p->st.csum_completed += csum_complete(pkt, len);
	rewrite_macs(r, pkt);
}

/* A packet onto our own TX ring (room checked by the caller; published at
 * commit).  A fanout member's frame is its owner's, counted for the owner
 * to take in (fastpath.h, "Fanout"). */
static inline __attribute__((always_inline)) void
tx_put(PortObject *p, const bool member, uint64_t addr, uint32_t len)
{
	struct xdp_desc *t = &((struct xdp_desc *)p->tx.descs)[p->tx.cached_prod++ & p->tx.mask];

	t->addr = addr;
	t->len = len;
	t->options = 0;
	if (member)
		p->fan.took_tx++;	/* the owner's frame */
	else
		p->n_tx++;
	p->st.tx_packets++;
	p->st.tx_descs++;
	p->st.tx_bytes += len;
}

/* A packet into slot, on an egress worker's fwd ring (room checked by the
 * caller; the producer noted by fwd_sent()): the frame is lent, until the
 * egress gives it back. */
static inline __attribute__((always_inline)) void
fwd_put(PortObject *p, const bool member, uint64_t *slot, uint64_t addr, uint32_t len)
{
	*slot = addr | (uint64_t)len << RING_LEN_SHIFT;
	if (!member)
		p->n_handoff++;
	p->st.handoff_out++;
}

/* One fwd ring entry (a packet of one frame) from a worker that lends
 * home's frames onto our TX ring (room checked by the caller; packet
 * counters the caller's); 1 when it went on.  A worker lends only frames
 * of its own (a fanout member: its owner's): anything else is refused,
 * counted, and sent back home when it is home's. */
static inline __attribute__((always_inline)) uint32_t
handoff_put(PortObject *p, uint32_t home, uint64_t e)
{
	uint64_t addr = e & RING_ADDR_MASK;
	uint32_t len = (uint32_t)(e >> RING_LEN_SHIFT);
	struct xdp_desc *d;

	if (!frame_ok(p, addr, len, home) || len < ETH_HLEN) {
		p->st.bad_descs++;
		if (frame_homed(p, addr, home))
			ret_push(p, home, addr);	/* back home */
		return 0;
	}
	d = &((struct xdp_desc *)p->tx.descs)[p->tx.cached_prod++ & p->tx.mask];
	d->addr = addr;
	d->len = len;
	d->options = 0;
	p->st.tx_bytes += len;
	return 1;
}

/* After packets onto worker e's fwd ring: its producer, now prod, into the
 * redo log (published at commit), and e woken after the commit. */
static inline void fwd_sent(PortObject *p, uint32_t e, uint32_t prod)
{
	redo_note(p, FP_REDO_FWD_OUT_PROD, e, prod);
	p->wake[e] = 1;
}

/* The end of a batch: n descriptors taken off the RX ring, and what t
 * counted.  Every frame of ours on the RX ring was given to the kernel
 * (counted in rx) by us; a kernel that hands back more than it was given
 * must not wrap the count.  A fanout member's are the owner's, which it
 * counts for it (fastpath.h, "Fanout"). */
static inline __attribute__((always_inline)) void
rx_done(PortObject *p, const bool member, uint32_t n, uint32_t packets, const struct rx_tally *t)
{
	uint32_t got = n - t->foreign, bad = t->bad;

	p->rx.cached_cons += n;
	if (member) {
		p->fan.took_rx += got;
	} else if (p->n_rx >= got) {
		p->n_rx -= got;
	} else {
		bad += got - p->n_rx;
		p->n_rx = 0;
	}
	p->st.rx_packets += packets;
	p->st.rx_frags += got;
	p->st.drops[FP_DROP_INVALID] += t->invalid;
	p->st.drops[FP_DROP_TOO_LONG] += t->too_long;
	p->st.bad_descs += bad;
}

/* What rule r does with a packet of len bytes, out_len once its VLAN
 * action (delta, from vlan_delta()) is done: -1, it leaves by egress e;
 * otherwise the reason it is dropped. */
static inline __attribute__((always_inline)) int
rule_verdict(PortObject *p, const struct fp_rule *r, uint32_t e, uint32_t len, int32_t delta,
	     uint32_t out_len)
{
	if (r->action != FP_ACT_FORWARD)
		return r->action == FP_ACT_DROP ? FP_DROP_RULE : FP_DROP_NO_RULE;
	if (len < ETH_HLEN || delta == VLAN_NO_ROOM)
		return FP_DROP_INVALID;
	if (r->max_len && out_len > r->max_len)
		return FP_DROP_TOO_LONG;
	if (!egress_running(p, e))
		return FP_DROP_EGRESS_DOWN;
	return -1;
}

/* Room for one more packet where rule k sends it (to egress e): our TX
 * ring (tx_room left), our direct socket on e's queue, or e's fwd ring
 * (less what this batch put there already). */
static inline __attribute__((always_inline)) bool
rule_room(PortObject *p, const bool member, uint32_t k, uint32_t e, uint32_t tx_room)
{
	uint32_t room;

	if (e == p->id)
		return tx_room;
	if (!member && p->rule_direct[k] >= 0)
		return ring_prod_free(&p->direct[p->rule_direct[k]].tx, 1);
	room = hring_free(p->fwd_out[e], p->ring_entries);
	if (room > p->ring_entries)
		room = 0;	/* a peer's garbage index */
	return p->fwd_pending[e] < room;
}

/* After a batch of the rules path: the fwd rings it put packets on (by
 * fwd_pending) and the direct sockets it used (bit j: socket j). */
static inline void rules_sent(PortObject *p, uint8_t direct_used)
{
	for (uint32_t k = 0; k < p->n_rules; k++) {
		uint32_t e = p->rule_egress[k];

		if (e < p->nworkers && p->fwd_pending[e]) {
			fwd_sent(p, e, p->fwd_out[e]->prod + p->fwd_pending[e]);
			p->fwd_pending[e] = 0;
		}
	}
	for (uint32_t j = 0; direct_used; j++, direct_used >>= 1) {
		if (direct_used & 1)
			direct_sent(p, j);
	}
}

/*
 * 4, with several rules or a match: each packet classified, then dropped
 * or sent where its rule says.  Packets of one batch may go to different
 * egresses, so room is checked per packet against the egress its rule
 * chose: the first packet with no room stops the batch and stays on the
 * RX ring with everything behind it (back-pressure, never a drop).  As in
 * port_receive, every index move is only noted (fwd ring producers in
 * fwd_pending) and published at commit.
 */
static inline __attribute__((always_inline)) uint32_t
port_receive_rules_as(PortObject *p, const bool member, const bool cap)
{
	struct xdp_desc *rxd = p->rx.descs;
	uint32_t mask = p->ring_entries - 1;
	uint8_t direct_used = 0;	/* bit j: sent on our direct socket j */
	struct rx_tally t = {0};
	uint32_t n, i, tx_room;

	n = rx_avail_singles(p, p->batch);
	if (!n)
		return 0;
	tx_room = ring_prod_free(&p->tx, n);
	for (i = 0; i < n; i++) {
		const struct xdp_desc *d = &rxd[(p->rx.cached_cons + i) & p->rx.mask];
		uint64_t addr = d->addr;
		uint32_t len = d->len, k, e, out_len;
		const struct fp_rule *r;
		int32_t delta = 0;
		uint8_t *pkt;
		int why;

		if (rx_refused(p, member, addr, len, &t))
			continue;
		pkt = p->umem + addr;
		k = p->parse ? port_classify(p, pkt, len) : 0;	/* one rule takes all */
		if (k == p->n_rules) {
			CAPTURE(cap, p, FP_CAP_RX, pkt, len, len, -1, -1);
			CAPTURE(cap, p, FP_CAP_DROP, pkt, len, len, FP_DROP_NO_RULE, -1);
			p->st.rx_bytes += len;
			rx_drop(p, member, addr);
			p->st.drops[FP_DROP_NO_RULE]++;
			continue;
		}
		r = &p->rules[k];
		e = p->rule_egress[k];
		if (r->vlan_op != FP_VLAN_NONE && len >= ETH_HLEN)
			delta = vlan_delta(r, addr & (p->frame_size - 1), pkt, len);
		out_len = len + (delta == VLAN_NO_ROOM ? 0 : delta);
		why = rule_verdict(p, r, e, len, delta, out_len);
		if (why < 0 && !rule_room(p, member, k, e, tx_room))
			break;			/* stays on the RX ring */
		CAPTURE(cap, p, FP_CAP_RX, pkt, len, len, -1, -1);
		p->st.rx_bytes += len;
		p->st.rule_packets[k]++;
		p->st.rule_bytes[k] += len;
		if (why >= 0) {
			CAPTURE(cap, p, FP_CAP_DROP, pkt, len, len, why, (int)k);
			rx_drop(p, member, addr);
			p->st.drops[why]++;
			continue;
		}
		rx_rewrite(p, r, pkt, len);
		if (delta) {
			vlan_apply(r, p->umem, &addr, delta);
			len = out_len;
		}
		CAPTURE(cap, p, FP_CAP_TX, p->umem + addr, len, len, -1, (int)k);
		if (e == p->id) {
			tx_put(p, member, addr, len);
			tx_room--;
		} else if (!member && p->rule_direct[k] >= 0) {
			direct_put(p, (uint32_t)p->rule_direct[k], addr, len);
			direct_used |= 1U << p->rule_direct[k];
		} else {
			struct fp_ring *out = p->fwd_out[e];

			fwd_put(p, member, &out->slots[(out->prod + p->fwd_pending[e]++) & mask],
				addr, len);
		}
	}
	rx_done(p, member, i, i - t.foreign, &t);
	rules_sent(p, direct_used);
	return i;
}

/* Where a batch of the one-rule path goes, chosen once for the batch. */
struct rx_dest {
	uint32_t action;	/* FP_ACT_FORWARD, or FP_ACT_DROP for reason */
	int reason;
	struct fp_ring *out;	/* the egress worker's fwd ring, from out_prod */
	uint32_t out_prod;
	struct ring *dtx;	/* our direct socket dj's TX ring */
	uint32_t dj;
};

/* The one rule's destination for this batch, into *to (neither out nor
 * dtx: our own TX ring); returns how many packets it has room for, at
 * most a batch. */
static inline __attribute__((always_inline)) uint32_t
rx_dest(PortObject *p, const bool member, struct rx_dest *to)
{
	uint32_t want = p->batch;

	*to = (struct rx_dest){ .action = p->rule.action, .reason = -1 };
	if (to->action != FP_ACT_FORWARD) {
		to->reason = to->action == FP_ACT_DROP ? FP_DROP_RULE : FP_DROP_NO_RULE;
		to->action = FP_ACT_DROP;
		return want;
	}
	if (p->egress == p->id) {
		want = ring_prod_free(&p->tx, want);
	} else if (!egress_running(p, p->egress)) {
		to->action = FP_ACT_DROP;
		to->reason = FP_DROP_EGRESS_DOWN;
	} else if (!member && p->egress_direct >= 0) {
		to->dj = (uint32_t)p->egress_direct;
		to->dtx = &p->direct[to->dj].tx;
		want = ring_prod_free(to->dtx, want);
	} else {
		to->out = p->fwd_out[p->egress];
		want = hring_free(to->out, p->ring_entries);
		to->out_prod = to->out->prod;
	}
	return want > p->batch ? p->batch : want;
}

/* 4. our RX ring: one rule without a match (or none), the common case */
static inline __attribute__((always_inline)) uint32_t
port_receive_as(PortObject *p, const bool member, const bool cap)
{
	struct xdp_desc *rxd = p->rx.descs;
	uint32_t mask = p->ring_entries - 1;
	uint32_t max_len = p->rule.max_len ? p->rule.max_len : UINT32_MAX;
	uint64_t rx_bytes0 = p->st.rx_bytes;
	struct rx_tally t = {0};
	struct rx_dest to;
	uint32_t n;

	if (p->classify)
		return port_receive_rules_as(p, member, cap);
	n = rx_avail_singles(p, rx_dest(p, member, &to));
	if (!n)
		return 0;

	for (uint32_t i = 0; i < n; i++) {
		const struct xdp_desc *d = &rxd[(p->rx.cached_cons + i) & p->rx.mask];
		uint64_t addr = d->addr;
		uint32_t len = d->len;

		if (rx_refused(p, member, addr, len, &t))
			continue;
		CAPTURE(cap, p, FP_CAP_RX, p->umem + addr, len, len, -1, -1);
		p->st.rx_bytes += len;
		if (to.action == FP_ACT_DROP) {
			CAPTURE(cap, p, FP_CAP_DROP, p->umem + addr, len, len, to.reason,
				p->n_rules ? 0 : -1);
			rx_drop(p, member, addr);
			p->st.drops[to.reason]++;
			continue;
		}
		if (len < ETH_HLEN) {
			CAPTURE(cap, p, FP_CAP_DROP, p->umem + addr, len, len, FP_DROP_INVALID, 0);
			rx_drop(p, member, addr);
			t.invalid++;
			continue;
		}
		if (len > max_len) {
			CAPTURE(cap, p, FP_CAP_DROP, p->umem + addr, len, len, FP_DROP_TOO_LONG, 0);
			rx_drop(p, member, addr);
			t.too_long++;
			continue;
		}
		rx_rewrite(p, &p->rule, p->umem + addr, len);
		CAPTURE(cap, p, FP_CAP_TX, p->umem + addr, len, len, -1, 0);
		if (to.dtx)
			direct_put(p, to.dj, addr, len);
		else if (!to.out)
			tx_put(p, member, addr, len);
		else
			fwd_put(p, member, &to.out->slots[to.out_prod++ & mask], addr, len);
	}
	if (p->n_rules) {		/* one rule, no match: it takes them all */
		p->st.rule_packets[0] += n - t.bad;
		p->st.rule_bytes[0] += p->st.rx_bytes - rx_bytes0;
	}
	rx_done(p, member, n, n - t.foreign, &t);
	if (to.out && to.out_prod != to.out->prod)
		fwd_sent(p, p->egress, to.out_prod);
	if (to.dtx)
		direct_sent(p, to.dj);
	return n;
}
