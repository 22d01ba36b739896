"""benchmarks/goals.py reads `python -m jax_roialign bench --json` runs and says which of
issue 13's goal rows hold and what each asks of the memory floor: its arithmetic on
rows whose answers are known, and its reading of a real (tiny) run's document."""

import io
import json
import pathlib
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import goals  # noqa: E402
from test_cli import run_without_peers  # noqa: E402  (the bench, the peers hidden)


def row(workload, layout, op, impl, dtype="float32", run=0, **times):
    """A result row as the bench writes it: `forward=10.0` gives forward_ms,
    `forward_floor=6.0` forward_floor_ms (and with both, forward_floor_fraction)."""
    r = dict(suite="ops", workload=workload, layout=layout, dtype=dtype, op=op, impl=impl,
             run=run)
    for key, value in times.items():
        r[f"{key}_ms"] = value
    for m in goals.MEASURES:
        if f"{m}_ms" in r and f"{m}_floor_ms" in r:
            r[f"{m}_floor_fraction"] = r[f"{m}_floor_ms"] / r[f"{m}_ms"]
    return r


TV = "torchvision 0.29.1"


def test_ratios_goals_and_what_they_ask_of_the_floor():
    rows = [
        # FPN NHWC forward: 310 / 10 = 31x >= 30x, held; the goal allows 310 / 30 ms, of
        # which the 6.2 ms floor is 60%.
        row("fpn", "NHWC", "roi_align", goals.OURS, forward=10.0, forward_floor=6.2),
        row("fpn", "NHWC", "roi_align", TV, forward=310.0, forward_floor=6.2),
        # NCHW forward: 300 / 20 = 15x < 20x, missed; asks 7 / (300 / 20) = 46.7%.
        row("fpn", "NCHW", "roi_align", goals.OURS, forward=20.0, forward_floor=7.0),
        row("fpn", "NCHW", "roi_align", TV, forward=300.0, forward_floor=7.0),
        # The head's roi_pool forward+backward: 12 / 1.3 = 9.2x, missed, and 10x would
        # ask 1.25 / 1.2 = 104% of the floor: beyond it.
        row("head", "NHWC", "roi_pool", goals.OURS, forward_backward=1.3,
            forward_backward_floor=1.25),
        row("head", "NHWC", "roi_pool", TV, forward_backward=12.0, forward_backward_floor=1.25),
        # A peer row without ours: not a measured goal row.
        row("mask", "NHWC", "ps_roi_pool", TV, forward=5.0, forward_floor=1.0),
    ]
    checks = {c.what: c for c in goals.ratio_checks(rows) if c.other == goals.TORCHVISION}
    a = checks["fpn NHWC roi_align forward"]
    assert a.held and a.times == pytest.approx(31) and a.goal == 30
    assert a.asks == pytest.approx(0.6)
    b = checks["fpn NCHW roi_align forward"]
    assert not b.held and b.times == pytest.approx(15) and b.goal == 20
    assert b.asks == pytest.approx(7 / 15)
    c = checks["head NHWC roi_pool forward+backward"]
    assert not c.held and c.asks == pytest.approx(1.25 / 1.2)
    assert checks["mask NHWC ps_roi_pool forward"].run is None
    # The C4 and mask heads' roi_align goals: the FPN level's within 25%.
    assert checks["c4 NHWC roi_align forward"].goal == pytest.approx(22.5)
    assert checks["mask NCHW roi_align forward+backward"].goal == pytest.approx(30)
    # Every goal row is listed, measured or not: roi_align's 4 cells (layouts x
    # measures) on each of fpn, c4 and mask, 4 against each peer on the head, 16 for each
    # other operator (4 workloads).
    assert len(goals.ratio_checks(rows)) == 3 * 4 + 2 * 4 + 3 * 16
    assert sum(c.run is not None for c in goals.ratio_checks(rows)) == 3

    [(what, run, fraction, ok)] = goals.floor_checks(rows)
    assert what == "fpn NHWC roi_align forward" and run == 0
    assert fraction == pytest.approx(0.62) and ok

    out = io.StringIO()
    held, measured = goals.report(rows, out)
    assert (held, measured) == (2, 4)
    text = out.getvalue()
    assert "2 of 4 measured goal rows held; ratio rows asking more than the floor: 1" in text
    assert "MISSED" in text and "not measured" in text


def test_each_run_is_its_own_row():
    rows = [row("fpn", "NHWC", "roi_align", impl, run=run, forward=t, forward_floor=6.0)
            for run, (ours, tv) in enumerate([(10.0, 320.0), (12.0, 300.0)])
            for impl, t in ((goals.OURS, ours), (TV, tv))]
    checks = [c for c in goals.ratio_checks(rows) if c.what == "fpn NHWC roi_align forward"]
    assert [(c.run, c.held) for c in checks] == [(0, True), (1, False)]
    out = io.StringIO()
    goals.report(rows, out)
    assert "run 0" in out.getvalue() and "run 1" in out.getvalue()


