"""The fast path under fuzz(): lying kernels and peers, killed workers.

fuzz() drives the workers' own loop step on synthetic rings with a seeded
random schedule (see its docstring and tests/fuzz_fastpath.py).  Here: a
short run of each mode on several seeds and geometries with its invariants
(fuzz() itself raises on any accounting violation); the same runs in a
build with AddressSanitizer and UBSan, in a child process; and a fast path
broken on purpose, to show that the crash-injection check catches a
recovery that loses its redo log.  `make fuzz` runs the long version.
"""
import contextlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "tests", "fuzz_fastpath.py")


def _load_script():
    spec = importlib.util.spec_from_file_location("fuzz_fastpath", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ff = _load_script()
# the harness (testing/fastpath_testing.c): everything of xdpd._fastpath, and fuzz()
_fastpath = ff.load(None)
SEEDS = range(1, 9)             # two of each geometry
STEPS = 100_000
LIES = ("kernel_bad_rx", "kernel_bad_completion", "kernel_bad_index", "peer_bad_fwd",
        "peer_bad_ret", "peer_bad_index", "bad_table", "bad_state")
KILLS = ("before_commit", "at_commit_point", "commit_pending", "mid_redo", "after_commit")


def geometry(seed):
    nworkers, fpw, _, _, _ = ff.GEOMETRIES[seed % len(ff.GEOMETRIES)]
    return nworkers, fpw


@pytest.mark.parametrize("seed", SEEDS)
def test_lying_kernel_and_peers_are_refused_and_counted(seed):
    r = ff.run_one(_fastpath, seed, STEPS, "lie")
    assert r["steps"] == STEPS and r["misbehave"] and not r["exact"]
    for lie in LIES:
        assert r["actions"][lie] > 0, lie
    assert r["actions"]["step"] > STEPS // 5
    # what the guards refused shows in the counter the metrics export
    assert r["bad_descs"] > 0


@pytest.mark.parametrize("seed", SEEDS)
def test_killed_workers_lose_no_frame_and_no_packet(seed):
    r = ff.run_one(_fastpath, seed, STEPS, "crash")
    nworkers, fpw = geometry(seed)
    assert r["exact"] and not r["misbehave"]
    # crashes at every point of the commit, each checked by fuzz() itself
    assert r["crashes"] == sum(r["kills"].values()) > 100
    for kill in KILLS:
        assert r["kills"][kill] > 0, kill
    assert r["scans"] > 50
    assert r["frames"] == nworkers * fpw
    # after the settling every delivered packet was sent once or dropped
    assert r["packets"] > 1000
    assert r["transmitted"] + r["dropped"] == r["packets"]
    assert r["transmitted"] > r["packets"] // 2
    assert r["bad_descs"] == 0


@pytest.mark.parametrize("seed", SEEDS)
def test_recovery_from_what_liars_left(seed):
    r = ff.run_one(_fastpath, seed, STEPS, "lie+crash")
    assert r["crashes"] > 100 and r["bad_descs"] > 0


# Fanout: groups of workers on one queue, the first of each owning the FILL
# and COMPLETION rings (fastpath.h, "Fanout"); geometries with 1 to 4
# workers give groups of 2 and 3, and a lone worker.
@pytest.mark.parametrize("fanout", (2, 3))
@pytest.mark.parametrize("seed", SEEDS)
def test_fanout_members_lose_no_frame_and_no_packet(seed, fanout):
    r = ff.run_one(_fastpath, seed, STEPS, "crash", fanout)
    nworkers, fpw = geometry(seed)
    assert r["exact"] and r["fanout"] == fanout
    assert r["crashes"] > 100 and r["scans"] > 50
    assert r["frames"] == nworkers * fpw
    assert r["transmitted"] + r["dropped"] == r["packets"] > 1000
    assert r["bad_descs"] == 0


@pytest.mark.parametrize("seed", SEEDS)
def test_fanout_groups_under_lies(seed):
    r = ff.run_one(_fastpath, seed, STEPS, "lie+crash", 2)
    assert r["crashes"] > 100 and r["bad_descs"] > 0


# Direct transmission: every worker has a TX socket of its own on every
# other worker's queue and forwards on it itself; the table now and then
# disallows one, and that egress takes the fwd ring meanwhile.
@pytest.mark.parametrize("mode", ("crash", "lie+crash"))
@pytest.mark.parametrize("seed", SEEDS)
def test_direct_sockets_lose_no_frame_and_no_packet(seed, mode):
    r = ff.run_one(_fastpath, seed, STEPS, mode, direct=True)
    assert r["direct"] and r["crashes"] > 100
    if mode == "crash":
        nworkers, fpw = geometry(seed)
        assert r["exact"] and r["scans"] > 50 and r["frames"] == nworkers * fpw
        assert r["transmitted"] + r["dropped"] == r["packets"] > 1000
        assert r["bad_descs"] == 0


@contextlib.contextmanager
def control_area(n: int, fpw: int, fs: int, entries: int):
    """(control area formatted for n workers, a UMEM for their frames)."""
    from xdpd.datapath.umem import Region

    ctl_region = Region("fuzz-control", _fastpath.control_size(n, fpw, fs, entries))
    umem = Region("fuzz-umem", n * fpw * fs)
    ctl = _fastpath.Control(ctl_region.fd, ctl_region.size)
    try:
        ctl.format(n, fpw, fs, entries)
        yield ctl, umem
    finally:
        ctl.close()
        ctl_region.close()
        umem.close()


def test_fanout_members_receive_into_the_owners_frames():
    """Members take packets off their RX rings, send and hand off; their
    own slot's frames never leave its free list; the owner's counts end
    with every frame back (fuzz() checked every step in between)."""
    n, fpw = 4, 60
    with control_area(n, fpw, 2048, 64) as (ctl, umem):
        for w in range(n):
            owner = w - w % 2
            ctl.set_worker(w, owner // 2, owner // 2, 0, lane=w, owner=owner,
                           members=[owner + 1] if w == owner else ())
        r = _fastpath.fuzz(ctl, umem.fd, umem.size, 3, STEPS, ring_sizes=(32, 32, 64, 64),
                           batch=16, crash_every=40, misbehave=False)
        assert r["exact"] and r["packets"] > 1000
        for member in (1, 3):
            s = ctl.worker_stats(member)
            assert s["rx_packets"] > 1000 and s["tx_packets"] > 1000
            assert ctl.worker_frames(member) == {"free": fpw, "rx": 0, "tx": 0, "handoff": 0}
        for owner in (0, 2):
            f = ctl.worker_frames(owner)
            assert f["tx"] == f["handoff"] == 0 and f["free"] + f["rx"] == fpw


def test_direct_sockets_carry_what_goes_to_other_queues():
    """With a direct socket on each other queue, forwarded packets leave on
    them (counted per socket) and come back home; the fwd rings carry only
    what the table did not let go direct."""
    n, fpw = 4, 60
    with control_area(n, fpw, 2048, 64) as (ctl, umem):
        for w in range(n):
            ctl.set_worker(w, w % 2, w, 0, lane=w, direct=[x for x in range(n) if x != w])
        r = _fastpath.fuzz(ctl, umem.fd, umem.size, 3, STEPS, ring_sizes=(32, 32, 64, 64),
                           batch=16, crash_every=40, misbehave=False)
        assert r["exact"] and r["packets"] > 1000
        for w in range(n):
            s = ctl.worker_stats(w)
            assert sum(s["direct_packets"][:n - 1]) > 5 * s["handoff_out"] > 0
            assert s["direct_packets"][n - 1:] == (0,) * (8 - n + 1)
            assert sum(s["direct_bytes"]) > sum(s["direct_packets"]) * 14
            f = ctl.worker_frames(w)
            assert f["tx"] == f["handoff"] == 0 and f["free"] + f["rx"] == fpw


def test_set_worker_refuses_direct_sockets_that_cannot_be():
    with control_area(3, 8, 2048, 8) as (ctl, _):
        with pytest.raises(ValueError, match="direct socket to 0: not another worker slot"):
            ctl.set_worker(0, 0, 0, 0, direct=[0])
        with pytest.raises(ValueError, match="direct socket to 3"):
            ctl.set_worker(0, 0, 0, 0, direct=[3])
        with pytest.raises(ValueError, match="at most 8"):
            ctl.set_worker(0, 0, 0, 0, direct=[1] * 9)
        with pytest.raises(ValueError, match="slot 3 bits 1 out of range"):
            ctl.write_table([None], direct_ok={3: 1})
        with pytest.raises(ValueError, match="slot 0 bits 256 out of range"):
            ctl.write_table([None], direct_ok={0: 256})


def test_set_worker_refuses_a_group_that_cannot_be():
    with control_area(3, 8, 2048, 8) as (ctl, _):
        with pytest.raises(ValueError, match="owner 3: no such worker slot"):
            ctl.set_worker(1, 0, 0, 0, owner=3)
        with pytest.raises(ValueError, match="member 0: not another worker slot"):
            ctl.set_worker(0, 0, 0, 0, members=[0])
        with pytest.raises(ValueError, match="only an owner has them"):
            ctl.set_worker(1, 0, 0, 0, owner=0, members=[2])
        with pytest.raises(ValueError, match="at most 15"):
            ctl.set_worker(0, 0, 0, 0, members=[1] * 16)


def test_a_run_without_lies_or_crashes_is_checked_exactly():
    with control_area(2, 40, 2048, 64) as (ctl, umem):
        ctl.set_worker(1, 1, 0, 0)
        r = _fastpath.fuzz(ctl, umem.fd, umem.size, 7, STEPS, misbehave=False)
        assert r["exact"] and r["crashes"] == 0 and r["frames"] == 80
        assert r["transmitted"] + r["dropped"] == r["packets"] > 1000
        # the area is left used: a second run must be refused
        with pytest.raises(ValueError, match="format"):
            _fastpath.fuzz(ctl, umem.fd, umem.size, 7, STEPS)


# Descriptor chains (multi-buffer): ports built with max_segs take packets
# of up to that many descriptors; the kernel delivers chains of up to
# min(max_segs, 6) fragments (a quarter of them with a partial checksum to
# complete over every fragment) and now and then one the ports must refuse
# (kernel_bad_chain: no end within max_segs, a zero-length fragment,
# fragment 0 under 128 B, a fragment past its frame; peer_bad_chain: a
# chain on a fwd ring spoilt the same ways), all checked exactly: each
# packet sent once as a whole chain, in order, every fragment's bytes
# intact; each refusable chain dropped whole, once, as chain_invalid, its
# frames home.
# One seed of each geometry; the geometry's batch and RX ring grow to
# max_segs where smaller.
CHAIN_SEEDS = range(1, 5)
CHAIN_LIES = ("kernel_bad_chain", "peer_bad_chain", "kernel_lying_chain", "peer_lying_chain")


def assert_chains_exact(r, seed, max_segs):
    nworkers, fpw = geometry(seed)
    assert r["exact"] and r["max_segs"] == max_segs
    assert r["frames"] == nworkers * fpw
    assert r["chains"] > r["packets"] // 4 > 1000
    assert r["fragments"] > r["packets"] + r["chains"]
    assert r["transmitted"] + r["dropped"] == r["packets"]
    assert r["transmitted"] > r["packets"] // 2
    # every refusable chain refused once, whole; its bad fragments counted
    assert r["chain_invalid"] == r["bad_chains"] > 50
    assert r["bad_descs"] > 0
    assert r["checksums"] > 100


@pytest.mark.parametrize("max_segs", (18, 5))
@pytest.mark.parametrize("seed", CHAIN_SEEDS)
def test_chains_are_sent_once_whole_and_intact(seed, max_segs):
    r = ff.run_one(_fastpath, seed, STEPS, "exact", max_segs=max_segs)
    assert_chains_exact(r, seed, max_segs)
    assert r["crashes"] == 0 and r["scans"] > 1000
    assert r["actions"]["kernel_bad_chain"] > 0 and r["actions"]["peer_bad_chain"] > 0
    assert "kernel_lying_chain" not in r["actions"]      # lies are misbehave's


@pytest.mark.parametrize("seed", CHAIN_SEEDS)
def test_killed_workers_send_no_half_chain(seed):
    r = ff.run_one(_fastpath, seed, STEPS, "crash", max_segs=5)
    assert_chains_exact(r, seed, 5)
    assert r["crashes"] == sum(r["kills"].values()) > 100
    for kill in KILLS:
        assert r["kills"][kill] > 0, kill
    assert r["scans"] > 50


@pytest.mark.parametrize("mode", ("lie", "lie+crash"))
@pytest.mark.parametrize("seed", CHAIN_SEEDS)
def test_lying_chains_are_refused_and_counted(seed, mode):
    r = ff.run_one(_fastpath, seed, STEPS, mode, max_segs=5)
    for lie in LIES + CHAIN_LIES:
        assert r["actions"][lie] > 0, lie
    assert r["chain_invalid"] > 1000 and r["bad_descs"] > 0


@pytest.mark.parametrize("seed", CHAIN_SEEDS)
def test_fanout_members_pass_chains_whole(seed):
    r = ff.run_one(_fastpath, seed, STEPS, "crash", 2, max_segs=5)
    assert_chains_exact(r, seed, 5)
    assert r["fanout"] == 2 and r["crashes"] > 100


def test_a_run_without_chains_draws_nothing_of_theirs():
    r = ff.run_one(_fastpath, 1, STEPS, "lie+crash")
    assert r["max_segs"] == 0 and r["chains"] == r["chain_invalid"] == 0
    assert not set(CHAIN_LIES) & set(r["actions"])


def test_fuzz_refuses_chains_a_batch_cannot_hold():
    with control_area(1, 40, 2048, 64) as (ctl, umem):
        with pytest.raises(ValueError, match="max_segs 18: 0, or 2..64 and at most batch_size"):
            _fastpath.fuzz(ctl, umem.fd, umem.size, 1, 10, batch=16, max_segs=18)


def test_a_seed_reproduces_its_run():
    a = ff.run_one(_fastpath, 5, STEPS, "lie+crash")
    b = ff.run_one(_fastpath, 5, STEPS, "lie+crash")
    c = ff.run_one(_fastpath, 6, STEPS, "lie+crash")
    for r in (a, b, c):
        r.pop("seconds")
    assert a == b
    assert a["actions"] != c["actions"]


@pytest.fixture(scope="module")
def gcc_and_libasan():
    runtime = ff.sanitizer_runtime()
    if not runtime:
        pytest.skip("needs gcc and libasan (Debian: apt-get install gcc) to build the "
                    "fast path with AddressSanitizer")
    return runtime


def test_fuzz_under_address_sanitizer(gcc_and_libasan, tmp_path):
    module = ff.build(str(tmp_path))
    r = subprocess.run([sys.executable, SCRIPT, "--module", module, "--steps", str(STEPS),
                        "--seeds", "1-4", "--json"],
                       env=ff.sanitizer_env(gcc_and_libasan), capture_output=True,
                       text=True, timeout=120)
    assert_clean_run(r)
    out = json.loads(r.stdout)
    assert out["summary"]["module"] == module      # the instrumented build ran
    assert out["summary"]["runs"] == 12 and out["summary"]["crashes_checked_exactly"] > 0
    # and with fanout groups (members without FILL or COMPLETION rings),
    # with direct sockets, and with descriptor chains in fanout groups (half
    # the steps: a chain's pointer made from a lying address before it was
    # checked, undefined behaviour, showed on every seed well before that)
    for extra in (["--fanout", "2"], ["--direct"],
                  ["--max-segs", "18", "--fanout", "2", "--steps", str(STEPS // 2)]):
        assert_clean_run(subprocess.run(
            [sys.executable, SCRIPT, "--module", module, "--steps", str(STEPS),
             "--seeds", "1-4", *extra, "--json"],
            env=ff.sanitizer_env(gcc_and_libasan), capture_output=True, text=True,
            timeout=120))


def assert_clean_run(r: subprocess.CompletedProcess) -> None:
    assert "ERROR: AddressSanitizer" not in r.stderr, r.stderr[-4000:]
    assert "runtime error" not in r.stderr, r.stderr[-4000:]
    assert r.returncode == 0, r.stderr[-4000:]


def run_mutant(tmp_path, mutant: tuple[str, str], unit: str, where: str, *args: str):
    """The fuzz script on a copy of the fast path with mutant applied to
    where (a function) in unit (the file of xdpd/datapath/ that holds it)."""
    if not shutil.which("gcc"):
        pytest.skip("needs gcc to build a broken copy of the fast path")
    try:
        path, changed = ff.mutant(str(tmp_path / "src"), *mutant)
    except ValueError as e:
        pytest.fail(f"{where} changed: update the mutant to break it again ({e})")
    assert changed == unit, f"{where} moved from {unit} to {changed}: update the mutant"
    module = ff.build(str(tmp_path), ["-O1"], fastpath=path)
    return subprocess.run([sys.executable, SCRIPT, "--module", module, "--steps", str(STEPS),
                           "--seeds", "1", "--modes", "crash", *args],
                          capture_output=True, text=True, timeout=120)


# The fast path's sources: _fastpath.c, the one translation unit, includes
# the others (a unity build, so that the loop step is inlined across them).
MAX_UNIT_LINES = 800          # a unit over this says why in its opening comment
MAX_FUNCTION_LINES = 80       # a function over this says why in the comment above it


def test_the_unity_file_includes_every_unit_and_setup_py_depends_on_each():
    includes = re.findall(r'^#include "([^"]+)"', open(ff.SOURCE).read(), re.M)
    units = [u for u in ff.units() if u != os.path.basename(ff.SOURCE)]
    assert sorted(includes) == units        # each once; none compiled alone
    setup = open(os.path.join(ROOT, "setup.py")).read()
    assert [u for u in units if f'"{u}"' not in setup] == [], \
        "setup.py's depends must name every unit, or an edit does not rebuild"


def functions(text: str):
    """(name, first line, lines, the comment above it) of each function
    defined in kernel style: the signature from column 0, "{" and "}" alone
    on their lines."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line != "{":
            continue
        start = i - 1
        while start > 0 and lines[start - 1] and lines[start - 1][0] not in " /#" \
                and not lines[start - 1].endswith(("*/", ";", "}")):
            start -= 1
        end = lines.index("}", i)
        comment = []
        j = start - 1
        while j >= 0 and lines[j].lstrip().startswith(("/*", "*")):
            comment.insert(0, lines[j])
            if lines[j].startswith("/*"):
                break
            j -= 1
        name = [n for n in re.findall(r"(\w+)\(", " ".join(lines[start:i]))
                if n != "__attribute__"][0]
        yield name, start + 1, end - start + 1, "\n".join(comment)


def test_units_and_functions_stay_small():
    long = []
    for unit in ff.units():
        text = open(os.path.join(ff.DATAPATH, unit)).read()
        head = text[:text.index("*/")]
        if text.count("\n") > MAX_UNIT_LINES and "over %d lines" % MAX_UNIT_LINES not in head:
            long.append(f"{unit}: {text.count(chr(10))} lines")
        for name, line, n, comment in functions(text):
            if n > MAX_FUNCTION_LINES and "over %d lines" % MAX_FUNCTION_LINES not in comment:
                long.append(f"{unit}:{line} {name}(): {n} lines")
    assert long == [], "split them, or say why (\"over N lines: ...\") in their comment"


def test_functions_finds_every_function():
    text = open(os.path.join(ff.DATAPATH, "rx.c")).read()
    found = {name: n for name, _, n, _ in functions(text)}
    assert {"port_receive_as", "port_receive_rules_as", "rx_done", "rules_sent"} <= set(found)
    assert len(found) == text.count("\n{\n")
    assert all(3 <= n <= MAX_FUNCTION_LINES for n in found.values())


def test_a_mutant_changes_the_one_unit_that_holds_its_text(tmp_path):
    """The mutants below break one unit of the fast path: the copy holds
    every unit the unity file includes (it finds them in its own directory
    first), and only the one with the text differs."""
    path, unit = ff.mutant(str(tmp_path / "src"), *MUTANT)
    assert unit == "commit.c" and path == str(tmp_path / "src" / "_fastpath.c")
    includes = re.findall(r'^#include "([^"]+)"', open(ff.SOURCE).read(), re.M)
    assert "commit.c" in includes and set(includes) <= set(ff.units())
    assert sorted(os.listdir(tmp_path / "src")) == ff.units()
    changed = [f for f in ff.units() if (tmp_path / "src" / f).read_text() !=
               open(os.path.join(ff.DATAPATH, f)).read()]
    assert changed == ["commit.c"]
    with pytest.raises(ValueError, match="exactly one"):
        ff.mutant(str(tmp_path / "twice"), "static inline", "")
    with pytest.raises(ValueError, match="none"):
        ff.mutant(str(tmp_path / "never"), "no such text in the fast path", "")


# Recovery that ignores a pending commit: its redo log is never applied.
MUTANT = ("\tif (word & 1) {\n\t\tuint32_t len = c->log_len;",
          "\tif (0) {\n\t\tuint32_t len = c->log_len;")


def test_crash_injection_catches_a_recovery_that_drops_the_redo_log(tmp_path):
    r = run_mutant(tmp_path, MUTANT, "commit.c", "port_recover()")
    assert r.returncode != 0
    assert "RuntimeError: fuzz seed 1, step " in r.stderr
    # caught by the frame accounting (where a frame is, or a worker's counts)
    assert "frame" in r.stderr.splitlines()[-1]


# A fanout member that forwards a frame of its owner to another worker of
# its own group: it would complete on the owner's COMPLETION ring as sent
# by the owner while the owner counts it lent.
GROUP_MUTANT = ("same_group(p, r->egress[lane % r->n_egress]) ?",
                "0 ?")


def test_crash_injection_catches_a_frame_lent_inside_its_group(tmp_path):
    r = run_mutant(tmp_path, GROUP_MUTANT, "loop.c", "port_load_rule()", "--fanout", "2")
    assert r.returncode != 0
    assert "committed free" in r.stderr.splitlines()[-1]


# A direct send whose ring index the commit forgets: a replacement reads the
# descriptors again and sends them twice, or loses them.
DIRECT_MUTANT = ("\t\t\tredo_note(p, FP_REDO_DIRECT_PROD, j, r->cached_prod);",
                 "\t\t\t(void)r;")


def test_crash_injection_catches_a_direct_send_left_out_of_the_commit(tmp_path):
    r = run_mutant(tmp_path, DIRECT_MUTANT, "commit.c", "port_commit_begin()", "--direct")
    assert r.returncode != 0
    assert "RuntimeError: fuzz seed 1, step " in r.stderr


# A chain handed over by a peer put on the TX ring without XDP_PKT_CONTD:
# the wire would carry each fragment as a packet of its own.
CONTD_MUTANT = ("d->options = j + 1 < c.n ? XDP_PKT_CONTD : 0;", "d->options = 0;")


def test_the_emulated_wire_catches_a_chain_sent_in_pieces(tmp_path):
    r = run_mutant(tmp_path, CONTD_MUTANT, "chain.c", "port_take_chains()", "--max-segs", "5")
    assert r.returncode != 0
    # on the wire, or on the TX ring at the next exact check
    assert re.search(r"delivered as \d descriptors, sent by worker \d as 1|"
                     r"\(\d+ bytes, 1 descriptors\), which is of another number of them",
                     r.stderr.splitlines()[-1]), r.stderr[-2000:]
