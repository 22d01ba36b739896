"""The peers the bench times jax_roialign against, when importable in the same
interpreter (never dependencies: each is imported here, lazily): torchvision's operators
and its MultiScaleRoIAlign, TensorFlow's crop_and_resize.

Each `*_timers` returns (forward, forward_backward) closures that run one call to the
end (CUDA synchronised; TensorFlow's CPU ops run synchronously) and return its output
(forward) or nothing, so that the bench can check the peers' outputs against ours.
"""

from __future__ import annotations

import jax

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


_TENSORFLOW = []


def import_tensorflow():
    """tensorflow, or None where it is not importable. Its intra-op pool gets as many
    threads as XLA's (the cores this process may run on), set before TensorFlow starts
    its runtime (it cannot change afterwards), so that both use the same cores."""
    if not _TENSORFLOW:
        try:
            import tensorflow as tf
        except ImportError:
            tf = None
        if tf is not None:
            tf.config.threading.set_intra_op_parallelism_threads(cores())
        _TENSORFLOW.append(tf)
    return _TENSORFLOW[0]


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


def tf_crop_timers(image, boxes, box_indices, crop_size, cotangent):
    """tf.image.crop_and_resize(image, boxes, box_indices, crop_size) as a tf.function
    (a graph, as jit), on NHWC numpy arrays: forward, and forward+backward through a
    GradientTape (the gradient w.r.t. the image, as ours)."""
    tf = import_tensorflow()
    image = tf.constant(image)
    cotangent = tf.constant(cotangent)
    boxes, box_indices = tf.constant(boxes), tf.constant(box_indices)

    @tf.function
    def forward(x):
        return tf.image.crop_and_resize(x, boxes, box_indices, crop_size)

    @tf.function
    def forward_backward(x, c):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = tf.image.crop_and_resize(x, boxes, box_indices, crop_size)
        return out, tape.gradient(out, x, output_gradients=c)

    return (lambda: forward(image), lambda: forward_backward(image, cotangent))
