"""What every portal page shares: who is looking, the CSRF check, rendering, safe headers.

A page handler is ``async def handler(request, portal) -> Response`` wrapped by ``page``, which
turns "not signed in" into a redirect to the sign-in page and any platform error into an error
page with the error's status. Handlers ask ``portal.viewer(request)`` for the signed-in user and
``portal.form(request, viewer)`` for a POSTed form, which refuses a form without its session's
CSRF token or from another origin. A form that did its work answers ``done(...)``: a redirect
that leaves a flash notice for the page it leads to (post/redirect/get).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from hepai_server.config import Settings
from hepai_server.db.governance import GroupAdmin
from hepai_server.errors import HepAIError, PermissionDenied
from hepai_server.gateway.runtime import Gateway
from hepai_server.governance.prices import format_money
from hepai_server.portal import flash as flashes
from hepai_server.portal import sessions
from hepai_server.portal.flash import Flash
from hepai_server.portal.i18n import Translator, choose_language, load_catalogs, translator
from hepai_server.portal.notices import describe
from hepai_server.portal.oidc import SingleSignOn
from hepai_server.portal.zones import ZONE_COOKIE, Zone, zone_named
from hepai_server.security.credentials import signing_secret
from hepai_server.services import audit
from hepai_server.services.accounts import Caller

SESSION_COOKIE = "hepai_session"
LANGUAGE_COOKIE = "hepai_lang"
#: The sign-in form's CSRF token, before there is a session to hold one (double submit).
SIGN_IN_COOKIE = "hepai_signin"

#: Sent by the page's upload script, whose request follows the form's redirect unseen.
UPLOAD_HEADER = "x-hepai-upload"

#: Pages load only the portal's own scripts and styles; nothing may frame them.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; "
    "base-uri 'none'; object-src 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


class SignInRequired(Exception):
    """The page needs a signed-in user and the request has no live session."""


@dataclass(frozen=True, slots=True)
class Viewer:
    """The signed-in user looking at a page, as of this request."""

    session_id: str
    csrf_token: str
    user_id: int
    username: str
    email: str | None
    is_admin: bool
    groups: frozenset[str]
    #: False for accounts that sign in by single sign-on only.
    has_password: bool = True
    #: An administrator of some group (a platform admin administers every group).
    leads: bool = False
    #: The notice the last form left for this page (read once, on a GET).
    flash: Flash | None = None

    def caller(self) -> Caller:
        """The user as the model catalog judges callers: with every model the user may use."""
        return Caller(
            key_id=0,
            user_id=self.user_id,
            username=self.username,
            email=self.email,
            is_admin=self.is_admin,
            groups=self.groups,
            allowed_models=None,
            expires_at=None,
        )


class Portal:
    """The portal's templates, catalogs and session rules, built once per process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("hepai_server.portal", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.catalogs = load_catalogs()
        self.lifetime = sessions.Lifetime(
            idle=timedelta(hours=settings.portal_session_idle_hours),
            absolute=timedelta(days=settings.portal_session_days),
        )
        self.sso = (
            SingleSignOn(settings, signing_secret(settings)) if settings.oidc_enabled else None
        )

    async def viewer(self, request: Request, *, admin: bool = False) -> Viewer:
        """The signed-in user; with ``admin``, only an administrator (else 403)."""
        cached = request.scope.get("hepai.viewer")
        viewer = cached if isinstance(cached, Viewer) else await self._resolve(request)
        if viewer is None:
            raise SignInRequired
        request.scope["hepai.viewer"] = viewer
        if admin and not viewer.is_admin:
            raise PermissionDenied("this page is for administrators")
        return viewer

    async def optional_viewer(self, request: Request) -> Viewer | None:
        try:
            return await self.viewer(request)
        except SignInRequired:
            return None

    async def _resolve(self, request: Request) -> Viewer | None:
        token = request.cookies.get(SESSION_COOKIE)
        if not token or len(token) > 128:
            return None
        now = datetime.now(UTC)
        # Only a page shown to the person reads the notice: not the playground's calls, nor
        # the page an upload's script is redirected to in the background (it then shows that
        # page itself, which reads the notice).
        pop = request.method == "GET" and UPLOAD_HEADER not in request.headers

        def work(session: Any) -> Viewer | None:
            web = sessions.resolve(session, token=token, now=now, lifetime=self.lifetime)
            if web is None:
                return None
            notice = None
            if pop and web.flash is not None:
                notice = flashes.unseal(web.flash, token=token, now=int(now.timestamp()))
                web.flash = None
            user = web.user
            return Viewer(
                session_id=web.id,
                csrf_token=web.csrf_token,
                user_id=user.id,
                username=user.username,
                email=user.email,
                is_admin=user.is_admin,
                groups=frozenset(group.name for group in user.groups),
                has_password=user.password_hash is not None,
                leads=user.is_admin or leads_a_group(session, user.id),
                flash=notice,
            )

        return await gateway(request).transact(work)

    async def form(self, request: Request, viewer: Viewer | None) -> FormData:
        """A POSTed form that carries its CSRF token and comes from this origin; else 403.

        Signed in, the token is the session's; before sign-in, the one in the sign-in cookie.
        """
        check_origin(request)
        form = await request.form(max_files=0, max_fields=200)
        sent = form.get("csrf_token")
        expected = viewer.csrf_token if viewer else request.cookies.get(SIGN_IN_COOKIE)
        if (
            not isinstance(sent, str)
            or not expected
            or not secrets.compare_digest(sent.encode(), expected.encode())
        ):
            raise PermissionDenied(
                "the form has expired or did not come from this site; reload the page and try "
                "again",
                param="csrf_token",
            )
        return form

    def language(self, request: Request) -> str:
        return choose_language(
            request.cookies.get(LANGUAGE_COOKIE), request.headers.get("accept-language")
        )

    def translator(self, request: Request) -> Translator:
        """``t(key, **values)`` in the viewer's language, for text a view builds."""
        return translator(self.catalogs[self.language(request)])

    def zone(self, request: Request) -> Zone:
        """The viewer's time zone, as the browser told it (UTC until it has)."""
        return zone_named(request.cookies.get(ZONE_COOKIE))

    def render(
        self,
        request: Request,
        template: str,
        *,
        viewer: Viewer | None,
        status: int = 200,
        csrf_token: str = "",
        **context: Any,
    ) -> HTMLResponse:
        """The page; forms carry the session's CSRF token, or ``csrf_token`` before sign-in."""
        language = self.language(request)
        zone = self.zone(request)
        html = self.templates.get_template(template).render(
            t=translator(self.catalogs[language]),
            lang=language,
            viewer=viewer,
            flash=viewer.flash if viewer else None,
            csrf_token=viewer.csrf_token if viewer else csrf_token,
            path=request.url.path,
            base_url=self.base_url(request),
            zone=zone,
            zone_label=zone.label(datetime.now(UTC)),
            when=zone.format,
            money=format_money,
            currency=self.settings.currency,
            **context,
        )
        return HTMLResponse(html, status_code=status)

    def base_url(self, request: Request) -> str:
        """Where users reach the platform, for the snippets pages show."""
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/")
        return str(request.base_url).rstrip("/")

    def is_secure(self, request: Request) -> bool:
        return request.url.scheme == "https" or (self.settings.public_url or "").startswith(
            "https:"
        )

    def set_cookie(
        self, request: Request, response: Response, name: str, value: str, **options: Any
    ) -> None:
        response.set_cookie(
            name,
            value,
            httponly=True,
            samesite="lax",
            secure=self.is_secure(request),
            path="/",
            **options,
        )


