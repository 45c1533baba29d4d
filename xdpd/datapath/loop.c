// SPDX-License-Identifier: GPL-2.0
/*
 * loop.c: the worker's loop step (the numbered steps in _fastpath.c's
 * opening comment): the rules in force (port_load_rule), the COMPLETION,
 * ret and fwd rings (steps 1-3), the TX kick, the FILL top-up and the
 * wake-ups (5-7); step 4, the RX ring, is rx.c's.  port_iterate() and
 * port_step(), which Port.run, microbench() and fuzz() all call.  Part of
 * _fastpath.c's unity build: the hot path, inlined into port_step().  Must
 * not allocate, block or make a syscall but the kicks and wake-ups, and
 * publishes nothing but through the commit (commit.c).
 */

/* FNV-1a over what makes a rule list the same list for its counters:
 * every rule but its egress workers (those move with reloads that add or
 * remove queues; the rule stays the rule). */
static uint64_t rules_sig(const struct fp_rule *rules, uint32_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ n;

	for (uint32_t k = 0; k < n; k++) {
		const uint8_t *b = (const uint8_t *)&rules[k];

		for (size_t i = 0; i < offsetof(struct fp_rule, n_egress); i++)
			h = (h ^ b[i]) * 0x100000001b3ULL;
	}
	return h;
}

/*
 * Worker w sends out of our own queue's fanout group (or is us).  We send
 * such packets ourselves: every socket of the group transmits on the same
 * queue, and a frame of the owner's may only complete on the owner's
 * COMPLETION ring as one the group sent as its own (fastpath.h, "Fanout"),
 * never as one lent inside the group.
 */
static inline bool same_group(PortObject *p, uint32_t w)
{
	return w == p->id || (w < p->nworkers &&
			      __atomic_load_n(&ctl_assign(p->v, w)->owner, __ATOMIC_RELAXED) ==
			      p->owner);
}

/*
 * The rules for our netdev, copied out of the active table.  The table is
 * in memory every worker can write, so its numbers are bounded before
 * they index anything: a count past its array stops at the array, an
 * egress that names no worker makes the rule's packets egress_down
 * (egress_running()).  Only when the generation moves: not per packet.
 * A netdev with no rule, or one rule without a match (the common case),
 * takes port_receive's path that parses nothing; anything else, and any
 * rule that pushes or pops a VLAN tag (the packet's address and length
 * change: kept off the common path), is classified packet by packet
 * (port_receive_rules).  The rule counters
 * start again from zero when the list differs from the one they count
 * for (a replacement worker continues them: rule_sig is committed).
 */
static void port_load_rule(PortObject *p)
{
	uint32_t which = __atomic_load_n(&p->tab->active_table, __ATOMIC_ACQUIRE) & 1;
	struct fp_table *t = ctl_table(p->v, which);
	const struct fp_assign *me = ctl_assign(p->v, p->id);
	uint32_t netdev = me->netdev, lane = me->lane;
	uint64_t sig;

	p->generation = __atomic_load_n(&t->generation, __ATOMIC_ACQUIRE);
	p->n_rules = 0;
	p->csum = false;
	if (netdev < t->n_netdevs && netdev < FP_MAX_NETDEVS) {
		struct fp_netdev *nd = &t->by_netdev[netdev];

		p->csum = nd->flags & FP_NETDEV_CSUM_COMPLETE;
		p->n_rules = __atomic_load_n(&nd->n_rules, __ATOMIC_RELAXED);
		if (p->n_rules > FP_MAX_RULES)
			p->n_rules = FP_MAX_RULES;
		memcpy(p->rules, nd->rules, p->n_rules * sizeof(p->rules[0]));
	}
	p->classify = false;
	for (uint32_t k = 0; k < p->n_rules; k++) {
		struct fp_rule *r = &p->rules[k];

		if (r->vlan_op != FP_VLAN_NONE)
			p->classify = true;
		if (r->n_egress > FP_MAX_EGRESS)
			r->n_egress = FP_MAX_EGRESS;
		p->rule_egress[k] = p->id;
		if (r->action == FP_ACT_FORWARD && r->n_egress)
			p->rule_egress[k] = same_group(p, r->egress[lane % r->n_egress]) ?
					    p->id : r->egress[lane % r->n_egress];
	}
	if (p->n_rules)
		memcpy(&p->rule, &p->rules[0], sizeof(p->rule));
	else
		memset(&p->rule, 0, sizeof(p->rule));
	p->egress = p->n_rules ? p->rule_egress[0] : p->id;
	direct_load(p, t);
	p->parse = p->n_rules > 1 || (p->n_rules == 1 && p->rule.match.fields);
	p->classify = p->classify || p->parse;
	sig = rules_sig(p->rules, p->n_rules);
	if (sig != p->st.rule_sig) {
		p->st.rule_sig = sig;
		memset(p->st.rule_packets, 0, sizeof(p->st.rule_packets));
		memset(p->st.rule_bytes, 0, sizeof(p->st.rule_bytes));
	}
	__atomic_store_n(&p->me->table_generation, p->generation, __ATOMIC_RELEASE);
}

