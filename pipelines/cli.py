"""The command line: ``growth {run,screen,search,final,show,serve} --config FILE [--set
key=value]`` (``train`` is another name for ``final``); ``growth run --resume RUN_ID`` goes on
with a stopped pipeline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from growth_core.data import DataError
from growth_core.growth import PolicyError
from growth_core.init import InitError
from growth_core.screen import ScreenError
from growth_core.spec import SpecError
from growth_core.train import DivergedError, TrainConfigError

from .config import ConfigError, PipelineError, load_config

#: Errors the project raises with a message that names the field, file or stage: one line each.
PROJECT_ERRORS = (
    ConfigError,
    DataError,
    DivergedError,
    InitError,
    PipelineError,
    PolicyError,
    ScreenError,
    SpecError,
    TrainConfigError,
)
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "digits.toml"
STAGES = {
    "run": ("screen", "search", "final"),
    "screen": ("screen",),
    "search": ("search",),
    "final": ("final",),
    "train": ("final",),
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="growth", description="Grow networks: screen, search, train.")
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_ in (
        ("run", "all stages: screen, search, final training"),
        ("screen", "screen candidate initializations only"),
        ("search", "search growth settings (candidates from the config, unscreened)"),
        ("final", "final distributed training with the config's base settings"),
    ):
        aliases = ["train"] if name == "final" else []
        sp = sub.add_parser(name, help=help_, aliases=aliases)
        sp.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
        sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
        sp.add_argument(
            "--resume",
            metavar="RUN_ID",
            default=None,
            help="go on with a stopped pipeline (its parent MLflow run id), with its own config "
            "and stages",
        )
    show = sub.add_parser("show", help="a finished pipeline's summary, read back from MLflow")
    show.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    show.add_argument("--experiment", default=None, help="default: the config's name")
    show.add_argument("--run-id", default=None, help="default: the latest pipeline run")
    serve = sub.add_parser("serve", help="the registered model on http://127.0.0.1:PORT")
    serve.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    serve.add_argument("--model", default=None, help="registered name; default: the config's")
    serve.add_argument("--version", default="latest", help="a version number, or latest")
    serve.add_argument("--port", type=int, default=5001)
    return p


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    console = Console()
    from mlflow.exceptions import MlflowException

    try:
        if args.command == "show":
            from .show import show

            name = args.experiment or load_config(args.config).name
            sys.exit(show(name, run_id=args.run_id, console=console))
        if args.command == "serve":
            from .serving import serve

            serve(args.model or load_config(args.config).name, args.version, args.port)
        if args.resume is not None and (args.overrides or args.config != DEFAULT_CONFIG):
            raise ConfigError("--resume: the run goes on with its own config; drop --config/--set")
        cfg = None if args.resume else load_config(args.config, args.overrides).resolved()
    except ConfigError as e:
        console.print(f"[red]config error[/red] {e}", soft_wrap=True)
        sys.exit(2)
    except PipelineError as e:
        console.print(f"[red]{type(e).__name__}[/red] {e}", soft_wrap=True)
        sys.exit(1)
    except MlflowException as e:  # show and serve read the tracking store: a run it lacks, ...
        console.print(f"[red]MLflow[/red] {str(e).strip().splitlines()[0]}", soft_wrap=True)
        sys.exit(1)
    from .pipeline import resume_pipeline, run_pipeline

    try:
        if args.resume is not None:
            resume_pipeline(args.resume, console=console)
        else:
            run_pipeline(cfg, STAGES[args.command], console=console)
    except PROJECT_ERRORS as e:
        console.print(f"[red]{type(e).__name__}[/red] {e}", soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt as e:
        why = str(e) or "interrupted"
        console.print(f"[red]stopped[/red] {why}: the pipeline's MLflow runs are ended KILLED")
        sys.exit(130)
