"""Issue 13's goal table, checked against runs of `python -m jax_roialign bench --json`:
for each goal row the run measured, our time, the peer's, the ratio, the goal, whether it
holds, and what the goal asks of the machine: the floor time over the time the goal
allows. The floor time is the bench's: every feature and box read once, the output (and
the feature gradient) written once, the output's gradient read once, at the read and
write rates the run measured. A goal that asks more than 100% of it needs less time than
those bytes take (within reach only where the rois leave part of the map unread); one
that asks 60-100% leaves little room for anything but the bytes. The position-sensitive
operators read each input channel only in its own bins' regions, so their rois can read
far less than the whole map the floor counts: their "asks" can overstate
(`benchmarks/distinct_reads.py` counts the cache lines their rois read).

    OPS=roi_align,roi_pool,ps_roi_align,ps_roi_pool
    python -m jax_roialign bench --workload fpn,c4,mask --ops $OPS --layout NHWC,NCHW \\
        --peers jax_roialign,torchvision --json > std.json
    # the small head, with the pure-JAX reference
    python -m jax_roialign bench --workload head --ops $OPS --layout NHWC,NCHW --json > head.json
    python -m jax_roialign bench --workload fpn,c4,mask --ops roi_align,roi_pool \\
        --layout NHWC,NCHW --dtype float32,float16,bfloat16 --peers jax_roialign --json > half.json
    python benchmarks/goals.py std.json head.json half.json

The goals hold for float32 against torchvision (each ratio: torchvision's time over
ours); the small head's also against the pure-JAX reference; the half-precision goal
compares our own float16 and bfloat16 rows with float32's of the same run. Goal rows a
run did not measure are listed as such, so that a partial run cannot read as met. The
legacy layers and max mode of roi_align have no peer in the bench and no row here.

Given several rounds (every round's files at once: `goals.py r1_*.json r2_*.json`), each
goal row is checked in every run that measured it, and a last table lists the rows whose
verdict differs between runs: on a shared machine a row within about 25% of its goal
can hold in one round and miss in the next, and only a row held in every round holds.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import NamedTuple

from jax_roialign._cli.bench import MEASURES, OURS, REFERENCE
from jax_roialign._cli.peers import TORCHVISION

LAYOUTS = ("NHWC", "NCHW")
STANDARD = ("fpn", "c4", "mask")  # the order: its table's rows print so
OTHER_OPS = ("roi_pool", "ps_roi_align", "ps_roi_pool")
HALF = ("float16", "bfloat16")
POSITION_SENSITIVE = ("ps_roi_align", "ps_roi_pool")


class Goal(NamedTuple):
    """Ours at least `times` the speed of `peer` (its time over ours), float32."""
    ops: tuple
    workloads: tuple
    layouts: tuple
    measures: tuple
    times: float
    peer: str = TORCHVISION


# "The same ratios within 25%" on the C4 and mask heads as on the FPN level.
_WITHIN = 0.75

#: The issue's goal table, row by row.
GOALS = (
    Goal(("roi_align",), ("fpn",), ("NHWC",), ("forward",), 30),
    Goal(("roi_align",), ("fpn",), ("NCHW",), ("forward",), 20),
    Goal(("roi_align",), ("fpn",), LAYOUTS, ("forward_backward",), 40),
    Goal(("roi_align",), ("c4", "mask"), ("NHWC",), ("forward",), 30 * _WITHIN),
    Goal(("roi_align",), ("c4", "mask"), ("NCHW",), ("forward",), 20 * _WITHIN),
    Goal(("roi_align",), ("c4", "mask"), LAYOUTS, ("forward_backward",), 40 * _WITHIN),
    Goal(("roi_align",), ("head",), LAYOUTS, MEASURES, 10),
    Goal(("roi_align",), ("head",), LAYOUTS, MEASURES, 1, REFERENCE),
    Goal(OTHER_OPS, STANDARD + ("head",), LAYOUTS, MEASURES, 10),
)

#: The FPN level's NHWC forward within twice the floor (floor time / time >= 0.5).
FLOOR_GOAL = (("roi_align", "fpn", "NHWC", "forward"), 0.5)


def _peer(impl: str) -> str:
    """The peer an implementation name is ("torchvision 0.29.1": torchvision)."""
    return impl.split(" ")[0]


def load(paths):
    """Every result row of the runs, each with the index of its run."""
    rows = []
    for i, path in enumerate(paths):
        with open(path) as f:
            rows += [dict(r, run=i) for r in json.load(f)["results"] if r.get("suite") == "ops"]
    return rows


def _cells(rows, workload, layout, dtype, op, measure, impl):
    """{run: row} of `impl`'s measured rows of one (workload, layout, dtype, op)."""
    return {r["run"]: r for r in rows
            if (r["workload"], r["layout"], r["dtype"], r["op"]) == (workload, layout, dtype, op)
            and _peer(r["impl"]) == impl and f"{measure}_ms" in r}


