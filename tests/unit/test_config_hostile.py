"""Hostile configuration files: every file up to the size cap is answered,
a configuration or its errors, in well under 2 s of CPU (a reload parses
in the supervisor's loop), with messages of bounded size that clip what
they show.  docs/SECURITY.md lists these with their measured times."""
import re
import time

import pytest

from xdpd.config import loader as cfg
from xdpd.config import values
from xdpd.config.file import read_config_file
from xdpd.config.model import ConfigError
from xdpd.config.schema import parse_config

CAP = cfg.MAX_FILE_BYTES


def bomb(levels: int = 9, fan: int = 9) -> str:
    """A "billion laughs" list: fan**levels values in a few hundred bytes."""
    inner = "&a0 [" + ",".join(["1"] * fan) + "]"
    for i in range(1, levels):
        inner = f"&a{i} [{inner}," + ",".join([f"*a{i - 1}"] * (fan - 1)) + "]"
    return inner


def fill(head: str, item: str, tail: str = "") -> str:
    """head + as many copies of item as fit under the cap + tail."""
    n = (CAP - len(head) - len(tail)) // len(item)
    return head + item * n + tail


HOSTILE = {
    "alias bomb in queues": "interfaces: [{name: in0, queues: " + bomb() + "}]\nforward: []\n",
    "alias bomb in forward": "interfaces: [{name: in0}]\nforward: " + bomb() + "\n",
    "flows up to the cap": fill("interfaces:\n  - name: in0\n    queues: [0]\n    steering:\n"
                                "      flows:\n", "      - {type: udp4, dst_port: 53, queue: 0}\n",
                                "forward: []\n"),
    "rules up to the cap": fill("interfaces: [{name: in0}, {name: out0}]\nforward:\n",
                                "  - {from: in0, to: out0}\n"),
    "bad interfaces up to the cap": fill("forward: []\ninterfaces:\n", "  - {name: 7}\n"),
    "a flat list up to the cap": fill("interfaces: [{name: in0, queues: [", "1,", "1]}]\n"),
    "a name as long as the cap allows": "interfaces:\n  - name: " + "x" * (CAP - 40) + "\n",
    "a key as long as the cap allows": "interfaces:\n  - {name: in0, " + "k" * (CAP - 60)
                                       + ": 1}\nforward: []\n",
    "nesting": "interfaces: " + "[" * 5000 + "]" * 5000 + "\n",
    "a number with a megabyte of digits": "workers: {batch_size: " + "9" * (CAP - 60) + "}\n",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_file_is_answered_quickly_and_briefly(case):
    text = HOSTILE[case]
    assert len(text.encode()) <= CAP, len(text)
    t0 = time.process_time()
    try:
        parse_config(text, "xdpd.yaml")
        answer = "a configuration"
    except ConfigError as e:
        answer = str(e)
    cpu = time.process_time() - t0
    print(f"\n{case}: {len(text)} B -> {len(answer)} B of answer in {cpu:.2f} s CPU")
    assert cpu < 2.0, cpu                                    # CPU, not wall: load-proof
    assert len(answer) < 16_000, answer[:300]                # clipped and capped
    assert "Traceback" not in answer


def test_an_alias_bomb_is_named_as_such():
    with pytest.raises(ConfigError) as e:
        parse_config("interfaces: [{name: in0, queues: " + bomb() + "}]\nforward: []\n", "x.yaml")
    assert re.fullmatch(rf"x\.yaml:1:\d+: more than {cfg.MAX_NODES} values, aliases expanded; "
                        r"a configuration needs a few thousand at most \(aliases that expand "
                        r"without end\?\)", str(e.value))


def test_a_long_value_is_clipped_in_the_message():
    with pytest.raises(ConfigError) as e:
        parse_config("interfaces:\n  - name: " + "x" * 20_000 + "\n", "x.yaml")
    assert str(e.value) == (f"x.yaml:2:11: '{'x' * 37}...' is 20000 characters long; no "
                            f"setting takes more than {cfg.MAX_SCALAR}")


def test_more_errors_than_the_cap_are_counted_not_listed():
    text = "forward: []\ninterfaces:\n" + "  - {name: 7}\n" * 500
    with pytest.raises(ConfigError) as e:
        parse_config(text, "x.yaml")
    lines = str(e.value).splitlines()
    assert len(lines) == values.MAX_ERRORS + 1
    assert lines[-1] == f"x.yaml: ... and {500 - values.MAX_ERRORS} more errors; fix these first"


def test_too_many_forward_rules_is_one_error():
    text = "interfaces: [{name: in0}, {name: out0}]\nforward:\n" + "  - {from: in0, to: out0}\n" * 2000
    with pytest.raises(ConfigError) as e:
        parse_config(text, "x.yaml")
    assert str(e.value) == ("x.yaml: forward: 2000 rules; at most 16 per interface and 64 "
                            "interfaces, so 1024 in all")


def test_text_or_a_file_over_the_cap_is_refused_before_parsing(tmp_path):
    big = "# " + "x" * CAP + "\n"
    with pytest.raises(ConfigError, match=f"characters; a configuration is at most {CAP} bytes"):
        parse_config(big, "x.yaml")
    path = tmp_path / "big.yaml"
    path.write_text(big)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match=f"larger than {CAP} bytes"):
        read_config_file(str(path))


def test_a_fifo_is_not_read(tmp_path):
    import os
    fifo = tmp_path / "x.yaml"
    os.mkfifo(fifo, 0o600)
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)      # a writer, so open() does not block
    try:
        with pytest.raises(ConfigError, match="not a regular file"):
            read_config_file(str(fifo))
    finally:
        os.close(fd)


def _set_acl(path, entries):
    """A POSIX ACL, as setfacl writes it: header, then (tag, perm, id)."""
    import os
    import struct
    raw = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)
    try:
        os.setxattr(path, "system.posix_acl_access", raw)
    except OSError as e:
        pytest.skip(f"no POSIX ACLs on {path}'s file system: {e}")


def test_a_file_an_acl_lets_another_user_write_is_refused(tmp_path):
    path = tmp_path / "xdpd.yaml"
    path.write_text("interfaces: [{name: in0}]\nforward: []\n")
    path.chmod(0o644)
    # user::rw- user:1234:rw- group::r-- mask::rw- other::r--
    _set_acl(str(path), [(0x01, 6, 0xFFFFFFFF), (0x02, 6, 1234), (0x04, 4, 0xFFFFFFFF),
                         (0x10, 6, 0xFFFFFFFF), (0x20, 4, 0xFFFFFFFF)])
    with pytest.raises(ConfigError) as e:
        read_config_file(str(path))
    assert str(e.value) == (f"{path}: an access control list lets uid 1234 write it; run "
                            f"'setfacl -b {path}' (getfacl {path} shows it)")
    # the same entry without write, or masked out: fine
    _set_acl(str(path), [(0x01, 6, 0xFFFFFFFF), (0x02, 6, 1234), (0x04, 4, 0xFFFFFFFF),
                         (0x10, 4, 0xFFFFFFFF), (0x20, 4, 0xFFFFFFFF)])
    assert read_config_file(str(path)).startswith("interfaces")
