"""`python -m jax_roialign demo` and `... bench`, end to end with tiny budgets, as a user
(or CI) runs them: in a subprocess, with jax's default configuration."""

import argparse
import importlib.util
import json
import pathlib
import struct
import subprocess
import sys
import time
import types
import zlib

import jax.numpy as jnp
import numpy as np
import pytest

import jax_roialign as jra
from jax_roialign._cli import demo as _demo
from jax_roialign._cli import peers as _peers
from jax_roialign._cli import timing as _timing
from jax_roialign._cli import workloads as _workloads

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(path):
    """(width, height, raw scanlines) of an 8-bit RGB PNG, every chunk's CRC checked."""
    data = open(path, "rb").read()
    assert data[:8] == PNG_SIGNATURE
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF, f"bad CRC in {tag}"
        chunks.append((tag, body))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    width, height, depth, colour = struct.unpack(">IIBB", chunks[0][1][:10])
    assert (depth, colour) == (8, 2), "expected 8-bit RGB"
    raw = zlib.decompress(b"".join(body for tag, body in chunks if tag == b"IDAT"))
    assert len(raw) == height * (1 + 3 * width)
    return width, height, raw


def run(*args, timeout=600):
    out = subprocess.run([sys.executable, "-m", "jax_roialign", *args],
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def test_demo_end_to_end_writes_a_valid_png(tmp_path):
    path = tmp_path / "sub" / "demo.png"  # the folder is created
    out = run("demo", "--steps", "3", "--out", str(path)).stdout
    width, height, _ = read_png(path)
    assert width > 1000 and height > 800
    assert "wrote" in out and "RoIAlign" in out and "RoIPool, bins averaged" in out
    assert "the operators run compiled kernels (cpu)" in out
    try:
        from PIL import Image
    except ImportError:
        pass
    else:
        with Image.open(path) as img:
            img.load()  # decodes every pixel
            assert img.size == (width, height)
    if _demo_has_flax():
        # The summary states the last step's accuracy of each head; a best is labelled.
        assert "held-out accuracy at the last step (step 3)" in out
        for _, _, _, title in _demo.HEADS:
            assert f"  {title} " in out
        assert "best" in out and "gradient norm reaching the backbone" in out
    else:
        assert "pip install jax_roialign[demo]" in out


def test_demo_pyramid_head_pools_from_both_levels():
    """The pyramid head differs from RoIAlign only if its mapper sends a real share of the
    boxes to each level, as the picture says (under PYRAMID_SPLIT pixels: the finer)."""
    _, boxes, _ = _demo.synthetic_batch(np.random.default_rng(12345), _demo.EVAL_BATCH)
    config = {k: v for k, v in _demo.PYRAMID.items() if k.startswith("canonical")}
    levels = np.asarray(jra.level_of(boxes, [1 / s for s in _demo.PYRAMID_STRIDES], **config))
    side = np.sqrt((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]))
    np.testing.assert_array_equal(levels, (side >= _demo.PYRAMID_SPLIT).astype(np.int32))
    assert 0.25 < levels.mean() < 0.75


def test_demo_writes_into_demo_output_by_default(tmp_path):
    args = _demo_args()
    assert args.out == str(pathlib.Path("demo_output") / "roialign_demo.png")
    ignored = (pathlib.Path(__file__).resolve().parents[1] / ".gitignore").read_text()
    assert "demo_output/" in ignored.splitlines()


def _demo_has_flax():
    return all(importlib.util.find_spec(name) for name in ("flax", "optax"))


def _demo_args(*argv):
    parser = argparse.ArgumentParser()
    _demo.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_png_writer_without_pillow_round_trips(tmp_path):
    rgb = (np.arange(5 * 7 * 3).reshape(5, 7, 3) * 3 % 256).astype(np.uint8)
    _demo.write_png(tmp_path / "x.png", rgb)
    width, height, raw = read_png(tmp_path / "x.png")
    assert (width, height) == (7, 5)
    rows = np.frombuffer(raw, np.uint8).reshape(5, 1 + 7 * 3)
    assert np.all(rows[:, 0] == 0)  # filter type 0 on every scanline
    np.testing.assert_array_equal(rows[:, 1:].reshape(5, 7, 3), rgb)


def test_picture_without_pillow(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)  # as if Pillow were not installed
    errors, labelled = _demo.picture(tmp_path / "p.png", "NCHW", jnp.float32)
    assert not labelled
    read_png(tmp_path / "p.png")
    # RoIAlign's crops are closer to the box's own pixels than every other column's.
    for other in ("roi_pool", "roi_pool_mean", "legacy"):
        assert np.all(errors["roi_align"] < errors[other])


