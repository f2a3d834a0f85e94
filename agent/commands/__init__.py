"""Command groups of `python -m agent`; each module has ``register(subparsers)``."""
