"""The record of what the supervisor attached: file handling and liveness."""
import json
import os
import stat
import subprocess
import sys

import pytest

from xdpd.control import record as run_record
from xdpd.control.record import Attachment, Owner, Record, RecordError

OWNER = Owner(pid=4567, start_time=891234, boot_id="b00t")
RECORD = Record(OWNER, (Attachment("in0", 5, 123, "native"),
                        Attachment("out0", 6, 124, None)))


@pytest.mark.parametrize("socket,path", [
    ("/run/xdpd/xdpd.sock", "/run/xdpd/xdpd.attached.json"),
    ("/run/xdpd/edge", "/run/xdpd/edge.attached.json"),
    ("/run/xdpd/a.b.sock", "/run/xdpd/a.b.attached.json"),
])
def test_record_lives_next_to_the_control_socket(socket, path):
    assert run_record.record_path(socket) == path


def test_written_record_reads_back_and_is_root_only(tmp_path):
    path = str(tmp_path / "xdpd.attached.json")
    run_record.write(path, RECORD)
    assert run_record.read(path) == RECORD
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["xdpd.attached.json"]       # no temporary file left
    doc = json.loads(open(path).read())
    assert doc["pid"] == 4567 and doc["start_time"] == 891234
    assert doc["netdevs"][0] == {"name": "in0", "ifindex": 5, "prog_id": 123,
                                 "xdp_mode": "native", "prog_tag": None}


def test_write_replaces_the_record_whole(tmp_path):
    path = str(tmp_path / "r.json")
    run_record.write(path, RECORD)
    with open(path + ".tmp", "w") as f:        # what a writer killed mid-way leaves
        f.write('{"half')
    run_record.write(path, Record(OWNER, ()))
    assert run_record.read(path) == Record(OWNER, ())
    assert not os.path.exists(path + ".tmp")


def test_no_record_is_none_and_remove_says_whether_there_was_one(tmp_path):
    path = str(tmp_path / "r.json")
    assert run_record.read(path) is None
    assert run_record.remove(path) is False
    run_record.write(path, RECORD)
    open(path + ".tmp", "w").close()
    assert run_record.remove(path) is True
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("text,why", [
    (b"", "Expecting value"),
    (b"\xc3\x28", "codec"),
    (b"[]", "expected format 1"),
    (b'{"format": 2}', "expected format 1"),
    (b'{"format": 1, "pid": "1", "start_time": 1, "boot_id": "b", "netdevs": []}',
     "'pid' is not a number"),
    (b'{"format": 1, "pid": true, "start_time": 1, "boot_id": "b", "netdevs": []}',
     "'pid' is not a number"),
    (b'{"format": 1, "pid": 1, "start_time": 1, "boot_id": "b"}',
     "'netdevs' is not a list"),
    (b'{"format": 1, "pid": 1, "start_time": 1, "boot_id": "b", "netdevs": [1]}',
     "a netdev entry is not an object"),
    (b'{"format": 1, "pid": 1, "start_time": 1, "boot_id": "b",'
     b' "netdevs": [{"name": "in0", "ifindex": 5, "prog_id": -1}]}',
     "'prog_id' is not a number"),
    (b'{"format": 1, "pid": 1, "start_time": 1, "boot_id": "b",'
     b' "netdevs": [{"name": "in0", "ifindex": 5, "prog_id": 9, "xdp_mode": 1}]}',
     "'xdp_mode' is not a string"),
])
def test_a_file_that_is_not_a_record_is_an_error_naming_it(tmp_path, text, why):
    path = tmp_path / "r.json"
    path.write_bytes(text)
    with pytest.raises(RecordError) as e:
        run_record.read(str(path))
    assert str(e.value).startswith(f"{path}: not an xdpd record (")
    assert why in str(e.value)


def starts(table):
    return lambda pid: table.get(pid)


def test_owner_alive_only_with_the_same_pid_start_time_and_boot():
    boot = lambda: "b00t"                        # noqa: E731
    assert run_record.owner_alive(OWNER, starts({4567: 891234}), boot)
    assert not run_record.owner_alive(OWNER, starts({}), boot)              # pid gone
    assert not run_record.owner_alive(OWNER, starts({4567: 999999}), boot)  # pid reused
    assert not run_record.owner_alive(OWNER, starts({4567: 891234}),
                                    lambda: "another boot")


def test_owner_liveness_of_real_processes():
    me = Owner.me()
    assert me.pid == os.getpid() and me.start_time > 0 and me.boot_id
    assert run_record.owner_alive(me)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert run_record.process_start_time(child.pid) is None
    assert not run_record.owner_alive(Owner(child.pid, me.start_time, me.boot_id))


def test_record_directory_is_made_root_only_and_removed_only_when_empty(tmp_path):
    path = str(tmp_path / "run" / "xdpd.attached.json")
    assert run_record.make_dir(path) is True
    assert stat.S_IMODE(os.stat(tmp_path / "run").st_mode) == 0o700
    assert run_record.make_dir(path) is False
    run_record.write(path, RECORD)
    assert run_record.remove_dir(path) is False
    run_record.remove(path)
    assert run_record.remove_dir(path) is True
    assert not os.path.exists(tmp_path / "run")


def test_a_directory_others_may_write_is_refused(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    d.chmod(0o777)
    with pytest.raises(OSError, match="writable by other users"):
        run_record.make_dir(str(d / "xdpd.attached.json"))


def test_a_record_with_a_malformed_program_tag_is_not_a_record(tmp_path):
    path = str(tmp_path / "xdpd.attached.json")
    run_record.write(path, Record(OWNER, (run_record.Attachment("in0", 5, 123, "native",
                                                            "0123456789abcdef"),)))
    assert run_record.read(path).attachments[0].prog_tag == "0123456789abcdef"
    doc = json.loads(open(path).read())
    doc["netdevs"][0]["prog_tag"] = "$(reboot)"
    with open(path, "w") as f:
        json.dump(doc, f)
    with pytest.raises(run_record.RecordError, match="'prog_tag' is not 16 hex digits"):
        run_record.read(path)
