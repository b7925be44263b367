"""When, where and how networks grow."""

from ..events import Change, Decision, Growth, GrowthEvent, GrowthPolicy, TrainingState
from .bottleneck import (
    BottleneckStatistics,
    GradMaxGrowth,
    HeldOutGain,
    NeuronProposal,
    NeuronSelection,
    NeuronStrategy,
    RandomGrowth,
    SingularValueThreshold,
    SiteBottleneck,
    TinyGrowth,
    TinyWithUpdateGrowth,
    WidthDecision,
    bottleneck_statistics,
    bottlenecks,
    widen,
)
from .conv_width import (
    ConvMoments,
    ConvSite,
    ConvWidthStatistics,
    conv_width_statistics,
)
from .policy import DepthWidthPolicy
from .sensitivity import Sensitivities, insert, positions, sensitivities
from .settings import Budget, DepthGrowth, PolicyError, WidthGrowth
from .triggers import AtFractions, AtSteps, OnPlateau, Trigger

__all__ = [
    "AtFractions",
    "AtSteps",
    "BottleneckStatistics",
    "Budget",
    "Change",
    "ConvMoments",
    "ConvSite",
    "ConvWidthStatistics",
    "Decision",
    "DepthGrowth",
    "DepthWidthPolicy",
    "GradMaxGrowth",
    "Growth",
    "GrowthEvent",
    "GrowthPolicy",
    "HeldOutGain",
    "NeuronProposal",
    "NeuronSelection",
    "NeuronStrategy",
    "OnPlateau",
    "PolicyError",
    "RandomGrowth",
    "Sensitivities",
    "SingularValueThreshold",
    "SiteBottleneck",
    "TinyGrowth",
    "TinyWithUpdateGrowth",
    "TrainingState",
    "Trigger",
    "WidthDecision",
    "WidthGrowth",
    "bottleneck_statistics",
    "bottlenecks",
    "conv_width_statistics",
    "insert",
    "positions",
    "sensitivities",
    "widen",
]
