/* SPDX-License-Identifier: GPL-2.0 */
/*
 * cbpf.h: classic BPF (struct sock_filter, what libpcap's pcap_compile()
 * makes of a tcpdump expression), checked once and then run on a frame:
 * cbpf_check() and cbpf_run().  For `xdpd capture` filters, which the
 * workers run on frames (docs/ARCHITECTURE.md, "Capture").  Part of
 * _fastpath.c's unity build (after parse.h).  Pure: no state, no Python;
 * a program comes from the control socket, so it is hostile until
 * cbpf_check() passed it, and cbpf_run() runs only a checked one.
 *
 * The semantics are libpcap's bpf_filter() (pcap/bpf.h, the classic BPF
 * of the BSD packet filter): A and X 32-bit, 16 scratch words, loads in
 * network byte order, a load past the captured bytes or a division by a
 * zero X ends the program with 0 (no match); LEN is the frame's length on
 * the wire.  What cbpf_check() refuses, as the kernel's
 * bpf_check_classic() does: no instructions or more than BPF_MAXINSNS, an
 * opcode outside classic BPF, a jump past the end (jumps go forward only,
 * so every program ends), a scratch index past BPF_MEMWORDS, a division
 * or modulo by a constant 0, a last instruction that is not a return, a
 * scratch word read on some path before it is written (libpcap leaves
 * them uninitialized; pcap_compile() never reads one first).
 * A shift by 32 or more gives 0 (C leaves it undefined).
 */
#ifndef XDPD_CBPF_H
#define XDPD_CBPF_H

#include <linux/filter.h>

#ifndef BPF_MOD
#define BPF_MOD		0x90
#endif
#ifndef BPF_XOR
#define BPF_XOR		0xa0
#endif

/* Why cbpf_check() refused a program; 0: none. */
enum cbpf_refusal {
	CBPF_OK,
	CBPF_LENGTH,		/* 0 or more than BPF_MAXINSNS instructions */
	CBPF_OPCODE,		/* not a classic BPF instruction */
	CBPF_JUMP,		/* a jump past the last instruction */
	CBPF_SCRATCH,		/* a scratch word past BPF_MEMWORDS */
	CBPF_DIV_ZERO,		/* division or modulo by a constant 0 */
	CBPF_NO_RETURN,		/* the last instruction is not a return */
	CBPF_UNWRITTEN,		/* a scratch word read before it is written */
};

static const char *const cbpf_refusal_names[] = {
	[CBPF_OK] = "ok",
	[CBPF_LENGTH] = "no instructions, or more than 4096",
	[CBPF_OPCODE] = "an opcode that is not classic BPF",
	[CBPF_JUMP] = "a jump past the last instruction",
	[CBPF_SCRATCH] = "a scratch memory index past 15",
	[CBPF_DIV_ZERO] = "a division by a constant zero",
	[CBPF_NO_RETURN] = "a last instruction that is not a return",
	[CBPF_UNWRITTEN] = "a scratch memory word read before it is written",
};

/* The opcodes cbpf_run() knows: libpcap's and the kernel's classic set,
 * without the kernel's ancillary loads (negative offsets). */
static inline bool cbpf_known(uint16_t code)
{
	switch (code) {
	case BPF_LD | BPF_W | BPF_ABS: case BPF_LD | BPF_H | BPF_ABS:
	case BPF_LD | BPF_B | BPF_ABS: case BPF_LD | BPF_W | BPF_IND:
	case BPF_LD | BPF_H | BPF_IND: case BPF_LD | BPF_B | BPF_IND:
	case BPF_LD | BPF_W | BPF_LEN: case BPF_LD | BPF_IMM: case BPF_LD | BPF_MEM:
	case BPF_LDX | BPF_W | BPF_IMM: case BPF_LDX | BPF_W | BPF_MEM:
	case BPF_LDX | BPF_W | BPF_LEN: case BPF_LDX | BPF_B | BPF_MSH:
	case BPF_ST: case BPF_STX:
	case BPF_RET | BPF_K: case BPF_RET | BPF_A:
	case BPF_MISC | BPF_TAX: case BPF_MISC | BPF_TXA:
	case BPF_JMP | BPF_JA:
		return true;
	}
	if (BPF_CLASS(code) == BPF_ALU) {
		switch (BPF_OP(code)) {
		case BPF_ADD: case BPF_SUB: case BPF_MUL: case BPF_DIV: case BPF_MOD:
		case BPF_OR: case BPF_AND: case BPF_XOR: case BPF_LSH: case BPF_RSH:
			return (code & ~(BPF_CLASS(~0) | BPF_OP(~0) | BPF_SRC(~0))) == 0;
		case BPF_NEG:
			return code == (BPF_ALU | BPF_NEG);
		}
		return false;
	}
	if (BPF_CLASS(code) == BPF_JMP) {
		switch (BPF_OP(code)) {
		case BPF_JEQ: case BPF_JGT: case BPF_JGE: case BPF_JSET:
			return (code & ~(BPF_CLASS(~0) | BPF_OP(~0) | BPF_SRC(~0))) == 0;
		}
	}
	return false;
}

