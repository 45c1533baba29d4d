"""xdpd/privileges.py: a worker's capabilities after drop_all_capabilities().

Each drop runs in a child interpreter: it cannot be undone in this one."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from xdpd.kernel.privileges import CAP_FIELDS, PrivilegeError, check_dropped

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root: only a process with capabilities can drop them")
needs_setpriv = pytest.mark.skipif(not shutil.which("setpriv"),
                                   reason="needs setpriv (util-linux)")

CHILD = r"""
import json, sys, threading
from xdpd.kernel import privileges

def status():
    return {k: v for k, v in privileges.read_status().items()
            if k in privileges.CAP_FIELDS + ("NoNewPrivs",)}

if "--thread" in sys.argv:
    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()
before = status()
try:
    privileges.drop_all_capabilities()
except privileges.PrivilegeError as e:
    print(json.dumps({"error": str(e), "errno": e.errno, "before": before}))
else:
    print(json.dumps({"before": before, "after": status()}))
"""


def drop_in_child(*args: str, wrap: tuple[str, ...] = ()) -> dict:
    out = subprocess.run([*wrap, sys.executable, "-c", CHILD, *args],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


ZERO = "0000000000000000"
ALL_DROPPED = {**{k: ZERO for k in CAP_FIELDS}, "NoNewPrivs": "1"}


@needs_root
def test_every_set_is_empty_afterwards():
    result = drop_in_child()
    assert "error" not in result, result
    assert int(result["before"]["CapEff"], 16) != 0       # there was something to drop
    assert result["after"] == ALL_DROPPED


@needs_root
@needs_setpriv
def test_inheritable_and_ambient_are_emptied_too():
    # a process started with ambient capabilities (AmbientCapabilities=)
    wrap = ("setpriv", "--inh-caps=+net_raw,+net_admin", "--ambient-caps=+net_raw,+net_admin", "--")
    result = drop_in_child(wrap=wrap)
    assert "error" not in result, result
    assert int(result["before"]["CapAmb"], 16) != 0
    assert int(result["before"]["CapInh"], 16) != 0
    assert result["after"] == ALL_DROPPED


@needs_root
@needs_setpriv
def test_without_cap_setpcap_it_fails_with_errno_and_the_way_out():
    result = drop_in_child(wrap=("setpriv", "--bounding-set=-setpcap", "--"))
    assert result["errno"] == 1, result                 # EPERM
    assert result["error"] == (
        "PR_CAPBSET_DROP of capability 0 failed: EPERM (Operation not permitted); "
        "emptying the bounding set needs CAP_SETPCAP (keep it in the unit's "
        "CapabilityBoundingSet=)")


def test_refuses_a_process_with_threads():
    result = drop_in_child("--thread")
    assert result["errno"] is None
    assert result["error"].startswith("drop capabilities in a process with 2 threads: ")
    assert result["before"] == drop_in_child("--thread")["before"]     # nothing dropped


def test_the_read_back_accepts_only_all_zero():
    check_dropped(dict(ALL_DROPPED))


@pytest.mark.parametrize("field", CAP_FIELDS)
def test_the_read_back_names_what_is_left(field):
    fields = {**ALL_DROPPED, field: "0000000000003000"}
    with pytest.raises(PrivilegeError) as e:
        check_dropped(fields)
    assert e.value.errno is None
    assert str(e.value) == (
        f"capabilities still held after dropping them (/proc/self/status: "
        f"{field}=0000000000003000; expected CapInh/CapPrm/CapEff/CapBnd/CapAmb 0 "
        f"and NoNewPrivs 1)")


def test_the_read_back_wants_no_new_privs_and_every_field():
    fields = {k: v for k, v in ALL_DROPPED.items() if k != "CapAmb"}
    fields["NoNewPrivs"] = "0"
    with pytest.raises(PrivilegeError, match=r"CapAmb missing, NoNewPrivs=0;"):
        check_dropped(fields)
