"""Latency of a whole practice turn, as the trainee sees it, against the raw model server (prints figures).

Usage: python bench/turn_latency.py [--json] [--browser] [--persona ID] [--turns N] [--sessions K]
       [--model default|small] [--no-raw] [--pause S] [--settle S] [--busy N] [--type CPS]
       [--paste-pause S]

``--busy N``: after the quiet sessions, the same sessions are played again beside N CPU hogs of
the bench's own (:mod:`bench.busy`: spinning processes that stop by themselves), and the busy
figures and the ratio busy/quiet are printed from the one run (``busy``, ``busy_ratio``).
``--type CPS``: each reply is typed at CPS characters a second before Send (Chromium presses the
keys; the handler driver calls the page's input handler at each space), so the reply-so-far
prefill reads it while it is typed; without it the reply is pasted at once, as before.
``--review S`` (with ``--type``): seconds between the last key and Send, as a trainee glances over
the reply (default 0.5; 0 sends on the last key). A reply that ends a sentence is read whole
during that pause, stage direction included (``Session.prefill_reply``), if the model is free.
``--paste-pause S`` (without ``--type``): the reply is pasted into the box (one input event, as a
paste makes) and Send is clicked S seconds later, as a trainee who pastes, then reaches for Send
(default 0: Send at once, the worst case, which leaves the prefill no time).

Starts the embedded llama.cpp server (:class:`agent.runtime.EmbeddedServer`, its own log file),
builds the controller on it as ``make run`` does (``Practice`` with the embedded settings and that
server, warmed with ``model.start_background()``) and plays the persona's scripted good trainee
(``agent.simulate.trainee_lines(persona, "good")``), ``--sessions`` x ``--turns``. Per turn, from
Send:

* without ``--browser``: the page's own handler, :func:`agent.web.send`, is iterated (the view
  tuples it yields are what Gradio would render); ``verdicts_s`` is the ``graded`` view,
  ``patient_first_words_s`` the first ``typing`` view (the role filter releases whole sentences),
  ``patient_done_s`` the controller's ``answered`` update, ``send_ready_s`` the view in which Send
  is interactive again, ``tip_s`` the first ``tipped``/``coached`` view with a tip.
* with ``--browser``: ``app.build_app`` is served on a free loopback port and driven by headless
  Chromium (Playwright, ``/usr/bin/chromium``): pick the patient, Start, type each reply, click
  Send. A MutationObserver in the page stamps ``performance.timeOrigin + performance.now()`` at
  the click and when the newest feedback heading is this turn (verdicts), when the chat shows the
  patient's new bubble (first words), when Send is enabled again after being disabled, and when
  this turn's feedback shows "Tip:". ``patient_done_s`` is the controller's ``answered`` update
  (same wall clock; the page renders it together with Send ready, so both would read the same).

Between turns the bench waits until the model is quiet (the patient prefill and the coach's
warm-up done, at most ``--settle`` s) and ``--pause`` s more, as a trainee reading the answer would.

**Prefix cache.** llama-server logs, per task, ``prompt eval time = ... / N tokens`` (tokens read)
and the slot's ``n_tokens`` at release. The app's patient requests are the slot-0 tasks launched
between Send and the end of the turn; the prompt's total length comes from the raw baseline (same
prompt, whose stream reports ``cache_n`` + ``prompt_n``), or without it from ``n_tokens`` minus
generated tokens plus one. ``prefix_cache_hit`` = cached / (cached + evaluated) over the patient
requests of turns 2+; beside it, the tokens read per turn and the tokens of the new trainee line
(``Staff: line\\n``, counted by the served model's ``/tokenize``). A request the app closes early
(three sentences, or an out-of-role sentence) is cancelled and logs no timings: it counts as unknown.

**Raw baseline.** After each turn (coaching finished) the exact patient messages the app sent,
captured at the ``PatientModel.stream`` boundary, are POSTed with httpx straight to
``/v1/chat/completions`` with the same sampling (temperature, seed, max tokens, stop), streamed.
Fairness: the app's request found slot 0 holding the conversation up to the patient's previous
line; the raw request must find the same, and must not disturb slot 0 (the app's next turn would
then hit a cache the app never built). So it runs on slot 1 (the coach's), primed first (untimed,
``max_tokens=1``) with the prompt up to the end of the patient's previous line, i.e. the ideal
cache (what ``Session.prefill`` leaves): the raw request reads only the new trainee line, the
stage direction and the speaker tag. Afterwards slot 1 gets the coach's own warm-up back
(``Session.coach_prefill``), so the next tip finds what the app left. Nothing else runs on the
server meanwhile (llama-server may also restore either state from its prompt cache in RAM; the
tokens each request read are reported). ``overhead_ratio`` = median app first words / median raw first token (turns 2+);
``overhead_ratio_sentence`` compares with the raw stream's first complete sentence instead, which
leaves out the cost of releasing whole sentences. Both slots read their prompt on the same cores.

**Memory.** A thread reads ``VmRSS`` from ``/proc/<pid>/status`` every 0.2 s for this process
(the app; with ``--browser`` also the Playwright client), the server process, and, reported
apart, the browser (Playwright's driver and Chromium); ``rss_mb`` is the peak of app + server.

**Cold start.** ``page_ready``: from before the server is spawned until the page shows the model
ready (with ``--browser``) or the controller's model state is ready; ``start``: Start to the
opening line; ``first_turn``: session 1, turn 1, Send to the patient's first words.

Figures depend on the CPU and whatever else runs on it: the load average is printed alongside.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import httpx  # noqa: E402
from langchain_core.messages import AIMessage, BaseMessage  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from busy import hogs  # noqa: E402

from agent import web  # noqa: E402
from agent.llm import Backend, LLMSettings  # noqa: E402
from agent.models import COACH_SLOT, PATIENT_SLOT  # noqa: E402
from agent.patient import SENTENCE_END  # noqa: E402
from agent.personas import Persona, load_persona_argument  # noqa: E402
from agent.practice import Practice  # noqa: E402
from agent.runtime import EmbeddedServer, free_port  # noqa: E402
from agent.simulate import trainee_lines  # noqa: E402
from agent.store import Store  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
SEND = web.PRACTICE_OUTPUTS.index("send")
TIMED = ("verdicts_s", "patient_first_words_s", "patient_done_s", "send_ready_s", "tip_s")

# issue 10, "Goals" (turns 2+, 2 cores, embedded model) and "Measured" (before the redesign).
GOALS = {
    "verdicts_s": "<= 0.5 s",
    "patient_first_words_s": "<= 1.5 s (stretch 1.0)",
    "patient_done_s": "",
    "send_ready_s": "<= done + 0.3 s",
    "tip_s": "<= done + 3 s",
    "send_ready_after_done_s": "<= 0.3 s",
    "tip_after_done_s": "<= 3 s",
    "prefix_cache_hit": ">= 0.9",
    "evaluated_tokens": "<= new + 20",
    "overhead_ratio": "<= 1.15",
    "rss_mb": "<= 3072 MB",
    "first_turn": "<= 2.5 s",
}
BEFORE = {
    "patient_first_words_s": "1.7-7.6 s",
    "send_ready_s": "9.2-17.1 s",
    "evaluated_tokens": "76-92",
}


def now() -> float:
    """Wall clock in seconds: the browser's ``performance.timeOrigin + now()`` uses the same one."""
    return time.time()


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def stats(values: Sequence[float | None]) -> dict[str, float | None]:
    """Median and p90 (linear interpolation) of the known values, in the values' unit."""
    known = sorted(v for v in values if v is not None)
    if not known:
        return {"median": None, "p90": None}
    p90 = known[0] if len(known) == 1 else statistics.quantiles(known, n=10, method="inclusive")[-1]
    return {"median": round(statistics.median(known), 3), "p90": round(p90, 3)}


