// SPDX-License-Identifier: GPL-2.0
/*
 * control.c: the Control object (xdpd.datapath._fastpath.Control), the
 * supervisor's and a worker's handle on the control area and the sealed
 * tables area: mapping them, format(), set_worker(), write_table() (the
 * inactive table, then the switch), the readers of committed counters,
 * frame counts, liveness, ring use and usage, reset_worker() and
 * mark_stopped().  Part of _fastpath.c's unity build.  Runs between
 * packets, in Python's context: it must not write a running worker's
 * rings or counts (reset_worker() only takes back an exited, drained slot).
 */

typedef struct {
	PyObject_HEAD
	struct ctl_view v;		/* v.base NULL: closed */
	bool laid_out;			/* v.lay known: format(), or the layout given */
	bool writer;			/* the supervisor's: made the tables area */
	int tables_fd;			/* the writer's tables memfd; -1: none */
	uint32_t active;		/* format()'s owner: the active table, 0 or 1 */
	uint64_t generation;		/* ... and its generation */
} ControlObject;

static PyTypeObject ControlType;

static const char *drop_reason_names[FP_DROP__MAX] = {
	[FP_DROP_NO_RULE] = "no_rule",
	[FP_DROP_RULE] = "rule",
	[FP_DROP_INVALID] = "invalid",
	[FP_DROP_EGRESS_DOWN] = "egress_down",
	[FP_DROP_TOO_LONG] = "too_long",
	[FP_DROP_CHAIN_INVALID] = "chain_invalid",
};

static int check_params(const struct ctl_params *p);

static int parse_params(PyObject *args, struct ctl_params *p)
{
	if (!PyArg_ParseTuple(args, "IIII", &p->nworkers, &p->frames_per_worker,
			      &p->frame_size, &p->ring_entries))
		return -1;
	return check_params(p);
}

static int check_params(const struct ctl_params *p)
{
	if (p->nworkers == 0 || p->nworkers > FP_MAX_WORKERS) {
		PyErr_Format(PyExc_ValueError, "nworkers %u out of range 1..%d",
			     p->nworkers, FP_MAX_WORKERS);
		return -1;
	}
	/* The descriptor checks (frame_ok()) find a frame's start by masking
	 * and its home by a range compare: both need a power-of-two frame
	 * size and at least one frame per worker.  A ring entry packs the
	 * length into 16 bits and the address into 48. */
	if (p->frame_size < 2048 || p->frame_size > 32768 ||
	    (p->frame_size & (p->frame_size - 1))) {
		PyErr_Format(PyExc_ValueError,
			     "frame_size %u must be a power of two in 2048..32768", p->frame_size);
		return -1;
	}
	if (p->frames_per_worker == 0) {
		PyErr_SetString(PyExc_ValueError, "frames_per_worker must be positive");
		return -1;
	}
	if ((uint64_t)p->nworkers * p->frames_per_worker * p->frame_size > RING_CONTD) {
		PyErr_SetString(PyExc_ValueError, "UMEM larger than a ring entry can address (2^47 B)");
		return -1;
	}
	if (p->ring_entries < p->frames_per_worker ||
	    (p->ring_entries & (p->ring_entries - 1))) {
		PyErr_SetString(PyExc_ValueError,
				"ring_entries must be a power of two >= frames_per_worker");
		return -1;
	}
	return 0;
}

/* control_size(nworkers, frames_per_worker, frame_size, ring_entries) */
static PyObject *fp_control_size(PyObject *self, PyObject *args)
{
	struct ctl_params p;
	struct fp_header h = {0};

	if (parse_params(args, &p))
		return NULL;
	return PyLong_FromUnsignedLongLong(ctl_layout(&p, &h));
}

/* The writer's tables area: a memfd of its own, mapped read-write here and
 * then sealed, so that every other mapping of it is read-only for good
 * (fastpath.h). */
