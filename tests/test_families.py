import json

import pytest

from growth_core.conv_spec import ConvSpec
from growth_core.families import spec_from_dict, spec_from_json
from growth_core.spec import ArchitectureSpec, SpecError

CNN = ConvSpec((1, 8, 8), 10, ((4, 4),), residual=True)
MLPS = [
    ArchitectureSpec(64, 10, (8, 8), "tanh"),
    ArchitectureSpec(64, 10, (3,), "relu", residual=True, width=5),
]


def test_each_family_reads_back_as_its_own_class():
    for spec in (CNN, *MLPS):
        assert spec_from_json(spec.to_json()) == spec


def test_mlp_json_keeps_no_family_and_loads_as_before():
    text = json.dumps({"input_dim": 2, "output_dim": 2, "widths": [5], "activation": "relu"})
    assert ArchitectureSpec.from_json(text) == spec_from_json(text) == ArchitectureSpec(2, 2, (5,))
    assert all("family" not in spec.to_dict() for spec in MLPS)


def test_a_conv_spec_read_as_an_mlp_or_an_unknown_family_is_named():
    with pytest.raises(SpecError, match="^family: 'cnn' is not an MLP spec.*spec_from_dict"):
        ArchitectureSpec.from_json(CNN.to_json())
    with pytest.raises(SpecError, match="^family: unknown 'vit'"):
        spec_from_dict({**CNN.to_dict(), "family": "vit"})
    with pytest.raises(SpecError, match="^spec: expected a JSON object"):
        spec_from_json("[1]")
