"""The `llmforge` command: registers the ten stages and the utility commands."""

from __future__ import annotations

import importlib

import typer

from stages import utility

STAGES = (
    "tokenize",
    "dedup",
    "regmix",
    "pretrain",
    "midtrain",
    "context-extend",
    "sft",
    "dpo",
    "rlvr",
    "eval",
)

app = typer.Typer(
    name="llmforge",
    help="Train language models the way frontier labs do, one artifact-producing stage at a time.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register(name: str) -> None:
    module = importlib.import_module(f"stages.{name.replace('-', '_')}")
    stage = getattr(module, "STAGE", None)
    if stage is None:
        app.command(name, help=f"(not built yet) {module.__doc__}")(_not_built(name))
        return
    command = stage.command()
    app.command(name, help=stage.help, epilog=command.epilog)(command)


def _not_built(name: str):
    def command() -> None:
        from llmforge import log

        log.error(f"stage '{name}' is not built yet")
        raise typer.Exit(1)

    return command


for _name in STAGES:
    _register(_name)
utility.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
