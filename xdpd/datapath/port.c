// SPDX-License-Identifier: GPL-2.0
/*
 * port.c: the Port object (xdpd.datapath._fastpath.Port): opening a port
 * (port_open), Port.run (the loop around port_step(), with its sleep and
 * adaptive spinning), drained() and the small methods a worker calls.
 * Part of _fastpath.c's unity build, last of the units.  Must not handle a
 * packet itself: the loop step is loop.c's (and rx.c's).
 */

static void port_unmap(PortObject *p)
{
	ring_unmap(&p->rx);
	ring_unmap(&p->tx);
	ring_unmap(&p->fill);
	ring_unmap(&p->comp);
	for (uint32_t j = 0; j < p->n_direct; j++)
		ring_unmap(&p->direct[j].tx);	/* the fds are the caller's */
	p->n_direct = 0;
	PyMem_Free(p->dsrc);
	PyMem_Free(p->dsrc_of);
	p->dsrc = NULL;
	p->dsrc_of = NULL;
	p->n_dsrc = 0;
	if (p->umem)
		munmap(p->umem, p->umem_size);
	p->umem = NULL;
	PyMem_Free(p->peer_efd);
	PyMem_Free(p->fwd_in);
	PyMem_Free(p->wake);
	PyMem_Free(p->ret_pending);
	PyMem_Free(p->fwd_pending);
	p->ret_pending = NULL;
	p->fwd_pending = NULL;
	p->peer_efd = NULL;
	p->fwd_in = NULL;
	p->wake = NULL;
	p->cap_on = 0;
	for (uint32_t s = 0; s < FP_MAX_CAPTURES; s++) {
		PyMem_Free(p->cap[s].insns);
		p->cap[s].insns = NULL;
	}
}

static void Port_dealloc(PortObject *p)
{
	port_unmap(p);
	Py_XDECREF(p->control);
	Py_TYPE(p)->tp_free((PyObject *)p);
}

/* For the metrics only: entries on each ring, producer minus consumer. */
static void rings_publish(PortObject *p)
{
	struct fp_ring_use *u = &p->me->ring_use;

	__atomic_store_n(&u->rx, ring_used(&p->rx), __ATOMIC_RELAXED);
	__atomic_store_n(&u->tx, ring_used(&p->tx), __ATOMIC_RELAXED);
	__atomic_store_n(&u->fill, ring_used(&p->fill), __ATOMIC_RELAXED);
	__atomic_store_n(&u->comp, ring_used(&p->comp), __ATOMIC_RELAXED);
}

/*
 * Several ports in one process.  A worker process runs its own port, and
 * the ports of the slots it hosts (workers.share_process: the slots that
 * share its CPU, docs/ARCHITECTURE.md "Hosting"): one loop over all of
 * them, one adaptive spin, one poll() over all their descriptors.  The
 * first port is the process's own; its spin state is the loop's.
 */
#define MAX_RUN_PORTS (1 + FP_MAX_HOSTED)

/* Block until any port has input, a signal, or timeout_ms.  Returns -1 on
 * a signal (EINTR), so that Python runs its handlers. */
static int ports_sleep(PortObject **ps, uint32_t n, int timeout_ms)
{
	struct pollfd fds[2 * MAX_RUN_PORTS];
	bool input = false;
	int ret = 0;

	for (uint32_t i = 0; i < n; i++) {
		fds[2 * i] = (struct pollfd){ .fd = ps[i]->xsk_fd, .events = POLLIN };
		fds[2 * i + 1] = (struct pollfd){ .fd = ps[i]->efd, .events = POLLIN };
		__atomic_store_n(&ps[i]->me->sleeping, 1, __ATOMIC_SEQ_CST);
	}
	for (uint32_t i = 0; i < n && !input; i++)
		input = port_has_input(ps[i]);
	if (!input) {
		ps[0]->st.sleeps++;
		ret = poll(fds, 2 * n, timeout_ms);
	}
	for (uint32_t i = 0; i < n; i++) {
		__atomic_store_n(&ps[i]->me->sleeping, 0, __ATOMIC_SEQ_CST);
		if (ret > 0 && (fds[2 * i + 1].revents & POLLIN)) {
			uint64_t v;

			if (read(ps[i]->efd, &v, sizeof(v)) < 0) {
				/* EAGAIN: a concurrent reader drained it; fine */
			}
		}
	}
	if (ret < 0 && errno == EINTR)
		return -1;
	return 0;
}

