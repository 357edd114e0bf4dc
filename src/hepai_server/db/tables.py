"""The tables: accounts, web sessions, usage, workers, files, the audit log, knowledge bases,
stored responses, external MCP servers and batches."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    TypeDecorator,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores it naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if not isinstance(value, datetime):
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


user_groups = Table(
    "user_groups",
    Base.metadata,
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("group_id", ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(128), unique=True)
    email: Mapped[str | None] = mapped_column(String(256))
    password_hash: Mapped[str | None] = mapped_column(String(256))
    level: Mapped[str] = mapped_column(String(16), default="user")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The identity provider's subject, for accounts made by single sign-on.
    oidc_subject: Mapped[str | None] = mapped_column(String(255), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    groups: Mapped[list[Group]] = relationship(secondary=user_groups, lazy="selectin")

    @property
    def is_admin(self) -> bool:
        return self.level == "admin"


class Group(Base):
    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128), default="default")
    #: SHA-256 of the whole key; the key itself is never stored.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: The first characters of the key, enough for a person to tell keys apart.
    prefix: Mapped[str] = mapped_column(String(16))
    #: Public model ids this key may call; null means every model its user may call.
    allowed_models: Mapped[list[str] | None] = mapped_column(JSON)
    #: ``inference`` (models, tools and files) or ``full`` (also the account routes and
    #: registering workers): a leaked inference key of an admin is not an admin.
    scope: Mapped[str] = mapped_column(String(16), default="full", server_default="full")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: When a request with this key was last recorded; set by the usage writer, in batches.
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(lazy="joined")


class WebSession(Base):
    """A signed-in browser: the portal's cookie names one row, by the hash of its token."""

    __tablename__ = "web_sessions"

    #: SHA-256 of the cookie's token; the token itself is never stored.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    #: The token every form of this session must carry (synchronizer-token CSRF defence).
    csrf_token: Mapped[str] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    #: A notice a form's redirect leaves for the next page, sealed with a key only the
    #: browser's cookie gives (it may carry a new key's secret); read once, then cleared.
    flash: Mapped[str | None] = mapped_column(Text)

    user: Mapped[User] = relationship(lazy="joined")


class LoginFailure(Base):
    """A portal sign-in attempt not (yet) known to have succeeded, kept for a while so
    repeated guessing can be slowed down; a success deletes its username's."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(128), index=True)
    ip: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class Provider(Base):
    """An upstream provider an admin added in the portal (the config file holds the others)."""

    __tablename__ = "providers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    preset: Mapped[str | None] = mapped_column(String(32))
    base_url: Mapped[str] = mapped_column(String(512))
    #: The provider's API key, encrypted with a key derived from the platform's secret.
    api_key_sealed: Mapped[str | None] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    models: Mapped[list[ProviderModel]] = relationship(
        lazy="selectin",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="ProviderModel.model_id",
    )


class ProviderModel(Base):
    """A public model id an added provider serves."""

    __tablename__ = "provider_models"

    provider_id: Mapped[int] = mapped_column(
        ForeignKey("providers.id", ondelete="CASCADE"), primary_key=True
    )
    model_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    upstream: Mapped[str | None] = mapped_column(String(256))
    type: Mapped[str] = mapped_column(String(16), default="chat")


class ModelPermission(Base):
    """Who may use a provider model, set by an admin; it replaces the config file's groups
    and users for that model."""

    __tablename__ = "model_permissions"

    model_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    groups: Mapped[list[str]] = mapped_column(JSON)
    users: Mapped[list[str]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class UsageRecord(Base):
    """One row per API request, written in batches after the response (and from the write-ahead
    journal after a crash): the ledger every total and every budget's spend is summed from."""

    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_user_created", "user_id", "created_at"),
        Index("ix_usage_model_created", "model", "created_at"),
        Index("ix_usage_created", "created_at"),
        Index("ix_usage_key_created", "api_key_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    )
    #: The platform's own id of the request: one row each, whatever happened.
    request_id: Mapped[str] = mapped_column(String(64), index=True, unique=True)
    user_id: Mapped[int | None] = mapped_column(Integer)
    api_key_id: Mapped[int | None] = mapped_column(Integer)
    endpoint: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(256))
    deployment: Mapped[str | None] = mapped_column(String(256))
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    status_code: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(512))
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    total_tokens: Mapped[int | None] = mapped_column(Integer)
    cached_tokens: Mapped[int | None] = mapped_column(Integer)
    reasoning_tokens: Mapped[int | None] = mapped_column(Integer)
    #: What a tool worker processed, as it reported it (X-HepAI-Usage).
    pages: Mapped[int | None] = mapped_column(Integer)
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    #: True when the upstream reported no usage and the counts were estimated from the stream.
    usage_estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    latency_ms: Mapped[float] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: What the request cost, in nanos of the currency, at the prices when it ended.
    cost_nanos: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    #: The ids of the budgets it was charged to, comma-separated ("3,7"), or null.
    budgets: Mapped[str | None] = mapped_column(String(256))
    #: The id the client gave in X-Request-ID, if any (the platform's own is request_id).
    client_request_id: Mapped[str | None] = mapped_column(String(64))
    #: The fallback model that answered, when the requested one could not.
    served_model: Mapped[str | None] = mapped_column(String(256))


