"""Utility commands on published artifacts: show, lineage, verify, ls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.tree import Tree

from llmforge import artifact, log, provenance
from llmforge.errors import BadInput
from llmforge.stage import run_cli

PathArg = Annotated[Path, typer.Argument(help="an artifact directory")]


def show(
    path: PathArg, as_json: Annotated[bool, typer.Option("--json", help="raw manifest")] = False
) -> None:
    """Print an artifact's manifest and metrics readably (stderr; --json prints it on stdout)."""

    def body() -> None:
        if _is_outside(path):
            return _show_outside(path, as_json)
        manifest = artifact.read_manifest(path)
        if as_json:
            print(json.dumps(manifest, indent=2))
            return
        table = Table(title=f"{path}", show_header=False, title_justify="left")
        for key in ("kind", "stage", "id", "created_at", "duration_s"):
            table.add_row(key, str(manifest.get(key)))
        code = manifest.get("code", {})
        table.add_row("code", _code_text(code))
        table.add_row("host", " ".join(f"{k}={v}" for k, v in manifest.get("host", {}).items()))
        for inp in manifest.get("inputs", []):
            table.add_row(f"input {inp['role']}", _input_text(inp))
        size = sum(f["size"] for f in manifest["files"].values())
        table.add_row("files", f"{len(manifest['files'])} files, {size / 1e6:.2f} MB")
        log.console.print(table)
        log.console.print(_metrics_table(manifest.get("metrics", {})))

    run_cli(body)


def _is_outside(path: Path) -> bool:
    """A path with no manifest that is not an unfinished run: shown as an outside input."""
    manifest = (path / artifact.MANIFEST).is_file()
    return path.exists() and not manifest and not path.name.endswith(".partial")


def _code_text(code: dict) -> str:
    """version, commit, and the source hash (in the id? the same as this llmforge's?)."""
    text = f"{code.get('version')} {str(code.get('commit'))[:10]}"
    text += " (dirty)" if code.get("dirty") else ""
    if source := code.get("source_hash"):
        same = "this llmforge's" if source == provenance.source_hash() else "not this llmforge's"
        text += f", source {source[:12]} ({same}" + ("; in the id)" if code.get("in_id") else ")")
    return text


def _input_text(inp: dict) -> str:
    text = f"{inp['kind']} {inp['id']} {inp['path']}"
    if inp.get("outside"):
        text += f" (outside input: {inp['outside']['detected']}, sha256 {inp['outside']['sha256']})"
    return text


def _show_outside(path: Path, as_json: bool) -> None:
    """What a stage would record for a path llmforge did not write: kind, id, hash."""
    ref = artifact.open_outside(path, artifact.outside.OUTSIDE_KINDS)
    record = ref.record()
    if as_json:
        print(json.dumps(record, indent=2))
        return
    table = Table(title=f"{path} (outside input, no manifest)", show_header=False,
                  title_justify="left")  # fmt: skip
    for key in ("kind", "id", "path"):
        table.add_row(key, str(record[key]))
    table.add_row("detected", ref.outside["detected"])
    table.add_row("sha256", ref.outside["sha256"])
    log.console.print(table)


def _metrics_table(metrics: dict) -> Table:
    table = Table(title="metrics", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        table.add_row(key, text if len(text) < 100 else text[:97] + "...")
    return table


def lineage(path: PathArg) -> None:
    """Print the tree of inputs back to raw data."""

    def body() -> None:
        if _is_outside(path):
            ref = artifact.open_outside(path, artifact.outside.OUTSIDE_KINDS)
            log.console.print(Tree(_label(artifact.outside_node(ref.record()))))
            return
        node = artifact.lineage(path)
        if node["kind"] == "missing":
            raise BadInput(node["error"])
        tree = Tree(_label(node))
        _grow(tree, node)
        log.console.print(tree)

    run_cli(body)


def _label(node: dict) -> str:
    role = f"[dim]{node['role']}:[/] " if node.get("role") else ""
    stage = f" [cyan]{node['stage']}[/]" if node.get("stage") else ""
    err = f" [red]{node['error']}[/]" if node.get("error") else ""
    ext = f" [magenta](outside: {node['outside']['detected']})[/]" if node.get("outside") else ""
    return f"{role}[bold]{node['kind']}[/]{stage} {node['id']} {node['path']}{ext}{err}"


def _grow(tree: Tree, node: dict) -> None:
    for child in node["inputs"]:
        _grow(tree.add(_label(child)), child)


def verify(paths: Annotated[list[Path], typer.Argument(help="artifact directories")]) -> None:
    """Check each manifest against its own id and rehash every payload file. Exit 2 on any
    mismatch (an edited manifest, a changed, missing or unlisted file)."""

    def body() -> None:
        bad = 0
        for p in paths:
            problems = artifact.verify(p)
            if problems:
                bad += 1
                log.error(f"{p}: {len(problems)} problem(s)")
                for problem in problems:
                    log.console.print(f"  {problem}")
            else:
                log.info(f"[green]ok[/] {p}")
        if bad:
            raise BadInput(f"{bad} of {len(paths)} artifact(s) failed verification")

    run_cli(body)


def ls(root: Annotated[Path, typer.Argument(help="folder to search")] = Path("artifacts")) -> None:
    """List the artifacts under a folder: kind, id, created time and key metric."""

    def body() -> None:
        table = Table()
        for col in ("path", "kind", "stage", "id", "created", "key metric"):
            table.add_column(col)
        for path, manifest in artifact.find_artifacts(root):
            table.add_row(
                str(path),
                manifest["kind"],
                manifest.get("stage", ""),
                manifest["id"],
                manifest.get("created_at", ""),
                _key_metric(manifest),
            )
        log.console.print(table)

    run_cli(body)


KEY_METRICS = ("final_val_loss", "final_loss", "accuracy", "documents_kept", "tokens", "score")


def _key_metric(manifest: dict) -> str:
    metrics = manifest.get("metrics", {})
    for key in KEY_METRICS:
        if key in metrics:
            return f"{key}={metrics[key]}"
    first = next(iter(metrics.items()), None)
    return f"{first[0]}={first[1]}" if first else ""


def register(app: typer.Typer) -> None:
    for fn in (show, lineage, verify, ls):
        app.command(fn.__name__)(fn)