/*
 * Adaptive spinning.  A quiet worker sleeps in poll(), and each packet then
 * costs a wake-up (tens of microseconds on a shared CPU, and two per hop:
 * the ingress worker, then the egress one).  But traffic comes in bursts and
 * exchanges: the reply to a request this worker just forwarded comes back
 * a few tens of microseconds later.  So after work the worker keeps looking
 * for spin_ns before it sleeps.  The budget is learnt from the gaps between
 * work: work found after a gap while spinning (a hit) raises it to twice
 * that gap, work that woke the worker after a gap a spin of a quarter more
 * would have covered raises it to that (both at least SPIN_MIN_NS, at most
 * spin_max_ns), and a spin that ran out (a miss) shrinks it by an eighth.
 * A request/response exchange is caught at about twice its turnaround, a
 * steady stream of requests whose gaps are within spin_max_ns is followed
 * without a sleep (no wake-up per request), and sparse, unrelated packets
 * shrink it to SPIN_MIN_NS; a worker with nothing to do spends nothing,
 * since it spins only after work.  While it spins its sleeping flag is
 * clear, so peers handing it frames skip the eventfd write too.  Each
 * empty turn of the spin yields the CPU (sched_yield()): workers sharing a
 * CPU (the ingress and egress worker of one path, often) must not spin
 * while the other has work; alone on the CPU, the call returns at once.
 */
#define SPIN_MIN_NS 2000ULL

/* Work after a gap of gap ns: found while spinning, or after a sleep. */
static inline void spin_learn_gap(PortObject *p, bool slept, uint64_t gap)
{
	uint64_t b = slept ? gap + (gap >> 2) : 2 * gap;

	if (slept && b > p->spin_max_ns)
		return;			/* sparse traffic: no spin would pay */
	b = b < SPIN_MIN_NS ? SPIN_MIN_NS : b > p->spin_max_ns ? p->spin_max_ns : b;
	if (b > p->spin_ns)
		p->spin_ns = b;
}

/* A spin that ran out. */
static inline void spin_miss(PortObject *p)
{
	if (p->spin_ns > SPIN_MIN_NS)
		p->spin_ns -= p->spin_ns >> 3;
}

/* One step of every port; what moved.  A port's busy time is the wall
 * time of its own steps that moved frames. */
static uint32_t ports_step(PortObject **ps, uint32_t n, uint64_t *now)
{
	uint32_t work = 0;

	for (uint32_t i = 0; i < n; i++) {
		PortObject *p = ps[i];
		uint64_t before = *now;
		uint32_t w = port_step(p);

		if (p->n_direct && !(p->st.loops & 4095))
			direct_retire(p);
		if (w) {
			*now = now_ns();
			p->st.busy_ns += *now - before;
			p->direct_naps = 0;
			work += w;
		}
	}
	if (!work)
		*now = now_ns();
	return work;
}

/* Before a sleep: each port's counters committed and published, and the
 * longest the loop may sleep (1 ms while frames are out in the kernel's TX
 * path or lent to a peer: they come back without waking us; so do others'
 * sent on our queue directly). */
static int ports_settle(PortObject **ps, uint32_t n, uint64_t now, uint64_t deadline)
{
	int ms = (int)((deadline > now ? deadline - now : 0) / 1000000ULL) + 1;

	for (uint32_t i = 0; i < n; i++) {
		PortObject *p = ps[i];

		if (p->n_tx || p->n_handoff || port_tx_inflight(p) ||
		    (p->n_dsrc && direct_inflight(p)))
			ms = 1;
		if (p->n_direct) {
			if (direct_lent(p) && p->direct_naps++)
				direct_wake_owners(p);
			direct_retire(p);
		}
		port_commit(p);		/* the counters, fresh for a scrape */
		rings_publish(p);
		__atomic_store_n(&p->me->heartbeat_ns, now, __ATOMIC_RELAXED);
	}
	return ms;
}

