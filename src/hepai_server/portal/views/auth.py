"""Signing in and out, the language switch, and changing one's password."""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import Response

from hepai_server.db.tables import User
from hepai_server.errors import InvalidRequest, NotFound
from hepai_server.portal import sessions
from hepai_server.portal.i18n import LANGUAGES
from hepai_server.portal.oidc import SignOnFailed
from hepai_server.portal.web import (
    LANGUAGE_COOKIE,
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    Portal,
    client_ip,
    gateway,
    local_path,
    redirect,
)
from hepai_server.portal.zones import ZONE_COOKIE, zone_named
from hepai_server.services import accounts

log = logging.getLogger(__name__)

#: The cookie that carries a single sign-on attempt from its start to the provider's answer.
SSO_COOKIE = "hepai_sso"
#: What a failed sign-in says, whichever of the two was wrong.
WRONG = "auth.wrong_credentials"


async def login_form(request: Request, portal: Portal) -> Response:
    if await portal.optional_viewer(request) is not None:
        return redirect(local_path(request.query_params.get("next"), "/"))
    return sign_in_page(request, portal)


def sign_in_page(
    request: Request,
    portal: Portal,
    *,
    error: str | None = None,
    status: int = 200,
    next_path: str | None = None,
) -> Response:
    """The form, with its token in both the form and the cookie (double submit). A browser
    keeps its token, so a second sign-in tab does not spoil the first one's form."""
    token = request.cookies.get(SIGN_IN_COOKIE) or ""
    if not 32 <= len(token) <= 64:
        token = secrets.token_urlsafe(32)
    response = portal.render(
        request,
        "login.html",
        viewer=None,
        status=status,
        csrf_token=token,
        error=error,
        sso=portal.settings.oidc_display_name if portal.sso else None,
        username=request.scope.get("hepai.username", ""),
        next=local_path(next_path or request.query_params.get("next"), "/"),
    )
    portal.set_cookie(request, response, SIGN_IN_COOKIE, token, max_age=3600)
    return response


async def login(request: Request, portal: Portal) -> Response:
    form = await portal.form(request, None)
    username = str(form.get("username") or "").strip()[:128]
    password = str(form.get("password") or "")
    ip = client_ip(request) or "unknown"
    now = datetime.now(UTC)
    request.scope["hepai.username"] = username
    target = str(form.get("next") or "")
    if not username or not password:
        return sign_in_page(request, portal, error=WRONG, status=400, next_path=target)

    gw = gateway(request)
    throttle = gw.throttle
    allowed = await gw.transact(lambda s: throttle.attempt(s, username=username, ip=ip, now=now))
    if not allowed:
        return sign_in_page(request, portal, error="auth.throttled", status=429, next_path=target)
    user = await gw.transact(
        lambda s: accounts.check_password(s, username=username, password=password)
    )
    if user is None:
        return sign_in_page(request, portal, error=WRONG, status=401, next_path=target)
    await gw.transact(lambda s: throttle.forgive(s, username=username))
    response = await start_session(request, portal, user, target)
    response.delete_cookie(SIGN_IN_COOKIE, path="/")
    zone = zone_named(str(form.get("tz") or ""))
    if zone.name != "UTC":  # the browser's zone, so the first page shows local times
        response.set_cookie(ZONE_COOKIE, zone.name, max_age=365 * 86400, samesite="lax", path="/")
    return response


async def start_session(request: Request, portal: Portal, user: User, target: str) -> Response:
    """Sign ``user`` in on this browser and go to ``target``."""
    now = datetime.now(UTC)

    def work(session: Any) -> str:
        sessions.purge_expired(session, now=now)
        gateway(request).throttle.purge_expired(session, now=now)
        token, _web = sessions.start(
            session,
            user=user,
            now=now,
            lifetime=portal.lifetime,
            ip=client_ip(request),
            user_agent=request.headers.get("user-agent"),
        )
        return token

    token = await gateway(request).transact(work)
    response = redirect(local_path(target, "/"))
    max_age = int(portal.lifetime.absolute.total_seconds())
    portal.set_cookie(request, response, SESSION_COOKIE, token, max_age=max_age)
    return response


