"""Providers and model permissions an admin manages in the portal, beside the config file's.

A provider added here is stored with its API key sealed (``credentials.Sealer``); the catalog
every gateway process serves is the config file's providers plus the enabled stored ones, with
the admin's model permissions replacing the file's groups and users where set. Whoever changes
any of it bumps the catalog generation, and every process on the machine rebuilds its catalog
within half a second (other machines within ``catalog_refresh_seconds``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterable, Sequence
from typing import cast

import aiohttp
import orjson
from pydantic import SecretStr, ValidationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from hepai_server.config import PRESETS, ModelConfig, ModelType, ProviderConfig
from hepai_server.db.tables import ModelName, ModelPermission, Provider, ProviderModel, utcnow
from hepai_server.errors import Conflict, InvalidRequest, NotFound
from hepai_server.security.credentials import Sealer
from hepai_server.security.egress import parse_base_url
from hepai_server.security.names import claim_key

log = logging.getLogger(__name__)

MODEL_TYPES = ("chat", "completion", "embedding", "rerank", "audio", "tts", "image")
PROBE_TIMEOUT = aiohttp.ClientTimeout(total=10)


#: Who may use a model: group names (``all`` for everyone), and usernames or e-mails.
Access = tuple[frozenset[str], frozenset[str]]


def parse_models(text: str) -> list[ModelConfig]:
    """Models from the form's lines: ``public-id [upstream-name] [type]``, one per line."""
    models = []
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.replace(",", " ").split()
        if not words:
            continue
        kind = cast(ModelType, next((w for w in words[1:] if w in MODEL_TYPES), "chat"))
        rest = [w for w in words[1:] if w not in MODEL_TYPES]
        if len(rest) > 1:
            raise InvalidRequest(
                f"line {number}: write the public id, the upstream name and the type",
                param="models",
            )
        if len(words[0]) > 256 or (rest and len(rest[0]) > 256):
            raise InvalidRequest(
                f"line {number}: names have at most 256 characters", param="models"
            )
        models.append(ModelConfig(id=words[0], upstream=rest[0] if rest else None, type=kind))
    if not models:
        raise InvalidRequest("name at least one model the provider serves", param="models")
    return models


def add_provider(
    session: Session,
    *,
    name: str,
    preset: str | None,
    base_url: str | None,
    api_key: str | None,
    models: Sequence[ModelConfig],
    sealer: Sealer,
    taken_names: Collection[str],
) -> Provider:
    """Store a provider; ``taken_names`` are the config file's, which it may not shadow."""
    if base_url:
        base_url = parse_base_url(base_url)
    try:
        config = ProviderConfig(name=name, preset=preset or None, base_url=base_url or None)
    except ValidationError as exc:
        raise InvalidRequest(exc.errors()[0]["msg"], param="base_url") from None
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", name):
        raise InvalidRequest("a provider name is letters, digits and _.-", param="name")
    exists = session.scalar(select(Provider.id).where(Provider.name == name))
    if name in taken_names or exists is not None:
        raise Conflict(f"a provider named {name!r} exists already", param="name")
    keys = {claim_key(m.id): m.id for m in models}
    claimed = session.scalars(select(ModelName.name).where(ModelName.key.in_(keys))).all()
    if claimed:
        raise Conflict(f"{claimed[0]!r} is the name of a worker model", param="models")
    assert config.base_url is not None  # the validator sets it or fails
    provider = Provider(
        name=name,
        preset=preset or None,
        base_url=config.base_url,
        api_key_sealed=sealer.seal(api_key) if api_key else None,
        enabled=True,
        models=[ProviderModel(model_id=m.id, upstream=m.upstream, type=m.type) for m in models],
    )
    session.add(provider)
    session.flush()
    return provider


def get_provider(session: Session, provider_id: int) -> Provider:
    provider = session.get(Provider, provider_id)
    if provider is None:
        raise NotFound(f"no provider with id {provider_id}")
    return provider


def list_providers(session: Session) -> Sequence[Provider]:
    return session.scalars(select(Provider).order_by(Provider.name)).all()


def set_enabled(session: Session, *, provider: Provider, enabled: bool) -> Provider:
    provider.enabled = enabled
    provider.updated_at = utcnow()
    return provider