#: The counters of a daily total, in the order reports read them.
DAILY_COUNTERS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "pages",
    "bytes",
    "cost_nanos",
)


class UsageDaily(Base):
    """Usage summed per UTC day, user and model: what the usage pages read instead of the rows.

    The usage writer adds each batch to it in the same transaction as the rows themselves.
    """

    __tablename__ = "usage_daily"
    #: Both indexes carry every counter, so the usage pages read them alone, in order, never
    #: the table: by day and model (every account's report), by user and day (one account's).
    __table_args__ = (
        Index("ix_usage_daily_user_day", "user_id", "day", "model", *DAILY_COUNTERS),
        Index("ix_usage_daily_day_model", "day", "model", *DAILY_COUNTERS),
    )

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    #: 0 for requests no account made (none are recorded today; the key must not be null).
    user_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str] = mapped_column(String(256), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    #: Requests answered with a status of 400 or more.
    errors: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    total_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    pages: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_nanos: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class UsageCounters:
    """The counters of a total (``DAILY_COUNTERS``), for the totals kept beside usage_daily."""

    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    total_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    pages: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_nanos: Mapped[int] = mapped_column(BigInteger, default=0)


class UsageModelDaily(UsageCounters, Base):
    """Usage summed per UTC day and model over every account: what the usage pages read for
    every account at once (at most days x models rows, where usage_daily has one per user too).

    The usage writer adds each batch to it in the same transaction as usage_daily.
    """

    __tablename__ = "usage_model_daily"
    #: Without a rowid, SQLite keeps the rows in key order: a span of days is one range read.
    __table_args__ = ({"sqlite_with_rowid": False},)

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    model: Mapped[str] = mapped_column(String(256), primary_key=True)


class UsageUserWeekly(UsageCounters, Base):
    """Usage summed per week (Monday to Sunday, UTC days) and user, every model together: what
    the top users and groups read for the whole weeks of a span (a year is 53 rows an account
    instead of up to 365 x models).

    The usage writer adds each batch to it in the same transaction as usage_daily.
    """

    __tablename__ = "usage_user_weekly"
    __table_args__ = ({"sqlite_with_rowid": False},)

    #: The Monday the week starts on.
    week: Mapped[date] = mapped_column(Date, primary_key=True)
    #: 0 for requests no account made, as in usage_daily.
    user_id: Mapped[int] = mapped_column(Integer, primary_key=True)


class AuditEvent(Base):
    """An administrator's action, as the portal performed it."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    actor_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    #: The actor's username at the time, kept when the account is gone.
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(256))
    #: What changed, never a secret.
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    ip: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class Worker(Base):
    """A DDF worker: a process that registered with its owner's key and heartbeats."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(512))
    #: The registration as the SDK reads it back: declared keys only, never the secret.
    info: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: SHA-256 of the secret the worker sent, so a restarted worker can be recognised.
    secret_hash: Mapped[str | None] = mapped_column(String(64))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    speed: Mapped[float] = mapped_column(Float, default=1.0)
    queue_length: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="ready")
    #: Epoch seconds of the last register/heartbeat POST.
    last_heartbeat: Mapped[float] = mapped_column(Float)
    stopped: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Set when an admin stopped the worker: heartbeats under its id are refused until an
    #: admin lets it back, so a stop holds even for a process that does not shut down.
    held: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    owner: Mapped[User] = relationship(lazy="joined")
    models: Mapped[list[WorkerModel]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", passive_deletes=True
    )


class WorkerModel(Base):
    """One model a worker serves, with who may call it."""

    __tablename__ = "worker_models"

    worker_id: Mapped[str] = mapped_column(
        ForeignKey("workers.id", ondelete="CASCADE"), primary_key=True
    )
    model_name: Mapped[str] = mapped_column(String(256), primary_key=True, index=True)
    groups: Mapped[list[str]] = mapped_column(JSON)
    users: Mapped[list[str]] = mapped_column(JSON)
    functions: Mapped[list[str]] = mapped_column(JSON)


