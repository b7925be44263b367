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
