"""The `llmforge` command: registers the ten stages and the utility commands.

Stage modules are imported only when their command runs (or shows its --help): importing
all of them pulls in torch, transformers, trl, datatrove and lightgbm, which costs seconds,
and a cache hit or `llmforge --help` should not pay for that.
"""

from __future__ import annotations

import importlib

import click
import typer
from typer.core import TyperGroup

from stages import utility

# name -> one-line summary shown by `llmforge --help` without importing the stage
STAGES = {
    "tokenize": "Tokenize documents into a tokens artifact (training a BPE if none is given).",
    "dedup": "Remove duplicates, repetitive and contaminated documents: a clean corpus.",
    "regmix": "Find the data mixture with small proxy models and a regression (RegMix).",
    "pretrain": "Pretrain a model from scratch on tokens artifacts, by mixture and schedule.",
    "midtrain": "Continue training a model on a new mixture with its own schedule.",
    "context-extend": "Extend a model's context: RoPE ABF and YaRN over staged lengths.",
    "sft": "Supervised fine-tuning on chat data (think/no_think), full or LoRA, on TRL.",
    "dpo": "Preference tuning: DPO, IPO, APO, KTO or ORPO, on TRL.",
    "rlvr": "RL with verifiable rewards: GRPO/DAPO against math and code verifiers.",
    "eval": "Evaluate models: loss, verifiable tasks with pass@k, probes, and a report.",
}


def stage_command(name: str) -> click.Command:
    """The real click command of one stage (imports its module)."""
    module = importlib.import_module(f"stages.{name.replace('-', '_')}")
    stage = getattr(module, "STAGE", None)
    sub = typer.Typer(rich_markup_mode="rich", pretty_exceptions_enable=False)
    if stage is None:
        sub.command(name, help=f"(not built yet) {module.__doc__}")(_not_built(name))
    else:
        command = stage.command()
        sub.command(name, help=stage.help, epilog=command.epilog)(command)
    return typer.main.get_command(sub)


def _not_built(name: str):
    def command() -> None:
        from llmforge import log

        log.error(f"stage '{name}' is not built yet")
        raise typer.Exit(1)

    return command


class LazyStages(TyperGroup):
    """Lists stages from STAGES; builds a stage's real command only when it is invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*STAGES, *super().list_commands(ctx)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in STAGES and name not in self.commands:
            return click.Command(name, help=STAGES[name])  # for listings only
        return super().get_command(ctx, name)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if args and args[0] in STAGES and args[0] not in self.commands:
            self.add_command(stage_command(args[0]), args[0])
        return super().resolve_command(ctx, args)


app = typer.Typer(
    name="llmforge",
    cls=LazyStages,
    help="Train language models the way frontier labs do, one artifact-producing stage at a time.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)
utility.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
