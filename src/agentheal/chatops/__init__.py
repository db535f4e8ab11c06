"""Chat-ops: heal, follow and approve from Slack and Microsoft Teams.

`core` is the conversation and the run threads, independent of any platform, over the application
services; `slack` and `teams` are the adapters; `mount` puts them on `agentheal serve`.
"""

__all__ = ["core", "follow", "messages", "mount", "parser", "slack", "teams", "views"]
