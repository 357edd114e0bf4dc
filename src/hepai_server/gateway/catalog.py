"""Which model ids exist, where each is deployed, and who may call it."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from hepai_server.config import ModelType, ProviderConfig, Timeouts
from hepai_server.errors import ModelNotFound
from hepai_server.protocol.openai import Endpoint
from hepai_server.security.egress import WorkerAddress
from hepai_server.security.names import claim_key
from hepai_server.services.accounts import Caller

log = logging.getLogger(__name__)

#: The group that makes a model visible to every account.
EVERYONE = "all"
MAX_MODEL_ID = 256


@dataclass(frozen=True, slots=True)
class Deployment:
    """One upstream that serves a public model id."""

    provider: str
    base_url: str
    upstream_model: str
    #: Includes the provider's key: kept out of repr so it can never reach a log line.
    headers: dict[str, str] = field(hash=False, repr=False)
    weight: float = 1.0
    #: Lower is tried first; weights spread calls within one priority.
    priority: int = 0
    #: Set when this is a DDF worker: calls go through its unified gate.
    worker_id: str | None = None
    #: A worker's calls queued at its last heartbeat, and how fast it works through them.
    queue_length: int = 0
    speed: float = 1.0
    #: A worker's address as the egress guard admitted it; its owner is trusted (an admin).
    worker_address: WorkerAddress | None = None
    trusted: bool = False
    #: Where Anthropic Messages go natively: a provider's /v1/messages URL, or for a worker
    #: the gate URL of its ``anthropic_messages`` method. None: translate to chat completions.
    messages_url: str | None = None
    #: The headers for ``messages_url`` (Anthropic's x-api-key form for providers).
    messages_headers: dict[str, str] = field(default_factory=dict, hash=False, repr=False)
    #: Where the Responses API goes natively: a provider's /responses URL, or for a worker the
    #: gate URL of its ``responses`` method (with ``headers``). None: translate to chat.
    responses_url: str | None = None

    @property
    def name(self) -> str:
        """How usage rows and logs name this deployment (never with its key)."""
        return f"{self.provider}/{self.upstream_model}"

    def url(self, endpoint: Endpoint) -> str:
        if self.worker_address is None:
            return self.base_url + endpoint.path
        return gate_url(self.worker_address, self.upstream_model, endpoint.worker_function)


def gate_url(address: WorkerAddress, model: str, function: str) -> str:
    """A worker's unified gate for one method: the protocol's fixed path, our own query."""
    return address.url("/worker_unified_gate/", {"model": model, "function": function})


@dataclass(frozen=True, slots=True)
class Model:
    id: str
    type: ModelType
    owned_by: str
    created: int
    groups: frozenset[str]
    users: frozenset[str]
    deployments: tuple[Deployment, ...]
    #: Models to try, in order, when every deployment fails before answering.
    fallbacks: tuple[str, ...] = ()
    #: How long its upstreams may take; None: the platform's defaults.
    timeouts: Timeouts | None = None
    #: What the config file says of the model, for the portal's catalogue.
    context_length: int | None = None
    capabilities: frozenset[str] = frozenset()

    def is_callable_by(self, caller: Caller) -> bool:
        if caller.allowed_models is not None and self.id not in caller.allowed_models:
            return False
        return (
            caller.is_admin
            or EVERYONE in self.groups
            or caller.username in self.users
            or (caller.email is not None and caller.email in self.users)
            or not self.groups.isdisjoint(caller.groups)
        )

    def card(self) -> dict[str, object]:
        """The /models row, as the wire spec shapes it."""
        return {
            "id": self.id,
            "object": "model",
            "created": self.created,
            "owned_by": self.owned_by,
        }


class Catalog:
    """The models of the providers file, merged by public id."""

    def __init__(self, models: Iterable[Model]) -> None:
        self._models = {model.id: model for model in models}
        #: A catalog never changes (a new one replaces it), so its ids are computed once.
        self._ids = frozenset(self._models)
        self._claim_keys: frozenset[str] | None = None

    @classmethod
    def from_providers(
        cls,
        providers: Iterable[ProviderConfig],
        *,
        access: Mapping[str, tuple[frozenset[str], frozenset[str]]] | None = None,
        created: int | None = None,
    ) -> Catalog:
        """The models of ``providers``; ``access`` (model id → groups, users) replaces the
        groups and users the providers give a model, as an admin set them."""
        catalog = cls._merged(providers, created or int(time.time()))
        if not access:
            return catalog
        return cls(
            replace(model, groups=access[model.id][0], users=access[model.id][1])
            if model.id in access
            else model
            for model in catalog._models.values()
        )

    def models(self) -> list[Model]:
        return list(self._models.values())

    @classmethod
    def _merged(cls, providers: Iterable[ProviderConfig], created: int) -> Catalog:
        merged: dict[str, Model] = {}
        for provider in providers:
            headers = {"content-type": "application/json", **provider.headers}
            messages_headers = {
                "content-type": "application/json",
                "anthropic-version": "2023-06-01",
            }
            if provider.api_key is not None:
                headers["authorization"] = f"Bearer {provider.api_key.get_secret_value()}"
                messages_headers["x-api-key"] = provider.api_key.get_secret_value()
            messages_url = None
            if provider.anthropic_base_url:
                messages_url = provider.anthropic_base_url.rstrip("/") + "/v1/messages"
            responses_url = None
            if provider.responses_base_url:
                responses_url = provider.responses_base_url.rstrip("/") + "/responses"
            assert provider.base_url is not None  # set by ProviderConfig's validator
            for entry in provider.models:
                deployment = Deployment(
                    provider=provider.name,
                    base_url=provider.base_url,
                    upstream_model=entry.upstream or entry.id,
                    headers=headers,
                    weight=entry.weight,
                    messages_url=messages_url,
                    messages_headers=messages_headers,
                    responses_url=responses_url,
                )
                known = merged.get(entry.id)
                if known is None:
                    merged[entry.id] = Model(
                        id=entry.id,
                        type=entry.type,
                        owned_by=provider.name,
                        created=created,
                        groups=frozenset(entry.groups),
                        users=frozenset(entry.users),
                        deployments=(deployment,),
                        fallbacks=tuple(entry.fallbacks),
                        timeouts=entry.timeouts,
                        context_length=entry.context_length,
                        capabilities=frozenset(entry.capabilities),
                    )
                    continue
                if known.type != entry.type:
                    log.warning(
                        "model %s: type %s in %s ignored",
                        entry.id,
                        entry.type,
                        provider.name,
                    )
                merged[entry.id] = Model(
                    id=known.id,
                    type=known.type,
                    owned_by=known.owned_by,
                    created=created,
                    groups=known.groups | set(entry.groups),
                    users=known.users | set(entry.users),
                    deployments=(*known.deployments, deployment),
                    fallbacks=known.fallbacks or tuple(entry.fallbacks),
                    timeouts=known.timeouts or entry.timeouts,
                    context_length=known.context_length or entry.context_length,
                    capabilities=known.capabilities | set(entry.capabilities),
                )
        return cls(merged.values())

    def ids(self) -> frozenset[str]:
        return self._ids

    def claim_keys(self) -> frozenset[str]:
        """The ids' claim keys: no worker may take a name that looks like one of them."""
        if self._claim_keys is None:
            self._claim_keys = frozenset(claim_key(model_id) for model_id in self._ids)
        return self._claim_keys

    def visible_to(self, caller: Caller) -> list[Model]:
        return [model for model in self._models.values() if model.is_callable_by(caller)]

    def resolve_or_none(self, model_id: str, caller: Caller) -> Model | None:
        model = self._models.get(model_id)
        return model if model is not None and model.is_callable_by(caller) else None

    def resolve(self, model_id: str, caller: Caller) -> Model:
        """The model the caller asked for; one it may not call is reported as missing."""
        model = self._models.get(model_id)
        if model is None or not model.is_callable_by(caller):
            raise ModelNotFound(model_id)
        return model
