"""Soak: a long training loop keeps its memory flat, with the cyclic GC enabled and with it disabled.

The loop touches what a user's loop touches: an nn.MLP (fused affine rows), a custom op in the loss (a
Python backward rule held by the engine), an optimizer from fastgrad.optim, and fg.stats now and then.
"""
import gc
import os
import random

import pytest

import fastgrad as fg
from fastgrad._engine import memory_stats

STEPS, WARM_UP = 10_000, 1_000
MAX_RSS_GROWTH = 5 * 2 ** 20  # bytes


def _under_address_sanitizer():
    """Is libasan loaded (.ci/sanitize)? Its quarantine keeps freed memory resident (up to 256 MiB by
    default), so RSS growth says nothing there; the live-node count still does."""
    with open("/proc/self/maps", encoding="ascii", errors="replace") as f:
        return any("libasan" in line for line in f)


def _rss():
    """Resident set size of this process, in bytes (VmRSS of /proc/self/status)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


# (p - t)^2 as one custom node: its backward rule is a Python closure the engine holds until the node dies
squared_error = fg.custom_op(lambda p, t: (p - t) ** 2, lambda g, p, t: (2 * (p - t) * g, -2 * (p - t) * g),
                             name="squared_error")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc/self/status (Linux)")
@pytest.mark.parametrize("gc_enabled", [True, False], ids=["gc-enabled", "gc-disabled"])
def test_ten_thousand_training_steps_keep_memory_flat(gc_enabled):
    rng = random.Random(0)
    model = fg.nn.MLP(2, [8, 8, 1], activation="tanh", rng=rng)
    opt = fg.optim.Adam(model.parameters(), lr=0.01)
    points = [((rng.uniform(-1, 1), rng.uniform(-1, 1)), rng.choice((-1.0, 1.0))) for _ in range(6)]
    was_enabled = gc.isenabled()
    gc.collect()
    (gc.enable if gc_enabled else gc.disable)()
    try:
        losses, node_counts, loss = [], [], None
        for step in range(WARM_UP + STEPS):
            if step == WARM_UP:
                loss = None  # the previous step's graph
                rss_before, nodes_before = _rss(), memory_stats()["nodes_alive"]
            opt.zero_grad()
            loss = fg.sum([squared_error(model(x), t) for x, t in points])
            if step % 100 == 0:
                node_counts.append(fg.stats(loss).nodes)
            loss.backward()
            opt.step()
            losses.append(loss.data)
        loss = None
        rss_growth = _rss() - rss_before
        nodes_after = memory_stats()["nodes_alive"]
    finally:
        (gc.enable if was_enabled else gc.disable)()
    assert len(set(node_counts)) == 1            # every step built the same graph
    assert nodes_after == nodes_before           # no node outlived its step
    if not _under_address_sanitizer():
        assert rss_growth < MAX_RSS_GROWTH, f"RSS grew by {rss_growth / 2 ** 20:.2f} MiB over {STEPS} steps"
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])  # and it trained