static int tables_create(ControlObject *self)
{
	int fd = memfd_create("xdpd-tables", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	void *mem;

	if (fd < 0)
		goto fail;
	if (ftruncate(fd, TABLES_SIZE))
		goto fail;
	mem = mmap(NULL, TABLES_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (mem == MAP_FAILED)
		goto fail;
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE |
		  F_SEAL_SEAL)) {
		munmap(mem, TABLES_SIZE);
		goto fail;
	}
	self->v.tab = mem;
	self->v.tab->magic = FP_MAGIC;
	self->v.tab->version = FP_VERSION;
	self->tables_fd = fd;
	return 0;
fail:
	PyErr_SetFromErrno(PyExc_OSError);
	if (fd >= 0)
		close(fd);
	return -1;
}

/* A reader's tables area: the writer's memfd, mapped read-only. */
static int tables_map(ControlObject *self, int fd)
{
	struct stat st;
	void *mem;

	if (fstat(fd, &st))
		goto fail;
	if ((uint64_t)st.st_size < TABLES_SIZE) {
		PyErr_Format(PyExc_ValueError, "tables area of %lld bytes, %zu expected",
			     (long long)st.st_size, (size_t)TABLES_SIZE);
		return -1;
	}
	mem = mmap(NULL, TABLES_SIZE, PROT_READ, MAP_SHARED, fd, 0);
	if (mem == MAP_FAILED)
		goto fail;
	self->v.tab = mem;
	return 0;
fail:
	PyErr_SetFromErrno(PyExc_OSError);
	return -1;
}

static void ctl_unmap(ControlObject *self)
{
	if (self->v.base)
		munmap(self->v.base, self->v.size);
	self->v.base = NULL;
	if (self->v.tab)
		munmap(self->v.tab, TABLES_SIZE);
	self->v.tab = NULL;
	if (self->tables_fd >= 0)
		close(self->tables_fd);
	self->tables_fd = -1;
}

/* Control(fd, size, layout=None, tables_fd=-1): map the area.
 * The supervisor gives neither layout nor tables_fd: it learns the layout
 * by format() and makes the tables area (its fd: .tables_fd, for the
 * workers).  A worker gives both: layout, a tuple (nworkers,
 * frames_per_worker, frame_size, ring_entries), is how it learns where
 * things are (from its spec, not from the shared header), and it maps the
 * tables area read-only. */
static int Control_init(ControlObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = {"fd", "size", "layout", "tables_fd", NULL};
	int fd, tables_fd = -1;
	unsigned long long size;
	PyObject *layout = Py_None;
	struct ctl_params p;
	void *mem;

	self->tables_fd = -1;
	if (!PyArg_ParseTupleAndKeywords(args, kw, "iK|Oi", kwlist, &fd, &size, &layout,
					 &tables_fd))
		return -1;
	if (self->v.base) {
		PyErr_SetString(PyExc_ValueError, "control area already mapped");
		return -1;
	}
	if ((layout == Py_None) != (tables_fd < 0)) {
		PyErr_SetString(PyExc_ValueError, "a worker's view needs both layout and "
				"tables_fd; the supervisor's, neither");
		return -1;
	}
	if (layout != Py_None) {
		struct fp_header h = {0};

		if (!PyTuple_Check(layout) || parse_params(layout, &p))
			return -1;
		if (ctl_layout(&p, &h) > size) {
			PyErr_Format(PyExc_ValueError, "control area of %llu bytes too small for "
				     "its layout (%llu)", size, (unsigned long long)h.total_size);
			return -1;
		}
		h.nworkers = p.nworkers;
		h.frames_per_worker = p.frames_per_worker;
		h.frame_size = p.frame_size;
		h.ring_entries = p.ring_entries;
		ctl_lay_of(&self->v.lay, &h);
		self->laid_out = true;
	}
	mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (mem == MAP_FAILED) {
		PyErr_SetFromErrno(PyExc_OSError);
		return -1;
	}
	self->v.base = mem;
	self->v.size = size;
	self->writer = layout == Py_None;
	if (self->writer ? tables_create(self) : tables_map(self, tables_fd)) {
		ctl_unmap(self);
		return -1;
	}
	return 0;
}