/* 1. our COMPLETION ring */
static uint32_t port_complete(PortObject *p)
{
	uint32_t n = ring_cons_avail(&p->comp, p->comp.size), direct = 0;
	const uint64_t *addrs = p->comp.descs;

	for (uint32_t i = 0; i < n; i++) {
		uint64_t addr = addrs[(p->comp.cached_cons + i) & p->comp.mask];

		if (frame_mine(p, addr)) {
			free_push(p, addr);
			if (!p->n_tx && p->n_members)
				port_sync_members(p);	/* a member's send, not yet seen */
			if (p->n_tx)
				p->n_tx--;
		} else if (addr < p->frames_end) {
			uint32_t home = home_of(p, addr);

			ret_push(p, home, addr);
			/* sent by home on its direct socket: not ours to count */
			direct += p->dsrc_of && p->dsrc_of[home];
		} else {
			p->st.bad_descs++;
		}
	}
	p->fan.completed += n - direct;
	p->comp.cached_cons += n;
	return n;
}

/* 2. our frames coming home */
static uint32_t port_take_returns(PortObject *p)
{
	uint32_t total = 0;
	uint32_t mask = p->ring_entries - 1;

	for (uint32_t w = 0; w < p->nworkers; w++) {
		struct fp_ring *r = p->ret_in[w];
		uint32_t n, cons, got = 0;

		if (w == p->id || !(n = hring_take(p, r)))
			continue;
		cons = r->cons;
		for (uint32_t i = 0; i < n; i++) {
			uint64_t addr = r->slots[(cons + i) & mask];

			if (!p->n_handoff && p->n_members)
				port_sync_members(p);	/* a member's drop, not yet seen */
			if (frame_ok(p, addr, 0, p->id) && p->n_handoff) {
				free_push(p, addr);
				p->n_handoff--;
				got++;
			} else {
				p->st.bad_descs++;
			}
		}
		/* what a direct socket's owner gives back is what we sent there */
		for (uint32_t j = 0; j < p->n_direct && got; j++) {
			if (p->direct[j].owner == w) {
				uint64_t out = direct_out(&p->st, j), take = got < out ? got : out;

				p->st.direct_returned[j] += take;
				got -= (uint32_t)take;
			}
		}
		redo_note(p, FP_REDO_RET_IN_CONS, w, cons + n);
		total += n;
	}
	return total;
}

/* 3. packets other workers handed to us, onto our TX ring */
static uint32_t port_take_handoffs(PortObject *p)
{
	uint32_t total = 0;
	uint32_t mask = p->ring_entries - 1;

	if (p->max_segs)
		return port_take_chains(p);	/* chain.c */
	for (uint32_t w = 0; w < p->nworkers; w++) {
		struct fp_ring *r = p->fwd_in[w];
		uint32_t n, room, cons, sent = 0, home;

		if (w == p->id || !(n = hring_take(p, r)))
			continue;
		home = lender_home(p, w);
		room = ring_prod_free(&p->tx, n);
		if (n > room)
			n = room;
		if (!n)
			break;
		cons = r->cons;
		for (uint32_t i = 0; i < n; i++)
			sent += handoff_put(p, home, r->slots[(cons + i) & mask]);
		redo_note(p, FP_REDO_FWD_IN_CONS, w, cons + n);
		p->st.tx_packets += sent;
		p->st.tx_descs += sent;
		p->st.handoff_in += sent;
		total += n;
	}
	return total;
}

/*
 * 5. start transmission; copy mode sends a bounded number per call.
 * With busy polling, the kernel does not move our TX ring by itself (our
 * queue's interrupts stay masked while we keep polling): one sendto() per
 * iteration runs the NAPI poll that sends and completes, as long as the
 * kernel has not taken everything, need_wakeup or not.
 */
static bool kick_ring(PortObject *p, struct ring *tx, int fd)
{
	uint32_t cons = load_acquire(tx->consumer);

	if (cons == tx->cached_prod)
		return true;		/* the kernel has taken everything */
	if (!ring_needs_wakeup(tx)) {
		if (p->busy_poll && fd >= 0) {
			p->st.busy_polls++;
			sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0);
		}
		return true;
	}
	for (int i = 0; i < 64 && cons != tx->cached_prod; i++) {
		uint32_t before = cons;
		int ret;

		p->st.tx_kicks++;
		ret = sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0);
		cons = load_acquire(tx->consumer);
		/* EAGAIN: the kernel's per-call budget ran out (go on) or the
		 * device queue is full (no progress: retry next iteration);
		 * EBUSY, ENOBUFS, ENETDOWN: retry next iteration. */
		if ((ret < 0 && errno != EAGAIN) || cons == before)
			return false;
	}
	return cons == tx->cached_prod;
}