/* The loop of Port.run: until the deadline or a signal (1) */
static int ports_run(PortObject **ps, uint32_t n, uint64_t budget_us)
{
	PortObject *p = ps[0];		/* the spin is the process's own port's */
	uint64_t now = now_ns(), deadline = now + budget_us * 1000ULL;
	uint32_t idle = 0;
	int result = 0;

	for (uint32_t i = 0; i < n; i++)
		__atomic_store_n(&ps[i]->me->state, ps[i]->draining ? FP_STATE_DRAINING :
				 FP_STATE_RUNNING, __ATOMIC_RELEASE);
	for (;;) {
		if (ports_step(ps, n, &now)) {
			if ((idle || p->slept) && p->spin_max_ns && p->last_work_ns)
				spin_learn_gap(p, p->slept, now - p->last_work_ns);
			idle = 0;
			p->slept = false;
			p->last_work_ns = now;
		} else if (!p->spin && ++idle > 8 && !p->slept &&
			   now - p->last_work_ns < p->spin_ns) {
			/* spinning: but a peer worker (or anyone) runnable on
			 * this CPU goes first; alone here it returns at once */
			sched_yield();
			now = now_ns();		/* the time others ran is not ours */
		} else if (!p->spin && idle > 8) {
			if (p->spin_max_ns && !p->slept)
				spin_miss(p);
			p->slept = true;
			if (ports_sleep(ps, n, ports_settle(ps, n, now, deadline)) < 0) {
				result = 1;
				break;
			}
			now = now_ns();
		}
		for (uint32_t i = 0; i < n; i++)
			__atomic_store_n(&ps[i]->me->heartbeat_ns, now, __ATOMIC_RELAXED);
		if (now >= deadline)
			break;
	}
	for (uint32_t i = 0; i < n; i++) {
		port_commit(ps[i]);
		rings_publish(ps[i]);
	}
	return result;
}

/* run(budget_us, hosted=()) -> 0 when the budget ran out, 1 when a signal
 * arrived; hosted: the Ports of the slots this process hosts, run in the
 * same loop */
static PyObject *Port_run(PortObject *p, PyObject *args)
{
	unsigned long long budget_us;
	PyObject *hosted = NULL, *seq;
	PortObject *ps[MAX_RUN_PORTS] = { p };
	uint32_t n = 1;

	if (!PyArg_ParseTuple(args, "K|O", &budget_us, &hosted))
		return NULL;
	if (hosted) {
		seq = PySequence_Fast(hosted, "hosted must be a sequence of Ports");
		if (!seq)
			return NULL;
		if (PySequence_Fast_GET_SIZE(seq) > FP_MAX_HOSTED) {
			Py_DECREF(seq);
			return PyErr_Format(PyExc_ValueError, "at most %d hosted ports",
					    FP_MAX_HOSTED);
		}
		for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
			PyObject *o = PySequence_Fast_GET_ITEM(seq, i);

			if (!PyObject_TypeCheck(o, &PortType) || o == (PyObject *)p) {
				Py_DECREF(seq);
				PyErr_SetString(PyExc_TypeError, "hosted: other Ports only");
				return NULL;
			}
			ps[n++] = (PortObject *)o;
		}
		Py_DECREF(seq);	/* the caller's sequence keeps the Ports */
	}
	for (uint32_t i = 0; i < n; i++) {
		if (!ps[i]->umem) {
			PyErr_SetString(PyExc_ValueError, "port is closed");
			return NULL;
		}
	}
	return PyLong_FromLong(ports_run(ps, n, budget_us));
}

/* rx_empty() -> True when nothing waits on the RX ring */
static PyObject *Port_rx_empty(PortObject *p, PyObject *noargs)
{
	if (!p->umem) {
		PyErr_SetString(PyExc_ValueError, "port is closed");
		return NULL;
	}
	return PyBool_FromLong(!ring_cons_avail(&p->rx, 1));
}

/* mark_draining(): report DRAINING from now on (see fastpath.h) */
static PyObject *Port_mark_draining(PortObject *p, PyObject *noargs)
{
	p->draining = true;
	if (p->me)
		__atomic_store_n(&p->me->state, FP_STATE_DRAINING, __ATOMIC_RELEASE);
	Py_RETURN_NONE;
}

