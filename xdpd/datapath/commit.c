// SPDX-License-Identifier: GPL-2.0
/*
 * commit.c: crash consistency (fastpath.h, "Crash consistency"): the redo
 * log (redo_*), the commit that publishes an iteration's counts and ring
 * indices at one point (port_commit_begin, port_commit_end) and
 * port_recover(), which finishes a dead worker's pending commit and takes
 * up its counts.  Part of _fastpath.c's unity build.  The loop step only
 * notes index moves (redo_note); nothing but the commit may publish them.
 */

/* Which word a redo log entry sets; NULL for an entry that names none. */
static uint32_t *redo_word(PortObject *p, const struct fp_redo *e)
{
	if (e->word == FP_REDO_DIRECT_PROD)
		return e->peer < p->n_direct && p->direct[e->peer].open ?
		       p->direct[e->peer].tx.producer : NULL;
	if (e->peer >= p->nworkers)
		return NULL;
	switch (e->word) {
	case FP_REDO_FILL_PROD:		return p->fill.producer;
	case FP_REDO_RX_CONS:		return p->rx.consumer;
	case FP_REDO_TX_PROD:		return p->tx.producer;
	case FP_REDO_COMP_CONS:		return p->comp.consumer;
	case FP_REDO_FWD_OUT_PROD:	return &p->fwd_out[e->peer]->prod;
	case FP_REDO_RET_OUT_PROD:	return &p->ret_out[e->peer]->prod;
	case FP_REDO_FWD_IN_CONS:	return &p->fwd_in[e->peer]->cons;
	case FP_REDO_RET_IN_CONS:	return &p->ret_in[e->peer]->cons;
	}
	return NULL;
}

static inline void redo_note(PortObject *p, uint16_t word, uint32_t peer, uint32_t value)
{
	p->redo[p->redo_len++] = (struct fp_redo){ .word = word, .peer = (uint16_t)peer,
						   .value = value };
}

static void redo_apply(PortObject *p, uint32_t len)
{
	for (uint32_t i = 0; i < len; i++) {
		uint32_t *w = redo_word(p, &p->redo[i]);

		if (w)
			store_release(w, p->redo[i].value);
	}
}

/* A kernel ring index we moved since the last commit goes into the log. */
static inline void redo_note_ring(PortObject *p, uint16_t word, uint32_t *shared, uint32_t ours)
{
	if (__atomic_load_n(shared, __ATOMIC_RELAXED) != ours)
		redo_note(p, word, 0, ours);
}

/*
 * The end of an iteration (fastpath.h, "Crash consistency"): counts and
 * counters into the spare half of the commit record, every index this
 * iteration moved into the redo log, the commit point (port_commit_begin),
 * then the indices published (port_commit_end).  Nothing the iteration
 * did is visible to the kernel or a peer before the commit point.  Two
 * halves only so that fuzz() can kill a port between them.
 */
static inline void port_commit_begin(PortObject *p)
{
	struct fp_commit *c = &p->me->commit;
	uint64_t seq = (c->word >> 1) + 1;	/* we are the only writer */
	struct fp_counts *k = &c->counts[seq & 1];

	for (uint32_t w = 0; w < p->nworkers; w++) {
		if (p->ret_pending[w]) {
			redo_note(p, FP_REDO_RET_OUT_PROD, w,
				  p->ret_out[w]->prod + p->ret_pending[w]);
			p->ret_pending[w] = 0;
		}
	}
	redo_note_ring(p, FP_REDO_FILL_PROD, p->fill.producer, p->fill.cached_prod);
	redo_note_ring(p, FP_REDO_RX_CONS, p->rx.consumer, p->rx.cached_cons);
	redo_note_ring(p, FP_REDO_TX_PROD, p->tx.producer, p->tx.cached_prod);
	redo_note_ring(p, FP_REDO_COMP_CONS, p->comp.consumer, p->comp.cached_cons);
	for (uint32_t j = 0; j < p->n_direct; j++) {
		struct ring *r = &p->direct[j].tx;

		if (p->direct[j].open &&
		    __atomic_load_n(r->producer, __ATOMIC_RELAXED) != r->cached_prod)
			redo_note(p, FP_REDO_DIRECT_PROD, j, r->cached_prod);
	}

	k->frames.free = p->n_free;
	k->frames.rx = p->n_rx;
	k->frames.tx = p->n_tx;
	k->frames.handoff = p->n_handoff;
	memcpy(&k->stats, &p->st, sizeof(p->st));
	k->fanout = p->fan;
	c->log_len = p->redo_len;
	__atomic_store_n(&c->word, seq << 1 | 1, __ATOMIC_RELEASE);	/* commit point */
}

static inline void port_commit_end(PortObject *p)
{
	struct fp_commit *c = &p->me->commit;

	redo_apply(p, p->redo_len);
	__atomic_store_n(&c->word, c->word & ~1ULL, __ATOMIC_RELEASE);
	p->redo_len = 0;
}

static void port_commit(PortObject *p)
{
	port_commit_begin(p);
	port_commit_end(p);
}

/*
 * Pick up where the last worker in this slot left off, on the same socket
 * (fastpath.h, "Crash consistency"): a commit it had begun is finished from
 * its redo log, its last committed counts are ours, and the rest of its
 * last iteration (descriptors it read but never released) is read again.
 * A fresh slot has committed nothing and every frame on its free list.
 */
static void port_recover(PortObject *p)
{
	struct fp_commit *c = &p->me->commit;
	uint64_t word = __atomic_load_n(&c->word, __ATOMIC_ACQUIRE);
	const struct fp_counts *k = &c->counts[(word >> 1) & 1];

	if (word & 1) {
		uint32_t len = c->log_len;

		if (len > FP_REDO_MAX(p->nworkers))
			len = FP_REDO_MAX(p->nworkers);
		redo_apply(p, len);
		__atomic_store_n(&c->word, word & ~1ULL, __ATOMIC_RELEASE);
	}
	p->redo_len = 0;
	ring_resync(&p->fill, true);
	ring_resync(&p->tx, true);
	ring_resync(&p->rx, false);
	ring_resync(&p->comp, false);
	for (uint32_t j = 0; j < p->n_direct; j++) {
		if (p->direct[j].open)
			ring_resync(&p->direct[j].tx, true);
	}
	p->n_free = k->frames.free <= p->fpw ? k->frames.free : p->fpw;
	p->n_rx = k->frames.rx;
	p->n_tx = k->frames.tx;
	p->n_handoff = k->frames.handoff;
	memcpy(&p->st, &k->stats, sizeof(p->st));
	p->fan = k->fanout;
}