/*
 * Every scratch word a program reads is written before on every path to
 * the read (the kernel's check_load_and_stores()): jumps go forward, so
 * one pass carries the words surely written to each instruction, the
 * intersection over the ways in.  f is checked otherwise already.
 */
static bool cbpf_stores_first(const struct sock_filter *f, uint32_t n)
{
	uint16_t *in = malloc(n * sizeof(*in)), now = 0;
	bool ok = in != NULL;

	for (uint32_t pc = 0; ok && pc < n; pc++)
		in[pc] = 0xffff;
	for (uint32_t pc = 0; ok && pc < n; pc++) {
		uint16_t code = f[pc].code;

		now &= in[pc];
		if (code == BPF_ST || code == BPF_STX)
			now |= 1 << f[pc].k;
		else if (code == (BPF_LD | BPF_MEM) || code == (BPF_LDX | BPF_W | BPF_MEM))
			ok = now >> f[pc].k & 1;
		else if (code == (BPF_JMP | BPF_JA))
			in[pc + 1 + f[pc].k] &= now, now = 0xffff;
		else if (BPF_CLASS(code) == BPF_JMP)
			in[pc + 1 + f[pc].jt] &= now, in[pc + 1 + f[pc].jf] &= now, now = 0xffff;
		else if (BPF_CLASS(code) == BPF_RET)
			now = 0xffff;	/* the next is reached by jumps alone */
	}
	free(in);
	return ok;
}

static enum cbpf_refusal cbpf_check(const struct sock_filter *f, uint32_t n)
{
	if (n == 0 || n > BPF_MAXINSNS)
		return CBPF_LENGTH;
	for (uint32_t pc = 0; pc < n; pc++) {
		uint16_t code = f[pc].code;
		uint32_t k = f[pc].k, left = n - pc - 1;

		if (!cbpf_known(code))
			return CBPF_OPCODE;
		if ((code == BPF_ST || code == BPF_STX || code == (BPF_LD | BPF_MEM) ||
		     code == (BPF_LDX | BPF_W | BPF_MEM)) && k >= BPF_MEMWORDS)
			return CBPF_SCRATCH;
		if (BPF_CLASS(code) == BPF_ALU && BPF_SRC(code) == BPF_K &&
		    (BPF_OP(code) == BPF_DIV || BPF_OP(code) == BPF_MOD) && k == 0)
			return CBPF_DIV_ZERO;
		if (code == (BPF_JMP | BPF_JA) ? k >= left :
		    BPF_CLASS(code) == BPF_JMP && (f[pc].jt >= left || f[pc].jf >= left))
			return CBPF_JUMP;
	}
	if (BPF_CLASS(f[n - 1].code) != BPF_RET)
		return CBPF_NO_RETURN;
	return cbpf_stores_first(f, n) ? CBPF_OK : CBPF_UNWRITTEN;
}

/* Bytes [off, off + size) of the frame, when they were captured. */
static inline bool cbpf_load(const uint8_t *pkt, uint32_t caplen, uint32_t off, uint32_t size,
			     uint32_t *out)
{
	if (off > caplen || size > caplen - off)
		return false;
	if (size == 4)
		*out = (uint32_t)pkt[off] << 24 | (uint32_t)pkt[off + 1] << 16 |
		       (uint32_t)pkt[off + 2] << 8 | pkt[off + 3];
	else if (size == 2)
		*out = (uint32_t)pkt[off] << 8 | pkt[off + 1];
	else
		*out = pkt[off];
	return true;
}

