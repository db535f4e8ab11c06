"""Settings: defaults, then `agentheal.toml`, then `AGENTHEAL_*` environment variables (highest).

Everything agentheal writes lives under one home folder (`AGENTHEAL_HOME`, default
`./.agentheal`); deleting it resets agentheal.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from agentheal.models import Risk


def _toml_file() -> Path:
    return Path(os.environ.get("AGENTHEAL_CONFIG", "agentheal.toml"))


class Settings(BaseSettings):
    """agentheal's settings. Each field reads `AGENTHEAL_<FIELD>` from the environment."""

    model_config = SettingsConfigDict(env_prefix="AGENTHEAL_", extra="forbid", validate_default=True)

    home: Path = Field(default=Path(".agentheal"), description="Folder for all runtime state.")

    # Scale-out (agentheal.storage): the event store and the heal checkpoints in one PostgreSQL
    # database that every worker shares. Unset: SQLite files under the home folder.
    database_url: SecretStr | None = Field(
        default=None,
        description="postgresql://USER[:PASSWORD]@HOST:PORT/DB (a secret: it may carry a password); "
        "schema upgrades by `agentheal db upgrade`.",
    )

    @field_validator("database_url")
    @classmethod
    def _database_url_is_postgres(cls, v: SecretStr | None) -> SecretStr | None:
        from agentheal.storage.errors import StorageError
        from agentheal.storage.urls import check_database_url

        if v is None or not v.get_secret_value().strip():
            return None
        try:
            return SecretStr(check_database_url(v.get_secret_value()))
        except StorageError as exc:
            raise ValueError(str(exc)) from None

    # Work sharing on PostgreSQL (agentheal.work): each worker's name, and how long a claim it holds
    # outlives its last renewal (renewed every third of it) before another worker may resume the run.
    worker_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="This worker's name among those sharing the database (default: HOST-PID).",
    )
    worker_lease_s: float = Field(
        default=30.0,
        ge=0.3,
        le=3600,
        description="Seconds a claim lasts without renewal; a worker that dies loses its claims after it.",
    )

    # The LLM: any OpenAI-compatible endpoint. Unset base URL means no LLM is used.
    llm_base_url: str | None = Field(
        default=None, description="e.g. https://api.openai.com/v1, http://127.0.0.1:11434/v1"
    )
    llm_model: str = "gpt-4o-mini"
    llm_api_key: SecretStr | None = None
    llm_timeout_s: float = Field(default=60.0, gt=0)
    llm_max_retries: int = Field(default=3, ge=0, le=10)
    llm_json_schema: bool = Field(
        default=True,
        description="Start by asking for JSON-schema output (a server that refuses it is asked the next "
        "way and remembered); false starts with the schema in the prompt.",
    )
    llm_run_budget_s: float = Field(
        default=300.0,
        gt=0,
        description="Wall time one heal run may spend waiting on the LLM, retries and back-off included; "
        "each call's time-out is cut to what is left.",
    )
    llm_max_tokens: int = Field(
        default=1024,
        ge=0,
        description="Cap on the tokens of each reply (0: the server's own); a small local model can "
        "otherwise write until its context is full.",
    )
    llm_max_tool_iterations: int = Field(default=6, ge=1, le=50)
    llm_tool_output_chars: int = Field(
        default=3000, ge=200, description="Budget per observation tool output."
    )

    # Memory: an OpenAI-compatible embeddings endpoint is optional; the default runs offline.
    embed_base_url: str | None = None
    embed_model: str = "text-embedding-3-small"
    embed_api_key: SecretStr | None = None
    playbook_after: int = Field(
        default=2, ge=1, description="Successful heals by one plan before it is a playbook."
    )
    recall_k: int = Field(default=5, ge=1, le=50)
    memory_index_batch: int = Field(
        default=32,
        ge=1,
        le=1000,
        description="Heal records gathered before they are written to the vector index together "
        "(until then they are searched in the record store).",
    )
    # Memory search (agentheal.memory_lexical): how recall ranks; the weight is tuned on eval/retrieval.
    memory_search_mode: str = Field(
        default="hybrid", pattern="^(hybrid|dense|lexical)$", description="hybrid, dense or lexical."
    )
    memory_hybrid_weight: float = Field(
        default=0.6, ge=0, le=1, description="Share of the cosine in a hybrid score; the rest is BM25's."
    )

    # Scale-out of memory (agentheal.memory_backends): the vectors on a Chroma server every worker
    # shares. Unset: chromadb's embedded client in the home folder (one writer process).
    memory_url: str | None = Field(
        default=None, description="http://HOST:PORT of a `chroma run` server holding memory's vectors."
    )

    @field_validator("memory_url")
    @classmethod
    def _memory_url_is_a_server(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        from agentheal.memory_backends import check_memory_url

        return check_memory_url(v)  # MemoryUrlError is a ValueError: pydantic names the field

    # Personas and routing.
    personas_dir: Path | None = Field(
        default=None, description="Extra persona folder loaded after the built-ins."
    )
    match_threshold: float = Field(default=0.30, ge=0, le=1)
    max_handoffs: int = Field(default=2, ge=0, le=10)

    # Remote personas (agentheal.protocols.a2a_wait): how often `agentheal serve` asks the agents its
    # runs wait for whether they answered.
    remote_poll_s: float = Field(
        default=2.0, gt=0, le=300, description="Seconds between asks of the remote agents runs wait for."
    )

    # Policy and healing.
    policy_file: Path | None = None
    max_auto_risk: Risk = Risk.medium
    dry_run: bool = False
    heal_attempts: int = Field(default=2, ge=1, le=5, description="Plans tried before a gap is escalated.")

    # Validation that waits for a dependency (agentheal.graphs.validation): a check that fails while a
    # component it depends on is down waits this long for that dependency to be healed (by its own
    # run: the watch detects it in ~3 probe intervals, heals it with a restart bounded by its start
    # timeout, and validates), then checks again; past it the run escalates, naming the dependency.
    validate_dependency_wait_s: float = Field(
        default=180.0,
        ge=0,
        le=3600,
        description="How long a failing validation waits for a dependency that is down to be healthy again.",
    )

    # Agent coordination (agentheal.protocols): other MCP servers' read-only tools for diagnosis.
    mcp_servers_file: Path | None = Field(
        default=None,
        description="A YAML file naming external MCP servers (a command or a URL) and the tools of each "
        "the diagnosis may call (none unless listed); see README, Agent coordination.",
    )

    # Chat-ops (agentheal.chatops): Slack and Microsoft Teams, and who may do what there.
    slack_signing_secret: SecretStr | None = Field(
        default=None, description="Slack's signing secret: with it, `serve` takes POST /slack/events."
    )
    slack_bot_token: SecretStr | None = Field(default=None, description="The bot's token (xoxb-…).")
    slack_app_token: SecretStr | None = Field(
        default=None, description="An app-level token (xapp-…) for `agentheal chat slack --socket`."
    )
    slack_api_url: str | None = Field(
        default=None, description="The Slack Web API's base URL (default Slack's own; a stand-in in tests)."
    )
    slack_channel: str | None = Field(
        default=None, description="A channel id where the bot follows runs other doors start (watch, API)."
    )
    teams_client_id: str | None = Field(
        default=None, description="The bot's Microsoft app id: with it, `serve` takes POST /teams/messages."
    )
    teams_client_secret: SecretStr | None = None
    teams_tenant_id: str | None = Field(default=None, description="The tenant, for a single-tenant bot.")
    teams_conversation: str | None = Field(
        default=None,
        description="A Teams conversation id (a channel's) where the bot follows runs other "
        "doors start (watch, API).",
    )
    teams_service_url: str = Field(
        default="https://smba.trafficmanager.net/teams/",
        description="The Bot Connector's service URL for teams_conversation (the one its activities carry).",
    )
    teams_openid_url: str | None = Field(
        default=None,
        description="Bot Framework's OpenID metadata URL, whose keys sign inbound activities "
        "(default: the public cloud's).",
    )
    teams_token_url: str | None = Field(
        default=None,
        description="An OAuth2 client-credentials token endpoint for the bot's own token "
        "instead of Microsoft Entra (a token proxy, or a stand-in in tests).",
    )
    chat_roles: dict[str, str] = Field(
        default_factory=dict,
        description='Chat users\' roles, e.g. {"slack:U0123": "operator", "teams:29:1abc": "viewer"}.',
    )
    chat_default_role: str | None = Field(
        default="viewer", description="The role of a chat user not in chat_roles (empty: none, help only)."
    )

    # Effectiveness (agentheal.metrics): what watch records for availability, and prevention inside it
    probe_batch_s: float = Field(
        default=60.0, gt=0, le=3600, description="Watch writes probe answers once per this (a row each)."
    )
    probe_keep_days: float = Field(
        default=90.0, gt=0, description="Probe answers older than this are deleted (availability's history)."
    )
    prevent_every_rounds: int = Field(
        default=12, ge=0, description="Rounds of watch between two rounds of the prevent graph (0: never)."
    )

    @field_validator("chat_roles")
    @classmethod
    def _chat_roles_known(cls, v: dict[str, str]) -> dict[str, str]:
        for user, role in v.items():
            if role not in ("viewer", "operator", "admin"):
                raise ValueError(f"{user}: role {role!r} is not viewer, operator or admin")
            if ":" not in user:
                raise ValueError(f"{user!r}: name a chat user as slack:USER_ID or teams:USER_ID")
        return v

    @field_validator("chat_default_role")
    @classmethod
    def _chat_default_role_known(cls, v: str | None) -> str | None:
        v = (v or "").strip() or None
        if v not in (None, "viewer", "operator", "admin"):
            raise ValueError(f"role {v!r} is not viewer, operator or admin (or empty: none)")
        return v

    @field_validator("llm_base_url", "embed_base_url")
    @classmethod
    def _blank_is_none(cls, v: str | None) -> str | None:
        return v.strip().rstrip("/") or None if v else None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=_toml_file()))

    @property
    def llm_configured(self) -> bool:
        return self.llm_base_url is not None

    @cached_property
    def home_dir(self) -> Path:
        """The home folder, absolute and created."""
        home = self.home.expanduser().resolve()
        home.mkdir(parents=True, exist_ok=True)
        return home

    @property
    def events_url(self) -> str:
        """The event store's SQLAlchemy URL: the database's (with psycopg 3's driver), else the file's."""
        if self.database_url is not None:
            from agentheal.storage.urls import sqlalchemy_url

            return sqlalchemy_url(self.database_url.get_secret_value())
        return f"sqlite:///{self.home_dir / 'events.sqlite'}"

    @property
    def checkpoints_path(self) -> Path:
        return self.home_dir / "checkpoints.sqlite"

    @property
    def memory_dir(self) -> Path:
        return self.home_dir / "memory"

    @property
    def generated_personas_dir(self) -> Path:
        return self.home_dir / "personas"

    @property
    def estates_dir(self) -> Path:
        return self.home_dir / "estates"

    @property
    def llm_endpoints_path(self) -> Path:
        """What each LLM endpoint was seen to support (see `agentheal.llm_endpoint`)."""
        return self.home_dir / "llm-endpoints.json"

    @property
    def audit_log(self) -> Path:
        return self.home_dir / "audit.log"


def package_data(name: str) -> Path:
    """A data folder shipped with agentheal (`personas`, `prompts`): in the wheel, or in a source checkout."""
    here = Path(__file__).resolve().parent
    installed = here / name
    if installed.is_dir():
        return installed
    return here.parent.parent / name
