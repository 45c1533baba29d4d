"""What a reload may change live, and what it refuses (xdpd/reload.py)."""
import pytest

from xdpd.config.diff import Refused, diff
from xdpd.config.plan import plan_workers
from xdpd.config.schema import parse_config

BASE = """
interfaces:
  - name: in0
    queues: [0]
  - name: out0
    queues: [0]
forward:
  - from: in0
    to: out0
    set_dst_mac: "02:00:00:00:00:04"
  - from: out0
    action: drop
"""


class OneCpuHost:
    """Every netdev has 4 rx queues; one CPU."""

    def netdev_exists(self, name):
        return True

    def rx_queue_count(self, name):
        return 4

    def online_cpus(self):
        return frozenset({0})


def plans(text):
    config = parse_config(text)
    return config, list(plan_workers(config, OneCpuHost()))


def change(old_text, new_text, free_slots=2, zero_copy=False):
    old, old_plans = plans(old_text)
    new, new_plans = plans(new_text)
    return diff(old, new, old_plans, new_plans, free_slots, zero_copy)


def test_same_file_is_no_change():
    plan = change(BASE, BASE)
    assert plan.empty and plan.summary() == []


def test_a_rule_change_is_live_and_touches_no_worker():
    plan = change(BASE, BASE.replace("02:00:00:00:00:04", "02:00:00:00:00:05"))
    assert plan.rules_changed and not plan.add_workers and not plan.remove_workers
    assert plan.summary() == ["forwarding rules changed"]


def test_added_and_removed_queues_are_keyed_by_netdev_and_queue():
    plan = change(BASE, BASE.replace("queues: [0]\n  - name: out0", "queues: [1]\n  - name: out0"))
    assert [p.name for p in plan.add_workers] == ["in0/q1"]
    assert plan.remove_workers == ["in0/q0"]
    assert not plan.rules_changed


def test_an_interface_added_and_one_removed():
    new = """
interfaces:
  - name: in0
    queues: [0]
  - name: in1
    queues: [0]
forward:
  - from: in0
    to: in1
"""
    plan = change(BASE, new)
    assert [i.name for i in plan.add_interfaces] == ["in1"]
    assert plan.remove_interfaces == ["out0"]
    assert "interface in1 added" in plan.summary()
    assert "worker out0/q0 removed" in plan.summary()


def test_fallback_change_is_live():
    plan = change(BASE, BASE.replace("queues: [0]\n  - name: out0",
                                     "queues: [0]\n    fallback: drop\n  - name: out0"))
    assert [i.name for i in plan.queue_conf_changes] == ["in0"]
    assert plan.summary() == ["in0: fallback drop"]
    assert not (plan.add_workers or plan.remove_workers or plan.rules_changed)


def test_pass_to_kernel_change_is_live():
    with_rules = BASE.replace("queues: [0]\n  - name: out0",
                              "queues: [0]\n    pass_to_kernel: [{ethertype: arp}, "
                              "{ip_proto: tcp, dst_port: 22}]\n  - name: out0")
    plan = change(BASE, with_rules)
    assert [i.name for i in plan.pass_rule_changes] == ["in0"]
    assert not (plan.add_workers or plan.remove_workers or plan.queue_conf_changes)
    assert plan.summary() == ["in0: pass_to_kernel: arp; tcp dst port 22"]
    plan = change(with_rules, BASE)
    assert plan.summary() == ["in0: pass_to_kernel: none"]
    assert change(with_rules, with_rules).empty


@pytest.mark.parametrize("extra, words", [
    ("umem:\n  frame_size: 4096\n", ["umem.frame_size: 2048 -> 4096", "registered"]),
    ("rings:\n  rx: 1024\n", ["rings.rx: 2048 -> 1024", "bound"]),
    ("workers:\n  batch_size: 32\n", ["workers.batch_size: 64 -> 32"]),
    ("metrics:\n  listen: '127.0.0.1:9999'\n", ["metrics.listen"]),
    ("control:\n  socket: /run/other.sock\n", ["control.socket"]),
])
def test_what_is_fixed_at_start_is_refused_with_what_to_do(extra, words):
    with pytest.raises(Refused) as e:
        change(BASE, BASE + extra)
    msg = str(e.value)
    for w in words:
        assert w in msg
    assert "running configuration stays" in msg and "restart" in msg


def test_xdp_mode_of_a_running_interface_is_refused():
    with pytest.raises(Refused, match="interface in0: xdp_mode 'auto' -> 'generic'"):
        change(BASE, BASE.replace("queues: [0]\n  - name: out0",
                                  "queues: [0]\n    xdp_mode: generic\n  - name: out0"))


