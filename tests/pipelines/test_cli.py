"""The command line names the stages as the pipeline does; ``train`` stays a name for ``final``."""

import pytest

from pipelines import cli


@pytest.mark.parametrize(
    ("command", "stages"),
    [("run", ("screen", "search", "final")), ("final", ("final",)), ("train", ("final",))],
)
def test_commands_run_their_stages(command, stages):
    args = cli._parser().parse_args([command, "--set", "search.trials=2"])
    assert cli.STAGES[args.command] == stages and args.overrides == ["search.trials=2"]


def test_an_unknown_command_is_refused():
    with pytest.raises(SystemExit):
        cli._parser().parse_args(["grow"])


def test_a_missing_data_path_is_one_line_before_anything_runs(tmp_path, monkeypatch, capsys):
    config = tmp_path / "p.toml"
    config.write_text('name = "p"\n[data]\ndataset = "parquet"\npath = "absent"\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "--config", str(config)])
    out = capsys.readouterr().out.strip()
    assert exit_.value.code == 2 and len(out.splitlines()) == 1
    assert "data.path: absent" in out and not (tmp_path / "runs").exists()


def test_the_modules_ray_workers_import_first_import_alone():
    # a Ray worker imports the module of the function it runs first (pipelines.search for a
    # trial, pipelines.final for the training loop, pipelines.screening for a screen task):
    # MLflow must come before Ray there too (pipelines/__init__.py)
    import subprocess
    import sys

    for name in ("search", "final", "screening", "distributed"):
        done = subprocess.run(
            [sys.executable, "-c", f"import pipelines.{name}"], capture_output=True, text=True
        )
        assert done.returncode == 0, f"pipelines.{name}: {done.stderr[-500:]}"


def test_resume_takes_the_runs_own_config(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "--resume", "0123abcd", "--set", "search.trials=2"])
    out = capsys.readouterr().out.strip()
    assert exit_.value.code == 2 and "--resume" in out and "--set" in out


def test_resuming_a_run_the_store_does_not_have_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "--resume", "0123abcd"])
    out = capsys.readouterr().out.strip()
    assert exit_.value.code == 1 and len(out.splitlines()) == 1
    assert "no run '0123abcd'" in out and not (tmp_path / "runs").exists()


def _one_line_exit(capsys, argv, code):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    out = capsys.readouterr().out.strip()
    assert exit_.value.code == code and len(out.splitlines()) == 1, out
    assert "Traceback" not in out
    return out


def test_a_config_that_is_no_text_file_is_one_line(tmp_path, capsys):
    (tmp_path / "folder.toml").mkdir()
    out = _one_line_exit(capsys, ["run", "--config", str(tmp_path / "folder.toml")], 2)
    assert "folder.toml: a folder, not a config file" in out
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe\x00name")
    out = _one_line_exit(capsys, ["run", "--config", str(tmp_path / "binary.toml")], 2)
    assert "binary.toml: not a text file" in out


def test_show_and_serve_of_what_the_store_lacks_are_one_line(tmp_path, monkeypatch, capsys):
    from pipelines.tracking import ensure_experiment

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    ensure_experiment("digits-growth")
    out = _one_line_exit(capsys, ["show", "--run-id", "deadbeef"], 1)
    assert "deadbeef" in out
    out = _one_line_exit(capsys, ["serve", "--model", "a'b"], 2)
    assert '--model: "a\'b" is not a model name' in out


def test_resuming_from_a_damaged_folder_is_one_line(tmp_path, monkeypatch, capsys):
    import json

    from pipelines.resume import CONFIG_FILE, STATE_FILE, WORKDIR_TAG
    from pipelines.tracking import client, ensure_experiment

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    workdir = tmp_path / "runs" / "p" / "stopped"
    workdir.mkdir(parents=True)
    config = {"name": "p", "data": {"dataset": "digits"}, "search": {"trials": "lots"}}
    (workdir / CONFIG_FILE).write_text(json.dumps(config))
    tags = {"stage": "pipeline", WORKDIR_TAG: str(workdir)}
    run = client().create_run(ensure_experiment("p"), tags=tags)
    out = _one_line_exit(capsys, ["run", "--resume", run.info.run_id], 1)
    assert "config.json: search.trials: Input should be a valid integer" in out
    config["search"]["trials"] = 2
    (workdir / CONFIG_FILE).write_text(json.dumps(config))
    state = {"stages": ["screen", "bogus"], "storage": "s", "done": {}, "runs": {}}
    (workdir / STATE_FILE).write_text(json.dumps(state))
    out = _one_line_exit(capsys, ["run", "--resume", run.info.run_id], 1)
    assert "pipeline_state.json: cannot resume from it (unknown stage 'bogus')" in out