def since(mark: float | None, start: float | None) -> float | None:
    return None if mark is None or start is None else round(mark - start, 3)


# ------------------------------------------------------------------------------------------
# llama-server's log: tokens read per task


@dataclass
class Task:
    slot: int
    offset: int  # byte offset of its launch line
    prompt_n: int | None = None  # prompt tokens evaluated (read), not cached
    prompt_ms: float | None = None
    predicted_n: int | None = None
    n_tokens: int | None = None  # tokens in the slot at release (prompt + generated - 1)


LAUNCH = re.compile(r"launch_slot\w*: id\s+(\d+) \| task (\d+) \|")
PROMPT_EVAL = re.compile(r"id\s+(\d+) \| task (\d+) \| prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens")
EVAL = re.compile(r"id\s+(\d+) \| task (\d+) \|\s+eval time =\s*([\d.]+) ms /\s*(\d+) tokens")
RELEASE = re.compile(r"release: id\s+(\d+) \| task (\d+) \| stop processing: n_tokens = (\d+)")


class ServerLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def offset(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def tasks(self) -> dict[int, Task]:
        found: dict[int, Task] = {}
        offset = 0
        if not self.path.is_file():
            return found
        with open(self.path, "rb") as handle:
            for raw in handle:
                line = raw.decode("utf-8", "replace")
                if match := LAUNCH.search(line):
                    found[int(match[2])] = Task(slot=int(match[1]), offset=offset)
                elif (match := PROMPT_EVAL.search(line)) and int(match[2]) in found:
                    found[int(match[2])].prompt_n = int(match[4])
                    found[int(match[2])].prompt_ms = float(match[3])
                elif (match := EVAL.search(line)) and int(match[2]) in found:
                    found[int(match[2])].predicted_n = int(match[4])
                elif (match := RELEASE.search(line)) and int(match[2]) in found:
                    found[int(match[2])].n_tokens = int(match[3])
                offset += len(raw)
        return found

    def window(self, start: int, end: int, slot: int) -> list[Task]:
        return [t for _, t in sorted(self.tasks().items()) if t.slot == slot and start <= t.offset < end]


# ------------------------------------------------------------------------------------------
# Memory


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _subtree(tree: dict[int, list[int]], pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(tree.get(current, []))
    return out


class RssSampler(threading.Thread):
    """Peak RSS (MB) of this process (app), the server subtree, and the browser (other descendants)."""

    def __init__(self, server_pid: Callable[[], int | None], interval: float = 0.2) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.server_pid = server_pid
        self.interval = interval
        self.peak = {"app_server": 0.0, "app": 0.0, "server": 0.0, "browser": 0.0}
        self._stop_event = threading.Event()

    def sample(self) -> None:
        me = os.getpid()
        tree = _children()
        server = self.server_pid()
        server_pids = set(_subtree(tree, server)) if server else set()
        others = [pid for pid in _subtree(tree, me) if pid != me and pid not in server_pids]
        app = _rss_kb(me) / 1024
        served = sum(_rss_kb(pid) for pid in server_pids) / 1024
        browser = sum(_rss_kb(pid) for pid in others) / 1024
        for key, value in (("app", app), ("server", served), ("browser", browser), ("app_server", app + served)):
            self.peak[key] = max(self.peak[key], value)

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.sample()

    def stop(self) -> dict[str, float]:
        self._stop_event.set()
        self.sample()
        return {key: round(value) for key, value in self.peak.items()}


# ------------------------------------------------------------------------------------------
# What the controller did, and when


@dataclass
class Recorder:
    """Thin pass-through wrappers on the controller's instance: stages and patient requests, timed."""

    stages: list[tuple[str, float, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def reset(self) -> None:
        self.stages.clear()
        self.requests.clear()

    def install(self, practice: Practice) -> None:
        for name in ("turn", "coaching"):
            setattr(practice, name, self._traced(getattr(practice, name)))
        model = practice.patient
        stream = model.stream

        def recorded_stream(messages: Sequence[BaseMessage], **options: Any) -> Iterator[str]:
            request: dict[str, Any] = {"messages": list(messages), "options": options, "start": now()}
            self.requests.append(request)
            for chunk in stream(messages, **options):
                if chunk and "first_token" not in request:
                    request["first_token"] = now()
                yield chunk

        model.stream = recorded_stream  # type: ignore[method-assign]

    def _traced(self, method: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        def traced(*args: Any, **kwargs: Any) -> Iterator[Any]:
            for update in method(*args, **kwargs):
                self.stages.append((update.stage, now(), update))
                yield update

        return traced

    def first(self, *stages: str) -> float | None:
        return next((t for stage, t, _ in self.stages if stage in stages), None)

    def last_update(self) -> Any:
        return self.stages[-1][2] if self.stages else None


def tip_of(update: Any, index: int) -> str | None:
    if update is None or index >= len(update.turns) or update.turns[index].grade is None:
        return None
    return update.turns[index].grade.tip


def settle(practice: Practice, limit: float, pause: float) -> bool:
    """Wait until the model is quiet (patient prefill, tips, warm-ups done), then ``pause``."""
    deadline = time.monotonic() + limit
    quiet = False
    while time.monotonic() < deadline:
        if not practice.lane.patient_busy and practice.coaching_worker.idle():
            quiet = True
            break
        time.sleep(0.05)
    time.sleep(pause)
    return quiet


# ------------------------------------------------------------------------------------------
# The raw baseline


def _role(message: BaseMessage) -> str:
    return {"human": "user", "ai": "assistant", "system": "system"}.get(message.type, "user")


def _body(alias: str | None, messages: Sequence[BaseMessage], **fields: Any) -> dict[str, Any]:
    body = {"model": alias, "messages": [{"role": _role(m), "content": m.content} for m in messages]}
    body.update({key: value for key, value in fields.items() if value is not None})
    return body


def prime_messages(messages: Sequence[BaseMessage], persona: Persona) -> list[BaseMessage]:
    """The patient prompt up to the end of the patient's previous line (before the trainee's new one)."""
    *front, last = messages
    text = str(last.content)
    cut = text.rfind(f"{persona.staff_label}: ")
    if isinstance(last, AIMessage) and cut > 0:
        return [*front, AIMessage(text[:cut])]
    return list(messages[:-1]) or list(messages)  # chat style: the conversation before the new line


def raw_baseline(base_url: str, alias: str | None, request: dict[str, Any], persona: Persona,
                 timeout: float) -> dict[str, Any]:  # fmt: skip
    """Prime slot 1 as the app's slot 0 stood before its request, then time the identical request."""
    options = request["options"]
    with httpx.Client(base_url=base_url, timeout=timeout) as client:
        prime = _body(alias, prime_messages(request["messages"], persona), temperature=0.0, max_tokens=1,
                      id_slot=COACH_SLOT)  # fmt: skip
        client.post("/v1/chat/completions", json=prime).raise_for_status()
        body = _body(alias, request["messages"], stream=True, temperature=options.get("temperature"),
                     seed=options.get("seed"), max_completion_tokens=options.get("max_tokens"),
                     stop=options.get("stop"), id_slot=COACH_SLOT)  # fmt: skip
        started = time.perf_counter()
        first = sentence = None
        text = ""
        timings: dict[str, Any] = {}
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if not line.startswith("data:") or line.strip() == "data: [DONE]":
                    continue
                chunk = json.loads(line[5:])
                timings = chunk.get("timings") or timings
                piece = "".join((c.get("delta") or {}).get("content") or "" for c in chunk.get("choices") or [])
                if piece:
                    first = first or time.perf_counter() - started
                    text += piece
                    if sentence is None and SENTENCE_END.search(text.strip() + " "):
                        sentence = time.perf_counter() - started
        total = time.perf_counter() - started
    return {
        "raw_first_token_s": round(first, 3) if first is not None else None,
        "raw_first_sentence_s": round(sentence if sentence is not None else total, 3),
        "raw_done_s": round(total, 3),
        "raw_cached_tokens": timings.get("cache_n"),
        "raw_evaluated_tokens": timings.get("prompt_n"),
    }


def count_tokens(base_url: str, text: str) -> int | None:
    try:
        response = httpx.post(f"{base_url}/tokenize", json={"content": text}, timeout=30)
        return len(response.json()["tokens"])
    except (httpx.HTTPError, KeyError, ValueError):
        return None


# ------------------------------------------------------------------------------------------
# Driving the page: the handler directly, or Chromium


class Driver:
    """Starts sessions and plays turns; returns per-turn marks (wall-clock seconds) and details."""

    def ready(self) -> None: ...

    def start(self, persona: Persona) -> str: ...

    def type(self, session_id: str, text: str, speed: float) -> None: ...

    def paste(self, session_id: str, text: str) -> None: ...

    def send(self, session_id: str, text: str, number: int, timeout: float) -> dict[str, Any]: ...

    def close(self) -> None: ...


class HandlerDriver(Driver):
    """``agent.web.start`` / ``agent.web.send``, iterated as Gradio would."""

    def __init__(self, practice: Practice, recorder: Recorder) -> None:
        self.practice = practice
        self.recorder = recorder

    def ready(self) -> None:
        self.practice.model.start_background()
        while self.practice.model.state().state not in ("ready", "error", "remote"):
            time.sleep(0.05)
        if self.practice.model.state().state == "error":
            raise RuntimeError(self.practice.model.state().message)

    def start(self, persona: Persona) -> str:
        self.key = web.browser_key(None)
        view = web.start(self.practice, persona.id, None, self.key)
        return str(view[0])

    def type(self, session_id: str, text: str, speed: float) -> None:
        """What the page's typing handler does while the trainee types ``text`` at ``speed`` characters a second."""
        typed = ""
        words = text.split(" ")
        for number, word in enumerate(words, start=1):
            typed = f"{typed} {word}" if typed else word
            time.sleep((len(word) + 1) / speed)
            # The space after each word is typed too; after the last one nothing is (Send is next).
            web.typing(self.practice, session_id, typed if number == len(words) else typed + " ", self.key)

    def paste(self, session_id: str, text: str) -> None:
        """What the page's typing handler does when the whole reply is pasted at once (one change event)."""
        web.typing(self.practice, session_id, text, self.key)

    def send(self, session_id: str, text: str, number: int, timeout: float) -> dict[str, Any]:
        marks: dict[str, Any] = {"t0": now()}
        for view in web.send(self.practice, session_id, text, self.key):
            stamp = now()
            stage = self.recorder.stages[-1][0] if self.recorder.stages else None
            if stage == "graded":
                marks.setdefault("verdicts", stamp)
            elif stage == "typing":
                marks.setdefault("first_words", stamp)
            elif stage == "answered":
                send = view[SEND]
                if isinstance(send, dict) and send.get("interactive") is True:
                    marks.setdefault("send_ready", stamp)
            elif stage == "ended":
                marks["ended"] = stamp
            elif stage == "failed":
                marks["failed"] = view[web.PRACTICE_OUTPUTS.index("status")]
            elif stage in ("tipped", "coached") and tip_of(self.recorder.last_update(), number - 1):
                marks.setdefault("tip", stamp)
        return marks


BENCH_JS = """() => {
  if (window.__bench) return;
  const B = window.__bench = {turn: null};
  const now = () => performance.timeOrigin + performance.now();
  document.addEventListener('click', e => {
    const send = document.querySelector('#send');
    if (B.turn && !B.turn.t0 && send && send.contains(e.target)) B.turn.t0 = now();
  }, true);
  const newest = () => {
    const heading = document.querySelector('#feedback h3');
    if (!heading) return ['', ''];
    let body = '';
    for (let el = heading.nextElementSibling; el && !['H3', 'HR'].includes(el.tagName); el = el.nextElementSibling)
      body += el.textContent + '\\n';
    return [heading.textContent.replace(/\\s+/g, ' ').trim(), body];
  };
  const check = () => {
    const T = B.turn;
    if (!T || !T.t0) return;
    const t = now(), m = T.marks, mine = 'Turn ' + T.n;
    const [head, body] = newest();
    if (!m.verdicts && head === mine) m.verdicts = t;
    const bots = document.querySelectorAll('#chat [data-testid="bot"]');
    if (!m.first_words && bots.length > T.n && bots[bots.length - 1].textContent.trim()) m.first_words = t;
    const send = document.querySelector('#send');
    if (send && send.disabled) T.seen_disabled = true;
    if (!m.send_ready && send && !send.disabled && T.seen_disabled && m.first_words) {
      m.send_ready = t;
      m.chat_complete = T.chat_last;
    }
    if (!m.tip && head === mine && body.includes('Tip:')) m.tip = t;
    if (!m.phrasing && head === mine && body.includes('Try saying:')) m.phrasing = t;
    if (!m.ended && (document.querySelector('#status')?.textContent ?? '').includes('Session ended')) m.ended = t;
  };
  new MutationObserver(records => {
    const chat = document.querySelector('#chat');
    if (B.turn && B.turn.t0 && chat && records.some(r => chat.contains(r.target))) B.turn.chat_last = now();
    check();
  }).observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true});
}"""


def load_app_module() -> Any:
    """``app.py`` lives at the repository root, which is not on ``sys.path`` when run as a script."""
    if "app" in sys.modules:
        return sys.modules["app"]
    spec = importlib.util.spec_from_file_location("app", ROOT / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["app"] = module
    spec.loader.exec_module(module)
    return module


class BrowserDriver(Driver):
    """The page in headless Chromium; timestamps taken in the page."""

    def __init__(self, demo: Any, app: Any, practice: Practice, recorder: Recorder) -> None:
        from playwright.sync_api import sync_playwright

        self.demo, self.practice, self.recorder = demo, practice, recorder
        port = free_port()
        demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True,
                            theme=app.THEME, css=app.CSS)  # fmt: skip
        self.url = f"http://127.0.0.1:{port}/"
        self.playwright = sync_playwright().start()
        self.browser = self.playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        self.page = self.browser.new_page(viewport={"width": 1400, "height": 1000})
        self.skew_ms: float | None = None

    def ready(self) -> None:
        self.practice.model.start_background()
        self.page.goto(self.url)
        self.page.wait_for_function(
            "() => /ready/i.test(document.querySelector('#model-status')?.innerText ?? '')", timeout=600_000
        )
        self.page.evaluate(BENCH_JS)
        before = now()
        browser_ms = self.page.evaluate("() => performance.timeOrigin + performance.now()")
        after = now()
        # Both read the same system clock; the round trip bounds how far apart they can be.
        self.skew_ms = round(browser_ms - (before + after) * 500, 1)

    def start(self, persona: Persona) -> str:
        label = next(label for label, value in web.persona_choices(self.practice) if value == persona.id)
        known = {s.id for s in self.practice.store.list_sessions()}
        self.page.locator("#persona input").click()
        self.page.get_by_role("option", name=label, exact=True).click()
        self.page.click("#start")
        opening = " ".join(persona.opening_line.split())[:30]
        self.page.wait_for_function(
            "text => (document.querySelector('#chat')?.innerText ?? '').replace(/\\s+/g, ' ').includes(text)",
            arg=opening, timeout=120_000,
        )  # fmt: skip
        # The session id is a hidden component (not in the DOM): the new row in the store is this session.
        # The chat may still show the same opening line from the session before: wait for the row.
        deadline = time.monotonic() + 120
        while not (new := [s.id for s in self.practice.store.list_sessions() if s.id not in known]):
            if time.monotonic() > deadline:
                raise RuntimeError("Start did not make a session within 120 s")
            time.sleep(0.05)
        [session_id] = new
        return session_id

    def type(self, session_id: str, text: str, speed: float) -> None:
        """Type ``text`` into the reply box key by key, ``speed`` characters a second (the page's
        input events fire as they would for a trainee); Send is clicked afterwards."""
        self.page.locator("#message textarea").press_sequentially(text, delay=1000 / speed)

    def paste(self, session_id: str, text: str) -> None:
        """Put ``text`` into the reply box at once: one input event with the whole text, as a paste makes
        (Playwright's ``insert_text``, no key events)."""
        box = self.page.locator("#message textarea")
        box.fill("")
        box.focus()
        self.page.keyboard.insert_text(text)

    def send(self, session_id: str, text: str, number: int, timeout: float) -> dict[str, Any]:
        page = self.page
        page.evaluate("n => { window.__bench.turn = {n, t0: null, marks: {}, seen_disabled: false} }", number)
        if page.locator("#message textarea").input_value() != text:
            page.fill("#message textarea", text)
        page.click("#send")
        ms = int(timeout * 1000)
        page.wait_for_function(
            "() => { const T = window.__bench.turn; return T.marks.send_ready || T.marks.ended }",
            timeout=ms, polling=200,
        )  # fmt: skip
        # The tip: wait for this turn's coaching to finish, then for the page to show it.
        job = self.practice.live(session_id).jobs.get(number - 1)
        deadline = time.monotonic() + timeout
        while job is not None and not job.done and time.monotonic() < deadline:
            time.sleep(0.1)
        with contextlib.suppress(Exception):  # no tip shown (dropped, or the session ended without one)
            page.wait_for_function("() => window.__bench.turn.marks.tip", timeout=10_000, polling=200)
        turn = page.evaluate("() => window.__bench.turn")
        marks = {key: value / 1000 for key, value in (turn["marks"] or {}).items() if value}
        marks["t0"] = turn["t0"] / 1000
        return marks

    def close(self) -> None:
        for closing in (self.browser.close, self.playwright.stop, self.demo.close):
            with contextlib.suppress(Exception):
                closing()


# ------------------------------------------------------------------------------------------
# The run


def turn_row(marks: dict[str, Any], recorder: Recorder, number: int, session: int) -> dict[str, Any]:
    t0 = marks["t0"]
    done = recorder.first("answered", "ended")
    request = recorder.requests[0] if recorder.requests else {}
    update = recorder.last_update()
    grade = update.turns[number - 1].grade if update is not None and len(update.turns) >= number else None
    row = {
        "session": session,
        "turn": number,
        "verdicts_s": since(marks.get("verdicts"), t0),
        "patient_first_words_s": since(marks.get("first_words"), t0),
        "patient_done_s": since(done, t0),
        "send_ready_s": since(marks.get("send_ready"), t0),
        "tip_s": since(marks.get("tip"), t0),
        "phrasing_s": since(marks.get("phrasing") or recorder.first("coached"), t0),
        "controller_graded_s": since(recorder.first("graded"), t0),
        "controller_first_words_s": since(recorder.first("typing"), t0),
        "model_request_s": since(request.get("start"), t0),
        "model_first_token_s": since(request.get("first_token"), t0),
        "patient_requests": len(recorder.requests),
        "grader_verdicts_ms": round(grade.verdicts_ms, 1) if grade is not None else None,
        "tip_source": grade.tip_source if grade is not None else None,
        "ended": "ended" in marks or recorder.first("ended") is not None,
        "failed": marks.get("failed"),
    }
    if "chat_complete" in marks:
        row["chat_complete_s"] = since(marks["chat_complete"], t0)
    for key, value in (("send_ready_after_done_s", row["send_ready_s"]), ("tip_after_done_s", row["tip_s"])):
        row[key] = None if value is None or row["patient_done_s"] is None else round(value - row["patient_done_s"], 3)
    return row


def play(args: argparse.Namespace) -> dict[str, Any]:
    persona = load_persona_argument(args.persona)
    lines = trainee_lines(persona, "good")[: args.turns]
    workdir = Path(tempfile.mkdtemp(prefix="turn-latency-"))
    began = now()
    load_before = os.getloadavg()
    server = EmbeddedServer(model=args.model, log_path=workdir / "llama-server.log")
    sampler = RssSampler(lambda: server.process.pid if server.process is not None else None)
    sampler.start()
    server.ensure()
    server_start_s = now() - began
    server_log = ServerLog(server.log_path)
    settings = LLMSettings(backend=Backend.EMBEDDED, model=args.model, timeout=args.timeout)
    store = Store(f"sqlite:///{workdir / 'bench.db'}")
    recorder = Recorder()
    driver: Driver
    if args.browser:
        app = load_app_module()
        demo = app.build_app(settings, store=store, server=server, seed=args.seed)
        practice = demo.practice
        recorder.install(practice)
        driver = BrowserDriver(demo, app, practice, recorder)
    else:
        practice = Practice(store, settings, server=server, seed=args.seed)
        recorder.install(practice)
        driver = HandlerDriver(practice, recorder)
    rows: list[dict[str, Any]] = []
    cold: dict[str, Any] = {}
    phases = [("quiet", 0)] + ([("busy", args.busy)] if args.busy else [])
    try:
        driver.ready()
        cold["page_ready"] = round(now() - began, 2)
        cold["server_start"] = round(server_start_s, 2)
        for phase, count in phases:
            # The hogs run through the whole busy phase (start, typing, turns, reading pauses), as a
            # busy laptop would; each stops by itself after --busy-seconds even if this bench dies.
            with hogs(count, seconds=args.busy_seconds):
                loads = os.getloadavg()
                phase_rows = play_phase(args, driver, practice, recorder, server, server_log, persona, lines, cold)
            for row in phase_rows:
                row.update(phase=phase, hogs=count, load_1min=round(loads[0], 2))
            rows.extend(phase_rows)
        if cold and rows:
            cold["first_turn"] = rows[0]["patient_first_words_s"]
    finally:
        driver.close()
        rss = sampler.stop()
        server.stop()
        store.close()
    for row in rows:
        read_tokens(row, server_log)  # again, now that every line has reached the log
        row.pop("_log", None)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        shutil.copy2(server.log_path, args.keep / "llama-server.log")
    shutil.rmtree(workdir, ignore_errors=True)
    quiet = [r for r in rows if r["phase"] == "quiet"]
    summary = summarise(args, quiet, cold, rss, load_before, getattr(driver, "skew_ms", None))
    if args.busy:
        busy = summarise(args, [r for r in rows if r["phase"] == "busy"], cold, rss, load_before, None)
        summary["busy"] = {key: busy[key] for key in (*TIMED, "evaluated_tokens", "n", "first_turn_s", "turns")}
        summary["busy"]["hogs"] = args.busy
        summary["busy_ratio"] = {
            key: (round(busy[key]["median"] / summary[key]["median"], 2)
                  if busy[key]["median"] and summary[key]["median"] else None)
            for key in ("verdicts_s", "patient_first_words_s", "patient_done_s", "send_ready_s")
        }  # fmt: skip
    return summary


def play_phase(args: argparse.Namespace, driver: Driver, practice: Practice, recorder: Recorder,
               server: EmbeddedServer, server_log: ServerLog, persona: Persona, lines: list[str],
               cold: dict[str, Any]) -> list[dict[str, Any]]:  # fmt: skip
    """``--sessions`` sessions of the scripted trainee's lines, each turn timed from Send."""
    rows: list[dict[str, Any]] = []
    base_url = server.base_url
    for session_number in range(1, args.sessions + 1):
        recorder.reset()
        offset = server_log.offset()
        started = now()
        session_id = driver.start(persona)
        if session_number == 1 and "start" not in cold:
            cold["start"] = round(now() - started, 3)
        cold.setdefault("quiet_before_turn_1", settle(practice, args.settle, args.pause))
        if session_number == 1 and "prefill_tokens" not in cold:
            prefill = server_log.window(offset, server_log.offset(), PATIENT_SLOT)
            cold["prefill_tokens"] = sum(t.prompt_n or 0 for t in prefill) or None
        for number, line in enumerate(lines, start=1):
            if args.type:
                driver.type(session_id, line, args.type)
                time.sleep(args.review)
            elif args.paste_pause:
                driver.paste(session_id, line)
                time.sleep(args.paste_pause)
            recorder.reset()
            offset = server_log.offset()
            marks = driver.send(session_id, line, number, args.turn_timeout)
            row = turn_row(marks, recorder, number, session_number)
            settle(practice, args.settle, 0.0)  # the tip and the coach's warm-up, before the log is read
            row["_log"] = (offset, server_log.offset())
            staff_line = f"{persona.staff_label}: {' '.join(line.split())}\n"
            row["new_trainee_tokens"] = count_tokens(base_url, staff_line)
            if recorder.requests and not args.no_raw and not row["failed"]:
                try:
                    row.update(raw_baseline(base_url, server.alias, recorder.requests[0], persona, args.timeout))
                except httpx.HTTPError as exc:
                    row["raw_error"] = f"{type(exc).__name__}: {exc}"
                # Give slot 1 the coach's own warm-up back (what the app left there).
                live = practice.live(session_id)
                try:
                    live.session.coach_prefill(practice.coach)
                except Exception as exc:
                    row["raw_error"] = f"coach warm-up not restored: {exc}"
            read_tokens(row, server_log)
            rows.append(row)
            log(progress(row))
            if row["ended"] or row["failed"]:
                break
            settle(practice, args.settle, args.pause)
    return rows


def read_tokens(row: dict[str, Any], server_log: ServerLog) -> None:
    """Prompt tokens the app's patient requests of this turn read and found cached (server log)."""
    start, end = row["_log"]
    tasks = server_log.window(start, end, PATIENT_SLOT)
    known = [t for t in tasks if t.prompt_n is not None]
    row["evaluated_tokens"] = sum(t.prompt_n or 0 for t in known) if known else None
    row["patient_tasks_without_timings"] = len(tasks) - len(known)
    first = tasks[0] if tasks else None
    total = None
    if row.get("raw_cached_tokens") is not None and row.get("raw_evaluated_tokens") is not None:
        total = row["raw_cached_tokens"] + row["raw_evaluated_tokens"]
    elif first is not None and first.n_tokens is not None and first.predicted_n is not None:
        total = first.n_tokens - first.predicted_n + 1
    row["prompt_tokens"] = total
    row["cached_tokens"] = (
        total - first.prompt_n if total is not None and first is not None and first.prompt_n is not None else None
    )
    coach = [t for t in server_log.window(start, end, COACH_SLOT) if t.prompt_n is not None]
    row["coach_evaluated_tokens"] = sum(t.prompt_n or 0 for t in coach) if coach else None


def fmt(value: float | None, unit: str = "s") -> str:
    return "-" if value is None else f"{value:.2f} {unit}".strip()


def progress(row: dict[str, Any]) -> str:
    parts = [
        f"[session {row['session']} turn {row['turn']}]",
        f"verdicts {fmt(row['verdicts_s'])}",
        f"first words {fmt(row['patient_first_words_s'])}",
        f"done {fmt(row['patient_done_s'])}",
        f"send {fmt(row['send_ready_s'])}",
        f"tip {fmt(row['tip_s'])}",
        f"read {row.get('evaluated_tokens')} tok (new {row.get('new_trainee_tokens')})",
        f"raw first token {fmt(row.get('raw_first_token_s'))}",
    ]
    if row["ended"]:
        parts.append("(session ended)")
    if row["failed"]:
        parts.append(f"FAILED: {row['failed']}")
    return " · ".join(parts)


def summarise(args: argparse.Namespace, rows: list[dict[str, Any]], cold: dict[str, Any], rss: dict[str, float],
              load_before: tuple[float, ...], skew_ms: float | None) -> dict[str, Any]:  # fmt: skip
    warm = [r for r in rows if r["turn"] >= 2 and not r["failed"]]
    summary: dict[str, Any] = {key: stats([r[key] for r in warm]) for key in TIMED}
    summary["send_ready_after_done_s"] = stats([r["send_ready_after_done_s"] for r in warm])
    summary["tip_after_done_s"] = stats([r["tip_after_done_s"] for r in warm])
    hit = [r for r in warm if r["cached_tokens"] is not None and r["evaluated_tokens"] is not None]
    cached = sum(r["cached_tokens"] for r in hit)
    evaluated = sum(r["evaluated_tokens"] for r in hit)
    summary["prefix_cache_hit"] = round(cached / (cached + evaluated), 3) if cached + evaluated else None
    raw_first = stats([r.get("raw_first_token_s") for r in warm])["median"]
    raw_sentence = stats([r.get("raw_first_sentence_s") for r in warm])["median"]
    app_first = summary["patient_first_words_s"]["median"]
    summary["overhead_ratio"] = round(app_first / raw_first, 3) if app_first and raw_first else None
    summary["rss_mb"] = rss["app_server"]
    first = [r for r in rows if r["turn"] == 1 and not r["failed"]]
    summary["first_turn_s"] = {key: stats([r[key] for r in first]) for key in ("patient_first_words_s",
                                                                               "patient_done_s")}  # fmt: skip
    summary["cold_start_s"] = {"page_ready": cold.get("page_ready"), "first_turn": cold.get("first_turn")}
    summary.update({
        "n": len(warm),
        "mode": "browser" if args.browser else "handler",
        "model": args.model,
        "persona": args.persona,
        "sessions": args.sessions,
        "typed_cps": args.type or None,
        "review_s": args.review if args.type else None,
        "paste_pause_s": None if args.type else args.paste_pause,
        "spin_count": os.environ.get("GOMP_SPINCOUNT", "app default"),
        "evaluated_tokens": stats([r["evaluated_tokens"] for r in warm]),
        "new_trainee_tokens": stats([r["new_trainee_tokens"] for r in warm]),
        "evaluated_minus_new_tokens": stats([r["evaluated_tokens"] - r["new_trainee_tokens"] for r in warm
                                             if r["evaluated_tokens"] is not None and r["new_trainee_tokens"]]),
        "coach_evaluated_tokens": stats([r["coach_evaluated_tokens"] for r in warm]),
        "raw_first_token_s": stats([r.get("raw_first_token_s") for r in warm]),
        "raw_first_sentence_s": stats([r.get("raw_first_sentence_s") for r in warm]),
        "raw_evaluated_tokens": stats([r.get("raw_evaluated_tokens") for r in warm]),
        "model_first_token_s": stats([r["model_first_token_s"] for r in warm]),
        "overhead_ratio_sentence": round(app_first / raw_sentence, 3) if app_first and raw_sentence else None,
        "rss_detail_mb": rss,
        "cold_start_detail_s": cold,
        "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]},
        "clock_skew_ms": skew_ms,
        "turns": rows,
    })  # fmt: skip
    return summary


def table(summary: dict[str, Any]) -> str:
    def timed(label: str, key: str, goal_key: str | None = None) -> str:
        figures = summary[key]
        goal = GOALS.get(goal_key or key, "")
        return (f"{label:<34}{fmt(figures['median']):>9}{fmt(figures['p90']):>9}   {goal:<24}"
                f"{BEFORE.get(key, '')}")  # fmt: skip

    def single(label: str, value: str, goal_key: str, before: str = "") -> str:
        return f"{label:<34}{value:>9}{'':>9}   {GOALS.get(goal_key, ''):<24}{before}"

    def ratio(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    cold = summary["cold_start_s"]
    hit = summary["prefix_cache_hit"]
    lines = [
        f"turn latency · {summary['mode']} · model {summary['model']} · {summary['persona']} · "
        f"{summary['sessions']} session(s), {len(summary['turns'])} turns ({summary['n']} warm: turns 2+) · "
        f"load {summary['load_average']['before'][0]} -> {summary['load_average']['after'][0]}",
        "",
        f"{'from Send (turns 2+)':<34}{'median':>9}{'p90':>9}   {'goal (issue 10)':<24}before",
        timed("verdicts shown", "verdicts_s"),
        timed("patient first words shown", "patient_first_words_s"),
        timed("patient answer complete", "patient_done_s"),
        timed("Send enabled again", "send_ready_s"),
        timed("  ... after the answer", "send_ready_after_done_s"),
        timed("tip shown", "tip_s"),
        timed("  ... after the answer", "tip_after_done_s"),
        timed("raw server: first token", "raw_first_token_s", "-"),
        timed("raw server: first sentence", "raw_first_sentence_s", "-"),
        "",
        single("stack/raw (first words)", ratio(summary["overhead_ratio"]), "overhead_ratio"),
        single("  vs raw first sentence", ratio(summary["overhead_ratio_sentence"]), "-"),
        single("prefix-cache hit (patient)", "-" if hit is None else f"{hit:.2f}", "prefix_cache_hit"),
        single("prompt tokens read per turn", str(summary["evaluated_tokens"]["median"]), "evaluated_tokens",
               BEFORE["evaluated_tokens"]),
        single("  new trainee tokens", str(summary["new_trainee_tokens"]["median"]), "-"),
        single("  raw request read", str(summary["raw_evaluated_tokens"]["median"]), "-"),
        single("  coach read per turn", str(summary["coach_evaluated_tokens"]["median"]), "-", "85-112"),
        single("peak RSS app + server", f"{summary['rss_mb']:.0f} MB", "rss_mb"),
        single("  browser (apart)", f"{summary['rss_detail_mb']['browser']:.0f} MB", "-"),
        single("cold: page ready", fmt(cold["page_ready"]), "-"),
        single("cold: first turn first words", fmt(cold["first_turn"]), "first_turn"),
    ]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--browser", action="store_true", help="drive the page in headless Chromium")
    parser.add_argument("--persona", default="carter-wrong-day")
    parser.add_argument("--turns", type=int, default=5, help="replies per session (the scripted good trainee)")
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--model", default="default", help="default | small | a GGUF path")
    parser.add_argument("--seed", type=int, default=7, help="the controller's seed (the page's default is none)")
    parser.add_argument("--no-raw", action="store_true", help="skip the raw llama-server baseline")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds a trainee reads before the next reply")
    parser.add_argument("--settle", type=float, default=120.0,
                        help="at most this long to wait for the prefill, tip and warm-up between turns")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=120.0, help="model request timeout (the app's default)")
    parser.add_argument("--turn-timeout", type=float, default=900.0, help="give up on a turn after this long")
    parser.add_argument("--busy", type=int, default=0, metavar="N",
                        help="play the sessions again beside N CPU hogs of the bench's own (bench/busy.py) and "
                             "print quiet and busy figures with their ratio")  # fmt: skip
    parser.add_argument("--busy-seconds", type=float, default=1800.0, help="the hogs stop by themselves after this")
    parser.add_argument(
        "--review",
        type=float,
        default=0.5,
        metavar="S",
        help="with --type: seconds between the last key and Send (default 0.5)",
    )
    parser.add_argument(
        "--paste-pause",
        type=float,
        default=0.0,
        metavar="S",
        help="without --type: paste the reply, then Send S seconds later (default 0: at once)",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        metavar="DIR",
        help="copy the server's log (per-task timings, for a trace of the turn) into DIR",
    )
    parser.add_argument("--type", type=float, default=0.0, metavar="CPS",
                        help="type each reply at CPS characters a second before Send (0: paste it)")  # fmt: skip
    args = parser.parse_args()
    if args.browser and not Path(CHROMIUM).is_file():
        print(f"--browser needs Chromium at {CHROMIUM}: apt-get install chromium (see .ci/run)", file=sys.stderr)
        raise SystemExit(2)
    with contextlib.redirect_stdout(sys.stderr):  # Gradio prints to stdout; --json keeps it for the object
        summary = play(args)
    if args.json:
        print(json.dumps(summary))
        return
    print(table(summary))
    if args.busy:
        busy, ratio = summary["busy"], summary["busy_ratio"]
        print(f"\nbeside {args.busy} busy process(es), same run (turns 2+, median; ratio busy/quiet):")
        for key in ("verdicts_s", "patient_first_words_s", "patient_done_s", "send_ready_s"):
            print(f"  {key:<28}{fmt(busy[key]['median']):>9}   x{ratio[key] if ratio[key] is not None else '-'}")


if __name__ == "__main__":
    main()
