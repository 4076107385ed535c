"""Shared fixtures: a tiny corpus, tokens artifact, tokenizer and random model, all made
locally (nothing comes from a model hub); and the order tests start in."""

import os
import shutil

# Must be set before anything imports triton or transformers. The Triton interpreter is for
# CPU machines only; on a GPU runner the `gpu` tests run the real kernels.
if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LLMFORGE_QUIET", "1")
# Every process group a test starts (in-process, spawned, torchrun, Slurm) checks that each
# collective goes through llmforge.distributed with a tensor on a device the group serves.
os.environ.setdefault("LLMFORGE_COLLECTIVE_CHECK", "1")

import json  # noqa: E402
import random  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

WORDS = (
    "the king queen sword love death night day rose thou art fair crown war peace "
    "def return class import self value list dict for while if else"
).split()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def make_corpus(root: Path, n: int = 200, seed: int = 0) -> dict[str, Path]:
    """Three small domains of jsonl documents."""
    rng = random.Random(seed)
    lit = [
        {"id": f"lit{i}", "text": " ".join(rng.choice(WORDS[:14]) for _ in range(60))}
        for i in range(n)
    ]
    code = [
        {
            "id": f"code{i}",
            "text": "\n".join(
                f"def f{j}(x):\n    return x + {rng.randint(0, 99)}" for j in range(5)
            ),
        }
        for i in range(n)
    ]
    math = []
    for i in range(n):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        math.append(
            {"id": f"math{i}", "text": f"{a} + {b} = {a + b}. The answer is \\boxed{{{a + b}}}."}
        )
    return {
        "literature": write_jsonl(root / "literature.jsonl", lit),
        "code": write_jsonl(root / "code.jsonl", code),
        "math": write_jsonl(root / "math.jsonl", math),
    }


@pytest.fixture(autouse=True, scope="session")
def private_hash_cache(tmp_path_factory):
    """Hashes of outside inputs go to this session's cache, not the user's ~/.cache."""
    cache = tmp_path_factory.mktemp("hash-cache") / "file-hashes.json"
    os.environ.setdefault("LLMFORGE_HASH_CACHE", str(cache))


# The smoke demo runs for minutes; started first, it overlaps the rest of the suite on the
# other worker instead of running alone at the end (`make test` uses `--dist worksteal`, so
# an idle worker takes the tests queued behind it). Other slow tests follow it.
FIRST = ("tests/test_demo.py::",)


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        if item.nodeid.startswith(FIRST):
            return 0
        return 1 if item.get_closest_marker("slow") else 2

    items.sort(key=rank)  # stable: the order within each rank is kept


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> dict[str, Path]:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def tiny_tokens(tmp_path_factory, tiny_corpus) -> Path:
    """A tokens artifact over the tiny corpus with a 512-token BPE."""
    from llmforge.stage import execute
    from stages.tokenize import STAGE

    out = tmp_path_factory.mktemp("tokens") / "tokens"
    items = [f"{domain}={path}" for domain, path in tiny_corpus.items()]
    return execute(STAGE, items, sets=["vocab_size=512", "val_fraction=0.1"], out=out)


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tiny_tokens) -> Path:
    return tiny_tokens / "tokenizer"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A `model` artifact: a random ~100k-parameter Llama with the tiny tokenizer."""
    from tests.fixtures_model import publish_random_llama

    return publish_random_llama(tmp_path_factory.mktemp("model") / "model", tiny_tokenizer_dir)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one torch thread (and the CI machine is shared); a module
    opts in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
