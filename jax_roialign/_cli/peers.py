"""The peers the bench times jax_roialign against, when importable in the same
interpreter (never dependencies): torchvision's operators and its MultiScaleRoIAlign,
imported here, lazily; TensorFlow's crop_and_resize, run in a process of its own
(tf_worker.py), as TensorFlow's thread pools in this one slow XLA's kernels 2-4x.

Each `*_timers` returns (forward, forward_backward) closures that run one call to the
end (CUDA synchronised; TensorFlow's CPU ops run synchronously) and return its output
(forward; the first call's, for a worker) or nothing, so that the bench can check the
peers' outputs against ours.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import tempfile
import weakref

import jax
import numpy as np

from .timing import cores

TORCHVISION, TENSORFLOW = "torchvision", "tensorflow"


def import_torchvision():
    """(torch, torchvision), or None where either is not importable."""
    try:
        import torch
        import torchvision
    except ImportError:
        return None
    return torch, torchvision


def tensorflow_version():
    """TensorFlow's version where this interpreter can import it (without importing it:
    the bench runs it in a worker), else None."""
    if "tensorflow" in sys.modules and sys.modules["tensorflow"] is None:
        return None  # hidden, as an environment without it
    try:
        if importlib.util.find_spec("tensorflow") is None:
            return None
    except (ImportError, ValueError):
        return None
    dists = importlib.metadata.packages_distributions().get("tensorflow") or []
    for dist in dists:
        try:
            return importlib.metadata.version(dist).split("+")[0]
        except importlib.metadata.PackageNotFoundError:
            continue
    return "(version unknown)"


def version(module):
    """The module's version without a build tag (+cpu, +cu130)."""
    return module.__version__.split("+")[0]


def torch_device():
    """Where torchvision runs: CUDA when JAX runs on a GPU and torch sees one, so the
    peers are timed on the same device; else the CPU."""
    import torch

    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def _torch_closures(call, inputs, cotangent):
    """`call(inputs)` forward (no autograd) and forward+backward (the gradient w.r.t.
    every tensor of `inputs`, a list)."""
    import torch

    device = torch_device()
    inputs = [x.to(device) for x in inputs]
    cotangent = cotangent.to(device)
    # CUDA launches are asynchronous: wait for the work, as block_until_ready does.
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def forward():
        with torch.no_grad():
            out = call(inputs)
        sync()
        return out

    def forward_backward():
        xs = [x.detach().requires_grad_(True) for x in inputs]
        call(xs).backward(cotangent)
        sync()

    return forward, forward_backward


def torch_timers(fn, kwargs, features, rois, cotangent):
    """torchvision.ops.<op>(features, rois, **kwargs); CPU tensors in, NCHW. The rois
    are cast to the features' dtype, as torchvision requires (in float16/bfloat16 it so
    pools rounded boxes)."""
    rois = rois.to(torch_device(), features.dtype)
    return _torch_closures(lambda xs: fn(xs[0], rois, **kwargs), [features], cotangent)


def torch_multiscale_timers(levels, rois, image_size, output_size, sampling_ratio, cotangent):
    """torchvision.ops.MultiScaleRoIAlign over the pyramid `levels` (NCHW tensors, finest
    first) with (K, 5) `rois` rows ordered by image: its forward takes a list of per-image
    boxes and infers the levels' scales from the image size, as in a detector. The boxes
    are cast to the levels' dtype, as torchvision requires."""
    import torch
    from torchvision.ops import MultiScaleRoIAlign

    names = [f"p{i}" for i in range(len(levels))]
    pooler = MultiScaleRoIAlign(names, output_size, sampling_ratio)
    device = torch_device()
    rois = rois.to(device, levels[0].dtype)
    images = int(levels[0].shape[0])
    boxes = [rois[rois[:, 0] == n, 1:] for n in range(images)]
    shapes = [tuple(image_size)] * images

    def call(xs):
        return pooler(dict(zip(names, xs)), boxes, shapes)

    with torch.no_grad():  # the scales are inferred (and cached) on the first call
        call([f.to(device) for f in levels])
    return _torch_closures(call, list(levels), cotangent)


class TensorFlowWorker:
    """tf_worker.py in a subprocess of this interpreter, its intra-op pool as large as
    XLA's, on the arrays given; `call(command)` runs one command to the end. The process
    ends with this object (or the interpreter)."""

    def __init__(self, image, boxes, box_indices, crop_size, cotangent):
        self._dir = tempfile.TemporaryDirectory(prefix="jax_roialign_tf_")
        np.savez(os.path.join(self._dir.name, "inputs.npz"), image=image, boxes=boxes,
                 box_indices=box_indices, crop_size=np.asarray(crop_size),
                 cotangent=cotangent)
        self._log = open(os.path.join(self._dir.name, "stderr.txt"), "w+")
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tf_worker.py")
        self._process = subprocess.Popen(
            [sys.executable, script, self._dir.name, str(cores())], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1)
        self._finalizer = weakref.finalize(self, TensorFlowWorker._stop, self._process,
                                           self._log, self._dir)
        first = self._process.stdout.readline().split()
        if first[:1] != ["ready"]:
            raise RuntimeError(f"the TensorFlow worker did not start: {self._stderr_tail()}")
        self.version = " ".join(first[1:])

    def _stderr_tail(self):
        self._log.flush()
        self._log.seek(0)
        lines = [line.strip() for line in self._log.read().splitlines() if line.strip()]
        return lines[-1] if lines else f"exit status {self._process.poll()}"

    def call(self, command):
        self._process.stdin.write(command + "\n")
        reply = self._process.stdout.readline().strip()
        if reply != "ok":
            raise RuntimeError(reply.removeprefix("error ") if reply else
                               f"the TensorFlow worker stopped: {self._stderr_tail()}")

    def saved_forward(self):
        return np.load(os.path.join(self._dir.name, "forward.npy"))

    @staticmethod
    def _stop(process, log, directory):
        try:
            process.stdin.close()
            process.wait(timeout=30)
        except Exception:
            process.kill()
            process.wait()
        log.close()
        directory.cleanup()


def tf_crop_timers(image, boxes, box_indices, crop_size, cotangent):
    """tf.image.crop_and_resize(image, boxes, box_indices, crop_size) as a tf.function
    (a graph, as jit), on NHWC numpy arrays, in a TensorFlowWorker: forward, and
    forward+backward through a GradientTape (the gradient w.r.t. the image, as ours).
    Each call's time includes a line written to and read from a pipe (tens of
    microseconds)."""
    worker = TensorFlowWorker(image, boxes, box_indices, crop_size, cotangent)
    saved = []

    def forward():
        if saved:
            worker.call("forward")
            return None
        worker.call("forward save")  # the first call, untimed: its output is compared
        saved.append(True)
        return worker.saved_forward()

    return forward, lambda: worker.call("forward_backward")