static void Control_dealloc(ControlObject *self)
{
	ctl_unmap(self);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Open, and its layout known (never taken from the shared header). */
static int ctl_check(ControlObject *self)
{
	if (!self->v.base) {
		PyErr_SetString(PyExc_ValueError, "control area is closed");
		return -1;
	}
	if (!self->laid_out) {
		PyErr_SetString(PyExc_ValueError, "control area not initialised: format() it, "
				"or give its layout");
		return -1;
	}
	return 0;
}

/* Open, and the supervisor's: what writes the tables area. */
static int ctl_check_writer(ControlObject *self)
{
	if (self->v.base && !self->writer) {
		PyErr_SetString(PyExc_PermissionError, "a worker's view of the control area "
				"cannot write the tables area");
		return -1;
	}
	return 0;
}

static int ctl_check_worker(ControlObject *self, unsigned int i)
{
	if (ctl_check(self))
		return -1;
	if (i >= self->v.lay.nworkers) {
		PyErr_Format(PyExc_IndexError, "worker %u out of range", i);
		return -1;
	}
	return 0;
}

/* format(nworkers, frames_per_worker, frame_size, ring_entries): lay out a
 * fresh area and give every worker all its frames on its free list. */
static PyObject *Control_format(ControlObject *self, PyObject *args)
{
	struct ctl_params p;
	struct fp_header h = {0};
	uint64_t need;

	if (parse_params(args, &p))
		return NULL;
	if (!self->v.base) {
		PyErr_SetString(PyExc_ValueError, "control area is closed");
		return NULL;
	}
	if (ctl_check_writer(self))
		return NULL;
	need = ctl_layout(&p, &h);
	if (need > self->v.size) {
		PyErr_Format(PyExc_ValueError, "control area too small: %llu < %llu",
			     (unsigned long long)self->v.size, (unsigned long long)need);
		return NULL;
	}
	memset(self->v.base, 0, need);
	h.magic = FP_MAGIC;
	h.version = FP_VERSION;
	h.nworkers = p.nworkers;
	h.frames_per_worker = p.frames_per_worker;
	h.frame_size = p.frame_size;
	h.ring_entries = p.ring_entries;
	ctl_lay_of(&self->v.lay, &h);		/* ours: what we read from now on */
	self->laid_out = true;
	self->active = 0;
	self->generation = 0;
	memcpy(self->v.base, &h, sizeof(h));	/* the record, for tools; never read */
	memset(self->v.tab->assign, 0, sizeof(self->v.tab->assign));
	memset(self->v.tab->table, 0, sizeof(self->v.tab->table));
	self->v.tab->active_table = 0;
	self->v.tab->generation = 0;

	for (uint32_t w = 0; w < p.nworkers; w++)
		ctl_reset_slot(&self->v, w);
	Py_RETURN_NONE;
}

/* seq's items into out: each another worker slot than i (what: the
 * message's start, naming the id, e.g. "member %ld"); -1 with the
 * exception set on the first that is not. */
static int slot_ids(ControlObject *self, PyObject *seq, unsigned int i, const char *what,
		    uint16_t *out)
{
	for (Py_ssize_t k = 0; k < PySequence_Fast_GET_SIZE(seq); k++) {
		long id = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, k));

		if (id < 0 || id >= (long)self->v.lay.nworkers || id == (long)i) {
			if (!PyErr_Occurred()) {
				PyObject *name = PyUnicode_FromFormat(what, id);

				if (name) {
					PyErr_Format(PyExc_ValueError, "%U: not another worker slot",
						     name);
					Py_DECREF(name);
				}
			}
			return -1;
		}
		out[k] = (uint16_t)id;
	}
	return 0;
}

/* set_worker(i, netdev_index, queue, ifindex, lane=queue, owner=i, members=(),
 *            direct=()):
 * before worker i starts.  owner: the worker with the queue's FILL and
 * COMPLETION rings (i itself unless i is a fanout member); members: for an
 * owner, the other workers on its queue (fastpath.h, "Fanout"); direct: the
 * owners of the queues its direct sockets are bound to, by socket
 * ("Direct transmission"). */