/*
 * drained() -> True when this worker holds nothing another worker or the
 * wire still waits for: nothing on its RX ring or its incoming handoff
 * rings, every descriptor it put on its TX ring completed (borrowed frames
 * are home again), and every frame it lent out returned.  A fanout member:
 * every descriptor on its TX ring taken by the kernel (the owner sees the
 * completions); an owner: its members stopped and all they sent completed.  Frames on its
 * FILL ring stay: they die with the socket and come back when the slot is
 * reset.  A worker being removed by a reload (its socket out of XSKMAP,
 * no table names it as egress any more) loops until this holds.
 */
static PyObject *Port_drained(PortObject *p, PyObject *noargs)
{
	if (!p->umem) {
		PyErr_SetString(PyExc_ValueError, "port is closed");
		return NULL;
	}
	/* an owner outlives its members: what they still send completes on
	 * our COMPLETION ring, and only we give those frames back */
	for (uint32_t k = 0; k < p->n_members; k++) {
		uint32_t st = __atomic_load_n(&ctl_worker(p->v, p->members[k])->state,
					      __ATOMIC_ACQUIRE);

		if (st != FP_STATE_STOPPED && st != FP_STATE_NONE)
			Py_RETURN_FALSE;
	}
	if (p->n_members)
		port_sync_members(p);
	if (ring_cons_avail(&p->rx, 1) || ring_cons_avail(&p->comp, 1) ||
	    port_tx_inflight(p) || p->n_handoff || direct_inflight(p))
		Py_RETURN_FALSE;
	for (uint32_t w = 0; w < p->nworkers; w++) {
		if (w != p->id && (hring_avail(p->fwd_in[w]) || hring_avail(p->ret_in[w])))
			Py_RETURN_FALSE;
	}
	Py_RETURN_TRUE;
}

static PyObject *Port_stop(PortObject *p, PyObject *noargs)
{
	if (p->me)
		__atomic_store_n(&p->me->state, FP_STATE_STOPPED, __ATOMIC_RELEASE);
	Py_RETURN_NONE;
}

/* direct_fds() -> each direct socket's descriptor by its index, -1 for one
 * closed for good (its queue was removed: direct_retire() closed it): what
 * a later Port of this slot in this process is to be given */
static PyObject *Port_direct_fds(PortObject *p, PyObject *noargs)
{
	PyObject *t = PyTuple_New(p->n_direct);

	for (uint32_t j = 0; t && j < p->n_direct; j++)
		PyTuple_SET_ITEM(t, j, PyLong_FromLong(p->direct[j].open ? p->direct[j].fd : -1));
	return t;
}

static PyObject *Port_close(PortObject *p, PyObject *noargs)
{
	port_unmap(p);
	Py_RETURN_NONE;
}

static PyObject *Port_heartbeat(PortObject *p, PyObject *noargs)
{
	if (p->me)
		__atomic_store_n(&p->me->heartbeat_ns, now_ns(), __ATOMIC_RELAXED);
	Py_RETURN_NONE;
}

/* report_usage(pid, user_ns, system_ns, rss_bytes, uss_bytes): this
 * worker's own resource use, into its slot (struct fp_usage) */
static PyObject *Port_report_usage(PortObject *p, PyObject *args)
{
	unsigned int pid;
	unsigned long long user, sys, rss, uss;

	if (!PyArg_ParseTuple(args, "IKKKK", &pid, &user, &sys, &rss, &uss))
		return NULL;
	if (p->me) {
		struct fp_usage *u = &p->me->usage;

		__atomic_store_n(&u->user_ns, user, __ATOMIC_RELAXED);
		__atomic_store_n(&u->system_ns, sys, __ATOMIC_RELAXED);
		__atomic_store_n(&u->rss_bytes, rss, __ATOMIC_RELAXED);
		__atomic_store_n(&u->uss_bytes, uss, __ATOMIC_RELAXED);
		__atomic_store_n(&u->pid, pid, __ATOMIC_RELEASE);
	}
	Py_RETURN_NONE;
}

