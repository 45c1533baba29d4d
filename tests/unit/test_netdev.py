"""Which CPU runs a queue's NAPI poll: IRQ names and affinities, from fake /proc files."""
from xdpd.kernel.netdev import parse_cpulist, queue_irq_cpus, queue_irqs

INTERRUPTS = """\
            CPU0       CPU1       CPU2       CPU3
  24:          0          0          0          0  IR-PCI-MSI 1048576-edge      eth0
  25:       1200          0          0          0  IR-PCI-MSI 1048577-edge      eth0-TxRx-0
  26:          0       1300          0          0  IR-PCI-MSI 1048578-edge      eth0-TxRx-1
  27:          0          0        400          0  IR-PCI-MSI 1050624-edge      ice-eth1-TxRx-1
  28:          0          0          0        500  IR-PCI-MSI 1052672-edge      eth10-TxRx-1
  29:          0          0          0        500  IR-PCI-MSI 1052673-edge      eth2-rx-3
  30:          0          0          0        500  IR-PCI-MSI 1052674-edge      eth2-tx-3
 NMI:          0          0          0          0   Non-maskable interrupts
"""


def test_per_queue_irqs_are_found_by_the_names_drivers_give_them():
    assert queue_irqs("eth0", 1, INTERRUPTS) == [26]
    assert queue_irqs("eth0", 0, INTERRUPTS) == [25]
    assert queue_irqs("eth1", 1, INTERRUPTS) == [27]       # driver prefix
    assert queue_irqs("eth2", 3, INTERRUPTS) == [29]       # rx only, not the tx IRQ
    assert queue_irqs("eth1", 0, INTERRUPTS) == []


def test_a_netdev_name_is_not_matched_inside_a_longer_one():
    assert queue_irqs("eth1", 1, INTERRUPTS) == [27]       # not eth10's IRQ 28
    assert queue_irqs("th0", 1, INTERRUPTS) == []


def test_irq_cpus_prefer_the_effective_affinity(tmp_path):
    (tmp_path / "26").mkdir()
    (tmp_path / "26" / "effective_affinity_list").write_text("1\n")
    (tmp_path / "26" / "smp_affinity_list").write_text("0-3\n")
    (tmp_path / "25").mkdir()
    (tmp_path / "25" / "smp_affinity_list").write_text("0,2\n")
    assert queue_irq_cpus("eth0", 1, str(tmp_path), INTERRUPTS) == {1}
    assert queue_irq_cpus("eth0", 0, str(tmp_path), INTERRUPTS) == {0, 2}
    assert queue_irq_cpus("veth0", 0, str(tmp_path), INTERRUPTS) == frozenset()


def test_parse_cpulist():
    assert parse_cpulist("0-2,5,7-8\n") == {0, 1, 2, 5, 7, 8}
    assert parse_cpulist("") == frozenset()


def test_ethtool_reads_keep_errno_and_name_the_call():
    import errno

    import pytest

    from xdpd.kernel.netdev import Host
    for call, what in ((Host().rss_indirection, "ETHTOOL_GRXFHINDIR"),
                       (Host().ntuple_rule_count, "ETHTOOL_GRXCLSRLCNT")):
        with pytest.raises(OSError) as e:
            call("lo")                       # loopback has no RSS and no ntuple
        assert e.value.errno == errno.EOPNOTSUPP
        assert str(e.value).startswith(f"{what} on lo ") and "EOPNOTSUPP" in str(e.value)
    assert Host().driver("nosuchdev0") == "?"