static PyObject *Control_set_worker(ControlObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = {"i", "netdev", "queue", "ifindex", "lane", "owner",
				 "members", "direct", "xsk_ino", NULL};
	unsigned int i, netdev, queue, ifindex, lane = UINT32_MAX, owner = UINT32_MAX;
	unsigned long long xsk_ino = 0;
	PyObject *members = NULL, *direct = NULL, *seq;
	uint16_t ids[FP_MAX_FANOUT], dids[FP_MAX_DIRECT];
	Py_ssize_t n = 0, nd = 0;
	struct fp_assign *w;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "IIII|IIOOK", kwlist, &i, &netdev, &queue,
					 &ifindex, &lane, &owner, &members, &direct, &xsk_ino))
		return NULL;
	if (ctl_check_worker(self, i) || ctl_check_writer(self))
		return NULL;
	if (netdev >= FP_MAX_NETDEVS)
		return PyErr_Format(PyExc_ValueError, "netdev index %u >= %d", netdev,
				    FP_MAX_NETDEVS);
	if (owner == UINT32_MAX)
		owner = i;
	if (owner >= self->v.lay.nworkers)
		return PyErr_Format(PyExc_ValueError, "owner %u: no such worker slot", owner);
	if (members && members != Py_None) {
		seq = PySequence_Fast(members, "members must be a sequence of worker ids");
		if (!seq)
			return NULL;
		n = PySequence_Fast_GET_SIZE(seq);
		if (n >= FP_MAX_FANOUT || (n && owner != i)) {
			Py_DECREF(seq);
			return PyErr_Format(PyExc_ValueError, "%zd members: only an owner has "
					    "them, at most %d", n, FP_MAX_FANOUT - 1);
		}
		if (slot_ids(self, seq, i, "member %ld", ids)) {
			Py_DECREF(seq);
			return NULL;
		}
		Py_DECREF(seq);
	}
	if (direct && direct != Py_None) {
		seq = PySequence_Fast(direct, "direct must be a sequence of worker ids");
		if (!seq)
			return NULL;
		nd = PySequence_Fast_GET_SIZE(seq);
		if (nd > FP_MAX_DIRECT) {
			Py_DECREF(seq);
			return PyErr_Format(PyExc_ValueError, "%zd direct sockets: at most %d",
					    nd, FP_MAX_DIRECT);
		}
		if (slot_ids(self, seq, i, "direct socket to %ld", dids)) {
			Py_DECREF(seq);
			return NULL;
		}
		Py_DECREF(seq);
	}
	w = ctl_assign(&self->v, i);
	memcpy(w->direct, dids, nd * sizeof(dids[0]));
	w->n_direct = (uint32_t)nd;
	w->netdev = netdev;
	w->queue = queue;
	w->ifindex = ifindex;
	w->lane = lane == UINT32_MAX ? queue : lane;
	w->owner = owner;
	memcpy(w->members, ids, n * sizeof(ids[0]));
	w->n_members = (uint32_t)n;
	__atomic_store_n(&w->xsk_ino, (uint64_t)xsk_ino, __ATOMIC_RELEASE);
	Py_RETURN_NONE;
}

/* write_table(rules: list indexed by netdev, each None, a rule dict or a
 * list of rule dicts, complete_checksums=()) -> generation
 * complete_checksums: the netdev indexes whose frames may carry partial
 * checksums, to be completed (FP_NETDEV_CSUM_COMPLETE).
 * Writes the inactive table, then makes it the active one.  Workers switch
 * between two iterations; the caller must not write again until every
 * running worker reports the new generation (table_generation). */