static int map_xsk_rings(PortObject *p, int fd)
{
	struct xdp_mmap_offsets off;
	socklen_t optlen = sizeof(off);
	int err;

	if (getsockopt(fd, SOL_XDP, XDP_MMAP_OFFSETS, &off, &optlen))
		return -errno;
	if (p->member) {	/* the owner's socket has the queue's FILL and COMPLETION */
		ring_none(&p->fill);
		ring_none(&p->comp);
		err = 0;
	} else {
		err = ring_map(&p->fill, fd, &off.fr, p->fill.size, sizeof(uint64_t),
			       XDP_UMEM_PGOFF_FILL_RING, true);
		if (!err)
			err = ring_map(&p->comp, fd, &off.cr, p->comp.size, sizeof(uint64_t),
				       XDP_UMEM_PGOFF_COMPLETION_RING, false);
	}
	if (!err)
		err = ring_map(&p->rx, fd, &off.rx, p->rx.size, sizeof(struct xdp_desc),
			       XDP_PGOFF_RX_RING, false);
	if (!err)
		err = ring_map(&p->tx, fd, &off.tx, p->tx.size, sizeof(struct xdp_desc),
			       XDP_PGOFF_TX_RING, true);
	return err;
}

static int synth_rings(PortObject *p)
{
	int err = 0;

	if (p->member) {
		ring_none(&p->fill);
		ring_none(&p->comp);
	} else {
		err = ring_synth(&p->fill, p->fill.size, sizeof(uint64_t), true);
		if (!err)
			err = ring_synth(&p->comp, p->comp.size, sizeof(uint64_t), false);
	}
	if (!err)
		err = ring_synth(&p->rx, p->rx.size, sizeof(struct xdp_desc), false);
	if (!err)
		err = ring_synth(&p->tx, p->tx.size, sizeof(struct xdp_desc), true);
	return err;
}

/*
 * For fuzz() only: take over a synthetic port's four rings, as a worker
 * that replaces a dead one maps the same socket's rings again.  The old
 * port is left with nothing to release; it must not step again.
 */
static int synth_adopt(PortObject *p, PortObject *old)
{
	struct ring *from[4] = { &old->fill, &old->comp, &old->rx, &old->tx };
	struct ring *to[4] = { &p->fill, &p->comp, &p->rx, &p->tx };

	for (int i = p->member ? 2 : 0; i < 4; i++) {
		if (!from[i]->map || !from[i]->heap || from[i]->size != to[i]->size)
			return -EINVAL;
	}
	if (p->member) {
		ring_none(&p->fill);
		ring_none(&p->comp);
	}
	for (int i = p->member ? 2 : 0; i < 4; i++) {
		/* FILL and TX are the producer side */
		ring_setup(to[i], from[i]->map, from[i]->map_len, &synth_ring_off, to[i]->size,
			   to[i] == &p->fill || to[i] == &p->tx);
		to[i]->heap = true;
		from[i]->map = NULL;
	}
	return 0;
}

static bool is_pow2(uint32_t v)
{
	return v && !(v & (v - 1));
}

/*
 * port_open(), step 1: our place in a fanout group (fastpath.h, "Fanout"),
 * from our slot's assignment: the owner whose frames arrive on our RX ring
 * (ourselves unless a member; an owner that names no worker is taken as
 * us) and, for an owner, its members (an id that is no other worker's is
 * left out).
 */
static void port_group(PortObject *p, const struct ctl_view *v, uint32_t id)
{
	const struct fp_assign *me = ctl_assign(v, id);
	uint32_t n = v->lay.nworkers;

	p->owner = __atomic_load_n(&me->owner, __ATOMIC_RELAXED);
	if (p->owner >= n)
		p->owner = id;
	p->member = p->owner != id;
	p->n_members = 0;
	if (!p->member) {
		uint32_t m = me->n_members < FP_MAX_FANOUT ? me->n_members : FP_MAX_FANOUT - 1;

		for (uint32_t k = 0; k < m; k++) {
			uint32_t w = me->members[k];

			if (w < n && w != id)
				p->members[p->n_members++] = w;
		}
	}
}

/* Step 2: what Port() or microbench() asked for, against the control
 * area's layout: the batch, the ring sizes (a fanout member has no FILL or
 * COMPLETION ring of its own) and the UMEM's size. */
