"""The architectures the pruning engine must handle (issue 3, item 9), MCU-sized.

Each is written the way people write them (nested modules, functional ops in
forward(), residual adds, concatenation), not flattened for the tracer's
benefit. Widths and depths follow the published shapes scaled to small
inputs so the tests stay fast; the benchmark uses the same classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1,
            act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class PlainCNN(nn.Module):
    """Conv-BN-ReLU x3 with pooling, dropout and a Linear after a flatten."""

    def __init__(self, in_ch: int = 1, num_classes: int = 10, width: int = 16,
                 image: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(in_ch, width), nn.MaxPool2d(2),
            conv_bn(width, 2 * width), nn.MaxPool2d(2),
            conv_bn(2 * width, 2 * width),
        )
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(2 * width * (image // 4) ** 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(torch.flatten(self.features(x), 1)))


class DSCNN(nn.Module):
    """Keyword-spotting DS-CNN (Zhang et al., "Hello Edge"): a strided stem, then
    depthwise-separable blocks, global average pooling and a classifier.

    Input is a [1, frames, coefficients] MFCC map; the MLPerf Tiny KWS model
    uses 49x10 and width 64, the tests a smaller width.
    """

    def __init__(self, num_classes: int = 12, width: int = 64, blocks: int = 4,
                 in_ch: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_ch, width, (10, 4), stride=(2, 2), padding=(5, 1), bias=False),
            nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.Sequential(*[
            nn.Sequential(conv_bn(width, width, 3, groups=width), conv_bn(width, width, 1))
            for _ in range(blocks)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.4)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(self.drop(self.pool(x).flatten(1)))


class MobileNetV1(nn.Module):
    """MobileNetV1 (Howard et al.) with a width multiplier; 0.25 is the MCU variant."""

    CFG = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (1024, 2))

    def __init__(self, num_classes: int = 10, alpha: float = 0.25, in_ch: int = 3) -> None:
        super().__init__()
        c = int(32 * alpha)
        layers: list[nn.Module] = [conv_bn(in_ch, c, 3, stride=2)]
        for cout, stride in self.CFG:
            cout = int(cout * alpha)
            layers += [conv_bn(c, c, 3, stride=stride, groups=c), conv_bn(c, cout, 1)]
            c = cout
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(x.view(x.size(0), -1))


class InvertedResidual(nn.Module):
    """Expand 1x1 -> depthwise 3x3 -> linear project 1x1, with an add when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn(cin, hidden, 1, act=nn.ReLU6))
        layers += [conv_bn(hidden, hidden, 3, stride=stride, groups=hidden, act=nn.ReLU6),
                   conv_bn(hidden, cout, 1, act=None)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2-style (Sandler et al.): inverted residual stages with adds."""

    def __init__(self, num_classes: int = 10, width: float = 0.35, in_ch: int = 3,
                 cfg: tuple[tuple[int, int, int, int], ...] = (
                     (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 2, 2))) -> None:
        super().__init__()
        c = max(8, int(32 * width))
        blocks: list[nn.Module] = [conv_bn(in_ch, c, 3, stride=1, act=nn.ReLU6)]
        for t, ch, n, s in cfg:
            cout = max(8, int(ch * width))
            for i in range(n):
                blocks.append(InvertedResidual(c, cout, s if i == 0 else 1, t))
                c = cout
        self.features = nn.Sequential(*blocks)
        self.head = conv_bn(c, 4 * c, 1, act=nn.ReLU6)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(4 * c, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.features(x))
        return self.classifier(x.mean((2, 3)))


class BasicBlock(nn.Module):
    """ResNet basic block; a 1x1 projection shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet8(nn.Module):
    """MLPerf Tiny's image-classification ResNet-8 (CIFAR-10 shape): 16-32-64, three stacks."""

    def __init__(self, num_classes: int = 10, in_ch: int = 3, widths: tuple[int, ...] = (16, 32, 64)
                 ) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_ch, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        blocks, c = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(BasicBlock(c, w, 1 if i == 0 else 2))
            c = w
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.layers(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


class MLPAutoencoder(nn.Module):
    """Anomaly-detection autoencoder (MLPerf Tiny's ToyADMOS shape, smaller): dense
    encoder, bottleneck, decoder back to the input size."""

    def __init__(self, features: int = 64, hidden: int = 48, bottleneck: int = 8) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, bottleneck), nn.ReLU())
        self.decoder = nn.Sequential(
            nn.Linear(bottleneck, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(torch.flatten(x, 1)))


class Fire(nn.Module):
    """SqueezeNet's fire module: squeeze 1x1, then 1x1 and 3x3 expands concatenated."""

    def __init__(self, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.e1 = nn.Conv2d(squeeze, expand, 1)
        self.e3 = nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.relu(self.squeeze(x))
        return F.relu(torch.cat([self.e1(s), self.e3(s)], dim=1))


class SplitMix(nn.Module):
    """Channel split: half the channels pass, half go through a conv, then concat
    (ShuffleNetV2's unit without the shuffle); split sizes live in forward()."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.half = c // 2
        self.branch = nn.Sequential(nn.Conv2d(c - c // 2, c - c // 2, 3, padding=1),
                                    nn.BatchNorm2d(c - c // 2), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat([a, self.branch(b)], dim=1)


class ConcatNet(nn.Module):
    """Fire modules (concat), a channel split, and a concat that feeds a flatten + Linear."""

    def __init__(self, in_ch: int = 1, num_classes: int = 10, image: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_ch, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fire1 = Fire(16, 8, 12)
        self.fire2 = Fire(24, 8, 16)
        self.mix = SplitMix(32)
        self.side = nn.Conv2d(16, 8, 1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear((32 + 8) * (image // 4) ** 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        y = self.mix(self.fire2(self.fire1(s)))
        y = torch.cat([y, F.relu(self.side(s))], 1)
        return self.fc(torch.flatten(self.pool(y), 1))


# name -> (factory, input shape with batch 1, the int8 IR can import the model)
MODELS: dict[str, tuple[type[nn.Module] | object, tuple[int, ...], bool]] = {
    "plain_cnn": (lambda: PlainCNN(), (1, 1, 16, 16), True),
    "ds_cnn": (lambda: DSCNN(width=24, blocks=3), (1, 1, 25, 10), True),
    "mobilenet_v1": (lambda: MobileNetV1(alpha=0.25), (1, 3, 32, 32), True),
    "mobilenet_v2": (lambda: MobileNetV2(), (1, 3, 32, 32), True),
    "resnet8": (lambda: ResNet8(), (1, 3, 32, 32), True),
    "mlp_autoencoder": (lambda: MLPAutoencoder(), (1, 64), True),
    "concat_net": (lambda: ConcatNet(), (1, 1, 16, 16), True),
}
