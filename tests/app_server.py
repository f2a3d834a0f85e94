"""Run the web app in-process on a free port for API and browser tests.

Why in-process: vcrpy patches the HTTP client of *this* process, so the app's model traffic
(``/v1/...``) is answered from cassettes while the Gradio server itself runs for real. The UI
traffic (gradio_client's own requests, Gradio's start-up self-check) is kept out of the cassettes
by :func:`only_model_traffic`, so cassettes hold model calls and nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.llm import LLMSettings
from agent.runtime import free_port
from agent.store import Store

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


REPO = Path(__file__).resolve().parents[1]


def screenshot_dir() -> Path:
    """Where the browser tests save their screenshots: a temporary folder, so a test run leaves the
    working tree as it was; ``DEESCALATE_SCREENSHOTS=docs/screenshots`` refreshes the README's."""
    import tempfile

    chosen = os.environ.get("DEESCALATE_SCREENSHOTS")
    folder = (REPO / chosen) if chosen else Path(tempfile.gettempdir()) / "deescalate-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# The trainee's two replies in the recorded API and browser sessions (part of the cassettes' bodies).
APOLOGY = "I'm so sorry you've been waiting, Mr. Carter. I understand how frustrating that must be."
PLAN = (
    "Let me see what I can do for you: I can check for a cancellation today, or book the first slot after "
    "you're back and give you a home exercise sheet. Would that help?"
)


def load_app_module() -> Any:
    """``app.py`` lives at the repository root, which is not on ``sys.path`` under pytest."""
    import importlib.util
    import sys

    if "app" in sys.modules:
        return sys.modules["app"]
    spec = importlib.util.spec_from_file_location("app", REPO / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["app"] = module
    spec.loader.exec_module(module)
    return module


def only_model_traffic(request: Any) -> Any:
    """vcr ``before_record_request``: keep OpenAI-style model calls, let everything else through."""
    return request if "/v1/" in request.path else None


@contextmanager
def running_app(
    settings: LLMSettings,
    db_path: Path,
    *,
    server: Any | None = None,
    personas_dir: Path | None = None,
    seed: int | None = None,
    patient: Any | None = None,
    coach: Any | None = None,
    **queue: int,
) -> Iterator[tuple[str, Any, Store]]:
    """(url, demo, store) of an app serving on a free loopback port, closed afterwards.

    ``patient``/``coach``: a fake model (tests/fakes.py) for page logic that needs no real model;
    ``queue``: ``turn_concurrency`` / ``max_queue`` for :func:`app.build_app`.
    """
    app = load_app_module()
    store = Store(f"sqlite:///{db_path}")
    demo = app.build_app(settings, store=store, server=server, personas_dir=personas_dir, seed=seed,
                         patient=patient, coach=coach, **queue)  # fmt: skip
    port = free_port()
    demo.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, theme=app.THEME, css=app.CSS
    )
    try:
        yield f"http://127.0.0.1:{port}/", demo, store
    finally:
        demo.close()
        store.close()
