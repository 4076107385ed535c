"""Where the dedup steps read and write inside a run's work directory (kept light: the
stage imports it without importing datatrove)."""

from __future__ import annotations

from pathlib import Path


class Layout:
    """Where each step reads and writes, under the run's work directory."""

    def __init__(self, work: Path):
        self.work = Path(work)
        self.input = self.work / "input"
        self.evals = self.work / "evals.jsonl"
        self.filtered = self.work / "filtered"
        self.exact_sigs = self.work / "exact" / "sigs"
        self.exact_dups = self.work / "exact" / "dups"
        self.to_minhash = self.work / "exact" / "to_minhash"
        self.passthrough = self.work / "exact" / "passthrough"
        self.minhash = self.work / "minhash"
        self.deduped = self.work / "deduped"
        self.removed = self.work / "removed"
        self.semantic = self.work / "semantic"
        self.logs = self.work / "logs"

    def kept_folders(self) -> list[Path]:
        """Folders that hold the surviving documents after the datatrove steps."""
        return [self.deduped, self.passthrough]