static int port_check_cfg(const PortObject *p, const struct ctl_lay *lay,
			  const struct port_cfg *cfg)
{
	if (cfg->batch == 0 || cfg->batch > 4096) {
		PyErr_SetString(PyExc_ValueError, "batch_size out of range");
		return -1;
	}
	/* a batch holds at least one whole chain (rx.c, "Descriptor chains") */
	if (cfg->max_segs == 1 || cfg->max_segs > FP_MAX_SEGS ||
	    (cfg->max_segs && cfg->batch < cfg->max_segs)) {
		PyErr_Format(PyExc_ValueError,
			     "max_segs %u: 0, or 2..%d and at most batch_size (%u)",
			     cfg->max_segs, FP_MAX_SEGS, cfg->batch);
		return -1;
	}
	if (!is_pow2(cfg->rx) || !is_pow2(cfg->tx) ||
	    (!p->member && (!is_pow2(cfg->fill) || !is_pow2(cfg->comp)))) {
		PyErr_SetString(PyExc_ValueError, "ring sizes must be powers of two");
		return -1;
	}
	if (cfg->umem_size < (uint64_t)lay->nworkers * lay->frames_per_worker * lay->frame_size) {
		PyErr_SetString(PyExc_ValueError, "UMEM smaller than the control area's frames");
		return -1;
	}
	return 0;
}

/* Step 3: efds (one eventfd per worker; NULL: none) as a sequence, into
 * *seq (NULL for none), the caller's to release. */
static int port_eventfds(PyObject *efds, uint32_t n, PyObject **seq)
{
	*seq = NULL;
	if (!efds)
		return 0;
	*seq = PySequence_Fast(efds, "eventfds must be a sequence");
	if (!*seq)
		return -1;
	if ((uint32_t)PySequence_Fast_GET_SIZE(*seq) != n) {
		Py_CLEAR(*seq);
		PyErr_SetString(PyExc_ValueError, "need one eventfd per worker");
		return -1;
	}
	return 0;
}

/* Step 4: where things are for slot id (the control area's layout, our
 * frames among the UMEM's, our record, free list and redo log) and the
 * loop's settings. */
static void port_geometry(PortObject *p, const struct ctl_view *v, const struct port_cfg *cfg)
{
	uint32_t id = cfg->id;

	p->v = v;
	p->tab = v->tab;
	p->ring_entries = v->lay.ring_entries;
	p->id = id;
	p->nworkers = v->lay.nworkers;
	p->me = ctl_worker(v, id);
	p->xsk_fd = cfg->xsk_fd;
	p->frame_size = v->lay.frame_size;
	p->frame_mask = ~((uint64_t)p->frame_size - 1);
	p->fpw = v->lay.frames_per_worker;
	p->home_span = (uint64_t)p->fpw * p->frame_size;
	p->home_base = id * p->home_span;
	p->rx_base = p->owner * p->home_span;
	p->frames_end = p->nworkers * p->home_span;
	p->batch = cfg->batch;
	p->max_segs = cfg->max_segs;
	p->spin = cfg->spin;
	p->spin_max_ns = p->spin_ns = (uint64_t)cfg->spin_max_us * 1000;
	p->last_work_ns = 0;
	/* a synthetic port has no NAPI context to drive */
	p->busy_poll = cfg->busy_poll && cfg->xsk_fd >= 0;
	p->freelist = ctl_freelist(v, id);
	p->redo = ctl_redo(v, id);
}

/* Step 5: what we keep per peer (its eventfd, from seq or -1; the handoff
 * and return rings to and from it; wake-ups and entries not yet
 * published). */
static int port_peers(PortObject *p, PyObject *seq)
{
	uint32_t n = p->nworkers, id = p->id;

	p->peer_efd = PyMem_Calloc(n, sizeof(int));
	p->fwd_in = PyMem_Calloc(4 * (size_t)n, sizeof(struct fp_ring *));
	p->wake = PyMem_Calloc(n, 1);
	p->ret_pending = PyMem_Calloc(n, sizeof(uint32_t));
	p->fwd_pending = PyMem_Calloc(n, sizeof(uint32_t));
	if (!p->peer_efd || !p->fwd_in || !p->wake || !p->ret_pending || !p->fwd_pending) {
		PyErr_NoMemory();
		return -1;
	}
	for (uint32_t s = 0; s < FP_MAX_CAPTURES; s++) {
		p->cap[s].insns = PyMem_Calloc(FP_CAPTURE_INSNS, sizeof(struct sock_filter));
		if (!p->cap[s].insns) {
			PyErr_NoMemory();
			return -1;
		}
	}
	p->fwd_out = p->fwd_in + n;
	p->ret_in = p->fwd_in + 2 * n;
	p->ret_out = p->fwd_in + 3 * n;
	for (uint32_t w = 0; w < n; w++) {
		p->peer_efd[w] = seq ? (int)PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, w)) : -1;
		p->fwd_in[w] = ctl_ring(p->v, 0, w, id);
		p->fwd_out[w] = ctl_ring(p->v, 0, id, w);
		p->ret_in[w] = ctl_ring(p->v, 1, w, id);
		p->ret_out[w] = ctl_ring(p->v, 1, id, w);
	}
	if (PyErr_Occurred())
		return -1;
	p->efd = p->peer_efd[id];
	return 0;
}

