import re
from pathlib import Path

import pytest

from pipelines.config import ConfigError, apply_override, load_config, validate

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "pipelines" / "configs").glob("*.toml"))
MINIMAL = {"name": "t", "data": {"dataset": "digits"}}
PARQUET = {"dataset": "parquet", "path": "mnist"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert cfg.screen.initializers()
    assert cfg.search.lr[0] <= cfg.search.lr[1]
    # the workers and trials read the config back from its JSON
    assert type(cfg).model_validate_json(cfg.model_dump_json()) == cfg


def test_shipped_configs_cover_the_datasets():
    assert {p.stem for p in CONFIGS} >= {"digits", "spirals", "mnist1d", "mnist"}


def test_grid_candidates_expand():
    cfg = validate(
        {
            **MINIMAL,
            "screen": {
                "candidates": [
                    {"kind": "gaussian", "sigma_w2": [1.0, 2.0], "sigma_b2": [0.0, 0.05]}
                ]
            },
        }
    )
    assert len(cfg.screen.initializers()) == 4


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({**MINIMAL, "bogus": 1}, "bogus: unknown key"),
        ({**MINIMAL, "search": {"trails": 3}}, "search.trails: unknown key"),
        ({**MINIMAL, "search": {"trials": 0}}, "search.trials"),
        ({**MINIMAL, "search": {"lr": [0.1, 0.01]}}, "lr: lower bound"),
        ({**MINIMAL, "model": {"activation": "swish"}}, "model.activation"),
        ({**MINIMAL, "model": {"widths": [4, -1]}}, "model.widths.1"),
        ({**MINIMAL, "screen": {"candidates": [{"kind": "lecun"}]}}, "screen.candidates.0.kind"),
        ({"name": "t", "data": {"dataset": "parquet"}}, "path: the parquet dataset needs a path"),
        ({"name": "t"}, "data: missing"),
        ({"name": "t", "data": {**PARQUET, "shape": [1, 0, 28]}}, "data.shape.1"),
        ({"name": "t", "data": {**PARQUET, "shape": [28, 28]}}, "data.shape.2"),
        ({"name": "t", "data": {"dataset": "digits", "shape": [1, 8, 8]}}, "shape: only a parquet"),
        ({**MINIMAL, "final": {"use_gpu": "maybe"}}, "final.use_gpu"),
        ({**MINIMAL, "search": {"width_ridge": -1}}, "search.width_ridge"),
        ({**MINIMAL, "search": {"width_samples": "once"}}, "search.width_samples"),
        (
            {
                **MINIMAL,
                "model": {"family": "resnet"},
                "screen": {"candidates": [{"kind": "gaussian"}, {"kind": "decorrelated"}]},
            },
            "screen.candidates.1.kind: 'decorrelated' draws feedforward networks only",
        ),
    ],
)
def test_bad_configs_name_the_key(raw, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(raw)


def test_parquet_data_may_give_an_image_shape():
    cfg = validate({"name": "t", "data": {**PARQUET, "shape": [1, 28, 28]}})
    assert cfg.data.shape == (1, 28, 28)
    assert validate({"name": "t", "data": PARQUET}).data.shape is None


def test_overrides_are_parsed_as_toml_and_validated(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('name = "t"\n[data]\ndataset = "digits"\n')
    cfg = load_config(
        path,
        [
            "search.trials=3",
            "search.lr=[0.001, 0.01]",
            "model.activation=tanh",
            'search.insertion=["none"]',
        ],
    )
    assert cfg.search.trials == 3 and cfg.search.lr == (0.001, 0.01)
    assert cfg.model.activation == "tanh"
    with pytest.raises(ConfigError, match="search.trials"):
        load_config(path, ["search.trials=-2"])
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_override({}, "trials")


def test_missing_and_malformed_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(ConfigError, match="bad.toml: not valid TOML"):
        load_config(bad)


def test_a_relative_data_path_is_resolved_in_the_driver(tmp_path, monkeypatch):
    (tmp_path / "mnist").mkdir()
    cfg = validate({"name": "p", "data": {"dataset": "parquet", "path": "mnist"}})
    monkeypatch.chdir(tmp_path)  # where the command ran: trials run elsewhere
    assert cfg.resolved().data.path == str(tmp_path / "mnist")
    assert cfg.resolved().resolved() == cfg.resolved()
    assert validate({"name": "p", "data": {"dataset": "digits"}}).resolved().data.path is None
    missing = validate({"name": "p", "data": {"dataset": "parquet", "path": "nowhere"}})
    with pytest.raises(ConfigError, match="^data.path: nowhere .*no such file or folder"):
        missing.resolved()


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ('name="../escape"', "name"),
        ('name="a/b"', "name"),
        ('name="runs:1"', "name"),
        ('name=""', "name"),
        ("search.trials=1e9", "search.trials"),
        ("search.trials=1000000000", "search.trials"),
        ("final.workers=1000000", "final.workers"),
        ("model.widths=[1000000000]", "model.widths.0"),
        ("model.widths=[]", "model.widths"),
        ("search.lr=[1e-3, inf]", "search.lr.1"),
        ("search.lr=[nan, 1e-2]", "search.lr.0"),
        ("screen.candidates=[]", "screen.candidates"),
        ("search.insertion=[]", "search.insertion"),
        ("search.width_strategy=[]", "search.width_strategy"),
        ("search.max_depth=1000", "search.max_depth"),
        ("search.max_params=1e12", "search.max_params"),
        ("screen.depth=100000", "screen.depth"),
        # sizes no single field exceeds: their product does
        ("model.widths=[65536, 65536, 65536]", "model"),
        ("screen.width=65536", "screen.width"),
        ("screen.depth=512", "screen.depth"),  # at the model's width (below)
        ("search.architecture={depth=[2, 64], width=[16, 65536]}", "search.architecture"),
        (
            "screen.candidates=[{kind='gaussian', sigma_w2=" + str(list(range(1, 41))) + ", "
            "sigma_b2=" + str([x / 100 for x in range(40)]) + "}]",
            "screen.candidates",
        ),
        # seeds NumPy and Optuna refuse, numbers that are not TOML numbers
        ("search.seed=-1", "search.seed"),
        ("data.seed=18446744073709551616", "data.seed"),
        ("screen.seed=4294967296", "screen.seed"),
        ("final.workers=true", "final.workers"),
        ('search.trials="4"', "search.trials"),
        ("model.widths=[true]", "model.widths.0"),
        ('final.use_gpu="yes"', "final.use_gpu"),
        ("final.use_gpu=1", "final.use_gpu"),
        ("search.asha.reduction_factor=1000000000000000000", "search.asha.reduction_factor"),
        # fields that would be ignored, settings nothing can run
        ("model.width=32", "model.width"),
        ("data.scale=255.0", "data.scale"),
        ('data.path="/tmp"', "data.path"),
        (
            "screen.candidates=[{kind='kaiming', sigma_w2=[1, 2, 3]}]",
            "screen.candidates.0.sigma_w2",
        ),
        ("model.activation='tanh'", "search.insertion"),
        ("search.max_depth=1", "search.max_depth"),
        ('storage="bogus://bucket/prefix"', "storage"),
        ('storage="s3://"', "storage"),
        ('storage=""', "storage"),
    ],
)
def test_hostile_sizes_and_names_are_refused_naming_the_key(override, key):
    raw = {"name": "t", "data": {"dataset": "digits"}}
    apply_override(raw, override)
    if override == "screen.depth=512":
        raw["model"] = {"widths": [2048]}  # the screen's width by default
    with pytest.raises(ConfigError) as e:
        validate(raw)
    message = str(e.value)
    assert "\n" not in message  # one line
    assert re.search(rf"(^config: |; ){re.escape(key)}: ", message), message