static PyObject *Control_write_table(ControlObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = {"rules", "complete_checksums", "direct_ok", NULL};
	PyObject *rules, *seq, *csum = NULL, *dok = NULL;
	uint32_t csum_flags[FP_MAX_NETDEVS] = {0};
	uint8_t direct_ok[FP_MAX_WORKERS] = {0};
	struct fp_table *t;
	uint32_t next;
	Py_ssize_t n;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "O|OO", kwlist, &rules, &csum, &dok))
		return NULL;
	if (direct_ok_from_obj(dok, self->v.lay.nworkers, direct_ok) ||
	    csum_flags_from_obj(csum, csum_flags))
		return NULL;
	if (ctl_check(self) || ctl_check_writer(self))
		return NULL;
	seq = PySequence_Fast(rules, "rules must be a sequence");
	if (!seq)
		return NULL;
	n = PySequence_Fast_GET_SIZE(seq);
	if (n > FP_MAX_NETDEVS) {
		Py_DECREF(seq);
		return PyErr_Format(PyExc_ValueError, "at most %d netdevs", FP_MAX_NETDEVS);
	}
	/* which table is active, and its generation, are ours (kept here,
	 * never read back from the area) */
	next = self->active ^ 1;
	t = ctl_table(&self->v, next);
	memset(t, 0, sizeof(*t));
	for (Py_ssize_t i = 0; i < n; i++) {
		if (netdev_from_obj(PySequence_Fast_GET_ITEM(seq, i), &t->by_netdev[i],
				    self->v.lay.nworkers)) {
			Py_DECREF(seq);
			return NULL;
		}
		t->by_netdev[i].flags = csum_flags[i];
	}
	Py_DECREF(seq);
	t->n_netdevs = (uint32_t)n;
	memcpy(t->direct_ok, direct_ok, sizeof(t->direct_ok));
	t->generation = ++self->generation;
	self->active = next;
	__atomic_store_n(&self->v.tab->generation, t->generation, __ATOMIC_RELEASE);
	__atomic_store_n(&self->v.tab->active_table, next, __ATOMIC_RELEASE);
	return PyLong_FromUnsignedLongLong(t->generation);
}

/* A worker's counters as the dict worker_stats() returns. */
static PyObject *stats_dict(const struct fp_stats *s)
{
	PyObject *drops = PyDict_New();

	if (!drops)
		return NULL;
	for (int r = 0; r < FP_DROP__MAX; r++) {
		PyObject *v = PyLong_FromUnsignedLongLong(s->drops[r]);

		if (!v || PyDict_SetItemString(drops, drop_reason_names[r], v)) {
			Py_XDECREF(v);
			Py_DECREF(drops);
			return NULL;
		}
		Py_DECREF(v);
	}
	PyObject *dp = PyTuple_New(FP_MAX_DIRECT), *db = PyTuple_New(FP_MAX_DIRECT);

	if (!dp || !db) {
		Py_XDECREF(dp);
		Py_XDECREF(db);
		Py_DECREF(drops);
		return NULL;
	}
	for (int j = 0; j < FP_MAX_DIRECT; j++) {
		PyTuple_SET_ITEM(dp, j, PyLong_FromUnsignedLongLong(s->direct_packets[j]));
		PyTuple_SET_ITEM(db, j, PyLong_FromUnsignedLongLong(s->direct_bytes[j]));
	}
	if (PyErr_Occurred()) {
		Py_DECREF(dp);
		Py_DECREF(db);
		Py_DECREF(drops);
		return NULL;
	}
	return Py_BuildValue("{sKsKsKsKsNsKsKsKsKsKsKsKsKsKsKsKsKsKsNsN}",
			     "rx_packets", s->rx_packets, "rx_bytes", s->rx_bytes,
			     "tx_packets", s->tx_packets, "tx_bytes", s->tx_bytes,
			     "drops", drops,
			     "handoff_out", s->handoff_out, "handoff_in", s->handoff_in,
			     "tx_kicks", s->tx_kicks, "fill_kicks", s->fill_kicks,
			     "sleeps", s->sleeps, "loops", s->loops, "busy_loops", s->busy_loops,
			     "busy_polls", s->busy_polls, "bad_descs", s->bad_descs,
			     "csum_completed", s->csum_completed,
			     "rx_frags", s->rx_frags, "tx_descs", s->tx_descs,
			     "busy_ns", s->busy_ns, "direct_packets", dp, "direct_bytes", db);
}

