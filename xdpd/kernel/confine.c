// SPDX-License-Identifier: GPL-2.0
/*
 * xdpd._confine: the worker's system call filter (seccomp, SECCOMP_MODE_FILTER).
 *
 * A worker that has dropped its capabilities and become an unprivileged
 * user (xdpd/privileges.py) installs this filter before it maps anything a
 * peer can write.  From then on it may make only the system calls its loop
 * and its interpreter make: the AF_XDP socket's sendto/recvfrom/poll, the
 * eventfds' read/write, mapping and unmapping (the rings, Python's
 * allocator), signals to and from itself, clocks, and opening files for
 * reading (a late import, a traceback's source lines).  Everything else
 * fails with EPERM: execve, fork, a socket of its own, kill, ptrace, bpf,
 * opening anything for writing, ioctls other than the two a Python file
 * object makes (no TIOCSTI into a terminal it inherited).
 *
 * EPERM rather than killing the process: a call the list forgot shows up
 * as an error in the worker's log with the syscall that failed, not as a
 * crash loop.  A system call of another ABI (x32, or i386 through int 0x80
 * on x86_64: a different audit arch) kills the process: nothing in xdpd
 * makes one.
 *
 * The filter is classic BPF, one comparison per allowed call, the loop's
 * own calls first.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#if defined(__x86_64__)
#define XDPD_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define XDPD_AUDIT_ARCH AUDIT_ARCH_AARCH64
#elif defined(__riscv) && __riscv_xlen == 64
#define XDPD_AUDIT_ARCH AUDIT_ARCH_RISCV64
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define XDPD_AUDIT_ARCH AUDIT_ARCH_PPC64LE
#elif defined(__s390x__)
#define XDPD_AUDIT_ARCH AUDIT_ARCH_S390X
#endif

/* the low 32 bits of argument i, where the ABI puts them */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ARG_LO(i) (offsetof(struct seccomp_data, args) + 8 * (i))
#else
#define ARG_LO(i) (offsetof(struct seccomp_data, args) + 8 * (i) + 4)
#endif

#define SYS(name) { __NR_##name, #name }

struct allowed {
	long nr;
	const char *name;
};

/* Allowed whatever their arguments.  Those the packet loop makes come
 * first: each call walks the list until it finds itself. */
static const struct allowed ALLOWED[] = {
	SYS(sendto), SYS(recvfrom), SYS(ppoll),
#ifdef __NR_poll
	SYS(poll),
#endif
	SYS(read), SYS(write), SYS(getppid), SYS(clock_gettime),
	/* the interpreter between bursts, logging, exiting */
	SYS(pread64), SYS(readv), SYS(writev), SYS(close), SYS(lseek),
	SYS(fstat), SYS(newfstatat), SYS(statx), SYS(faccessat), SYS(faccessat2),
	SYS(readlinkat), SYS(getdents64), SYS(getcwd), SYS(fcntl),
	SYS(dup), SYS(dup3),
	SYS(mmap), SYS(munmap), SYS(mremap), SYS(mprotect), SYS(madvise), SYS(brk),
	SYS(rt_sigaction), SYS(rt_sigprocmask), SYS(rt_sigreturn), SYS(sigaltstack),
	SYS(futex), SYS(sched_yield), SYS(sched_getaffinity),
	SYS(nanosleep), SYS(clock_nanosleep), SYS(clock_getres), SYS(gettimeofday),
	SYS(getpid), SYS(gettid), SYS(getuid), SYS(geteuid), SYS(getgid), SYS(getegid),
	SYS(getrusage), SYS(getrandom), SYS(uname), SYS(sysinfo), SYS(getsockopt),
	SYS(restart_syscall), SYS(exit), SYS(exit_group),
};

/* Allowed with one argument checked: see build_filter(). */
static const struct allowed CHECKED[] = {
	SYS(openat),	/* read-only: no O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_APPEND */
	SYS(ioctl),	/* TCGETS (isatty) and FIOCLEX/FIONCLEX only */
	SYS(prctl),	/* PR_SET_NAME only (the process title) */
};

#define OPEN_WRITE_FLAGS (O_ACCMODE | O_CREAT | O_TRUNC | O_APPEND)	/* O_TMPFILE needs write access */

#define N_ALLOWED (sizeof(ALLOWED) / sizeof(ALLOWED[0]))
/* arch check 3, x32 check 2, nr load 1, 2 per allowed call, the checked
 * blocks (openat 6, ioctl 7, prctl 5), the default 1 */