def leads_a_group(session: Session, user_id: int) -> bool:
    found = session.scalar(
        select(GroupAdmin.group_id).where(GroupAdmin.user_id == user_id).limit(1)
    )
    return found is not None


def gateway(request: Request) -> Gateway:
    found: Gateway = request.state.gateway
    return found


def portal(request: Request) -> Portal:
    found: Portal = request.state.portal
    return found


def leave_flash(session: Session, request: Request, viewer: Viewer, notice: Flash) -> None:
    """Leave ``notice`` for the viewer's next page, in the caller's transaction (so a new key
    and the one chance to see its secret are kept together or not at all)."""
    token = request.cookies.get(SESSION_COOKIE, "")
    sealed = flashes.seal(notice, token=token, now=int(time.time()))
    sessions.leave_flash(session, session_id=viewer.session_id, sealed=sealed)


async def done(
    request: Request,
    viewer: Viewer,
    target: str,
    message: str,
    *,
    ok: bool = True,
    **values: object,
) -> RedirectResponse:
    """A form's work is done (or, with ``ok=False``, refused): say so on the page it leads to."""
    notice = Flash(message, {key: str(value) for key, value in values.items()}, ok=ok)
    await gateway(request).transact(lambda s: leave_flash(s, request, viewer, notice))
    return redirect(target)


