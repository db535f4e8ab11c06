"""agentheal: keeps software systems healthy with a team of LLM agents."""

__version__ = "0.1.0"

__all__ = ["__version__"]
