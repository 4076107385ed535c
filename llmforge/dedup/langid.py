"""Language ID from a local fastText lid.176 model file (datatrove's LanguageFilter would
download it; this machine has no network, so the user names the file)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from datatrove.pipeline.filters import LanguageFilter
from datatrove.utils.lid import FT176LID

from llmforge.errors import BadInput


def check_available(model_path: str) -> None:
    """BadInput unless the model file exists and the fasttext package is installed."""
    if not Path(model_path).is_file():
        raise BadInput("language model file not found", path=model_path)
    if importlib.util.find_spec("fasttext") is None:
        raise BadInput(
            "language ID needs the 'fasttext' package (pip install fasttext-numpy2-wheel)"
        )


class LocalFT176(FT176LID):
    """datatrove's lid.176 predictor, loading the model from a local path."""

    def __init__(self, languages: list[str] | None, model_path: str):
        super().__init__(languages)
        self.model_path = model_path

    @property
    def model(self):
        if self._model is None:
            from fasttext.FastText import _FastText

            self._model = _FastText(self.model_path)
        return self._model


class LocalLanguageFilter(LanguageFilter):
    """datatrove's LanguageFilter on a local model file."""

    def __init__(self, language: str, model_path: str, threshold: float, exclusion_writer=None):
        super().__init__([language], threshold, exclusion_writer)
        self.model = LocalFT176([language], model_path)