static PyObject *Control_worker_stats(ControlObject *self, PyObject *args)
{
	unsigned int i;
	struct fp_counts c;

	if (!PyArg_ParseTuple(args, "I", &i) || ctl_check_worker(self, i))
		return NULL;
	if (ctl_counts(&self->v, i, &c))
		return PyErr_Format(PyExc_TimeoutError, "worker %u counters kept changing", i);
	return stats_dict(&c.stats);
}

/* rule_stats(i) -> (packets, bytes): lists of FP_MAX_RULES counters, by
 * position in worker i's netdev's rule list (one consistent set). */
static PyObject *Control_rule_stats(ControlObject *self, PyObject *args)
{
	unsigned int i;
	struct fp_counts c;
	PyObject *pk, *by;

	if (!PyArg_ParseTuple(args, "I", &i) || ctl_check_worker(self, i))
		return NULL;
	if (ctl_counts(&self->v, i, &c))
		return PyErr_Format(PyExc_TimeoutError, "worker %u counters kept changing", i);
	pk = PyList_New(FP_MAX_RULES);
	by = PyList_New(FP_MAX_RULES);
	if (!pk || !by)
		goto fail;
	for (int k = 0; k < FP_MAX_RULES; k++) {
		PyObject *a = PyLong_FromUnsignedLongLong(c.stats.rule_packets[k]);
		PyObject *b = PyLong_FromUnsignedLongLong(c.stats.rule_bytes[k]);

		if (!a || !b) {
			Py_XDECREF(a);
			Py_XDECREF(b);
			goto fail;
		}
		PyList_SET_ITEM(pk, k, a);
		PyList_SET_ITEM(by, k, b);
	}
	return Py_BuildValue("(NN)", pk, by);
fail:
	Py_XDECREF(pk);
	Py_XDECREF(by);
	return NULL;
}

/* worker_frames(i) -> {"free", "rx", "tx", "handoff"}: one consistent set. */
static PyObject *Control_worker_frames(ControlObject *self, PyObject *args)
{
	unsigned int i;
	struct fp_counts c;

	if (!PyArg_ParseTuple(args, "I", &i) || ctl_check_worker(self, i))
		return NULL;
	if (ctl_counts(&self->v, i, &c))
		return PyErr_Format(PyExc_TimeoutError, "worker %u frame counts kept changing", i);
	return Py_BuildValue("{sKsKsKsK}", "free", c.frames.free, "rx", c.frames.rx,
			     "tx", c.frames.tx, "handoff", c.frames.handoff);
}

/* worker_liveness(i) -> (heartbeat_ns, pid, state, table_generation) */
static PyObject *Control_worker_liveness(ControlObject *self, PyObject *args)
{
	unsigned int i;
	struct fp_worker *w;

	if (!PyArg_ParseTuple(args, "I", &i) || ctl_check_worker(self, i))
		return NULL;
	w = ctl_worker(&self->v, i);
	return Py_BuildValue("KIIK",
			     (unsigned long long)__atomic_load_n(&w->heartbeat_ns, __ATOMIC_RELAXED),
			     __atomic_load_n(&w->pid, __ATOMIC_RELAXED),
			     __atomic_load_n(&w->state, __ATOMIC_RELAXED),
			     (unsigned long long)__atomic_load_n(&w->table_generation,
								 __ATOMIC_RELAXED));
}

/* usage(i) -> {"pid", "user_ns", "system_ns", "rss_bytes", "uss_bytes"}:
 * what the worker in slot i last reported of itself; pid 0: nothing yet */
static PyObject *Control_usage(ControlObject *self, PyObject *args)
{
	unsigned int i;
	struct fp_usage *u;

	if (!PyArg_ParseTuple(args, "I", &i) || ctl_check_worker(self, i))
		return NULL;
	u = &ctl_worker(&self->v, i)->usage;
	return Py_BuildValue("{sIsKsKsKsK}", "pid", __atomic_load_n(&u->pid, __ATOMIC_RELAXED),
		"user_ns", (unsigned long long)__atomic_load_n(&u->user_ns, __ATOMIC_RELAXED),
		"system_ns", (unsigned long long)__atomic_load_n(&u->system_ns, __ATOMIC_RELAXED),
		"rss_bytes", (unsigned long long)__atomic_load_n(&u->rss_bytes, __ATOMIC_RELAXED),
		"uss_bytes", (unsigned long long)__atomic_load_n(&u->uss_bytes, __ATOMIC_RELAXED));
}