def test_half_precision_against_float32_of_the_same_run():
    rows = [row("mask", "NCHW", "roi_pool", goals.OURS, forward=10.0, forward_backward=30.0),
            row("mask", "NCHW", "roi_pool", goals.OURS, dtype="bfloat16", forward=8.0,
                forward_backward=31.0),
            # Another run's float16 has no float32 of its own to compare with.
            row("mask", "NCHW", "roi_pool", goals.OURS, dtype="float16", run=1, forward=1.0)]
    half = {what: (single, t, ok) for what, _, single, t, ok in goals.half_checks(rows)}
    assert half == {"mask NCHW roi_pool forward bfloat16": (10.0, 8.0, True),
                    "mask NCHW roi_pool forward+backward bfloat16": (30.0, 31.0, False)}


def test_reads_a_real_run(tmp_path):
    # A tiny run, its workload relabelled as the small head (whose goals name the
    # pure-JAX reference, timed here without the peers), so that the keys goals.py
    # reads are the bench's own.
    out = run_without_peers("bench", "--tiny", "--repeats", "1", "--json", "--ops", "roi_align",
                            "--layout", "NHWC", "--dtype", "float32,bfloat16")
    doc = json.loads(out.stdout)
    for r in doc["results"]:
        r["workload"] = "head"
    path = tmp_path / "run.json"
    path.write_text(json.dumps(doc))
    rows = goals.load([path])
    checks = [c for c in goals.ratio_checks(rows) if c.run is not None]
    assert {(c.what, c.other) for c in checks} == {
        ("head NHWC roi_align forward", goals.REFERENCE),
        ("head NHWC roi_align forward+backward", goals.REFERENCE)}
    assert all(c.ours_ms > 0 and c.other_ms > 0 and c.floor_ms > 0 for c in checks)
    assert len(goals.half_checks(rows)) == 2
    printed = subprocess.run([sys.executable, str(pathlib.Path(goals.__file__)), str(path)],
                             capture_output=True, text=True, timeout=120)
    assert printed.returncode == 0, printed.stderr
    assert "measured goal rows held" in printed.stdout


def test_position_sensitive_rows_say_the_floor_can_overstate():
    rows = [row("mask", "NCHW", "ps_roi_pool", impl, forward=t, forward_floor=1.0)
            for impl, t in ((goals.OURS, 1.5), (TV, 2.0))]
    out = io.StringIO()
    goals.report(rows, out)
    assert "ps_roi_align, ps_roi_pool: each input channel read only in its bins' regions" \
        in out.getvalue()
    out = io.StringIO()
    goals.report([row("mask", "NCHW", "roi_pool", impl, forward=t, forward_floor=1.0)
                  for impl, t in ((goals.OURS, 1.5), (TV, 2.0))], out)
    assert "bins' regions" not in out.getvalue()


def test_rows_whose_verdict_differs_between_runs():
    # Two rounds of the same rows: the FPN NHWC forward 32x then 25x against 30x (held in
    # one of two), its NCHW forward 15x twice against 20x (in none), the head's
    # forward+backward against the reference 2x twice (in every run).
    rows = []
    for run, (fpn_nhwc, fpn_nchw) in enumerate([(10.0, 20.0), (12.8, 20.0)]):
        rows += [row("fpn", "NHWC", "roi_align", goals.OURS, run=run, forward=fpn_nhwc,
                     forward_floor=6.0),
                 row("fpn", "NHWC", "roi_align", TV, run=run, forward=320.0, forward_floor=6.0),
                 row("fpn", "NCHW", "roi_align", goals.OURS, run=run, forward=fpn_nchw,
                     forward_floor=6.0),
                 row("fpn", "NCHW", "roi_align", TV, run=run, forward=300.0, forward_floor=6.0),
                 row("head", "NHWC", "roi_align", goals.OURS, run=run, forward_backward=1.0,
                     forward_backward_floor=0.1),
                 row("head", "NHWC", "roi_align", goals.REFERENCE, run=run,
                     forward_backward=2.0, forward_backward_floor=0.1)]
    by_row = goals.verdicts_by_row(goals.ratio_checks(rows), goals.floor_checks(rows),
                                   goals.half_checks(rows))
    assert by_row == {
        "fpn NHWC roi_align forward against torchvision": [True, False],
        "fpn NCHW roi_align forward against torchvision": [False, False],
        "head NHWC roi_align forward+backward against reference": [True, True],
        # The floor goal: 6 / 10 then 6 / 12.8 of the floor, against 50%.
        "fpn NHWC roi_align forward floor": [True, False]}
    out = io.StringIO()
    goals.report(rows, out)
    text = out.getvalue()
    assert ("over runs: of 4 rows measured in more than one run, 1 held in every run, "
            "1 in none, 2 in some:") in text
    assert "  fpn NHWC roi_align forward against torchvision: held in 1 of 2" in text
    assert "fpn NCHW roi_align forward against torchvision: held" not in text
    # One run: no such table.
    out = io.StringIO()
    goals.report([r for r in rows if r["run"] == 0], out)
    assert "over runs" not in out.getvalue()
