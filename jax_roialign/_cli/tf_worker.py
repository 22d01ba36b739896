"""TensorFlow's crop_and_resize in a process of its own, driven by the bench
(peers.TensorFlowWorker): TensorFlow's thread pools in the bench's own process slow XLA's
CPU kernels 2-4x, which would time the two runtimes' contention, not the two operators.

Run as a script, never imported (it imports numpy and tensorflow only):

    python tf_worker.py DIRECTORY THREADS

DIRECTORY/inputs.npz holds image, boxes, box_indices, crop_size and cotangent (NHWC).
After "ready VERSION", each line read from stdin is one command, answered with one line,
"ok" or "error MESSAGE", once its call has run to the end (TensorFlow's CPU ops run
synchronously):

    forward             tf.image.crop_and_resize, as a tf.function
    forward save        the same, its output saved to DIRECTORY/forward.npy
    forward_backward    the same, and the gradient w.r.t. the image through a GradientTape
"""

import os
import sys

import numpy as np


def main(directory, threads):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    inputs = np.load(os.path.join(directory, "inputs.npz"))
    image = tf.constant(inputs["image"])
    boxes, box_indices = tf.constant(inputs["boxes"]), tf.constant(inputs["box_indices"])
    cotangent = tf.constant(inputs["cotangent"])
    crop_size = tuple(int(v) for v in inputs["crop_size"])

    @tf.function
    def forward(x):
        return tf.image.crop_and_resize(x, boxes, box_indices, crop_size)

    @tf.function
    def forward_backward(x, c):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = tf.image.crop_and_resize(x, boxes, box_indices, crop_size)
        return out, tape.gradient(out, x, output_gradients=c)

    print(f"ready {tf.__version__}", flush=True)
    for line in sys.stdin:
        command = line.split()
        try:
            if command[:1] == ["forward"]:
                out = forward(image)
                if command[1:] == ["save"]:
                    np.save(os.path.join(directory, "forward.npy"), out.numpy())
            elif command == ["forward_backward"]:
                forward_backward(image, cotangent)
            else:
                raise ValueError(f"unknown command {line.strip()!r}")
            reply = "ok"
        except Exception as e:  # reported to the bench as the row's error
            reply = "error " + " ".join(f"{type(e).__name__}: {e}".split())[:500]
        print(reply, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