/* ring_use(i) -> {"rx", "tx", "fill", "completion"}: entries on each ring */
static PyObject *Control_ring_use(ControlObject *self, PyObject *args)
{
	unsigned int i;
	struct fp_ring_use *u;

	if (!PyArg_ParseTuple(args, "I", &i) || ctl_check_worker(self, i))
		return NULL;
	u = &ctl_worker(&self->v, i)->ring_use;
	return Py_BuildValue("{sIsIsIsI}", "rx", __atomic_load_n(&u->rx, __ATOMIC_RELAXED),
			     "tx", __atomic_load_n(&u->tx, __ATOMIC_RELAXED),
			     "fill", __atomic_load_n(&u->fill, __ATOMIC_RELAXED),
			     "completion", __atomic_load_n(&u->comp, __ATOMIC_RELAXED));
}

/*
 * reset_worker(i): give slot i back, as format() left it: all its frames
 * on its free list, counters and liveness zeroed.  Only for a slot whose
 * worker has exited and whose socket is closed (so the kernel holds none
 * of its frames); refused while any frame of it is lent out or any ring to
 * or from it holds entries, since those would then be owned twice.
 */
static PyObject *Control_reset_worker(ControlObject *self, PyObject *args)
{
	unsigned int i;
	const struct ctl_view *v = &self->v;
	struct fp_counts c;

	if (!PyArg_ParseTuple(args, "I", &i) || ctl_check_worker(self, i) ||
	    ctl_check_writer(self))
		return NULL;
	if (ctl_counts(v, i, &c))
		return PyErr_Format(PyExc_TimeoutError, "worker %u frame counts kept changing", i);
	if (c.frames.handoff)
		return PyErr_Format(PyExc_ValueError, "worker %u still has %llu frames lent out",
				    i, (unsigned long long)c.frames.handoff);
	for (uint32_t w = 0; w < v->lay.nworkers; w++) {
		for (int ret = 0; ret < 2; ret++) {
			if (w != i && (hring_avail(ctl_ring(v, ret, w, i)) ||
				       hring_avail(ctl_ring(v, ret, i, w))))
				return PyErr_Format(PyExc_ValueError,
						    "worker %u: %s ring with worker %u not empty",
						    i, ret ? "return" : "handoff", w);
		}
	}
	ctl_reset_slot(v, i);
	Py_RETURN_NONE;
}

/* mark_stopped(i): slot i's worker is gone for good (given up): peers
 * stop handing it packets and count them as egress_down. */
static PyObject *Control_mark_stopped(ControlObject *self, PyObject *args)
{
	unsigned int i;

	if (!PyArg_ParseTuple(args, "I", &i) || ctl_check_worker(self, i))
		return NULL;
	__atomic_store_n(&ctl_worker(&self->v, i)->state, FP_STATE_STOPPED, __ATOMIC_RELEASE);
	Py_RETURN_NONE;
}

static PyObject *Control_generation(ControlObject *self, PyObject *noargs)
{
	if (ctl_check(self))
		return NULL;
	return PyLong_FromUnsignedLongLong(self->generation);
}

static PyObject *Control_close(ControlObject *self, PyObject *noargs)
{
	ctl_unmap(self);
	Py_RETURN_NONE;
}

static PyObject *Control_get_tables_fd(ControlObject *self, void *closure)
{
	return PyLong_FromLong(self->tables_fd);
}

static PyGetSetDef Control_getset[] = {
	{"tables_fd", (getter)Control_get_tables_fd, NULL,
	 "the tables area's memfd (the supervisor's view; -1 in a worker's): "
	 "sealed, any mapping of it but ours is read-only", NULL},
	{NULL},
};

