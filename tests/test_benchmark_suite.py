"""The GPU suite's measuring code (benchmarks/gpu.py), run on the CPU with NumPy and fuseray: a
workload's results must reach the correctness check (a suite that checks nothing would mark
every framework right, or, as once happened, every framework wrong)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gpu  # noqa: E402

import workloads  # noqa: E402

FRAMEWORKS = [gpu.NumPyFW, gpu.FuserayFW]


@pytest.mark.parametrize("name", list(workloads.WORKLOADS))
@pytest.mark.parametrize("framework", FRAMEWORKS, ids=lambda f: f.name)
def test_bench_workload_checks_the_results(framework, name, monkeypatch):
    from fuseray import config

    monkeypatch.setattr(config, "device", "cpu")
    fw = framework()
    host = workloads.inputs(name, 1 << 12, np.random.default_rng(1))
    ref = workloads.WORKLOADS[name](np, *(a.astype(np.float64) for a in host))
    ref = tuple(np.asarray(r, np.float64) for r in gpu.as_tuple(ref))
    r = gpu.bench_workload(fw, name, host, ref, repeat=2)
    assert r["rel_error"] < 1e-4
    assert r["median_ms"] > 0 and r["first_ms"] > 0
    wrong = tuple(x + 1.0 for x in ref)  # the same check must reject a wrong reference
    assert gpu.bench_workload(fw, name, host, wrong, repeat=1)["rel_error"] > 1e-4


def test_evaluating_returns_the_computed_results():
    import fuseray as fr

    a = fr.asarray(np.arange(4, dtype=np.float32))
    call = gpu.evaluating(lambda x: (x + 1, x * 2), [a])
    got = call()
    np.testing.assert_array_equal(fr.asnumpy(got[0]), [1, 2, 3, 4])
    np.testing.assert_array_equal(fr.asnumpy(got[1]), [0, 2, 4, 6])


def test_probe_ratios_pair_each_round_with_the_first_entry(monkeypatch, capsys):
    """benchmarks/probe.py's interleaved timing: a line's ratio is taken round by round against
    the first entry (a slow round slows both and cancels), and the A/A control repeats the
    first entry, whose ratio is then 1."""
    import probe

    drift = [1.0, 3.0, 1.5, 2.0, 1.0]  # the machine's speed, round by round
    calls = []

    def fake_timed_with(call, sync, repeat, batch):
        calls.append(call)
        return call() * drift[(len(calls) - 1) // 3]

    monkeypatch.setattr(probe, "timed_with", fake_timed_with)
    runs = {"a": (lambda: 1e-3, None), "b": (lambda: 1.25e-3, None)}
    times = probe.interleaved(runs, 10**6, rounds=5, shuffle=True, control=True)
    assert list(times) == ["a", "b", "a again (A/A control)"]
    assert times["b"] == [1.25e-3 * d for d in drift]
    lines = capsys.readouterr().out.splitlines()
    assert "x1.250 [1.250, 1.250] of the first" in lines[1]
    assert "x1.000 [1.000, 1.000] of the first" in lines[2]
    assert gpu.paired_ratio_quartiles([3.0, 1.0, 2.0], [1.0, 1.0, 1.0]) == (1.5, 2.0, 2.5)


def test_interleaved_batches_time_every_entry_once_a_round_in_shuffled_orders(monkeypatch):
    seen = []
    monkeypatch.setattr(gpu, "batch_size", lambda call, sync: 7)
    monkeypatch.setattr(gpu, "time_calls",
                        lambda call, sync, repeat, batch: seen.append((call(), batch)) or 1.0)
    entries = {k: ((lambda k=k: k), None) for k in "abc"}
    times = gpu.interleaved_batches(entries, rounds=6)
    assert times == {k: [1.0] * 6 for k in "abc"}
    assert all(batch == 7 for _, batch in seen)
    rounds = ["".join(k for k, _ in seen[i:i + 3]) for i in range(0, 18, 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)
    assert len(set(rounds)) > 1  # the order changes between rounds


def test_paired_against_best_peer_times_fuseray_beside_the_faster_peer(monkeypatch):
    """On the CPU, with NumPy standing in for the two peers: the faster one by the table's
    medians is chosen, both run interleaved with an A/A pair, and a wrong or missing fuseray
    gives no pairing."""
    from fuseray import config

    monkeypatch.setattr(config, "device", "cpu")
    frameworks = {"fuseray": gpu.FuserayFW(), "torch.compile": gpu.NumPyFW(),
                  "jax.jit": gpu.NumPyFW()}
    rows = {"fuseray": {"correct": True, "median_ms": 1.0},
            "torch.compile": {"correct": True, "median_ms": 2.0},
            "jax.jit": {"correct": True, "median_ms": 1.5}}
    host = workloads.inputs("triad", 1 << 12, np.random.default_rng(1))
    p = gpu.paired_against_best_peer(frameworks, "triad", rows, host, rounds=3)
    assert p["peer"] == "jax.jit" and p["rounds"] == 3
    for when in ("before", "after"):
        assert set(p["alone_ms"][when]) == {"fuseray", "jax.jit"}
        assert all(ms > 0 for ms in p["alone_ms"][when].values())
    assert {label: len(ts) for label, ts in p["round_ms"].items()} == {
        "fuseray": 3, "jax.jit": 3, "fuseray (A/A)": 3}
    for q1, q2, q3 in (p["speed"], p["aa"]):
        assert 0 < q1 <= q2 <= q3
    assert gpu.paired_verdict(p) in ("ahead", "behind", "tie")
    assert gpu.paired_verdict({"speed": (1.01, 1.02, 1.03)}) == "ahead"
    assert gpu.paired_verdict({"speed": (0.97, 0.98, 0.99)}) == "behind"
    assert gpu.paired_verdict({"speed": (0.99, 1.0, 1.01)}) == "tie"
    table = gpu.markdown_table({"gpu": "cpu", "date": "d", "copy_gbps": 1.0, "n": 1,
                                "workloads": {"triad": {}}, "paired": {"triad": p}})
    assert "| triad | jax.jit | x" in table
    rows["fuseray"]["correct"] = False
    assert gpu.paired_against_best_peer(frameworks, "triad", rows, host, rounds=3) is None
    assert gpu.paired_against_best_peer({"fuseray": frameworks["fuseray"]}, "triad",
                                        {"fuseray": {"correct": True}}, host, 3) is None


def test_the_table_and_the_pairing_time_one_made_function_per_workload(monkeypatch):
    """A framework's function for a workload is made once: a second ``torch.compile`` of one
    function is a second compile, and the pairing must time what the table timed."""
    from fuseray import config

    monkeypatch.setattr(config, "device", "cpu")
    made = []
    frameworks = {"fuseray": gpu.FuserayFW(), "jax.jit": gpu.NumPyFW()}
    for fw in frameworks.values():
        make = fw.make
        monkeypatch.setattr(fw, "make", lambda wl, make=make, fw=fw: made.append(fw) or make(wl))
    host = workloads.inputs("triad", 1 << 12, np.random.default_rng(2))
    ref = workloads.triad(np, *(a.astype(np.float64) for a in host))
    rows = {name: {**gpu.bench_workload(fw, "triad", host, ref, repeat=3), "correct": True}
            for name, fw in frameworks.items()}
    assert all(r["rel_error"] < 1e-6 for r in rows.values())
    assert gpu.paired_against_best_peer(frameworks, "triad", rows, host, rounds=2)["median_ms"]
    assert made == list(frameworks.values())