def test_the_averaged_column_uses_roipool_bins():
    """The demo's "RoIPool, bins averaged" column averages the bins RoIPool maxes: their
    maximum, computed from the same edges, is roi_pool's output exactly."""
    feats = _demo.feature_map(_demo.render((0, 0, _demo.WIDTH, _demo.HEIGHT),
                                           _demo.HEIGHT, _demo.WIDTH))
    rows = np.concatenate([np.zeros((len(_demo.BOXES), 1), np.float32), _demo.BOXES], 1)
    pooled = np.asarray(jra.roi_pool(jnp.asarray(feats[None], jnp.float32), rows, _demo.OUT,
                                     1 / _demo.STRIDE, layout="NHWC"))
    height, width = feats.shape[:2]
    for k, (x1, y1, x2, y2) in enumerate(_demo.BOXES):
        (xs, xe), (ys, ye) = (_demo.roipool_bins(x1, x2, width),
                              _demo.roipool_bins(y1, y2, height))
        maxed = np.array([[feats[ys[i]:ye[i], xs[j]:xe[j]].max((0, 1))
                           for j in range(_demo.OUT)] for i in range(_demo.OUT)])
        np.testing.assert_array_equal(maxed.astype(np.float32), pooled[k])


def test_zoom_windows_show_one_object_each():
    """Each box's zoom window holds no other box (no other object bleeds into it)."""
    for i, box in enumerate(_demo.BOXES):
        wx1, wy1, wx2, wy2 = _demo.zoom_window(box)
        for j, (x1, y1, x2, y2) in enumerate(_demo.BOXES):
            if i != j:
                assert x2 <= wx1 or x1 >= wx2 or y2 <= wy1 or y1 >= wy2, (i, j)


def test_training_without_flax_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "flax", None)
    monkeypatch.setitem(sys.modules, "flax.linen", None)
    lines = []
    assert _demo.train(2, "NHWC", jnp.float32, lines.append) is None
    assert "pip install jax_roialign[demo]" in lines[0]


def test_bench_tiny_prints_the_table_and_valid_json():
    # With --json the table goes to stderr and the JSON document alone to stdout.
    out = run("bench", "--tiny", "--repeats", "1", "--json")
    doc = json.loads(out.stdout)
    assert list(doc["workloads"]) == ["tiny"] and "features read" in doc["gbps_definition"]
    memory = doc["machine"]["memory"]
    assert memory["read_gbps"] > 0 and memory["write_gbps"] > 0
    ours = [r for r in doc["results"] if r["impl"] == "jax_roialign"]
    assert any(r["op"] == "roi_align" for r in ours)
    for r in ours:
        assert not [k for k in r if k.endswith("_error")], r
        assert r["forward_ms"] > 0 and r["forward_backward_ms"] > 0
        assert r["forward_gbps"] > 0 and r["forward_ratio"] == 1.0
        assert r["forward_floor_ms"] > 0 and r["forward_floor_fraction"] > 0
        assert r["forward_backward_floor_ms"] > r["forward_floor_ms"]
    for r in doc["results"]:
        if r["impl"] != "jax_roialign" and "forward_max_abs_diff" in r:
            # The reference and torchvision compute the same function as ours.
            assert r["compared_with"] == "jax_roialign" and r["forward_max_abs_diff"] < 1e-4, r
    assert any(r["impl"] == "reference" for r in doc["results"])
    table = out.stderr
    assert "the jax_roialign rows run compiled kernels (cpu)" in table
    assert "fwd ms" in table and "fwd+bwd ms" in table and "floor" in table
    assert "memory, measured now: read" in table
    assert "roi_align" in table and "jax_roialign" in table


# The peers hidden, as in an environment without them: the suites must run without.
NO_PEERS = ("import sys; sys.modules['torch'] = sys.modules['torchvision'] = None; "
            "sys.modules['tensorflow'] = None; from jax_roialign._cli import main; "
            "sys.exit(main(sys.argv[1:]))")