/* capctl.c */
static PyObject *Control_capture_arm(ControlObject *self, PyObject *args);
static PyObject *Control_hosting(ControlObject *self, PyObject *args);
static PyObject *Control_set_host(ControlObject *self, PyObject *args);
static PyObject *Control_ask(ControlObject *self, PyObject *args);
static PyObject *Control_claim(ControlObject *self, PyObject *args);
static PyObject *Control_socket_ino(ControlObject *self, PyObject *args);
static PyObject *Control_capture_disarm(ControlObject *self, PyObject *args);
static PyObject *Control_capture_counts(ControlObject *self, PyObject *args);
static PyObject *Control_capture_read(ControlObject *self, PyObject *args);

static PyMethodDef Control_methods[] = {
	{"format", (PyCFunction)Control_format, METH_VARARGS,
	 "format(nworkers, frames_per_worker, frame_size, ring_entries)"},
	{"set_worker", (PyCFunction)(void (*)(void))Control_set_worker,
	 METH_VARARGS | METH_KEYWORDS,
	 "set_worker(i, netdev, queue, ifindex, lane=queue, owner=i, members=(), direct=(), "
	 "xsk_ino=0)"},
	{"write_table", (PyCFunction)(void (*)(void))Control_write_table,
	 METH_VARARGS | METH_KEYWORDS,
	 "write_table(rules_by_netdev, complete_checksums=()) -> generation"},
	{"worker_stats", (PyCFunction)Control_worker_stats, METH_VARARGS, NULL},
	{"worker_frames", (PyCFunction)Control_worker_frames, METH_VARARGS, NULL},
	{"rule_stats", (PyCFunction)Control_rule_stats, METH_VARARGS,
	 "rule_stats(i) -> (packets, bytes) by position in the netdev's rule list"},
	{"worker_liveness", (PyCFunction)Control_worker_liveness, METH_VARARGS, NULL},
	{"hosting", (PyCFunction)Control_hosting, METH_VARARGS, NULL},
	{"set_host", (PyCFunction)Control_set_host, METH_VARARGS, NULL},
	{"ask", (PyCFunction)Control_ask, METH_VARARGS, NULL},
	{"claim", (PyCFunction)Control_claim, METH_VARARGS, NULL},
	{"socket_ino", (PyCFunction)Control_socket_ino, METH_VARARGS, NULL},
	{"generation", (PyCFunction)Control_generation, METH_NOARGS, NULL},
	{"ring_use", (PyCFunction)Control_ring_use, METH_VARARGS,
	 "ring_use(i) -> entries on the rx, tx, fill and completion rings"},
	{"usage", (PyCFunction)Control_usage, METH_VARARGS,
	 "usage(i) -> the CPU time and memory the worker in slot i last reported"},
	{"reset_worker", (PyCFunction)Control_reset_worker, METH_VARARGS,
	 "reset_worker(i): give a drained, exited worker's slot back"},
	{"mark_stopped", (PyCFunction)Control_mark_stopped, METH_VARARGS,
	 "mark_stopped(i): a worker given up on: peers drop its packets as egress_down"},
	{"capture_arm", (PyCFunction)Control_capture_arm, METH_VARARGS,
	 "capture_arm(slot, netdev, queue, points, snaplen, program) -> capture generation"},
	{"capture_disarm", (PyCFunction)Control_capture_disarm, METH_VARARGS,
	 "capture_disarm(slot) -> capture generation"},
	{"capture_counts", (PyCFunction)Control_capture_counts, METH_VARARGS,
	 "capture_counts(worker, slot) -> (captured, dropped)"},
	{"capture_read", (PyCFunction)Control_capture_read, METH_VARARGS,
	 "capture_read(worker, slot, skip=False) -> the records since the last read"},
	{"close", (PyCFunction)Control_close, METH_NOARGS, NULL},
	{NULL}
};

static PyTypeObject ControlType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "xdpd.datapath._fastpath.Control",
	.tp_basicsize = sizeof(ControlObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "Control(fd, size): the shared control area, mapped",
	.tp_new = PyType_GenericNew,
	.tp_init = (initproc)Control_init,
	.tp_dealloc = (destructor)Control_dealloc,
	.tp_methods = Control_methods,
	.tp_getset = Control_getset,
};