/* Step 6: the UMEM, mapped from its memfd; our four rings (the socket's,
 * a dead synthetic port's for fuzz(), or synthetic ones); our direct
 * sockets. */
static int port_map(PortObject *p, const struct port_cfg *cfg)
{
	int err;

	p->umem_size = cfg->umem_size;
	p->umem = mmap(NULL, cfg->umem_size, PROT_READ | PROT_WRITE, MAP_SHARED, cfg->umem_fd, 0);
	if (p->umem == MAP_FAILED) {
		p->umem = NULL;
		PyErr_SetFromErrno(PyExc_OSError);
		return -1;
	}
	p->rx.size = cfg->rx;
	p->tx.size = cfg->tx;
	p->fill.size = cfg->fill;
	p->comp.size = cfg->comp;
	if (cfg->xsk_fd >= 0)
		err = map_xsk_rings(p, cfg->xsk_fd);
	else
		err = cfg->adopt ? synth_adopt(p, cfg->adopt) : synth_rings(p);
	if (!err)
		err = direct_open(p, cfg);
	if (err) {
		errno = -err;
		PyErr_SetFromErrno(PyExc_OSError);
		return -1;
	}
	return 0;
}

/* Step 8 (after port_recover()): STARTING, for the supervisor, the rules
 * in force, the FILL ring primed from the free list, all of it committed. */
static void port_start(PortObject *p)
{
	uint32_t filled;

	__atomic_store_n(&p->me->pid, (uint32_t)getpid(), __ATOMIC_RELAXED);
	__atomic_store_n(&p->me->state, FP_STATE_STARTING, __ATOMIC_RELEASE);
	port_load_rule(p);
	port_load_capture(p);
	filled = port_fill(p);
	port_commit(p);
	port_fill_wakeup(p, filled);
}

/*
 * Everything a port needs, for Port() and microbench() alike, in the steps
 * above: the control area and the handoff rings to and from every peer,
 * the UMEM, our four rings (the socket's, or synthetic ones when
 * cfg->xsk_fd is -1), then the frame counts picked up where the last
 * worker with this id left them (port_recover) and the FILL ring primed.
 * efds: one eventfd per worker, or NULL for none.  On failure the
 * exception is set and p holds what port_unmap() releases.
 */
static int port_open(PortObject *p, ControlObject *c, const struct port_cfg *cfg, PyObject *efds)
{
	PyObject *seq;
	int err;

	if (p->control) {
		PyErr_SetString(PyExc_ValueError, "port already open");
		return -1;
	}
	if (ctl_check_worker(c, cfg->id))
		return -1;
	port_group(p, &c->v, cfg->id);
	if (port_check_cfg(p, &c->v.lay, cfg) || port_eventfds(efds, c->v.lay.nworkers, &seq))
		return -1;
	Py_INCREF(c);
	p->control = (PyObject *)c;
	port_geometry(p, &c->v, cfg);
	err = port_peers(p, seq);
	Py_XDECREF(seq);
	if (err || port_map(p, cfg))
		return -1;
	port_recover(p);		/* step 7 */
	port_start(p);
	return 0;
}

/* Port(control, worker_id, xsk_fd, umem_fd, umem_size,
 *      (rx, tx, fill, completion), batch_size, spin, eventfds, *, busy_poll=False,
 *      spin_max_us=0, direct_fds=None, max_segs=0) */
