"""deescalate: practise de-escalating upset patients against a local language model.

The library is importable without Gradio: ``agent.llm`` gives a LangChain chat model for any
OpenAI-compatible backend, ``agent.runtime`` runs the embedded llama.cpp server, and the other
modules (personas, rubrics, patient, mood, checks, grader, coach, session, report, store) build on them.
"""

__version__ = "0.1.0"
