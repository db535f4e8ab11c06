"""`agentheal serve`: the HTTP API (FastAPI on uvicorn), its tokens and roles, its shared state.

Importing this package imports nothing heavy: FastAPI is loaded by `agentheal.api.app` and
`agentheal.api.auth`, which only `agentheal serve` (and the tests) import. `agentheal.api.tokens`
is plain Python, so `agentheal tokens …` does not load FastAPI.
"""

__all__: list[str] = []
