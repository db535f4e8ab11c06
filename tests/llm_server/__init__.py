"""The real-LLM-server tier (`make test-llm`)."""
