import re

import pytest

from growth_core.conv_spec import ConvSpec, LayerShape
from growth_core.spec import SpecError

PLAIN = ConvSpec((1, 8, 8), 10, ((8, 8), (16,)), batch_norm=True)
RESIDUAL = ConvSpec((3, 9, 9), 4, ((4, 4), (6, 8, 8, 8)), "stride", "tanh", residual=True)


def test_json_round_trip_and_family_key():
    for spec in (PLAIN, RESIDUAL):
        assert ConvSpec.from_json(spec.to_json()) == spec
        assert spec.to_dict()["family"] == "cnn"


def test_lists_from_json_become_tuples():
    spec = ConvSpec([1, 8, 8], 10, [[8, 8], [16]])
    assert spec.input_shape == (1, 8, 8) and spec.stages == ((8, 8), (16,))
    assert spec == ConvSpec((1, 8, 8), 10, ((8, 8), (16,)))


def test_derived_fields_and_describe():
    assert (PLAIN.input_dim, PLAIN.widths, PLAIN.depth, PLAIN.out_channels) == (
        64,
        (8, 8, 16),
        3,
        16,
    )
    assert PLAIN.describe() == "cnn 1x8x8-8-8-pool-16-10 relu bn"
    assert RESIDUAL.describe() == "res cnn 3x9x9-(4,4)-stride-(6,8)-(8,8)-4 tanh"


def test_pool_halves_before_a_stage_and_stride_in_its_first_layer():
    def geometry(downsample):
        spec = ConvSpec((1, 9, 9), 2, ((2,), (3, 4)), downsample)
        return [(s.c_in, s.c_out, s.height, s.stride, s.pool_before) for s in spec.layer_shapes()]

    # 9 // 2 = 4 after a 2x2 pool; (9 - 1) // 2 + 1 = 5 after a stride-2 3x3 conv, padding 1
    assert geometry("pool") == [(1, 2, 9, 1, False), (2, 3, 4, 1, True), (3, 4, 4, 1, False)]
    assert geometry("stride") == [(1, 2, 9, 1, False), (2, 3, 5, 2, False), (3, 4, 5, 1, False)]


def test_residual_shortcut_is_identity_only_when_channels_and_resolution_match():
    assert RESIDUAL.shortcut_shapes() == (
        LayerShape(3, 4, 1, 9, 9, kernel=1),  # 3 -> 4 channels
        LayerShape(4, 8, 2, 5, 5, kernel=1),  # strided
        None,  # 8 -> 8 at stride 1
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"input_shape": (8, 8)}, "input_shape"),
        ({"input_shape": (1, 0, 8)}, "input_shape[1]"),
        ({"output_dim": 0}, "output_dim"),
        ({"stages": ()}, "stages"),
        ({"stages": ((4,), ())}, "stages[1]"),
        ({"stages": ((4,), (2, 0))}, "stages[1][1]"),
        ({"stages": ((4.0,),)}, "stages[0][0]"),
        ({"downsample": "avg"}, "downsample"),
        ({"activation": "swish"}, "activation"),
        ({"batch_norm": 1}, "batch_norm"),
        ({"residual": "yes"}, "residual"),
        ({"residual": True, "stages": ((4, 4), (8,))}, "stages[1]"),
        ({"stages": ((4,),) * 5}, "stages[4]"),  # 8 -> 4 -> 2 -> 1, then nothing to pool
    ],
)
def test_bad_fields_are_named(kwargs, field):
    base = {"input_shape": (1, 8, 8), "output_dim": 10, "stages": ((4,),)}
    with pytest.raises(SpecError, match="^" + re.escape(field) + ":"):
        ConvSpec(**{**base, **kwargs})


def test_from_dict_names_unknown_missing_and_wrong_family():
    d = PLAIN.to_dict()
    with pytest.raises(SpecError, match="^widths: unknown field"):
        ConvSpec.from_dict({**d, "widths": [3]})
    with pytest.raises(SpecError, match="^stages: missing"):
        ConvSpec.from_dict({k: v for k, v in d.items() if k != "stages"})
    with pytest.raises(SpecError, match="^family: expected 'cnn'"):
        ConvSpec.from_dict({**d, "family": "mlp"})
    with pytest.raises(SpecError, match="^spec: not valid JSON"):
        ConvSpec.from_json("[")
