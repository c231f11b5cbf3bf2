"""A MobileNetV2-style network (inverted residuals) on digits upsampled to 96x96, NHWC input.

The network the compression benchmark (``benchmarks/compress.py``) measures.
It is shaped so that compression pays the way it does on a real MobileNetV2:

- the input is NHWC ``(1, 96, 96, 1)`` and the pooling keeps its dimensions:
  the converter then emits no TRANSPOSE (it adds one for NCHW input and for a
  mean over NCHW's last two axes);
- the bottlenecks are wide (160-256 channels) and most weights sit in 1x1
  convolutions: each output channel of an int8 convolution carries about 28
  bytes besides its weights (per-channel scale and int64 zero point for weights
  and bias, int32 bias), so int8 shrinks a file to about 0.3x only when layers
  have wide inputs (the same network with 24-128-channel bottlenecks stayed at 0.34x);
- the work is mostly in 1x1 convolutions (XNNPACK's GEMMs, where int8 and
  channel pruning pay), each large enough that per-operator overhead does not
  hide the gain.

Same model file protocol as ``digits_cnn.py`` (``build_model``, ``example_input``,
``calibration_data``, ``eval_data``, ``train_data``).  Weights live beside this
file in ``digits_mobilenet96.pt`` (float16 on disk, 1.4 MB); run
``python examples/digits_mobilenet96.py`` to retrain them (about a minute on one CPU core;
98.9% on the eval split).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.nn import functional

WEIGHTS = Path(__file__).with_suffix(".pt")
SIZE = 96
CALIBRATION_SAMPLES = 128
#: (output channels, stride, expansion) per inverted residual block, after a stride-2 stem.
BLOCKS = ((24, 2, 4), (64, 2, 4), (160, 2, 4), (160, 1, 4), (256, 1, 2))
STEM, HEAD = 16, 1024


class InvertedResidual(nn.Module):
    """1x1 expand, 3x3 depthwise, 1x1 project; a skip connection when shapes allow."""

    def __init__(self, inputs: int, outputs: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = inputs * expand
        self.skip = stride == 1 and inputs == outputs
        self.block = nn.Sequential(
            nn.Conv2d(inputs, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, outputs, 1, bias=False), nn.BatchNorm2d(outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.skip else self.block(x)


class DigitsMobileNet96(nn.Module):
    """Stride-2 stem, inverted residual blocks down to 6x6, wide 1x1 head, pooled classifier."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, STEM, 3, 2, 1, bias=False),
                                   nn.BatchNorm2d(STEM), nn.ReLU6()]
        channels = STEM
        for outputs, stride, expand in BLOCKS:
            layers.append(InvertedResidual(channels, outputs, stride, expand))
            channels = outputs
        layers += [nn.Conv2d(channels, HEAD, 1, bias=False), nn.BatchNorm2d(HEAD), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(HEAD, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # NHWC in, as a camera pipeline hands images over; torch convolves NCHW, and the
        # converter folds this permute into its own layout.
        features = self.features(x.permute(0, 3, 1, 2))
        # keepdim: a mean that drops the axes makes the converter transpose back to NCHW.
        return self.classifier(features.mean(dim=(2, 3), keepdim=True).flatten(1))


def _split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    digits = load_digits()
    images = torch.from_numpy((digits.images / 16.0).astype(np.float32)[:, None])
    large = functional.interpolate(images, size=(SIZE, SIZE), mode="bilinear",
                                   align_corners=False).permute(0, 2, 3, 1).contiguous()
    return train_test_split(large.numpy(), digits.target, test_size=0.25, random_state=0,
                            stratify=digits.target)


def build_model() -> nn.Module:
    model = DigitsMobileNet96()
    model.load_state_dict(torch.load(WEIGHTS, weights_only=True))
    return model.eval()


def example_input() -> tuple[torch.Tensor]:
    return (torch.zeros(1, SIZE, SIZE, 1),)


def _samples(images: np.ndarray, labels: np.ndarray):
    for image, label in zip(images, labels, strict=True):
        yield (torch.from_numpy(image[None]),), int(label)


def calibration_data():
    train_x, _, train_y, _ = _split()
    return _samples(train_x[:CALIBRATION_SAMPLES], train_y[:CALIBRATION_SAMPLES])


def train_data():
    train_x, _, train_y, _ = _split()
    return _samples(train_x, train_y)


def eval_data():
    _, eval_x, _, eval_y = _split()
    return _samples(eval_x, eval_y)


def _half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """float16 on disk halves the repository's copy; the model loads and computes in float32."""
    return {name: value.half() if value.is_floating_point() else value
            for name, value in state.items()}


def train(epochs: int = 5, seed: int = 0) -> nn.Module:
    """Train from scratch on the training split with a fixed seed."""
    torch.manual_seed(seed)
    train_x, eval_x, train_y, eval_y = _split()
    x, y = torch.from_numpy(train_x), torch.from_numpy(train_y).long()
    model = DigitsMobileNet96()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, epochs=epochs,
                                                   steps_per_epoch=(len(x) + 31) // 32)
    for epoch in range(epochs):
        model.train()
        for batch in torch.randperm(len(x)).split(32):
            optimizer.zero_grad()
            functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
            schedule.step()
        print(f"epoch {epoch + 1}/{epochs}", flush=True)
    model.load_state_dict(_half(model.state_dict()))  # evaluate the weights that ship
    model.eval()
    with torch.no_grad():
        accuracy = (model(torch.from_numpy(eval_x)).argmax(1).numpy() == eval_y).mean()
    print(f"eval accuracy {accuracy:.4f} on {len(eval_y)} images")
    return model


if __name__ == "__main__":
    trained = train()
    torch.save(_half(trained.state_dict()), WEIGHTS)
    print(f"wrote {WEIGHTS}")