def test_a_section_check_names_its_key_not_the_section():
    raw = {"name": "t", "data": {"dataset": "digits"}, "search": {"lr": [0.1, 0.01]}}
    with pytest.raises(ConfigError) as e:
        validate(raw)
    assert str(e.value) == "config: search.lr: lower bound 0.1 above upper bound 0.01"


def test_a_field_of_several_types_gives_one_message():
    raw = {"name": "t", "data": {"dataset": "digits"}, "final": {"use_gpu": "yes"}}
    with pytest.raises(ConfigError) as e:
        validate(raw)
    assert str(e.value).count("final.use_gpu") == 1 and "'yes'" in str(e.value)


def test_the_starting_network_is_counted_on_the_data():
    raw = {"name": "t", "data": {"dataset": "digits"}, "model": {"widths": [60000]}}
    cfg = validate(raw | {"screen": {"width": 64}})
    with pytest.raises(
        ConfigError, match=r"^model: the starting network has 1,200,\d{3},\d{3} parameters"
    ):
        cfg.check_on(input_dim=20_000, num_classes=10)
    small = validate({"name": "t", "data": {"dataset": "digits"}, "search": {"max_params": 100}})
    with pytest.raises(ConfigError, match=r"^search.max_params: 100 is below the starting"):
        small.check_on(input_dim=64, num_classes=10)
    validate(MINIMAL).check_on(input_dim=64, num_classes=10)


def test_storage_is_the_configs_or_the_environments_else_the_run_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("GROWTH_STORAGE", raising=False)
    workdir = tmp_path / "runs" / "t" / "20260101-000000-abcdef12"
    cfg = validate(MINIMAL)
    assert cfg.storage_root(workdir) == str(workdir / "ray")
    monkeypatch.setenv("GROWTH_STORAGE", "s3://bucket/prefix/")
    assert cfg.storage_root(workdir) == "s3://bucket/prefix/t/20260101-000000-abcdef12"
    shared = validate({**MINIMAL, "storage": "shared"})  # relative: against the command's folder
    assert shared.storage_root(workdir, base=tmp_path) == str(
        tmp_path / "shared" / "t" / "20260101-000000-abcdef12"
    )