def test_more_new_workers_than_free_slots_is_refused_naming_the_setting():
    with pytest.raises(Refused) as e:
        change(BASE, BASE.replace("queues: [0]\n  - name: out0", "queues: [0, 1, 2]\n"
                                  "  - name: out0"), free_slots=1)
    assert "2 workers to add (in0/q1, in0/q2) but only 1 free worker slots" in str(e.value)
    assert "umem.spare_workers" in str(e.value)


def test_new_interface_must_match_the_running_socket_mode():
    new = BASE.replace("forward:", "  - name: in1\n    zero_copy: 'on'\nforward:")
    with pytest.raises(Refused, match="zero_copy on but the running sockets are in copy"):
        change(BASE, new)


def steered(steering: str) -> str:
    return BASE.replace("queues: [0]\n  - name: out0",
                        "queues: [0]\n    steering:\n" + steering + "  - name: out0")


def test_steering_flows_and_rss_change_live():
    old = steered("      flows:\n        - {type: udp4, dst_port: 53, queue: 0}\n")
    new = steered("      rss_queues: [0]\n")
    plan = change(old, new)
    assert [i.name for i in plan.steering_changes] == ["in0"]
    assert plan.summary() == ["in0: steering changed"]
    assert not plan.add_workers and not plan.remove_workers


def test_steering_channels_are_refused_live():
    with pytest.raises(Refused) as info:
        change(steered("      channels: 2\n"), steered("      channels: 1\n"))
    assert ("interface in0: steering.channels 2 -> 1: the channel count is the queue count "
            "the running workers and sockets were set up on") in str(info.value)


# --- fanout -------------------------------------------------------------------

def fanned(fanout: int, queues: str = "[0]", spread: str = "") -> str:
    extra = f"    fanout_spread: {spread}\n" if spread else ""
    return BASE.replace("queues: [0]\n  - name: out0",
                        f"queues: {queues}\n    fanout: {fanout}\n{extra}  - name: out0")


def test_fanout_of_a_running_interface_is_refused_with_what_to_do():
    with pytest.raises(Refused) as info:
        # 4 workers renamed (in0/q0 -> in0/q0.0 ...) would not fit 2 free slots either:
        # the fanout is the one refusal
        change(BASE, fanned(4), free_slots=2)
    assert str(info.value) == (
        "cannot apply live: interface in0: fanout 1 -> 4: the sockets sharing a queue are "
        "bound together: the owner's FILL and COMPLETION rings serve them all; remove in0 "
        "in one reload and add it back in the next; the running configuration stays; "
        "restart xdpd (systemctl restart xdpd) to apply such changes")
    with pytest.raises(Refused, match="interface in0: fanout 4 -> 2: "):
        change(fanned(4), fanned(2))


def test_fanout_spread_change_is_live():
    plan = change(fanned(4), fanned(4, spread="round_robin"))
    assert [i.name for i in plan.queue_conf_changes] == ["in0"]
    assert plan.queue_conf_changes[0].fanout_spread == "round_robin"
    assert plan.summary() == ["in0: fanout_spread round_robin"]
    assert not (plan.add_workers or plan.remove_workers or plan.rules_changed)


def test_fallback_and_fanout_spread_changed_together_on_one_line():
    new = fanned(2, spread="round_robin").replace("fanout: 2\n", "fanout: 2\n    fallback: drop\n")
    plan = change(fanned(2), new)
    assert plan.summary() == ["in0: fallback drop, fanout_spread round_robin"]


def test_an_interface_added_with_fanout_adds_every_member():
    new = BASE.replace("forward:", "  - name: in1\n    queues: [0, 2]\n    fanout: 3\nforward:")
    plan = change(BASE, new, free_slots=6)
    assert [i.name for i in plan.add_interfaces] == ["in1"]
    assert [(p.name, p.queue, p.member, p.fanout) for p in plan.add_workers] == [
        ("in1/q0.0", 0, 0, 3), ("in1/q0.1", 0, 1, 3), ("in1/q0.2", 0, 2, 3),
        ("in1/q2.0", 2, 0, 3), ("in1/q2.1", 2, 1, 3), ("in1/q2.2", 2, 2, 3)]
    with pytest.raises(Refused, match="6 workers to add .* but only 5 free worker slots"):
        change(BASE, new, free_slots=5)


def test_a_queue_of_a_fanout_interface_comes_and_goes_with_all_its_members():
    plan = change(fanned(3, "[0, 1]"), fanned(3, "[0]"))
    assert plan.remove_workers == ["in0/q1.0", "in0/q1.1", "in0/q1.2"]
    assert not plan.add_workers
    plan = change(fanned(2, "[0]"), fanned(2, "[0, 3]"))
    assert [p.name for p in plan.add_workers] == ["in0/q3.0", "in0/q3.1"]
    assert plan.summary() == ["worker in0/q3.0 added (CPU 0)", "worker in0/q3.1 added (CPU 0)"]


