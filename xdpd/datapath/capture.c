// SPDX-License-Identifier: GPL-2.0
/*
 * capture.c: the workers' side of capture (fastpath.h, "Capture"): the
 * slots armed for our netdev and queue (port_load_capture, when
 * capture_gen moves) and a frame at a capture point written into our ring
 * for each slot whose filter takes it (cap_frame).  Part of _fastpath.c's
 * unity build, after cbpf.h and frames.c.  Must cost nothing but a test
 * per batch while no slot is armed for us, never hold a packet back (a
 * record that does not fit is counted, not waited for), and run only
 * programs it checked itself.  Records are written as the packets go, not
 * at the commit: a worker killed mid-iteration may capture a packet twice
 * (its replacement takes it again), never lose one it forwarded.
 */

/* The slots armed for us, copied (a program is ours once copied: the
 * supervisor may rewrite its slot meanwhile, and the next generation
 * copies it again) and checked. */
static void port_load_capture(PortObject *p)
{
	const struct fp_tables_area *t = p->tab;
	const struct fp_assign *me = ctl_assign(p->v, p->id);
	uint32_t mask;

	p->cap_gen = __atomic_load_n(&t->capture_gen, __ATOMIC_ACQUIRE);
	mask = __atomic_load_n(&t->capture_mask, __ATOMIC_RELAXED);
	p->netdev_idx = me->netdev;
	p->queue = me->queue;
	p->cap_on = 0;
	for (uint32_t s = 0; s < FP_MAX_CAPTURES; s++) {
		const struct fp_capture *c = &t->capture[s];
		struct port_cap *pc = &p->cap[s];

		if (!(mask >> s & 1) || !pc->insns)
			continue;
		pc->points = c->points & (FP_CAP_RX | FP_CAP_TX | FP_CAP_DROP);
		pc->snaplen = c->snaplen;
		pc->n = c->n_insns < FP_CAPTURE_INSNS ? c->n_insns : FP_CAPTURE_INSNS;
		if (!pc->points || (c->netdev != FP_CAP_ANY && c->netdev != p->netdev_idx) ||
		    (c->queue != FP_CAP_ANY && c->queue != p->queue))
			continue;
		memcpy(pc->insns, c->insns, pc->n * sizeof(pc->insns[0]));
		if (cbpf_check(pc->insns, pc->n) == CBPF_OK)
			p->cap_on |= 1U << s;
	}
}

/* Room for need bytes at the producer (a padding record first when they
 * would pass the ring's end); false: the record is dropped. */
static bool cap_room(struct fp_capring *r, uint32_t need)
{
	uint64_t used = r->prod - __atomic_load_n(&r->cons, __ATOMIC_ACQUIRE);
	uint32_t pos = (uint32_t)(r->prod % FP_CAPTURE_RING), tail = FP_CAPTURE_RING - pos;

	if (used > FP_CAPTURE_RING)
		return false;		/* a consumer past the producer: garbage */
	if (need <= tail)
		return FP_CAPTURE_RING - used >= need;
	if (FP_CAPTURE_RING - used < (uint64_t)tail + need)
		return false;
	((struct fp_caprec *)&r->data[pos])->size = tail;
	((struct fp_caprec *)&r->data[pos])->point = 0;
	__atomic_store_n(&r->prod, r->prod + tail, __ATOMIC_RELEASE);
	return true;
}

/* One record of a frame (caplen bytes of it at pkt) into slot s's ring. */
static void cap_write(PortObject *p, uint32_t s, uint32_t point, const uint8_t *pkt,
		      uint32_t caplen, uint32_t wire, int reason, int rule)
{
	struct fp_capring *r = ctl_capring(p->v, p->id, s);
	uint32_t need = (uint32_t)align_up(sizeof(struct fp_caprec) + caplen, FP_CAPREC_ALIGN);
	struct fp_caprec *rec;

	if (!cap_room(r, need)) {
		__atomic_store_n(&r->dropped, r->dropped + 1, __ATOMIC_RELAXED);
		return;
	}
	if (!p->cap_ts) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		p->cap_ts = (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
	}
	rec = (struct fp_caprec *)&r->data[r->prod % FP_CAPTURE_RING];
	*rec = (struct fp_caprec){
		.size = need, .point = (uint8_t)point, .reason = reason < 0 ? 0 : (uint8_t)reason,
		.rule = rule < 0 ? 0xffff : (uint16_t)rule, .wire_len = wire, .cap_len = caplen,
		.queue = (uint16_t)p->queue, .netdev = (uint16_t)p->netdev_idx, .ts_ns = p->cap_ts,
	};
	memcpy(rec + 1, pkt, caplen);
	__atomic_store_n(&r->captured, r->captured + 1, __ATOMIC_RELAXED);
	__atomic_store_n(&r->prod, r->prod + need, __ATOMIC_RELEASE);
}

/* A frame at a capture point (len bytes at pkt: a chain's fragment 0; wire:
 * the whole packet): into the ring of every armed slot at that point whose
 * filter takes it.  reason and rule: for a drop; -1: none. */
static __attribute__((noinline)) void cap_frame(PortObject *p, uint32_t point,
						const uint8_t *pkt, uint32_t len, uint32_t wire,
						int reason, int rule)
{
	for (uint32_t on = p->cap_on, s = 0; on; on >>= 1, s++) {
		const struct port_cap *c = &p->cap[s];
		uint32_t keep;

		if (!(on & 1) || !(c->points & point))
			continue;
		keep = cbpf_run(c->insns, c->n, pkt, len, wire);
		if (!keep)
			continue;
		keep = keep < len ? keep : len;
		keep = keep < c->snaplen ? keep : c->snaplen;
		cap_write(p, s, point, pkt, keep, wire, reason, rule);
	}
}

/* The hook the receive paths call; cap is a constant of each compiled
 * path (port_receive()), so the paths without capture hold no trace of
 * it. */
#define CAPTURE(cap, p, point, pkt, len, wire, reason, rule)			\
	do {									\
		if (__builtin_expect((cap) != 0, 0))				\
			cap_frame((p), (point), (pkt), (len), (wire), (reason), (rule)); \
	} while (0)
