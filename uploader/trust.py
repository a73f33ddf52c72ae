"""Which hosts we trust, with the token and with our attention (pure: no I/O).

Every URL a server names (the ``<batchStatus>`` of a submit answer) is
untrusted input. Two decisions live here so that every command makes them
the same way (``run``, ``submit``, ``status --refresh``, ``verify``):

- ``token_allowed``: may the Bearer token go to this host?
- ``status_request_url``: may we call this status URL at all?

The rule for the token is deliberately narrow. It goes to the submit host
itself; to any host under Target's own edge domain ``tt.omtrdc.net`` when the
submit host is one of Target's (status URLs name an edge such as
``mboxedge45.tt.omtrdc.net``); to loopback hosts when the submit host is
loopback (the emulator); and to the hosts listed in ``target.token_hosts``.
There is no automatic "same parent domain" rule: the parent of
``a.b.co.uk`` or of ``acme.eu-west-1.elb.amazonaws.com`` is a public suffix
or a shared-hosting domain whose other hosts belong to strangers, and
telling those apart needs the Public Suffix List, which we do not ship.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from yarl import URL

from uploader.errors import UnusableURLError
from uploader.redact import MARK, Redactor
from uploader.responses import excerpt
from uploader.settings import TargetSettings, is_loopback_host

__all__ = [
    "CREDENTIALS_MARK",
    "TARGET_EDGE_DOMAIN",
    "status_request_url",
    "storable_status_url",
    "token_allowed",
]

# Adobe Target's edge domain: CLIENT.tt.omtrdc.net and mboxedgeNN.tt.omtrdc.net.
TARGET_EDGE_DOMAIN = "tt.omtrdc.net"
# Stands for the user:password@ a server put in a status URL (never stored).
CREDENTIALS_MARK = "[credentials]"


def token_allowed(settings: TargetSettings, url: URL | str) -> bool:
    """May the Bearer token be sent to ``url``'s host? Ports are not part of the decision.

    Yes for the submit host; for ``*.tt.omtrdc.net`` when the submit host is
    under ``tt.omtrdc.net``; for any loopback host when the submit host is
    loopback; and for hosts in ``token_hosts`` (exact, or ``*.domain`` for
    its subdomains). No for every other host.
    """
    try:
        host = _norm_host(URL(url).host if isinstance(url, str) else url.host)
    except (TypeError, ValueError):
        return False
    base = _norm_host(settings.host)
    if not host or not base:
        return False
    if host == base or _listed(host, settings.token_hosts):
        return True
    if is_loopback_host(base):
        return is_loopback_host(host)
    edge = "." + TARGET_EDGE_DOMAIN
    return base.endswith(edge) and host.endswith(edge)


def status_request_url(settings: TargetSettings, url: str, *, details: bool = True) -> URL:
    """Validate a server-provided status URL and add ``showDetails=true``.

    Refused (``UnusableURLError``, a ``ProtocolError``): none at all (the
    submit answer named none); anything but an absolute http(s) URL; a URL
    with credentials in it; plain http when the base URL is https, or to a
    non-loopback host, unless ``target.allow_http``; a URL holding the token.
    Other query parameters (``batchId``...) are kept.
    """
    if not url:
        raise UnusableURLError(
            "the submit answer named no status URL (no <batchStatus>); cannot follow the batch"
        )
    redact = Redactor(settings.token)
    shown = _shown(url, redact)
    if CREDENTIALS_MARK in url or MARK in url:  # see storable_status_url
        raise UnusableURLError(
            f"status URL {shown!r} carries credentials or the token; refusing to call it"
        )
    try:
        parsed = URL(url)
    except (TypeError, ValueError) as exc:
        raise UnusableURLError(f"status URL {shown!r} is not a valid URL") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise UnusableURLError(
            f"status URL {shown!r} is not an absolute http(s) URL; refusing to call it"
        )
    if parsed.user is not None or parsed.password is not None:
        raise UnusableURLError(
            f"status URL of host {parsed.host!r} carries credentials (user@); refusing to call it"
        )
    if redact.contains_secret(url):
        raise UnusableURLError(f"status URL {shown!r} holds the token; refusing to call it")
    if parsed.scheme == "http" and not settings.allow_http:
        if settings.base_url.startswith("https:"):
            raise UnusableURLError(
                f"status URL {shown!r} uses plain http while target.base_url is https; "
                "set target.allow_http = true to accept that"
            )
        if not is_loopback_host(parsed.host):
            raise UnusableURLError(
                f"status URL {shown!r} uses plain http to a non-loopback host; "
                "set target.allow_http = true to accept that"
            )
    return parsed.update_query(showDetails="true") if details else parsed


def storable_status_url(settings: TargetSettings, url: str) -> str:
    """The status URL a server named, as it may be stored and printed.

    Credentials (``user:password@``) and any piece of the token are replaced
    by markers, which ``status_request_url`` refuses: such a batch is a
    protocol error when it is polled, and the secret is never written down.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return Redactor(settings.token)(url)
    if "@" in parts.netloc:
        netloc = f"{CREDENTIALS_MARK}@{parts.netloc.rpartition('@')[2]}"
        url = urlunsplit(parts._replace(netloc=netloc))
    return Redactor(settings.token)(url)


def _shown(url: str, redact: Redactor) -> str:
    text = str(url)
    if "@" in text:  # never print what may be a password
        scheme, sep, rest = text.partition("://")
        rest = rest.rpartition("@")[2] if sep else rest
        text = f"{scheme}{sep}[credentials]@{rest}" if sep else "[credentials]"
    return excerpt(redact(text), 120)


def _norm_host(host: str | None) -> str:
    return (host or "").strip("[]").rstrip(".").lower()


def _listed(host: str, patterns: tuple[str, ...]) -> bool:
    for pattern in patterns:
        pattern = _norm_host(pattern)
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif pattern and host == pattern:
            return True
    return False