static int Port_init(PortObject *p, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = {"control", "worker_id", "xsk_fd", "umem_fd", "umem_size",
				 "ring_sizes", "batch_size", "spin", "eventfds", "busy_poll",
				 "spin_max_us", "direct_fds", "max_segs", NULL};
	struct port_cfg cfg = {0};
	unsigned long long umem_size;
	PyObject *control, *efds, *direct = NULL;
	int spin, busy_poll = 0;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "O!IiiK(IIII)IpO|$pIOI", kwlist,
					 &ControlType, &control, &cfg.id, &cfg.xsk_fd,
					 &cfg.umem_fd, &umem_size, &cfg.rx, &cfg.tx, &cfg.fill,
					 &cfg.comp, &cfg.batch, &spin, &efds, &busy_poll,
					 &cfg.spin_max_us, &direct, &cfg.max_segs))
		return -1;
	if (direct && direct != Py_None) {
		PyObject *seq = PySequence_Fast(direct, "direct_fds must be a sequence of fds");

		if (!seq)
			return -1;
		if (PySequence_Fast_GET_SIZE(seq) > FP_MAX_DIRECT) {
			Py_DECREF(seq);
			PyErr_Format(PyExc_ValueError, "at most %d direct sockets", FP_MAX_DIRECT);
			return -1;
		}
		cfg.n_direct_fd = (uint32_t)PySequence_Fast_GET_SIZE(seq);
		for (uint32_t j = 0; j < cfg.n_direct_fd; j++)
			cfg.direct_fd[j] = (int)PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, j));
		Py_DECREF(seq);
		if (PyErr_Occurred())
			return -1;
	}
	if (cfg.spin_max_us > 100000) {
		PyErr_SetString(PyExc_ValueError, "spin_max_us out of range 0..100000");
		return -1;
	}
	/* synthetic rings are for microbench() only: a Port with no socket
	 * would sleep on nothing */
	if (cfg.xsk_fd < 0) {
		PyErr_SetString(PyExc_ValueError, "xsk_fd must be an AF_XDP socket");
		return -1;
	}
	cfg.umem_size = umem_size;
	cfg.spin = spin;
	cfg.busy_poll = busy_poll;
	return port_open(p, (ControlObject *)control, &cfg, efds);
}

static PyMethodDef Port_methods[] = {
	{"run", (PyCFunction)Port_run, METH_VARARGS,
	 "run(budget_us, hosted=()) -> 0 (budget used) or 1 (interrupted by a signal)"},
	{"heartbeat", (PyCFunction)Port_heartbeat, METH_NOARGS, NULL},
	{"report_usage", (PyCFunction)Port_report_usage, METH_VARARGS, NULL},
	{"rx_empty", (PyCFunction)Port_rx_empty, METH_NOARGS,
	 "rx_empty() -> True when nothing waits on the RX ring"},
	{"mark_draining", (PyCFunction)Port_mark_draining, METH_NOARGS,
	 "report DRAINING: RX done, still an egress for handoffs"},
	{"drained", (PyCFunction)Port_drained, METH_NOARGS,
	 "drained() -> True when nothing received, sent or lent is outstanding"},
	{"stop", (PyCFunction)Port_stop, METH_NOARGS, "report STOPPED to the supervisor"},
	{"direct_fds", (PyCFunction)Port_direct_fds, METH_NOARGS,
	 "direct_fds() -> the direct sockets' descriptors, -1 for one closed for good"},
	{"close", (PyCFunction)Port_close, METH_NOARGS, NULL},
	{NULL}
};

static PyTypeObject PortType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "xdpd.datapath._fastpath.Port",
	.tp_basicsize = sizeof(PortObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "Port(control, worker_id, xsk_fd, umem_fd, umem_size, ring_sizes, "
		  "batch_size, spin, eventfds, *, busy_poll=False): a worker's rings, "
		  "mapped; busy_poll: the socket has SO_PREFER_BUSY_POLL set and the "
		  "loop drives its NAPI context with recvfrom()/sendto(); max_segs: "
		  "descriptors one packet may take (0: one; the socket is bound with "
		  "XDP_USE_SG otherwise)",
	.tp_new = PyType_GenericNew,
	.tp_init = (initproc)Port_init,
	.tp_dealloc = (destructor)Port_dealloc,
	.tp_methods = Port_methods,
};
