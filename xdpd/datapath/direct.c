// SPDX-License-Identifier: GPL-2.0
/*
 * direct.c: direct transmission (below, and fastpath.h): a worker's
 * TX-only sockets on other queues: which rules use them (direct_load), a
 * packet onto one (direct_put, direct_sent), what is still out
 * (direct_inflight, direct_lent), waking their owners, retiring them, and
 * opening them (direct_open).  Part of _fastpath.c's unity build.  Must
 * not send a fanout group's frames, nor close a socket with a frame of
 * ours still out on it.
 */

/*
 * Direct transmission.  A packet forwarded to another worker's queue costs
 * two wake-ups when it goes over the fwd ring: ours, then the egress
 * worker's (its eventfd), and the two processes take turns on the CPUs.
 * So a worker also holds TX-only sockets of its own on the egress queues
 * its rules send to (fp_assign.direct: the supervisor binds them with
 * XDP_SHARED_UMEM to the queue's socket, so they share its FILL and
 * COMPLETION rings), and puts such packets on that TX ring itself.  The
 * frame is lent exactly as over a fwd ring (handoff, until it is back):
 * the kernel completes it on the egress owner's COMPLETION ring, and the
 * owner gives it back by address on its ret ring, as it does for frames
 * it sent for others.  The egress worker is not woken for the packet; it
 * collects the completions when it next runs, and is woken for them only
 * when we need our frames (over a quarter of them out on one socket) or
 * found after a nap that nothing came back.  Counted per socket:
 * direct_packets and direct_returned (the frames that owner's ret ring
 * gave back), so the owner (draining, or deciding how long to sleep) can
 * tell what is still out on its queue, and the supervisor counts the
 * packets as the egress netdev's.  Only workers outside fanout groups
 * send directly (a group's frames are lent by several workers, and the
 * returns could not be told apart), and a worker never hands packets for
 * a queue it sends to directly over the fwd ring while the table allows
 * the socket: a socket the table no longer allows (its queue removed) is
 * closed once nothing of it is out (direct_retire()).
 */
static void direct_load(PortObject *p, const struct fp_table *t)
{
	uint8_t ok = __atomic_load_n(&t->direct_ok[p->id], __ATOMIC_RELAXED);
	uint32_t n = p->nworkers, cap = n * FP_MAX_DIRECT;

	/* chains go over the fwd rings (direct_out() counts packets, and
	 * the frames a chain lends would not add up) */
	for (uint32_t j = 0; j < p->n_direct; j++)
		p->direct[j].ok = p->direct[j].open && (ok >> j & 1) && !p->max_segs;
	p->egress_direct = -1;
	for (uint32_t k = 0; k < FP_MAX_RULES; k++)
		p->rule_direct[k] = -1;
	for (uint32_t j = 0; j < p->n_direct; j++) {
		if (!p->direct[j].ok)
			continue;
		for (uint32_t k = 0; k < p->n_rules; k++) {
			uint32_t e = p->rule_egress[k], o;

			if (e == p->id || e >= n || p->rules[k].action != FP_ACT_FORWARD)
				continue;
			o = __atomic_load_n(&ctl_assign(p->v, e)->owner, __ATOMIC_RELAXED);
			if ((o < n ? o : e) == p->direct[j].owner)
				p->rule_direct[k] = (int)j;
		}
	}
	if (p->n_rules)
		p->egress_direct = p->rule_direct[0];
	/* as an egress owner: who sends on our queue directly (as each
	 * decides in direct_open(): workers outside fanout groups) */
	if (!p->dsrc)
		p->dsrc = PyMem_Calloc(cap, sizeof(*p->dsrc));
	if (!p->dsrc_of)
		p->dsrc_of = PyMem_Calloc(n, 1);
	p->n_dsrc = 0;
	if (!p->dsrc || !p->dsrc_of || p->member)
		return;
	memset(p->dsrc_of, 0, n);
	for (uint32_t w = 0; w < n; w++) {
		const struct fp_assign *a = ctl_assign(p->v, w);
		uint32_t nd = a->n_direct < FP_MAX_DIRECT ? a->n_direct : FP_MAX_DIRECT;

		if (w == p->id || a->owner != w || a->n_members)
			continue;
		for (uint32_t j = 0; j < nd && p->n_dsrc < cap; j++) {
			if (a->direct[j] == p->id) {
				p->dsrc[p->n_dsrc++] = (struct direct_src){ .w = (uint16_t)w,
									   .j = (uint16_t)j };
				p->dsrc_of[w] = 1;
			}
		}
	}
}

/* Frames of ours still out on direct socket j (sent, not yet given back). */
static inline uint64_t direct_out(const struct fp_stats *st, uint32_t j)
{
	return st->direct_packets[j] > st->direct_returned[j] ?
	       st->direct_packets[j] - st->direct_returned[j] : 0;
}

/* A packet onto direct socket j's TX ring (room checked by the caller):
 * the frame is lent, as over a fwd ring, until its owner gives it back. */
static inline void direct_put(PortObject *p, uint32_t j, uint64_t addr, uint32_t len)
{
	struct ring *tx = &p->direct[j].tx;
	struct xdp_desc *t = &((struct xdp_desc *)tx->descs)[tx->cached_prod++ & tx->mask];

	t->addr = addr;
	t->len = len;
	t->options = 0;
	p->n_handoff++;
	p->st.direct_packets[j]++;
	p->st.direct_bytes[j] += len;
}

/* After putting packets on direct socket j: its owner collects the
 * completions when it next runs; woken now only if we need our frames. */