class Check(NamedTuple):
    what: str          # workload layout op measure (dtype)
    run: int | None    # None: not measured
    ours_ms: float = 0.0
    other_ms: float = 0.0
    times: float = 0.0     # other_ms / ours_ms
    goal: float = 0.0
    floor_ms: float = 0.0  # the measurement's floor time
    other: str = ""

    @property
    def held(self) -> bool:
        return self.run is not None and self.times >= self.goal

    @property
    def asks(self) -> float:
        """Floor time over the time the goal allows: the floor fraction it asks."""
        return self.floor_ms / (self.other_ms / self.goal)


def ratio_checks(rows, goals=GOALS):
    """A Check per goal row and run (one unmeasured Check where no run measured it)."""
    checks = []
    for g in goals:
        for op in g.ops:
            for workload in g.workloads:
                for layout in g.layouts:
                    for m in g.measures:
                        what = f"{workload} {layout} {op} {m.replace('_', '+')}"
                        ours = _cells(rows, workload, layout, "float32", op, m, OURS)
                        other = _cells(rows, workload, layout, "float32", op, m, g.peer)
                        runs = sorted(set(ours) & set(other))
                        if not runs:
                            checks.append(Check(what, None, goal=g.times, other=g.peer))
                        for run in runs:
                            o, p = ours[run], other[run]
                            checks.append(Check(what, run, o[f"{m}_ms"], p[f"{m}_ms"],
                                                p[f"{m}_ms"] / o[f"{m}_ms"], g.times,
                                                o[f"{m}_floor_ms"], g.peer))
    return checks


def floor_checks(rows, goal=FLOOR_GOAL):
    """(what, run, floor fraction, held) of the floor goal's row in each run."""
    (op, workload, layout, m), least = goal
    cells = _cells(rows, workload, layout, "float32", op, m, OURS)
    what = f"{workload} {layout} {op} {m.replace('_', '+')}"
    if not cells:
        return [(what, None, 0.0, False)]
    return [(what, run, r[f"{m}_floor_fraction"], r[f"{m}_floor_fraction"] >= least)
            for run, r in sorted(cells.items())]


def half_checks(rows):
    """(what, run, float32 ms, 16-bit ms, held) for every 16-bit row of ours whose run
    also timed float32: held where the 16-bit time is no longer."""
    out = []
    for r in rows:
        if _peer(r["impl"]) != OURS or r["dtype"] not in HALF:
            continue
        for m in MEASURES:
            if f"{m}_ms" not in r:
                continue
            base = _cells(rows, r["workload"], r["layout"], "float32", r["op"], m, OURS)
            if r["run"] in base:
                single = base[r["run"]][f"{m}_ms"]
                what = (f"{r['workload']} {r['layout']} {r['op']} {m.replace('_', '+')} "
                        f"{r['dtype']}")
                out.append((what, r["run"], single, r[f"{m}_ms"], r[f"{m}_ms"] <= single))
    return out


