"""The stage runner: turns a stage's (Config, run) into a CLI command that honours the
artifact contract (ids, cache hits, conflicts, locks, atomic publish, exit codes).

A stage declares its inputs as roles. On the command line, a bare path takes the default
role and `role=PATH` names another; each input is checked for kind and completeness before
any work starts. See docs/contract.md.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from llmforge import artifact, config, distributed, log, provenance
from llmforge.artifact import Ref, Run
from llmforge.errors import BadInput, LLMForgeError, RunFailed


@dataclass(frozen=True)
class Role:
    """One kind of input a stage takes: allowed kinds, and how many (max None = any)."""

    kinds: tuple[str, ...]
    min: int = 1
    max: int | None = 1
    help: str = ""


@dataclass
class Inputs:
    """The checked inputs of a run, by role."""

    refs: list[Ref]

    def all(self, role: str) -> list[Ref]:
        return [r for r in self.refs if r.role == role]

    def get(self, role: str) -> Ref | None:
        found = self.all(role)
        return found[0] if found else None

    def one(self, role: str) -> Ref:
        found = self.all(role)
        if len(found) != 1:
            raise BadInput(f"expected exactly one '{role}' input, got {len(found)}")
        return found[0]

    def roles(self) -> list[str]:
        return list(dict.fromkeys(r.role for r in self.refs))


@dataclass(frozen=True)
class Stage:
    """A stage: its name, output kind, Config class, run function and input roles.

    A role named "*" accepts any role name (tokenize uses it for domain=PATH inputs).
    """

    name: str
    kind: str
    config: type
    run: Callable[[Any, Inputs, Run], dict]
    roles: dict[str, Role]
    default_role: str
    help: str = ""
    flags: dict[str, str] = field(default_factory=dict)

    def parse_inputs(self, items: list[str]) -> Inputs:
        refs = []
        for item in items:
            role, path = self._split(item)
            spec = self.roles.get(role) or self.roles.get("*")
            if spec is None:
                raise BadInput(f"unknown input role '{role}' (roles: {', '.join(self.roles)})")
            refs.append(artifact.open_input(path, spec.kinds, role))
        inputs = Inputs(refs)
        for role, spec in self.roles.items():
            if role == "*":
                continue
            n = len(inputs.all(role))
            if n < spec.min or (spec.max is not None and n > spec.max):
                want = f"{spec.min}" if spec.min == spec.max else f"{spec.min}..{spec.max or 'any'}"
                raise BadInput(f"stage '{self.name}' takes {want} '{role}' input(s), got {n}")
        return inputs

    def _split(self, item: str) -> tuple[str, str]:
        head, sep, tail = item.partition("=")
        if sep and head.replace("_", "").replace("-", "").isalnum() and not Path(item).exists():
            return head, tail
        return self.default_role, item

    def command(self) -> Callable:
        return make_command(self)


def default_out(stage: str, art_id: str) -> Path:
    root = Path(os.environ.get("LLMFORGE_ARTIFACTS", "artifacts"))
    return root / f"{stage}-{art_id[:12]}"


def plan(stage: Stage, items: list[str], config_path, sets, out) -> tuple[Any, Inputs, str, Path]:
    """Resolve config and inputs and compute the output id and path, without side effects."""
    cfg = config.load(stage.config, config_path, sets)
    inputs = stage.parse_inputs(items)
    art_id = artifact.compute_id(
        stage.name, config.to_dict(cfg), [(r.role, r.id) for r in inputs.refs],
        source=provenance.id_source(),
    )  # fmt: skip
    return cfg, inputs, art_id, Path(out) if out else default_out(stage.name, art_id)


def execute(
    stage: Stage,
    items: list[str],
    config_path: Path | None = None,
    sets: list[str] = (),
    out: Path | None = None,
    dry_run: bool = False,
    replace: bool = False,
) -> Path:
    """Run a stage under the artifact contract and return the published path."""
    cfg, inputs, art_id, out = plan(stage, items, config_path, list(sets), out)
    if dry_run:
        log.console.print(yaml.safe_dump(config.to_dict(cfg), sort_keys=False).rstrip())
        log.info(f"[bold]{stage.name}[/] would write id {art_id} to {out}")
        return out
    rank, world = distributed.init()  # the process group, when launched with WORLD_SIZE > 1
    run = Run(out, art_id, stage.kind, stage.name, config.to_dict(cfg), inputs.refs, rank, world,
              code_in_id=provenance.code_in_id())  # fmt: skip
    # Rank 0 alone looks at the output path and takes the lock; every rank learns the
    # verdict (cache hit, conflict, lock held, resume) from it at once.
    hit, run.resumed = distributed.main_decides(lambda: _claim(run, replace))
    if hit:
        return out
    try:
        return _run_and_publish(stage, cfg, inputs, run, replace)
    finally:
        run.release()


def _claim(run: Run, replace: bool) -> tuple[bool, bool]:
    """(cache hit, resuming): on a miss, lock the output and prepare its partial directory."""
    if _cache_hit(run.path, run.id, replace):
        return True, False
    run._lock_fd = artifact.acquire_lock(run.path)
    try:
        artifact.prepare_partial(run, replace)
    except BaseException:
        run.release()
        raise
    return False, run.resumed


def submit_slurm(
    stage: Stage,
    items: list[str],
    config_path: Path | None,
    sets: list[str],
    out: Path | None,
    slurm_cfg,
    dry_run: bool = False,
    replace: bool = False,
) -> Path:
    """Render and submit an sbatch job that runs this stage; return the planned output path.

    Inputs still being produced by submitted jobs become afterok dependencies; a stage whose
    artifact already exists with the same id is a cache hit and submits nothing.
    """
    from llmforge import slurm

    config.load(stage.config, config_path, sets)  # bad config fails here, not in the queue
    deps = [j for j in (slurm.pending_job(Path(stage._split(i)[1])) for i in items) if j]
    if not deps:
        _, _, art_id, out = plan(stage, items, config_path, sets, out)
        if _cache_hit(out, art_id, replace):
            return out
    elif out is None:
        raise BadInput("--out is required when inputs are still being produced by Slurm jobs")
    out = Path(out).resolve()
    argv = [stage.name, *(_absolute(stage, i) for i in items), "-o", str(out)]
    argv += ["-c", str(Path(config_path).resolve())] if config_path else []
    argv += [a for s_ in sets for a in ("-s", s_)] + (["--replace"] if replace else [])
    script = slurm.job_dir(out) / "job.sbatch"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(slurm.render_job(slurm_cfg, stage.name, argv, out, Path.cwd()))
    if dry_run:
        log.console.print(script.read_text())
        log.info(f"rendered {script} (not submitted)")
        return out
    job = slurm.submit(script, deps)
    (script.parent / "jobid").write_text(job + "\n")
    log.info(f"submitted job {job} for {stage.name}" + (f" after {','.join(deps)}" if deps else ""))
    return out


def _absolute(stage: Stage, item: str) -> str:
    role, path = stage._split(item)
    full = str(Path(path).resolve())
    return full if role == stage.default_role and "=" not in item else f"{role}={full}"


def _cache_hit(out: Path, art_id: str, replace: bool) -> bool:
    """True when `out` already holds `art_id`. With `replace`, an artifact of the same id that
    other llmforge code built (its `code.source_hash` differs) is rebuilt instead."""
    existing = artifact.existing_id(out)
    if existing == art_id:
        drift = provenance.code_drift(artifact.read_manifest(out))
        if drift and replace:
            log.info(
                f"{out} holds id {art_id} built by other llmforge code: rebuilding (--replace)"
            )
            return False
        log.info(f"cache hit: {out} already holds id {art_id}")
        if drift:
            log.warn(f"{out}: {drift}")
        return True
    if existing is not None and not replace:
        raise BadInput(
            f"holds a different artifact (id {existing}, this run is {art_id}); "
            "pass --replace to overwrite it or choose another --out",
            path=str(out),
        )
    return False


def _run_and_publish(stage: Stage, cfg, inputs: Inputs, run: Run, replace: bool) -> Path:
    log.info(
        f"[bold]{stage.name}[/] -> {run.path} (id {run.id}"
        + (", resuming)" if run.resumed else ")")
    )
    try:
        metrics = stage.run(cfg, inputs, run) or {}
    except BadInput:
        if run.is_main and not run.resumed:
            run.discard()
        raise
    except LLMForgeError:
        raise
    except Exception as e:
        raise RunFailed(f"{stage.name} failed: {type(e).__name__}: {e}") from e
    distributed.barrier()  # no rank still writes into the partial directory
    distributed.main_decides(lambda: _publish(run, metrics, replace))
    return run.path


def _publish(run: Run, metrics: dict, replace: bool) -> None:
    run.commit(metrics, replace=replace)
    log.info(f"[green]published[/] {run.path} in {time.time() - run.started:.1f}s")


# ---------------------------------------------------------------- the typer command


def _epilog(stage: Stage) -> str:
    lines = ["[bold]Inputs[/] (bare paths take the default role; others as role=PATH):"]
    for name, role in stage.roles.items():
        count = f"{role.min}..{role.max or 'n'}"
        default = " (default role)" if name == stage.default_role else ""
        lines.append(f"  {name}{default}: {' | '.join(role.kinds)}, {count}. {role.help}")
    lines.append("")
    lines.append("[bold]Config keys[/] (YAML via --config, or --set key=value):")
    for key, tp, default, help_text in config.describe(stage.config):
        lines.append(f"  {key} ({tp}, default {default}): {help_text}")
    return "\n\n".join(lines)


def make_command(stage: Stage) -> Callable:
    """Build the typer command for a stage, with one option per CLI flag."""

    def command(**kwargs: Any) -> None:
        sets = list(kwargs.pop("set") or [])
        for flag, key in stage.flags.items():
            if kwargs.pop(flag.replace("-", "_")):
                sets.append(f"{key}=true")
        items = kwargs["inputs"] or []
        if kwargs["slurm"] or kwargs["slurm_config"] or kwargs["slurm_set"]:
            run_cli(lambda: _submit_from_cli(stage, items, sets, kwargs), quiet=kwargs["quiet"])
            return
        run_cli(
            lambda: execute(
                stage,
                items,
                kwargs["config"],
                sets,
                kwargs["out"],
                kwargs["dry_run"],
                kwargs["replace"],
            ),
            quiet=kwargs["quiet"],
        )

    params = [
        _param("inputs", list[str] | None, typer.Argument(help="input artifacts or files")),
        _param("config", Path | None, typer.Option("--config", "-c", help="YAML config file")),
        _param("set", list[str] | None, typer.Option("--set", "-s", help="override: key=value")),
        _param("out", Path | None, typer.Option("--out", "-o", help="output artifact path")),
        _param("dry_run", bool, typer.Option("--dry-run", help="print config and id; do nothing")),
        _param(
            "replace",
            bool,
            typer.Option(
                "--replace",
                help="overwrite a different artifact at --out, or one of the same id "
                "that other llmforge code built",
            ),
        ),  # fmt: skip
        _param("quiet", bool, typer.Option("--quiet", "-q", help="only errors on stderr")),
        _param("slurm", bool, typer.Option("--slurm", help="submit as a Slurm job instead")),
        _param(
            "slurm_config",
            Path | None,
            typer.Option("--slurm-config", help="YAML of Slurm resources (llmforge/slurm.py)"),
        ),
        _param(
            "slurm_set",
            list[str] | None,
            typer.Option("--slurm-set", help="Slurm resource override, e.g. nodes=2"),
        ),
    ]
    for flag, key in stage.flags.items():
        opt = typer.Option(f"--{flag}", help=f"same as --set {key}=true")
        params.append(_param(flag.replace("-", "_"), bool, opt))
    command.__signature__ = inspect.Signature(params)
    command.__doc__ = stage.help
    command.epilog = _epilog(stage)
    return command


def _submit_from_cli(stage: Stage, items: list[str], sets: list[str], kwargs: dict) -> Path:
    from llmforge import slurm

    slurm_cfg = config.load(slurm.SlurmConfig, kwargs["slurm_config"], kwargs["slurm_set"] or [])
    return submit_slurm(
        stage,
        items,
        kwargs["config"],
        sets,
        kwargs["out"],
        slurm_cfg,
        kwargs["dry_run"],
        kwargs["replace"],
    )


def _param(name: str, tp: Any, info: Any) -> inspect.Parameter:
    default = None if tp is not bool else False
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[tp, info]
    )


def run_cli(fn: Callable[[], Path | None], quiet: bool = False) -> None:
    """Call `fn`, print its path on stdout, and map errors onto exit codes 0/1/2."""
    log.set_quiet(quiet)
    try:
        path = fn()
    except LLMForgeError as e:
        log.error(str(e))
        if isinstance(e, RunFailed) and e.__cause__ is not None and not quiet:
            log.console.print_exception(show_locals=False)  # the crash, for the bug report
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        log.error("interrupted; the partial run is kept and resumes on re-run")
        raise typer.Exit(130) from None
    if path is not None and int(os.environ.get("RANK", "0")) == 0:
        print(path)