#define MAX_INSNS (6 + 2 * N_ALLOWED + 6 + 7 + 5 + 1)

#define STMT(code, k)		((struct sock_filter)BPF_STMT(code, k))
#define JUMP(code, k, t, f)	((struct sock_filter)BPF_JUMP(code, k, t, f))
#define RET(v)			STMT(BPF_RET | BPF_K, v)
#define DENY			RET(SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA))
#define ALLOW			RET(SECCOMP_RET_ALLOW)

static size_t build_filter(struct sock_filter *f)
{
	size_t n = 0, i;

	f[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
	f[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, XDPD_AUDIT_ARCH, 1, 0);
	f[n++] = RET(SECCOMP_RET_KILL_PROCESS);
	f[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
#ifdef __X32_SYSCALL_BIT
	f[n++] = JUMP(BPF_JMP | BPF_JGE | BPF_K, __X32_SYSCALL_BIT, 0, 1);
	f[n++] = RET(SECCOMP_RET_KILL_PROCESS);
#endif
	for (i = 0; i < N_ALLOWED; i++) {
		f[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, ALLOWED[i].nr, 0, 1);
		f[n++] = ALLOW;
	}
	/* Each checked block returns on both paths, so a call that skips it
	 * still has its number in A for the next one. */
	f[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat, 0, 5);
	f[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(2));
	f[n++] = STMT(BPF_ALU | BPF_AND | BPF_K, OPEN_WRITE_FLAGS);
	f[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 1);
	f[n++] = ALLOW;
	f[n++] = DENY;

	f[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_ioctl, 0, 6);
	f[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(1));
	f[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, TCGETS, 2, 0);
	f[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, FIOCLEX, 1, 0);
	f[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, FIONCLEX, 0, 1);
	f[n++] = ALLOW;
	f[n++] = DENY;

	f[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_prctl, 0, 4);
	f[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(0));
	f[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, PR_SET_NAME, 0, 1);
	f[n++] = ALLOW;
	f[n++] = DENY;

	f[n++] = DENY;
	return n;
}

PyDoc_STRVAR(install_doc,
"install() -> None\n\n"
"Install the worker's system call filter on this process (every thread\n"
"it starts later inherits it; threads already running do not).  Needs\n"
"no_new_privs set (or CAP_SYS_ADMIN).  It cannot be removed.  Raises\n"
"OSError with the kernel's errno.");

static PyObject *confine_install(PyObject *self, PyObject *noargs)
{
#ifndef XDPD_AUDIT_ARCH
	errno = ENOSYS;
	return PyErr_SetFromErrno(PyExc_OSError);
#else
	struct sock_filter insns[MAX_INSNS];
	struct sock_fprog prog = { .filter = insns };

	prog.len = (unsigned short)build_filter(insns);
	if (syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0)
		return PyErr_SetFromErrno(PyExc_OSError);
	Py_RETURN_NONE;
#endif
}

PyDoc_STRVAR(allowed_doc,
"allowed() -> tuple of str\n\n"
"The system calls the filter allows, by name; those allowed with an\n"
"argument checked (openat, ioctl, prctl) last.");

static PyObject *confine_allowed(PyObject *self, PyObject *noargs)
{
	PyObject *t = PyTuple_New(N_ALLOWED + 3);
	size_t i;

	if (!t)
		return NULL;
	for (i = 0; i < N_ALLOWED + 3; i++) {
		const char *name = i < N_ALLOWED ? ALLOWED[i].name : CHECKED[i - N_ALLOWED].name;
		PyObject *s = PyUnicode_FromString(name);

		if (!s) {
			Py_DECREF(t);
			return NULL;
		}
		PyTuple_SET_ITEM(t, i, s);
	}
	return t;
}

static PyMethodDef confine_methods[] = {
	{"install", confine_install, METH_NOARGS, install_doc},
	{"allowed", confine_allowed, METH_NOARGS, allowed_doc},
	{NULL}
};

static struct PyModuleDef confine_module = {
	.m_base = PyModuleDef_HEAD_INIT,
	.m_name = "_confine",
	.m_doc = "xdpd worker system call filter",
	.m_size = -1,
	.m_methods = confine_methods,
};

PyMODINIT_FUNC PyInit__confine(void)
{
	return PyModule_Create(&confine_module);
}
