"""growth_core: neural networks that choose their own size while they train.

The front door; everything else is one import deeper (``growth_core.growth``,
``growth_core.screen``, ...)::

    import growth_core as gc

    data = gc.load("digits")
    net = gc.build(gc.ArchitectureSpec(data.input_dim, data.num_classes, widths=(8,)))
    policy = gc.DepthWidthPolicy(
        gc.AtSteps((40, 80, 120)),
        width=gc.WidthGrowth("tiny", ridge=1.0),
        depth=gc.DepthGrowth(max_depth=3),
    )
    config = gc.TrainConfig(epochs=8, batch_size=64, lr=1e-2, optimizer="adam")
    result = gc.Trainer(net, data, config, policy=policy).fit()
"""

from .conv_spec import ConvSpec
from .data import Dataset, load, load_parquet
from .events import GrowthEvent
from .families import spec_from_json
from .flops import parameter_count
from .growth import AtSteps, Budget, DepthGrowth, DepthWidthPolicy, OnPlateau, WidthGrowth
from .init import Initializer
from .nets import build
from .screen import screen
from .spec import ArchitectureSpec
from .train import TrainConfig, Trainer

__all__ = [
    "ArchitectureSpec",
    "AtSteps",
    "Budget",
    "ConvSpec",
    "Dataset",
    "DepthGrowth",
    "DepthWidthPolicy",
    "GrowthEvent",
    "Initializer",
    "OnPlateau",
    "TrainConfig",
    "Trainer",
    "WidthGrowth",
    "build",
    "load",
    "load_parquet",
    "parameter_count",
    "screen",
    "spec_from_json",
]
