"""Make ``tests/data/keras_cnn.tflite``: a float .tflite from another toolchain than edge's.

    python -m venv /tmp/tf && /tmp/tf/bin/pip install tensorflow-cpu==2.21.0
    /tmp/tf/bin/python tests/models/keras_tflite.py tests/data/keras_cnn.tflite [--mobilenet]

A small Keras 3 CNN (convolution, depthwise convolution, pooling, dense; seeded weights)
converted by TensorFlow's own ``TFLiteConverter`` with default options: float32 weights
and no quantization, laid out as Keras exports are, not as litert-torch writes them.
The file is kept in the repository so that the tests need no TensorFlow; this script
says how it was made. ``--mobilenet`` writes Keras's MobileNetV2 (alpha 0.35, 96x96,
seeded random weights: nothing is downloaded) instead, for benchmarks.
"""

from __future__ import annotations

import sys


def main(out: str, mobilenet: bool) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    if mobilenet:
        # Logits: an untrained network's softmax is uniform (0.1 everywhere), which edge
        # rightly calls degenerate outputs.
        model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35,
                                               weights=None, classes=10,
                                               classifier_activation=None)
    else:
        model = keras.Sequential([
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.DepthwiseConv2D(3, padding="same", activation="relu"),
            keras.layers.Conv2D(32, 1, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ])
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    with open(out, "wb") as handle:
        handle.write(converter.convert())


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: keras_tflite.py OUT.tflite [--mobilenet]")
    main(sys.argv[1], "--mobilenet" in sys.argv[2:])