static inline void direct_sent(PortObject *p, uint32_t j)
{
	p->direct_woken &= (uint8_t)~(1U << j);
	if (direct_out(&p->st, j) > p->fpw / 4)
		p->wake[p->direct[j].owner] = 1;
}

/*
 * As an egress owner: frames other workers sent on our queue through
 * their direct sockets and have not had back yet (their committed
 * counters, each read from one committed half of its record).  We wait
 * for them before reporting drained, and nap rather than sleep while
 * there are any, to give them back soon.
 */
static uint64_t direct_inflight(PortObject *p)
{
	uint64_t total = 0;

	for (uint32_t i = 0; i < p->n_dsrc; i++) {
		struct fp_commit *c = &ctl_worker(p->v, p->dsrc[i].w)->commit;
		uint32_t j = p->dsrc[i].j;

		for (int tries = 0; tries < 8; tries++) {
			uint64_t w = __atomic_load_n(&c->word, __ATOMIC_ACQUIRE);
			const struct fp_stats *st = &c->counts[(w >> 1) & 1].stats;
			uint64_t sent = __atomic_load_n(&st->direct_packets[j], __ATOMIC_RELAXED);
			uint64_t back = __atomic_load_n(&st->direct_returned[j], __ATOMIC_RELAXED);

			__atomic_thread_fence(__ATOMIC_ACQUIRE);
			if ((__atomic_load_n(&c->word, __ATOMIC_RELAXED) >> 1) == (w >> 1)) {
				total += sent > back ? sent - back : 0;
				break;
			}
		}
	}
	return total;
}

/* Frames of ours out on direct sockets (waiting for their owners). */
static bool direct_lent(PortObject *p)
{
	for (uint32_t j = 0; j < p->n_direct; j++) {
		if (direct_out(&p->st, j))
			return true;
	}
	return false;
}

/* Idle with frames out on direct sockets, a nap already spent waiting for
 * them: wake their owners (once per socket until we send on it again). */
static void direct_wake_owners(PortObject *p)
{
	for (uint32_t j = 0; j < p->n_direct; j++) {
		if (direct_out(&p->st, j) && !(p->direct_woken & (1U << j))) {
			p->direct_woken |= (uint8_t)(1U << j);
			p->wake[p->direct[j].owner] = 1;
		}
	}
	port_wake_peers(p);
}

/*
 * A direct socket the table no longer allows (its queue is being removed:
 * the supervisor never takes one back otherwise) is closed once nothing of
 * it is out: the kernel has taken every descriptor and every frame came
 * back.  Then, with the supervisor's copy closed too, the queue's buffer
 * pool can go and the queue be bound again.  For good: a queue added back
 * is reached over the fwd ring.
 */
static void direct_retire(PortObject *p)
{
	for (uint32_t j = 0; j < p->n_direct; j++) {
		struct direct_tx *d = &p->direct[j];

		if (!d->open || d->ok || direct_out(&p->st, j) ||
		    load_acquire(d->tx.consumer) != d->tx.cached_prod ||
		    __atomic_load_n(d->tx.producer, __ATOMIC_RELAXED) != d->tx.cached_prod)
			continue;
		ring_unmap(&d->tx);
		ring_none(&d->tx);
		if (d->fd >= 0)
			close(d->fd);
		d->fd = -1;
		d->open = false;
	}
}

/*
 * Our direct sockets (fp_assign.direct, "Direct transmission"): each one's
 * TX ring, from its socket (cfg->direct_fd), a dead port's (cfg->adopt,
 * fuzz()), or made up (synthetic).  A fanout owner or member has none (its
 * group's frames are lent by several workers: see there).  A socket closed
 * for good (fd -1) stays closed, and the egress takes the fwd ring.
 */
static int direct_open(PortObject *p, const struct port_cfg *cfg)
{
	const struct fp_assign *me = ctl_assign(p->v, p->id);
	uint32_t n = me->n_direct < FP_MAX_DIRECT ? me->n_direct : FP_MAX_DIRECT;
	struct xdp_mmap_offsets off;
	bool have_off = false;

	if (p->member || p->n_members)
		n = 0;
	p->n_direct = n;
	for (uint32_t j = 0; j < n; j++) {
		struct direct_tx *d = &p->direct[j];
		uint32_t o = me->direct[j];
		int err;

		d->fd = -1;
		d->open = d->ok = false;
		d->owner = o;
		ring_none(&d->tx);
		if (o >= p->nworkers || o == p->id)
			continue;
		if (cfg->xsk_fd >= 0) {
			int fd = j < cfg->n_direct_fd ? cfg->direct_fd[j] : -1;
			socklen_t optlen = sizeof(off);

			if (fd < 0)
				continue;
			if (!have_off && getsockopt(fd, SOL_XDP, XDP_MMAP_OFFSETS, &off, &optlen))
				return -errno;
			have_off = true;
			err = ring_map(&d->tx, fd, &off.tx, cfg->tx, sizeof(struct xdp_desc),
				       XDP_PGOFF_TX_RING, true);
			d->fd = fd;
		} else if (cfg->adopt) {
			struct direct_tx *old = j < cfg->adopt->n_direct ? &cfg->adopt->direct[j] : NULL;

			if (!old || !old->open)
				continue;
			if (!old->tx.map || old->tx.size != cfg->tx)
				return -EINVAL;
			ring_setup(&d->tx, old->tx.map, old->tx.map_len, &synth_ring_off, cfg->tx, true);
			d->tx.heap = old->tx.heap;
			old->tx.map = NULL;
			err = 0;
		} else {
			err = ring_synth(&d->tx, cfg->tx, sizeof(struct xdp_desc), true);
		}
		if (err)
			return err;
		d->open = true;
	}
	return 0;
}
