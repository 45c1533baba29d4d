// SPDX-License-Identifier: GPL-2.0
/*
 * capctl.c: the Control object's capture methods (fastpath.h, "Capture"):
 * the supervisor arms and disarms slots in the tables area
 * (capture_arm, capture_disarm) and reads workers' capture rings
 * (capture_read, capture_counts).  Part of _fastpath.c's unity build,
 * after control.c (whose method table lists these) and capture.c.  Runs
 * in Python's context, between packets: it writes only the tables area
 * (the writer's) and the consumer index of a ring; what a worker wrote is
 * checked before it is used, since every worker can write the area.
 */

/* capture_arm(slot, netdev, queue, points, snaplen, program): program is
 * classic BPF (struct sock_filter bytes), checked here as the workers
 * will; netdev and queue -1: any.  The slot's old program may still be
 * running in a worker until it sees the new generation: arm a slot only
 * after capture_disarm() and a generation every worker has seen, or
 * accept a few frames judged by the old filter. */
static PyObject *Control_capture_arm(ControlObject *self, PyObject *args)
{
	int netdev, queue;
	unsigned int slot, points, snaplen;
	struct fp_tables_area *t;
	struct fp_capture *c;
	Py_buffer prog;
	uint32_t n;
	enum cbpf_refusal why;

	if (!PyArg_ParseTuple(args, "IiiIIy*", &slot, &netdev, &queue, &points, &snaplen, &prog))
		return NULL;
	if (ctl_check(self) || ctl_check_writer(self)) {
		PyBuffer_Release(&prog);
		return NULL;
	}
	n = (uint32_t)(prog.len / sizeof(struct sock_filter));
	why = prog.len % sizeof(struct sock_filter) ? CBPF_LENGTH :
	      cbpf_check(prog.buf, n);
	if (slot >= FP_MAX_CAPTURES || !points || points & ~(FP_CAP_RX | FP_CAP_TX | FP_CAP_DROP) ||
	    !snaplen || why != CBPF_OK) {
		PyBuffer_Release(&prog);
		return PyErr_Format(PyExc_ValueError, "capture slot %u (of %d), points 0x%x, snaplen "
				    "%u, filter: %s", slot, FP_MAX_CAPTURES, points, snaplen,
				    cbpf_refusal_names[why]);
	}
	t = self->v.tab;
	c = &t->capture[slot];
	c->points = points;
	c->netdev = netdev < 0 ? FP_CAP_ANY : (uint32_t)netdev;
	c->queue = queue < 0 ? FP_CAP_ANY : (uint32_t)queue;
	c->snaplen = snaplen;
	c->n_insns = n;
	memcpy(c->insns, prog.buf, prog.len);
	PyBuffer_Release(&prog);
	__atomic_store_n(&t->capture_mask, t->capture_mask | 1U << slot, __ATOMIC_RELAXED);
	__atomic_store_n(&t->capture_gen, t->capture_gen + 1, __ATOMIC_RELEASE);
	return PyLong_FromUnsignedLongLong(t->capture_gen);
}

/* capture_disarm(slot) -> the capture generation that has it off. */
static PyObject *Control_capture_disarm(ControlObject *self, PyObject *args)
{
	unsigned int slot;
	struct fp_tables_area *t;

	if (!PyArg_ParseTuple(args, "I", &slot))
		return NULL;
	if (ctl_check(self) || ctl_check_writer(self))
		return NULL;
	if (slot >= FP_MAX_CAPTURES)
		return PyErr_Format(PyExc_ValueError, "capture slot %u of %d", slot, FP_MAX_CAPTURES);
	t = self->v.tab;
	__atomic_store_n(&t->capture_mask, t->capture_mask & ~(1U << slot), __ATOMIC_RELAXED);
	t->capture[slot].points = 0;
	__atomic_store_n(&t->capture_gen, t->capture_gen + 1, __ATOMIC_RELEASE);
	return PyLong_FromUnsignedLongLong(t->capture_gen);
}

/* capture_counts(worker, slot) -> (captured, dropped): records worker i
 * wrote into its ring for slot s, and those that did not fit, ever. */
static PyObject *Control_capture_counts(ControlObject *self, PyObject *args)
{
	unsigned int i, slot;
	struct fp_capring *r;

	if (!PyArg_ParseTuple(args, "II", &i, &slot) || ctl_check_worker(self, i))
		return NULL;
	if (slot >= FP_MAX_CAPTURES)
		return PyErr_Format(PyExc_ValueError, "capture slot %u of %d", slot, FP_MAX_CAPTURES);
	r = ctl_capring(&self->v, i, slot);
	return Py_BuildValue("KK", (unsigned long long)__atomic_load_n(&r->captured,
								       __ATOMIC_RELAXED),
			     (unsigned long long)__atomic_load_n(&r->dropped, __ATOMIC_RELAXED));
}

/*
 * capture_read(worker, slot, skip=False) -> bytes: the records worker i
 * wrote for slot s since the last read (struct fp_caprec, then the frame's
 * bytes, each record whole), padding left out; the ring's space is given
 * back.  skip: give it back unread (a new capture starts from now).  A
 * record whose size the worker wrote wrong ends the read where it is and
 * skips to the producer: a worker can hurt only its own capture.
 */
static PyObject *Control_capture_read(ControlObject *self, PyObject *args)
{
	unsigned int i, slot;
	int skip = 0;
	struct fp_capring *r;
	uint64_t prod, cons;
	PyObject *out;
	char *o;
	Py_ssize_t len = 0;

	if (!PyArg_ParseTuple(args, "II|p", &i, &slot, &skip) || ctl_check_worker(self, i))
		return NULL;
	if (slot >= FP_MAX_CAPTURES)
		return PyErr_Format(PyExc_ValueError, "capture slot %u of %d", slot, FP_MAX_CAPTURES);
	r = ctl_capring(&self->v, i, slot);
	prod = __atomic_load_n(&r->prod, __ATOMIC_ACQUIRE);
	cons = __atomic_load_n(&r->cons, __ATOMIC_RELAXED);
	if (skip || prod - cons > FP_CAPTURE_RING) {
		__atomic_store_n(&r->cons, prod, __ATOMIC_RELEASE);
		return PyBytes_FromStringAndSize("", 0);
	}
	out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(prod - cons));
	if (!out)
		return NULL;
	o = PyBytes_AS_STRING(out);
	while (cons < prod) {
		const struct fp_caprec *rec = (const void *)&r->data[cons % FP_CAPTURE_RING];
		uint32_t size = rec->size, tail = FP_CAPTURE_RING - cons % FP_CAPTURE_RING;

		if (size < sizeof(*rec) || size > tail || size > prod - cons || size % FP_CAPREC_ALIGN ||
		    (rec->point && rec->cap_len > size - sizeof(*rec))) {
			cons = prod;		/* garbage: the rest of this read is lost */
			break;
		}
		if (rec->point) {
			memcpy(o + len, rec, size);
			len += size;
		}
		cons += size;
	}
	__atomic_store_n(&r->cons, cons, __ATOMIC_RELEASE);
	if (_PyBytes_Resize(&out, len))
		return NULL;
	return out;
}
