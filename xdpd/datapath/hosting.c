// SPDX-License-Identifier: GPL-2.0
/*
 * hosting.c: the Control object's hosting methods (fastpath.h, fp_worker
 * host and runner; docs/ARCHITECTURE.md, "Hosting"): the supervisor says
 * which process should run a slot's port (set_host), the processes take
 * and give up a port by compare-and-swap (claim), and a host checks that a
 * guest slot still has the socket it was given (socket_ino, from the
 * tables area, which only the supervisor writes).  Part of _fastpath.c's
 * unity build, after control.c, whose method table lists these.
 */

/* A slot id or None, as fp_worker.host and runner keep it (id + 1; 0: none) */
static int hosting_arg(ControlObject *self, PyObject *o, uint32_t *out)
{
	unsigned long id = o == Py_None ? 0 : PyLong_AsUnsignedLong(o);

	if (PyErr_Occurred() || (o != Py_None &&
	    ctl_check_worker(self, id > UINT_MAX ? UINT_MAX : (unsigned int)id)))
		return -1;
	*out = o == Py_None ? 0 : (uint32_t)id + 1;
	return 0;
}

#define HOSTING_VALUE(v) ((v) ? PyLong_FromUnsignedLong((v) - 1) : Py_NewRef(Py_None))

/* hosting(i) -> (host, asked, runner): the slot whose process should run
 * slot i's port (None: its own), the one ready to take it (None: none),
 * and the one that runs it now (None: nobody) */
static PyObject *Control_hosting(ControlObject *self, PyObject *args)
{
	unsigned int i;
	struct fp_worker *w;

	if (!PyArg_ParseTuple(args, "I", &i) || ctl_check_worker(self, i))
		return NULL;
	w = ctl_worker(&self->v, i);
	return Py_BuildValue("NNN", HOSTING_VALUE(__atomic_load_n(&w->host, __ATOMIC_ACQUIRE)),
			     HOSTING_VALUE(__atomic_load_n(&w->asked, __ATOMIC_ACQUIRE)),
			     HOSTING_VALUE(__atomic_load_n(&w->runner, __ATOMIC_ACQUIRE)));
}

/* set_host(i, host): the supervisor's wish, host a slot id or None (a new
 * wish: nobody has asked for it yet).  ask(i, who): who is ready to take
 * slot i's port (a slot id or None).
 * claim(i, expected, new) -> True when slot i's runner was expected and is
 * now new (slot ids or None), in one compare-and-swap. */
static PyObject *hosting_store(ControlObject *self, PyObject *args, bool wish)
{
	struct fp_worker *w;
	PyObject *o;
	unsigned int i;
	uint32_t v;

	if (!PyArg_ParseTuple(args, "IO", &i, &o) || ctl_check_worker(self, i) ||
	    hosting_arg(self, o, &v))
		return NULL;
	w = ctl_worker(&self->v, i);
	__atomic_store_n(&w->asked, wish ? 0 : v, __ATOMIC_RELEASE);
	if (wish)
		__atomic_store_n(&w->host, v, __ATOMIC_RELEASE);
	Py_RETURN_NONE;
}

static PyObject *Control_set_host(ControlObject *self, PyObject *args)
{
	return hosting_store(self, args, true);
}

static PyObject *Control_ask(ControlObject *self, PyObject *args)
{
	return hosting_store(self, args, false);
}

static PyObject *Control_claim(ControlObject *self, PyObject *args)
{
	unsigned int i;
	PyObject *oe, *on;
	uint32_t e, n;

	if (!PyArg_ParseTuple(args, "IOO", &i, &oe, &on) || ctl_check_worker(self, i) ||
	    hosting_arg(self, oe, &e) || hosting_arg(self, on, &n))
		return NULL;
	return PyBool_FromLong(__atomic_compare_exchange_n(&ctl_worker(&self->v, i)->runner,
			       &e, n, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
}

/* socket_ino(i) -> the inode of slot i's AF_XDP socket, as the supervisor
 * assigned it (0: the slot is free) */
static PyObject *Control_socket_ino(ControlObject *self, PyObject *args)
{
	unsigned int i;

	if (!PyArg_ParseTuple(args, "I", &i) || ctl_check_worker(self, i))
		return NULL;
	return PyLong_FromUnsignedLongLong(__atomic_load_n(&ctl_assign(&self->v, i)->xsk_ino,
							   __ATOMIC_ACQUIRE));
}
