"""The sandbox stops runaway, greedy, escaping and networked code, and passes good code."""

import pytest

from llmforge.sandbox import Limits, network_isolation, run_many, run_python


def test_correct_code_passes_quickly():
    result = run_python("assert sum(range(10)) == 45\nprint('ok')")
    assert result.passed and result.stdout == "ok\n"
    assert result.duration_s < 5


def test_failing_assertion_is_failed():
    result = run_python("assert 1 == 2, 'nope'")
    assert result.status == "failed" and "nope" in result.stderr


def test_infinite_loop_hits_cpu_limit():
    result = run_python("while True:\n    pass", Limits(cpu_s=1, wall_s=10))
    assert result.status == "timeout"
    assert result.duration_s < 8


def test_sleeping_code_hits_wall_timeout():
    result = run_python("import time\ntime.sleep(60)", Limits(wall_s=1))
    assert result.status == "timeout" and result.duration_s < 5


def test_unbounded_allocation_hits_memory_limit():
    code = "chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))"
    assert run_python(code, Limits(memory_mb=256)).status == "memory"


def test_write_outside_workdir_refused(tmp_path):
    target = tmp_path / "escaped.txt"
    result = run_python(f"open({str(target)!r}, 'w').write('x')")
    assert result.status == "failed" and "outside the work directory" in result.stderr
    assert not target.exists()


def test_remove_outside_workdir_refused(tmp_path):
    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    result = run_python(f"import os\nos.remove({str(victim)!r})")
    assert result.status == "failed" and victim.exists()


def test_write_inside_workdir_allowed():
    result = run_python("open('a.txt', 'w').write('hi')\nprint(open('a.txt').read())")
    assert result.passed and result.stdout == "hi\n"


def test_file_size_limit():
    code = "with open('big.bin', 'wb') as f:\n    f.write(b'x' * (4 * 2**20))"
    assert run_python(code, Limits(fsize_mb=1)).status != "passed"


def test_socket_refused():
    result = run_python("import socket\nsocket.socket().connect(('127.0.0.1', 9))")
    assert result.status == "failed" and "network access is disabled" in result.stderr


def test_subprocess_refused():
    result = run_python("import subprocess\nsubprocess.run(['echo', 'hi'])")
    assert result.status == "failed" and "not allowed" in result.stderr


@pytest.mark.skipif(network_isolation() != "namespace", reason="unshare not permitted here")
def test_network_namespace_has_only_loopback():
    # /proc/self/net/dev lists the interfaces of the process's own network namespace.
    code = "print(sorted(l.split(':')[0].strip() for l in open('/proc/self/net/dev') if ':' in l))"
    result = run_python(code)
    assert result.passed and result.stdout.strip() == "['lo']", result.stdout


def test_environment_is_minimal(monkeypatch):
    monkeypatch.setenv("LLMFORGE_SECRET", "s3cret")
    result = run_python("import os\nprint('LLMFORGE_SECRET' in os.environ)")
    assert result.stdout.strip() == "False"


def test_run_many_keeps_order_and_verdicts():
    codes = ["print(1)", "raise SystemExit(3)", "print(3)", "while True: pass"]
    results = run_many(codes, Limits(cpu_s=1, wall_s=5), workers=4)
    assert [r.status for r in results] == ["passed", "failed", "passed", "timeout"]
    assert results[2].stdout == "3\n"