/* Our TX ring, then our direct sockets' ("Direct transmission"): one
 * whose kernel side made no progress (its owner's COMPLETION ring may be
 * full) wakes that owner, to collect its completions. */
static void port_kick_tx(PortObject *p)
{
	kick_ring(p, &p->tx, p->xsk_fd);
	for (uint32_t j = 0; j < p->n_direct; j++) {
		struct direct_tx *d = &p->direct[j];

		if (d->open && !kick_ring(p, &d->tx, d->fd))
			p->wake[d->owner] = 1;
	}
}

/*
 * 6. FILL ring from the free list (published at commit).  A need_wakeup
 * on the FILL ring after we gave it frames is a kick (the driver ran dry
 * and waits for us).  With busy polling, an empty RX ring (or a FILL ring
 * that needs a wakeup, even with nothing new on it) is a poll: the packets
 * are waiting in the NIC until our recvfrom() runs the NAPI poll (the
 * kernel's AF_XDP documentation, "preferred busy polling").
 */
static uint32_t port_fill(PortObject *p)
{
	uint32_t n = p->n_free, room;
	uint64_t *fq = p->fill.descs;

	if (!n)
		return 0;
	room = ring_prod_free(&p->fill, n);
	if (n > room)
		n = room;
	for (uint32_t i = 0; i < n; i++)
		fq[(p->fill.cached_prod + i) & p->fill.mask] = p->freelist[--p->n_free];
	p->fill.cached_prod += n;
	p->n_rx += n;
	return n;
}

/* after the commit: the syscall the FILL ring asks for, if any */
static void port_fill_wakeup(PortObject *p, uint32_t filled)
{
	if (filled && ring_needs_wakeup(&p->fill))
		p->st.fill_kicks++;
	else if (p->busy_poll && (p->rx_empty || ring_needs_wakeup(&p->fill)))
		p->st.busy_polls++;
	else
		return;
	recvfrom(p->xsk_fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
}

/* 7. wake the peers we gave work to, if they sleep */
static void port_wake_peers(PortObject *p)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	for (uint32_t w = 0; w < p->nworkers; w++) {
		if (!p->wake[w])
			continue;
		p->wake[w] = 0;
		uint32_t *sleeping = &ctl_worker(p->v, w)->sleeping;

		if (__atomic_load_n(sleeping, __ATOMIC_RELAXED) &&
		    __atomic_exchange_n(sleeping, 0, __ATOMIC_SEQ_CST) && p->peer_efd[w] >= 0) {
			uint64_t one = 1;

			if (write(p->peer_efd[w], &one, sizeof(one)) < 0) {
				/* EAGAIN: counter saturated, the peer is awake anyway */
			}
		}
	}
}

/*
 * Steps 1-4 and the FILL top-up: they change nothing anyone else can see
 * (descriptors past producers, free-list pushes past the committed count,
 * indices only noted) until port_commit().  Returns the frames moved;
 * *filled: those given to the FILL ring.
 */
static inline __attribute__((always_inline)) uint32_t port_iterate(PortObject *p,
								   uint32_t *filled)
{
	uint32_t work = 0;

	if (__atomic_load_n(&p->tab->generation, __ATOMIC_ACQUIRE) != p->generation)
		port_load_rule(p);
	if (__atomic_load_n(&p->tab->capture_gen, __ATOMIC_ACQUIRE) != p->cap_gen)
		port_load_capture(p);
	if (p->cap_on)
		p->cap_ts = 0;		/* read once per batch, when first needed */
	if (p->n_members)
		port_sync_members(p);
	work += port_complete(p);
	work += port_take_returns(p);
	work += port_take_handoffs(p);
	work += port_receive(p);
	*filled = port_fill(p);
	p->st.loops++;
	if (work)
		p->st.busy_loops++;
	return work;
}

/*
 * One turn of the worker's loop: port_iterate(), then port_commit()
 * publishes all of it at once (with the counters: scrapes see them at
 * most one batch old); then the syscalls and wake-ups.  Port.run,
 * microbench() and fuzz() all call this, so the benchmark times and the
 * fuzzer drives exactly the code the workers run.
 */
static uint32_t port_step(PortObject *p)
{
	uint32_t filled, work = port_iterate(p, &filled);

	if (work || filled)
		port_commit(p);
	port_kick_tx(p);
	port_fill_wakeup(p, filled);
	port_wake_peers(p);
	return work;
}

static bool port_has_input(PortObject *p)
{
	if (ring_cons_avail(&p->rx, 1) || ring_cons_avail(&p->comp, 1))
		return true;
	for (uint32_t w = 0; w < p->nworkers; w++) {
		if (w == p->id)
			continue;
		if (hring_avail(p->fwd_in[w]) || hring_avail(p->ret_in[w]))
			return true;
	}
	return false;
}
