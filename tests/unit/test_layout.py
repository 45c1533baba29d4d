"""The test tree itself: pytest imports test modules by their basename
(rootdir-relative, no packages), so two tiers must not share one."""
import collections
import os

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_test_module_names_are_unique_across_tiers():
    seen = collections.defaultdict(list)
    for tier in sorted(os.listdir(TESTS)):
        path = os.path.join(TESTS, tier)
        if not os.path.isdir(path):
            continue
        for name in os.listdir(path):
            if name.startswith("test_") and name.endswith(".py"):
                seen[name].append(tier)
    assert {n: t for n, t in seen.items() if len(t) > 1} == {}