def verdicts_by_row(checks, floors, halves):
    """{row: [held, ...]}, a verdict per run that measured the row, over the three
    tables (a ratio row is named with its peer: the small head has two)."""
    by_row = {}
    for c in checks:
        if c.run is not None:
            by_row.setdefault(f"{c.what} against {c.other}", []).append(c.held)
    for what, run, _, ok in floors:
        if run is not None:
            by_row.setdefault(f"{what} floor", []).append(ok)
    for what, _, _, _, ok in halves:
        by_row.setdefault(f"{what} against float32", []).append(ok)
    return by_row


def report(rows, out=sys.stdout):
    """Prints the three tables and a summary (and, where a row was measured in more
    than one run, which rows' verdicts differ between runs); returns (held, measured)
    over all goals and runs."""
    runs = len({r["run"] for r in rows})
    tag = (lambda run: f"  run {run}") if runs > 1 else (lambda run: "")
    held = measured = 0

    def line(text):
        print(text, file=out)

    line("ratio goals (float32): the peer's time over ours; 'asks': floor time over the "
         "time the goal allows")
    line(f"{'row':<40}{'ours ms':>10}{'peer ms':>10}{'x':>9}{'goal':>7}{'asks':>8}  peer")
    checks = ratio_checks(rows)
    for c in checks:
        if c.run is None:
            line(f"{c.what:<40}{'not measured':>36}{c.goal:>7.1f}x{'':>8}  {c.other}")
            continue
        measured += 1
        held += c.held
        mark = "held" if c.held else "MISSED"
        line(f"{c.what:<40}{c.ours_ms:>10.2f}{c.other_ms:>10.2f}{c.times:>8.2f}x"
             f"{c.goal:>6.1f}x{100 * c.asks:>7.0f}%  {c.other} {mark}{tag(c.run)}")
    if any(c.run is not None and c.what.split(" ")[2] in POSITION_SENSITIVE for c in checks):
        line(f"({', '.join(POSITION_SENSITIVE)}: each input channel read only in its bins' "
             f"regions, so 'asks' can overstate)")
    (_, least) = FLOOR_GOAL
    line(f"\nfloor goal: floor time / time at least {100 * least:.0f}%")
    for what, run, fraction, ok in floor_checks(rows):
        if run is None:
            line(f"{what:<40}not measured")
            continue
        measured += 1
        held += ok
        line(f"{what:<40}{100 * fraction:>9.1f}%  {'held' if ok else 'MISSED'}{tag(run)}")
    half = half_checks(rows)
    line("\nhalf precision: ours, no slower than float32 in the same run")
    line(f"{'row':<48}{'float32':>9}{'16-bit':>9} ms")
    if not half:
        line("not measured (no run timed float32 and a 16-bit dtype together)")
    for what, run, single, t, ok in half:
        measured += 1
        held += ok
        line(f"{what:<48}{single:>9.2f}{t:>9.2f} ms  {'held' if ok else 'MISSED'}{tag(run)}")
    beyond = [c for c in checks if c.run is not None and c.asks > 1]
    line(f"\n{held} of {measured} measured goal rows held; ratio rows asking more than the "
         f"floor: {len(beyond)}")
    by_row = verdicts_by_row(checks, floor_checks(rows), half)
    repeated = {row: v for row, v in by_row.items() if len(v) > 1}
    if repeated:
        always = sum(all(v) for v in repeated.values())
        never = sum(not any(v) for v in repeated.values())
        mixed = {row: v for row, v in repeated.items() if any(v) and not all(v)}
        line(f"\nover runs: of {len(repeated)} rows measured in more than one run, {always} "
             f"held in every run, {never} in none, {len(mixed)} in some:")
        for row, v in mixed.items():
            line(f"  {row}: held in {sum(v)} of {len(v)}")
    return held, measured


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="files of `python -m jax_roialign bench --json`")
    args = p.parse_args(argv)
    rows = load(args.runs)
    if not rows:
        p.error("no results of the ops suite in " + ", ".join(args.runs))
    report(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