static inline uint32_t cbpf_alu(uint16_t code, uint32_t a, uint32_t v)
{
	switch (BPF_OP(code)) {
	case BPF_ADD: return a + v;
	case BPF_SUB: return a - v;
	case BPF_MUL: return a * v;
	case BPF_DIV: return a / v;		/* v != 0: the caller's */
	case BPF_MOD: return a % v;
	case BPF_OR:  return a | v;
	case BPF_AND: return a & v;
	case BPF_XOR: return a ^ v;
	case BPF_LSH: return v < 32 ? a << v : 0;
	case BPF_RSH: return v < 32 ? a >> v : 0;
	default:      return (uint32_t)-(int32_t)a;	/* BPF_NEG */
	}
}

static inline bool cbpf_jump(uint16_t code, uint32_t a, uint32_t v)
{
	switch (BPF_OP(code)) {
	case BPF_JEQ: return a == v;
	case BPF_JGT: return a > v;
	case BPF_JGE: return a >= v;
	default:      return a & v;	/* BPF_JSET */
	}
}

/* Size in bytes of a BPF_LD's load (BPF_W, BPF_H, BPF_B). */
static inline uint32_t cbpf_size(uint16_t code)
{
	return BPF_SIZE(code) == BPF_W ? 4 : BPF_SIZE(code) == BPF_H ? 2 : 1;
}

/*
 * Run checked program f (n instructions) on a frame: caplen bytes at pkt
 * of a frame of wirelen.  Returns what the program returns: 0, no match;
 * otherwise the bytes to keep (a snap length).
 * over 80 lines: the interpreter's one switch, kept whole
 */
static uint32_t cbpf_run(const struct sock_filter *f, uint32_t n, const uint8_t *pkt,
			 uint32_t caplen, uint32_t wirelen)
{
	uint32_t a = 0, x = 0, mem[BPF_MEMWORDS] = {0}, v;

	for (uint32_t pc = 0; pc < n; pc++) {
		const struct sock_filter *i = &f[pc];
		uint16_t code = i->code;

		switch (BPF_CLASS(code)) {
		case BPF_LD:
			if (BPF_MODE(code) == BPF_ABS || BPF_MODE(code) == BPF_IND) {
				uint64_t off = (uint64_t)i->k +
					       (BPF_MODE(code) == BPF_IND ? x : 0);

				if (off > UINT32_MAX ||
				    !cbpf_load(pkt, caplen, (uint32_t)off, cbpf_size(code), &a))
					return 0;
			} else if (BPF_MODE(code) == BPF_LEN) {
				a = wirelen;
			} else if (BPF_MODE(code) == BPF_IMM) {
				a = i->k;
			} else {
				a = mem[i->k];
			}
			break;
		case BPF_LDX:
			if (BPF_MODE(code) == BPF_MSH) {
				if (!cbpf_load(pkt, caplen, i->k, 1, &v))
					return 0;
				x = (v & 0xf) << 2;
			} else if (BPF_MODE(code) == BPF_LEN) {
				x = wirelen;
			} else if (BPF_MODE(code) == BPF_IMM) {
				x = i->k;
			} else {
				x = mem[i->k];
			}
			break;
		case BPF_ST:
			mem[i->k] = a;
			break;
		case BPF_STX:
			mem[i->k] = x;
			break;
		case BPF_ALU:
			v = BPF_SRC(code) == BPF_X ? x : i->k;
			if ((BPF_OP(code) == BPF_DIV || BPF_OP(code) == BPF_MOD) && v == 0)
				return 0;
			a = cbpf_alu(code, a, v);
			break;
		case BPF_JMP:
			if (BPF_OP(code) == BPF_JA)
				pc += i->k;
			else
				pc += cbpf_jump(code, a, BPF_SRC(code) == BPF_X ? x : i->k) ?
				      i->jt : i->jf;
			break;
		case BPF_RET:
			return BPF_RVAL(code) == BPF_A ? a : i->k;
		case BPF_MISC:
			if (BPF_MISCOP(code) == BPF_TAX)
				x = a;
			else
				a = x;
			break;
		}
	}
	return 0;			/* unreachable for a checked program */
}

#endif /* XDPD_CBPF_H */
