"""deescalate web app (placeholder until the practice UI lands): a streaming chat on the configured model.

Run with `make run` (or `python app.py`); serves on http://127.0.0.1:7860, or $GRADIO_SERVER_PORT.
"""

from __future__ import annotations

import gradio as gr

from agent.llm import LLMSettings, chat_model


def respond(message: str, history: list[dict]):
    model = chat_model(LLMSettings.from_env(), max_tokens=200)
    messages = [(turn["role"], turn["content"]) for turn in history] + [("user", message)]
    text = ""
    try:
        for chunk in model.stream(messages):
            text += chunk.content
            yield text
    except Exception as exc:  # the page must say what happened, not crash
        yield f"{text}\n\n[model error: {exc}]"


def build() -> gr.Blocks:
    with gr.Blocks(title="deescalate") as demo:
        gr.Markdown("# deescalate\nPractice de-escalation with a local model.")
        gr.ChatInterface(respond, api_name="chat")
    return demo


if __name__ == "__main__":
    build().queue().launch()