async def sso_begin(request: Request, portal: Portal) -> Response:
    """Off to the institute's sign-in page, remembering this attempt in a signed cookie."""
    if portal.sso is None:
        raise NotFound("single sign-on is not configured")
    try:
        url, cookie = await portal.sso.begin(
            gateway(request).session,
            redirect_uri=portal.base_url(request) + "/login/sso/callback",
            next_path=local_path(request.query_params.get("next"), "/"),
        )
    except SignOnFailed as exc:
        log.warning("single sign-on could not start: %s", exc)
        return sign_in_page(request, portal, error="auth.sso_failed", status=502)
    response = redirect(url)
    portal.set_cookie(request, response, SSO_COOKIE, cookie, max_age=600)
    return response


async def sso_callback(request: Request, portal: Portal) -> Response:
    """Back from the provider: check the attempt and the ID token, then sign the account in
    (made on its first visit, its groups set from the token)."""
    if portal.sso is None:
        raise NotFound("single sign-on is not configured")
    query = request.query_params
    settings = portal.settings
    try:
        if "error" in query:
            raise SignOnFailed(f"the provider refused: {query.get('error')}")
        flow = portal.sso.flow(request.cookies.get(SSO_COOKIE), query.get("state", ""))
        identity = await portal.sso.finish(
            gateway(request).session,
            code=query.get("code", ""),
            flow=flow,
            redirect_uri=portal.base_url(request) + "/login/sso/callback",
        )
    except SignOnFailed as exc:
        log.warning("single sign-on failed: %s", exc)
        response = sign_in_page(request, portal, error="auth.sso_failed", status=401)
        response.delete_cookie(SSO_COOKIE, path="/")
        return response

    def work(session: Any) -> User | None:
        return accounts.account_for_identity(
            session,
            subject=identity.subject,
            username=identity.username,
            email=identity.email,
            groups=identity.groups,
            admin_groups=settings.oidc_admin_groups,
        )

    try:
        user = await gateway(request).transact(work)
    except IntegrityError:
        # Another sign-in of the same new identity made the account a moment ago.
        user = await gateway(request).transact(work)
    await gateway(request).callers_changed()  # groups or level may have changed
    if user is None:
        return sign_in_page(request, portal, error="auth.disabled", status=403)
    response = await start_session(request, portal, user, flow["next"])
    response.delete_cookie(SSO_COOKIE, path="/")
    return response


async def logout(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request)
    await portal.form(request, viewer)
    token = request.cookies.get(SESSION_COOKIE, "")
    await gateway(request).transact(lambda s: sessions.end(s, token=token))
    response = redirect("/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


async def switch_language(request: Request, portal: Portal) -> Response:
    """Remember the chosen language and go back to the page the switch was on."""
    language = request.path_params["language"]
    response = redirect(local_path(request.query_params.get("next"), "/"))
    if language in LANGUAGES:
        portal.set_cookie(request, response, LANGUAGE_COOKIE, language, max_age=365 * 86400)
    return response


async def password_form(request: Request, portal: Portal) -> Response:
    viewer = await portal.viewer(request)
    done = request.query_params.get("changed") == "1"
    return portal.render(request, "password.html", viewer=viewer, error=None, done=done)


async def change_password(request: Request, portal: Portal) -> Response:
    """A new password ends every session of the user, this one included, then signs this
    browser in again: a stolen session dies with the old password."""
    viewer = await portal.viewer(request)
    form = await portal.form(request, viewer)
    current, new = str(form.get("current") or ""), str(form.get("new") or "")
    if new != str(form.get("repeat") or ""):
        return portal.render(
            request,
            "password.html",
            viewer=viewer,
            error="password.mismatch",
            done=False,
            status=400,
        )
    now = datetime.now(UTC)

    def work(session: Any) -> str | None:
        user = accounts.check_password(session, username=viewer.username, password=current)
        if user is None:
            return None
        accounts.set_password(session, user=user, password=new)
        sessions.end_all(session, user_id=user.id)
        token, _web = sessions.start(
            session,
            user=user,
            now=now,
            lifetime=portal.lifetime,
            ip=client_ip(request),
            user_agent=request.headers.get("user-agent"),
        )
        return token

    try:
        token = await gateway(request).transact(work)
    except InvalidRequest:
        return portal.render(
            request,
            "password.html",
            viewer=viewer,
            error="password.too_short",
            done=False,
            status=400,
        )
    if token is None:
        return portal.render(
            request,
            "password.html",
            viewer=viewer,
            error="password.wrong_current",
            done=False,
            status=400,
        )
    response = redirect("/settings/password?changed=1")
    max_age = int(portal.lifetime.absolute.total_seconds())
    portal.set_cookie(request, response, SESSION_COOKIE, token, max_age=max_age)
    return response