def record_action(
    session: Session,
    viewer: Viewer,
    request: Request,
    action: str,
    target: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """An admin's action in the audit log, in the transaction that makes the change."""
    audit.record(
        session,
        actor_id=viewer.user_id,
        actor=viewer.username,
        action=action,
        target=target,
        detail=detail,
        ip=client_ip(request),
    )


def client_ip(request: Request) -> str | None:
    """The visitor's address (behind a trusted proxy, the one it forwarded)."""
    return request.client.host if request.client else None


def check_origin(request: Request) -> None:
    """Browsers name the page a POST comes from; one from another site is refused outright.
    This site is the request's host, or the public URL's when a proxy rewrites the host."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin is None or origin == "null":
        return  # old browsers and privacy settings send neither; the CSRF token still decides
    ours = {request.url.netloc}
    if public_url := portal(request).settings.public_url:
        ours.add(urlsplit(public_url).netloc)
    if urlsplit(origin).netloc not in ours:
        raise PermissionDenied("the form did not come from this site", param="origin")


def local_path(target: str | None, default: str = "/") -> str:
    """A redirect target on this site only (never ``//evil.example`` or a full URL)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


def redirect(target: str) -> RedirectResponse:
    return RedirectResponse(target, status_code=303)


Handler = Callable[[Request, Portal], Awaitable[Response]]


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A portal route: sign-in redirect, error pages and the security headers around a handler."""

    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        current = portal(request)
        try:
            response = await handler(request, current)
        except SignInRequired:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            response = redirect("/login?next=" + quote(target, safe=""))
        except HepAIError as error:
            response = await error_page(request, error)
        for name, value in SECURITY_HEADERS.items():
            # A file download keeps the stricter headers it was given (a sandboxing CSP).
            response.headers.setdefault(name, value)
        # The page's own time, which the benchmark reads (the network's is not ours to count).
        response.headers["server-timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        return response

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


async def error_page(request: Request, error: HepAIError, *, signed_in: bool = True) -> Response:
    """The error as a page in the viewer's language, with the error's status; without
    ``signed_in`` (the server itself failed) the page does not look the viewer up."""
    current = portal(request)
    viewer = await current.optional_viewer(request) if signed_in else None
    response = current.render(
        request,
        "error.html",
        viewer=viewer,
        status=error.status,
        status_code=error.status,
        message=describe(error),
    )
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def wants_page(request: Request) -> bool:
    """A browser asking for a page (not a program asking the API): it gets an HTML error."""
    path = request.url.path
    if path.startswith(("/apiv2", "/v1", "/playground/v1")) or path == "/healthz":
        return False
    return "text/html" in request.headers.get("accept", "")