class ModelName(Base):
    """Who a worker model name belongs to: the first owner to publish it, for good (an admin
    may take it over)."""

    __tablename__ = "model_names"

    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    #: security.names.claim_key of the name: look-alikes share it, so only one is claimed.
    key: Mapped[str] = mapped_column(String(256), index=True, unique=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StoredFile(Base):
    """A file a user uploaded: its metadata here, its bytes in the storage backend."""

    __tablename__ = "files"
    __table_args__ = (Index("ix_files_user_created", "user_id", "created_at"),)

    #: ``file-`` and 32 random hex digits: also the capability behind the public preview URL.
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    #: The name the client gave, for display and downloads only; never a path on disk.
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(BigInteger)
    #: The type sniffed from the content (images) or application/octet-stream.
    content_type: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64))
    #: Where the bytes are in the storage backend; generated by the server.
    storage_key: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)


class Upload(Base):
    """A resumable upload: a declared file that arrives in parts and becomes a StoredFile."""

    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(64))
    mime_type: Mapped[str] = mapped_column(String(128))
    #: The size the client declared; the completed file must have exactly this many bytes.
    bytes: Mapped[int] = mapped_column(BigInteger)
    #: pending, completing, completed, cancelled or expired.
    status: Mapped[str] = mapped_column(String(16), default="pending")
    file_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)

    parts: Mapped[list[UploadPart]] = relationship(
        lazy="selectin",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="UploadPart.created_at",
    )