def replace_key(session: Session, *, provider: Provider, api_key: str, sealer: Sealer) -> Provider:
    provider.api_key_sealed = sealer.seal(api_key) if api_key else None
    provider.updated_at = utcnow()
    return provider


def delete_provider(session: Session, *, provider: Provider) -> None:
    session.delete(provider)


def add_models(session: Session, *, provider: Provider, model_ids: Iterable[str]) -> int:
    """Add the chat models ``model_ids`` the provider lacks, by public or upstream name (its
    ``/models`` listed them), but none a worker has claimed; how many were added. New models
    are for admins only until a permission says otherwise."""
    have = {name for m in provider.models for name in (m.model_id, m.upstream) if name}
    wanted = {
        claim_key(m): m for m in dict.fromkeys(model_ids) if m not in have and 0 < len(m) <= 256
    }
    claimed = set(session.scalars(select(ModelName.key).where(ModelName.key.in_(wanted))).all())
    added = [ProviderModel(model_id=m, type="chat") for k, m in wanted.items() if k not in claimed]
    provider.models.extend(added)
    provider.updated_at = utcnow()
    return len(added)


def preset_url(preset: str) -> str | None:
    """The base URL a preset stands for."""
    return PRESETS[preset][0] if preset in PRESETS else None


def stored_providers(session: Session, sealer: Sealer) -> list[ProviderConfig]:
    """The enabled stored providers as the catalog reads providers, keys unsealed.

    Their models are for admins only until a permission says otherwise. A provider that cannot
    be used as stored (its key sealed under another platform secret, a preset this version
    does not know) is left out and logged, so one bad row never takes the catalog down.
    """
    configs = []
    for provider in list_providers(session):
        if not provider.enabled:
            continue
        key = sealer.unseal(provider.api_key_sealed) if provider.api_key_sealed else None
        if provider.api_key_sealed and key is None:
            log.error(
                "provider %s left out: its key cannot be unsealed (was the platform's secret "
                "key changed?); give it its key again in the portal",
                provider.name,
            )
            continue
        try:
            configs.append(
                ProviderConfig(
                    name=provider.name,
                    preset=provider.preset,
                    base_url=provider.base_url,
                    api_key=SecretStr(key) if key else None,
                    models=[
                        ModelConfig(
                            id=m.model_id,
                            upstream=m.upstream,
                            type=cast(ModelType, m.type),
                            groups=[],
                        )
                        for m in provider.models
                    ],
                )
            )
        except ValidationError as exc:
            log.error("provider %s left out: %s", provider.name, exc.errors()[0]["msg"])
    return configs


def permissions(session: Session) -> dict[str, Access]:
    return {
        row.model_id: (frozenset(row.groups), frozenset(row.users))
        for row in session.scalars(select(ModelPermission))
    }


def set_permission(
    session: Session, *, model_id: str, groups: Iterable[str], users: Iterable[str]
) -> ModelPermission:
    row = session.get(ModelPermission, model_id)
    if row is None:
        row = ModelPermission(model_id=model_id, groups=[], users=[])
        session.add(row)
    row.groups = sorted(set(groups))
    row.users = sorted(set(users))
    row.updated_at = utcnow()
    return row


def clear_permission(session: Session, *, model_id: str) -> None:
    session.execute(delete(ModelPermission).where(ModelPermission.model_id == model_id))


async def probe(
    http: aiohttp.ClientSession, base_url: str, api_key: str | None
) -> tuple[bool, str]:
    """Whether the provider answers its model list with this key, in a few words: its status
    and how many models it listed, never what else it said (the page must not become a way to
    read an internal service's answers)."""
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        async with http.get(
            base_url.rstrip("/") + "/models",
            headers=headers,
            timeout=PROBE_TIMEOUT,
            allow_redirects=False,
        ) as response:
            text = await response.text()
            if response.status != 200:
                return False, f"HTTP {response.status}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return False, f"unreachable: {exc.__class__.__name__}"
    try:
        count = len(orjson.loads(text).get("data", []))
    except (ValueError, AttributeError):
        return True, "answered, but not with an OpenAI model list"
    return True, f"{count} models listed"


def presets() -> list[str]:
    return list(PRESETS)