def test_an_interface_removed_takes_all_its_members():
    plan = change(fanned(2, "[0, 1]"), BASE.replace("  - name: in0\n    queues: [0]\n", "")
                  .replace("  - from: in0\n    to: out0\n    set_dst_mac: \"02:00:00:00:00:04\"\n", ""))
    assert plan.remove_interfaces == ["in0"]
    assert plan.remove_workers == ["in0/q0.0", "in0/q0.1", "in0/q1.0", "in0/q1.1"]


# --- every key's reload class comes from its declaration (config.py) ---------

import dataclasses  # noqa: E402

from xdpd.config import model as config_module  # noqa: E402
from xdpd.config.model import (Config, FlowRule, InterfaceConfig, Match, SteeringConfig,
                               reload_class)

MODELS = (Config, InterfaceConfig, SteeringConfig)

# A different valid value for each interface key a reload may see change.
# A key added to InterfaceConfig must be given one here (the test below
# says so), and then it is held to its declared class.
INTERFACE_SAMPLES = {
    "queues": (0, 1),
    "xdp_mode": "generic",
    "zero_copy": "on",
    "fallback": "drop",
    "pass_to_kernel": (Match(ethertype=0x0806),),
    "steering": SteeringConfig(flows=(FlowRule("udp4", 0, dst_port=53),)),
    "fanout": 2,
    "fanout_spread": "round_robin",
    "checksum": "off",
}


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_key_declares_what_a_reload_does_with_it(model):
    for f in dataclasses.fields(model):
        try:
            kind, how = reload_class(f)
        except KeyError:
            pytest.fail(f"{model.__name__}.{f.name} declares no reload class: declare it "
                        "with live(step), restart(why), identity() or meta() (config.py)")
        assert kind in ("live", "restart", "identity", "meta"), (f.name, kind)
        if kind == "live":
            assert how in config_module.RELOAD_STEPS, (f.name, how)
        if kind == "restart":
            assert len(how) > 20, f"{f.name}: say why a restart is needed"


def test_a_step_that_is_not_one_is_refused_at_declaration():
    with pytest.raises(ValueError, match="not a reload step"):
        config_module.live("someday")


@pytest.mark.parametrize("key", [f.name for f in dataclasses.fields(InterfaceConfig)
                                 if reload_class(f)[0] in ("live", "restart")])
def test_each_interface_key_does_what_it_declares(key):
    assert key in INTERFACE_SAMPLES, (
        f"InterfaceConfig.{key} is new: add a sample value to INTERFACE_SAMPLES so that "
        "this test holds it to its declared reload class")
    old, old_plans = plans(BASE)
    iface = old.interfaces[0]
    changed = dataclasses.replace(iface, **{key: INTERFACE_SAMPLES[key]})
    assert getattr(changed, key) != getattr(iface, key)
    new = dataclasses.replace(old, interfaces=(changed,) + old.interfaces[1:])
    new_plans = list(plan_workers(new, OneCpuHost()))
    kind, why = reload_class(next(f for f in dataclasses.fields(InterfaceConfig)
                                  if f.name == key))
    if kind == "restart":
        with pytest.raises(Refused) as e:
            diff(old, new, old_plans, new_plans, 4, False)
        assert f"interface in0: {key} " in str(e.value) and why in str(e.value)
    else:
        plan = diff(old, new, old_plans, new_plans, 4, False)
        assert not plan.empty, f"{key} changed, and the reload would apply nothing"


@pytest.mark.parametrize("section", [f.name for f in dataclasses.fields(Config)
                                     if reload_class(f)[0] == "restart"])
def test_each_section_fixed_at_start_is_refused_with_its_reason(section):
    old, old_plans = plans(BASE)
    value = getattr(old, section)
    first = dataclasses.fields(value)[0]
    samples = {"cpus": (0,), "frame_size": 4096, "rx": 512, "listen": None,
               "socket": "/run/xdpd/other.sock"}
    assert first.name in samples, f"{section}: add a sample for {first.name}"
    new = dataclasses.replace(old, **{section: dataclasses.replace(
        value, **{first.name: samples[first.name]})})
    with pytest.raises(Refused) as e:
        diff(old, new, old_plans, old_plans, 4, False)
    assert f"{section}.{first.name}" in str(e.value)
    assert reload_class(next(f for f in dataclasses.fields(Config)
                             if f.name == section))[1] in str(e.value)