def run_without_peers(*args, timeout=600):
    out = subprocess.run([sys.executable, "-c", NO_PEERS, *args], capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def _timed(r):
    assert not [k for k in r if k.endswith("_error")], r
    assert r["forward_ms"] > 0 and r["forward_backward_ms"] > 0
    assert r["forward_floor_fraction"] > 0 and r["forward_backward_floor_fraction"] > 0


def test_bench_layout_and_dtype_lists_cover_every_combination():
    out = run_without_peers("bench", "--tiny", "--repeats", "1", "--json", "--ops", "roi_align",
                            "--layout", "NCHW,NHWC", "--dtype", "float32,bfloat16")
    doc = json.loads(out.stdout)
    assert doc["layouts"] == ["NCHW", "NHWC"] and doc["dtypes"] == ["float32", "bfloat16"]
    combos = {(r["layout"], r["dtype"]) for r in doc["results"] if r["impl"] == "jax_roialign"}
    assert combos == {(lay, d) for lay in ("NCHW", "NHWC") for d in ("float32", "bfloat16")}
    for r in doc["results"]:
        _timed(r)
        if r["impl"] == "reference":  # bfloat16: the same function, rounded differently
            assert r["forward_max_abs_diff"] < (1e-4 if r["dtype"] == "float32" else 0.1), r
    assert "torchvision is not importable here: not timed" in out.stderr
    assert out.stderr.count("[ops] tiny") == 4


def test_bench_pyramid_suite_tiny():
    out = run_without_peers("bench", "--suite", "pyramid", "--tiny", "--repeats", "1", "--json")
    doc = json.loads(out.stdout)
    w = _workloads.WORKLOADS["tiny_pyramid"]
    assert list(doc["workloads"]) == ["tiny_pyramid"] and doc["suites"] == ["pyramid"]
    (block,) = doc["blocks"]
    assert sum(block["boxes_per_level"].values()) == w.rois
    assert len(block["boxes_per_level"]) == w.levels
    rows = {r["impl"]: r for r in doc["results"]}
    assert set(rows) == {"jax_roialign", "jax_roialign loop", "reference"}
    for r in rows.values():
        _timed(r)
        assert r["op"] == "multi_scale_roi_align" and r["samples"] > 0
    # The fused call, the per-level loop and the reference pool the same boxes alike.
    assert rows["jax_roialign loop"]["forward_max_abs_diff"] < 1e-5
    assert rows["reference"]["forward_max_abs_diff"] < 1e-4
    assert "boxes per level (torchvision's mapper): P2" in out.stderr
    assert "torchvision is not importable here: not timed" in out.stderr


def test_bench_rotated_crop_suite_tiny():
    out = run_without_peers("bench", "--suite", "rotated_crop", "--tiny", "--repeats", "1",
                            "--json", "--layout", "NCHW,NHWC")
    doc = json.loads(out.stdout)
    assert doc["suites"] == ["rotated_crop"]
    for layout in ("NCHW", "NHWC"):
        rows = [r for r in doc["results"] if r["layout"] == layout]
        ops = [(r["op"], r["impl"]) for r in rows]
        assert ops == [("roi_align", "jax_roialign"), ("roi_align_rotated", "jax_roialign"),
                       ("roi_align", "reference"), ("roi_align_rotated", "reference"),
                       ("crop_and_resize", "jax_roialign"), ("crop_and_resize", "reference")]
        for r in rows:
            _timed(r)
            assert r["forward_ns_per_sample"] > 0
        # Ratios per sample, against the group's first row (our roi_align; our crop).
        assert rows[0]["forward_ratio"] == 1.0 and rows[4]["forward_ratio"] == 1.0
        w = _workloads.WORKLOADS["tiny"]
        assert rows[4]["samples"] == w.rois * _workloads.CROP_SIZE ** 2 * w.shape[1]
        for r in rows[2:4] + rows[5:]:
            assert r["compared_with"] == "jax_roialign" and r["forward_max_abs_diff"] < 1e-4
    assert "tensorflow is not importable here: not timed" in out.stderr


def test_bench_suites_take_workloads_of_their_kind():
    out = subprocess.run([sys.executable, "-m", "jax_roialign", "bench", "--suite", "pyramid",
                          "--workload", "fpn"], capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "fpn_pyramid" in out.stdout + out.stderr


def test_interleaved_alternates_and_isolates_failures():
    calls = []

    def fn(name, fail_at=None):
        def call():
            calls.append(name)
            if len([c for c in calls if c == name]) == fail_at:
                raise RuntimeError(f"{name} broke")
            return name
        return call

    a, b, c = _timing.interleaved([fn("a"), fn("b"), fn("c", fail_at=2)], repeats=3)
    # First calls in turn, then rounds of one call each, the first rotating.
    assert calls[:3] == ["a", "b", "c"] and calls[3:6] == ["a", "b", "c"]
    assert calls[6:] == ["b", "a", "a", "b"]
    assert (a.calls, b.calls, a.result, b.result) == (3, 3, "a", "b")
    assert c.ms is None and "c broke" in str(c.error)


def test_interleaved_settles_each_timed_call():
    calls = []

    def fn(name):
        def call():
            calls.append(name)
        return call

    a, b = _timing.interleaved([fn("a"), fn("b")], repeats=2, settle=2)
    # After the first calls, each timed call follows `settle` untimed calls of its own.
    assert calls == ["a", "b"] + ["a"] * 3 + ["b"] * 3 + ["b"] * 3 + ["a"] * 3
    assert (a.calls, b.calls) == (2, 2)


def test_interleaved_settles_short_calls_by_time(monkeypatch):
    """With `settle_ms`, untimed calls go on until they have taken that long: a short
    callable gets many, a long one `settle` alone (on a clock each call advances by its
    callable's cost, so that the counts are exact)."""
    now = [0.0]
    monkeypatch.setattr(_timing, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    calls = []

    def fn(name, ms):
        def call():
            calls.append(name)
            now[0] += ms / 1e3
        return call

    short, long_ = _timing.interleaved([fn("s", 2.0), fn("l", 30.0)], repeats=1, settle=1,
                                       settle_ms=10.0)
    # First calls, then s: 5 untimed calls (10 ms) and a timed one; l: 1 untimed (30 ms
    # already over 10) and a timed one.
    assert calls == ["s", "l"] + ["s"] * 6 + ["l"] * 2
    assert (short.ms, long_.ms) == (pytest.approx(2.0), pytest.approx(30.0))


def test_interleaved_budget_and_progress():
    class Count:
        done = 0

        def advance(self, n=1):
            self.done += n

    progress = Count()
    slow, fast = _timing.interleaved([lambda: time.sleep(0.02), lambda: None], repeats=4,
                                     budget_s=0.01, progress=progress)
    # A first call over the budget (a sleep of twice it) is taken alone; the progress
    # still counts 1 + repeats calls per callable.
    assert slow.calls == 0 and slow.ms == slow.first_call_ms >= 20
    assert fast.calls >= 1 and fast.error is None
    assert progress.done == 2 * (1 + 4)


def test_memory_floor_is_measured_and_adds_reads_and_writes():
    rates = _timing.memory_rates(megabytes=16, repeats=1)
    assert rates.read_gbps > 0 and rates.write_gbps > 0 and rates.threads >= 1
    floor = rates.floor_ms(2e6, 1e6)
    assert floor == pytest.approx(2e6 / rates.read_gbps / 1e6 + 1e6 / rates.write_gbps / 1e6)


def test_pyramid_proposals_spread_over_the_levels():
    w = _workloads.WORKLOADS["fpn_pyramid"]
    rows = _workloads.pyramid_proposals(np.random.default_rng(0), w)
    assert rows.shape == (w.rois, 5)
    assert np.all(np.bincount(rows[:, 0].astype(int)) == w.rois // w.shape[0])
    height, width = w.image_size()
    assert (height, width) == (800, 1088)
    assert np.all(rows[:, 1:] >= 0) and np.all(rows[:, [1, 3]] <= width)
    assert np.all(rows[:, [2, 4]] <= height)
    counts = np.bincount(np.asarray(jra.level_of(rows, w.level_scales())), minlength=w.levels)
    assert len(counts) == w.levels and counts.min() > w.rois / (2 * w.levels), counts
    assert w.level_shapes()[-1] == (2, 256, 25, 34)


def test_bench_rejects_unknown_names():
    out = subprocess.run([sys.executable, "-m", "jax_roialign", "bench", "--ops", "roi_nope"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "roi_nope" in out.stdout + out.stderr


@pytest.mark.parametrize("command", ["demo", "bench", "check"])
def test_subcommand_help(command):
    out = run(command, "--help").stdout
    assert "usage: python -m jax_roialign " + command in out


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None,
                    reason="TensorFlow is importable here: the worker would start")
def test_tensorflow_worker_that_cannot_start_says_why():
    """The bench's TensorFlow runs in a worker process; one that cannot import TensorFlow
    is an error naming the cause (a row's error in the table), not a hang, and nothing
    is left running."""
    image = np.zeros((1, 4, 4, 2), np.float32)
    boxes, index = np.array([[0, 0, 1, 1]], np.float32), np.zeros(1, np.int32)
    with pytest.raises(RuntimeError, match="did not start: .*tensorflow"):
        _peers.tf_crop_timers(image, boxes, index, (2, 2), np.zeros((1, 2, 2, 2), np.float32))
    assert _peers.tensorflow_version() is None
