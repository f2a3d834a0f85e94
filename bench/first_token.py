"""First-token latency of a short chat on the embedded model (prints figures; not a test).

Usage: python bench/first_token.py [--model default|small|PATH] [--runs 5]
Reports the server start time (process spawn to healthy), the cold first token, and the median
first token / total time of warm follow-up turns that share a prompt prefix (as a chat does).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from agent.llm import Backend, LLMSettings, chat_model
from agent.runtime import EmbeddedServer

SYSTEM = "You are Mr. Carter, a patient at a physical therapy clinic front desk. Answer in one sentence."
TURNS = [
    "Good morning, how can I help you today?",
    "I'm sorry about the wait, Mr. Carter. Let me look at your booking.",
    "I see the appointment is tomorrow. Can you tell me what happened?",
    "I understand. Let me find out whether a doctor can see you today.",
    "Thank you for your patience. Would 4 pm today work for you?",
]


def first_token(model, messages) -> tuple[float, float, str]:
    start = time.perf_counter()
    first = None
    text = ""
    for chunk in model.stream(messages):
        if first is None and chunk.content:
            first = time.perf_counter() - start
        text += chunk.content
    return first or float("nan"), time.perf_counter() - start, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--runs", type=int, default=len(TURNS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    started = time.perf_counter()
    with EmbeddedServer(model=args.model) as server:
        start_s = time.perf_counter() - started
        settings = LLMSettings(backend=Backend.EMBEDDED, base_url=server.openai_base_url, model=args.model)
        model = chat_model(settings, temperature=0.7, max_tokens=60)
        history: list[tuple[str, str]] = [("system", SYSTEM)]
        results = []
        for turn in TURNS[: args.runs]:
            history.append(("user", turn))
            ft, total, text = first_token(model, history)
            history.append(("assistant", text))
            results.append({"first_token_s": round(ft, 3), "total_s": round(total, 3), "chars": len(text)})
    warm = [r["first_token_s"] for r in results[1:]] or [results[0]["first_token_s"]]
    summary = {
        "model": args.model,
        "server_start_s": round(start_s, 2),
        "cold_first_token_s": results[0]["first_token_s"],
        "warm_first_token_median_s": round(statistics.median(warm), 3),
        "total_median_s": round(statistics.median(r["total_s"] for r in results), 3),
        "turns": results,
    }
    if args.json:
        print(json.dumps(summary))
        return
    print(f"model                      {summary['model']}")
    print(f"server start (to healthy)  {summary['server_start_s']:.2f} s")
    print(f"cold first token           {summary['cold_first_token_s']:.2f} s")
    print(f"warm first token (median)  {summary['warm_first_token_median_s']:.2f} s")
    print(f"whole reply (median)       {summary['total_median_s']:.2f} s")


if __name__ == "__main__":
    main()
