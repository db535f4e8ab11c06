"""The open-protocol doors: MCP (agentheal's tools for an LLM agent, and other servers' read-only
tools for diagnosis) and A2A (an Agent Card and tasks on `agentheal serve`).

One concern per module: `mcp_server` (the server and its resources), `mcp_tools` (its tools),
`serve` (MCP and A2A on `agentheal serve`), `mcp_client` (observation toolsets), `a2a_server`
(tasks that follow heal runs), `a2a_card` (the Agent Card). Like every door they call
`agentheal.services` only. Nothing is imported here: the SDKs load only when a door is opened.
"""

__all__: list[str] = []  # submodules are imported by name