class UploadPart(Base):
    """One received part of an upload, held in the storage backend until completion."""

    __tablename__ = "upload_parts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    upload_id: Mapped[str] = mapped_column(ForeignKey("uploads.id", ondelete="CASCADE"), index=True)
    bytes: Mapped[int] = mapped_column(BigInteger)
    storage_key: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class VectorStore(Base):
    """A knowledge base: OpenAI's vector store, owned by its creator, readable by whom it is
    shared with. Its chunks live in the chunk index (knowledge/index.py), not here."""

    __tablename__ = "vector_stores"
    __table_args__ = (Index("ix_vector_stores_user_created", "user_id", "created_at"),)

    #: ``vs_`` and 32 random hex digits.
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(256))
    #: The platform model the store's chunks and queries are embedded with.
    embedding_model: Mapped[str] = mapped_column(String(256))
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSON, default=dict)
    #: Groups (``all`` included) and usernames that may read and search the store.
    shared_groups: Mapped[list[str]] = mapped_column(JSON, default=list)
    shared_users: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: Shared with anyone at all: where listings look beyond the caller's own stores.
    shared: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    #: OpenAI's expires_after: days after the last activity.
    expires_after_days: Mapped[int | None] = mapped_column(Integer)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    last_active_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class VectorStoreFile(Base):
    """A platform file attached to a vector store, and how far its ingestion has come."""

    __tablename__ = "vector_store_files"
    __table_args__ = (
        Index("ix_vector_store_files_status", "status"),
        Index("ix_vector_store_files_file", "file_id"),
        Index("ix_vector_store_files_user", "user_id"),
    )

    store_id: Mapped[str] = mapped_column(
        ForeignKey("vector_stores.id", ondelete="CASCADE"), primary_key=True
    )
    file_id: Mapped[str] = mapped_column(
        ForeignKey("files.id", ondelete="CASCADE"), primary_key=True
    )
    #: The store's owner, whose usage and quota the ingestion counts on.
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    #: The key the file was attached with: ingestion's usage rows name it.
    api_key_id: Mapped[int | None] = mapped_column(Integer)
    batch_id: Mapped[str | None] = mapped_column(String(40), index=True)
    #: in_progress, completed, failed or cancelled (OpenAI's).
    status: Mapped[str] = mapped_column(String(16), default="in_progress")
    #: What ingestion is doing now (converting, embedding 3 of 9 batches…), for people.
    stage: Mapped[str] = mapped_column(String(128), default="queued")
    #: OpenAI's last_error: {"code", "message"}.
    last_error: Mapped[dict[str, str] | None] = mapped_column(JSON)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    max_chunk_tokens: Mapped[int] = mapped_column(Integer)
    chunk_overlap_tokens: Mapped[int] = mapped_column(Integer)
    #: The converted document, kept between conversion and indexing, so a resumed ingestion
    #: does not convert again.
    markdown: Mapped[str | None] = mapped_column(Text)
    pages: Mapped[int | None] = mapped_column(Integer)
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    usage_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class VectorStoreFileBatch(Base):
    """Files attached together; their statuses are the batch's."""

    __tablename__ = "vector_store_file_batches"

    #: ``vsfb_`` and 32 random hex digits.
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    store_id: Mapped[str] = mapped_column(
        ForeignKey("vector_stores.id", ondelete="CASCADE"), index=True
    )
    cancelled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StoredResponse(Base):
    """A Response of the Responses API kept for ``previous_response_id`` and
    ``GET /responses/{id}``: its owner's alone, until it expires."""

    __tablename__ = "stored_responses"

    #: ``resp_…``: ours for a translated response, the provider's for one it answered natively.
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    model: Mapped[str] = mapped_column(String(256))
    #: The provider that answered natively (and may hold the response too), or null when the
    #: platform translated it to a chat completion.
    provider: Mapped[str | None] = mapped_column(String(128))
    previous_response_id: Mapped[str | None] = mapped_column(String(128))
    #: This request's own input items; the conversation before them is its previous response's.
    input_items: Mapped[list[Any]] = mapped_column(JSON)
    #: The Response as its client got it.
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class McpServer(Base):
    """An external MCP server an admin registered as a tool source for chosen groups; the
    platform calls it on their behalf through the egress guard."""

    __tablename__ = "mcp_servers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: Prefixes its tools' names (``name__tool``): lowercase letters, digits, - and _.
    name: Mapped[str] = mapped_column(String(64), unique=True)
    #: Its Streamable HTTP endpoint, as the egress guard parsed it.
    url: Mapped[str] = mapped_column(String(512))
    #: Headers sent with every call (an Authorization token), encrypted like providers' keys.
    headers_sealed: Mapped[str | None] = mapped_column(Text)
    #: Who may see and call its tools ("all": everyone).
    groups: Mapped[list[str]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Batch(Base):
    """A batch of the Batch API: its owner's JSONL file of requests, answered in the background
    by the job runner (gateway/batches.py) and collected as output and error files.

    Its times are epoch seconds, as the Batch object carries them.
    """

    __tablename__ = "batches"
    __table_args__ = (Index("ix_batches_user_created", "user_id", "created_at"),)

    #: ``batch_`` and 32 random hex digits.
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    #: The key that created it: its lines run with that key's limits on models.
    api_key_id: Mapped[int | None] = mapped_column(Integer)
    endpoint: Mapped[str] = mapped_column(String(64))
    input_file_id: Mapped[str] = mapped_column(String(40))
    completion_window: Mapped[str] = mapped_column(String(16))
    #: validating, failed, in_progress, finalizing, completed, expired, cancelling, cancelled.
    status: Mapped[str] = mapped_column(String(16), index=True)
    #: Why validation failed: OpenAI's ``errors.data`` (code, message, line, param).
    errors: Mapped[list[Any] | None] = mapped_column(JSON)
    output_file_id: Mapped[str | None] = mapped_column(String(40))
    error_file_id: Mapped[str | None] = mapped_column(String(40))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    total: Mapped[int] = mapped_column(Integer, default=0)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    in_progress_at: Mapped[int | None] = mapped_column(BigInteger)
    finalizing_at: Mapped[int | None] = mapped_column(BigInteger)
    completed_at: Mapped[int | None] = mapped_column(BigInteger)
    failed_at: Mapped[int | None] = mapped_column(BigInteger)
    expired_at: Mapped[int | None] = mapped_column(BigInteger)
    cancelling_at: Mapped[int | None] = mapped_column(BigInteger)
    cancelled_at: Mapped[int | None] = mapped_column(BigInteger)
    #: The run that works on it and until when its claim holds (renewed while it runs): a
    #: process that died lets the claim lapse, and another takes the batch up.
    lease_owner: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[float | None] = mapped_column(Float)


class BatchLine(Base):
    """One request of a batch, and once answered its answer: written in the transaction that
    writes the line's usage row, so a line is answered and billed once, whoever runs it."""

    __tablename__ = "batch_lines"

    batch_id: Mapped[str] = mapped_column(
        ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True
    )
    #: The line's number in the input file, from 0.
    line: Mapped[int] = mapped_column(Integer, primary_key=True)
    custom_id: Mapped[str] = mapped_column(String(512))
    #: The request's body, as the input file gave it.
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: The model the body names, for the per-model share of capacity.
    model: Mapped[str] = mapped_column(String(256))
    done: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The answer's status and body, or the line's error (code and message) when it got none.
    status_code: Mapped[int | None] = mapped_column(Integer)
    response: Mapped[Any | None] = mapped_column(JSON)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: The usage row's request id: ``<batch id>-<line>``.
    request_id: Mapped[str | None] = mapped_column(String(64))


# The governance tables (prices, budgets, limits) declare themselves on the same metadata.
from hepai_server.db import governance  # noqa: E402, F401
