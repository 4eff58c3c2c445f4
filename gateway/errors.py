"""The gateway's refusals: each error knows its HTTP status and its stable error code. And the
one error of a start (or reload) that cannot go on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar


class GatewayError(Exception):
    """A decision to refuse a request. Rendered once, by the error middleware."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        details: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        self.details = details or {}


class MalformedRequest(GatewayError):
    """The request target or query string is not one the gateway can interpret unambiguously."""

    status = 400
    code = "malformed_request"


class MalformedBody(GatewayError):
    """The body is not strict JSON (duplicate keys, bad UTF-8, NaN, too deep, ...)."""

    status = 400
    code = "malformed_body"


class InvalidToken(GatewayError):
    """The caller's bearer token is missing, malformed, expired or not signed by a trusted key."""

    status = 401
    code = "invalid_token"

    def __init__(self, message: str) -> None:
        super().__init__(
            message,
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )


class ScopeDenied(GatewayError):
    """The token's scope does not grant this partner and purpose."""

    status = 403
    code = "scope_denied"


class RouteDenied(GatewayError):
    """No route of the contract matches this method and path."""

    status = 403
    code = "route_denied"


class PurposeDenied(GatewayError):
    """The declared purpose is missing, not approved, or not the purpose of this route."""

    status = 403
    code = "purpose_denied"


class ContractInactive(GatewayError):
    """The contract is suspended, terminated, or outside its validity window."""

    status = 403
    code = "contract_inactive"


class ConsentRequired(GatewayError):
    """The contract requires the data subject's explicit consent and none covers this share."""

    status = 403
    code = "consent_required"


class MinorDenied(GatewayError):
    """The data subject is a child under 14 and the contract denies shares about minors."""

    status = 403
    code = "minor_denied"


class Forbidden(GatewayError):
    """An operations endpoint was called without the admin scope."""

    status = 403
    code = "forbidden"


class UnknownPartner(GatewayError):
    """No loaded contract has this partner id."""

    status = 404
    code = "unknown_partner"


class NotFound(GatewayError):
    """No operations endpoint has this name."""

    status = 404
    code = "not_found"


class MethodNotAllowed(GatewayError):
    """An operations endpoint was called with the wrong method."""

    status = 405
    code = "method_not_allowed"

    def __init__(self, message: str, allowed: Sequence[str]) -> None:
        # RFC 9110 15.5.6: a 405 names the methods the resource does accept.
        super().__init__(message, headers={"Allow": ", ".join(allowed)})


class BodyTooLarge(GatewayError):
    """The body (after decoding) exceeds `limits.max_body_bytes`."""

    status = 413
    code = "body_too_large"


class UnsupportedMediaType(GatewayError):
    """The content type or content encoding is not one the route accepts."""

    status = 415
    code = "unsupported_media_type"


class RequestTimeout(GatewayError):
    """The caller stopped sending the body before the read deadline."""

    status = 408
    code = "request_timeout"


class ShareLogChanged(GatewayError):
    """A prune since the first page of a paged read may have taken rows it had not read yet."""

    status = 409
    code = "log_changed"


class RateLimited(GatewayError):
    """The partner's `rate_limit_per_s` is exhausted."""

    status = 429
    code = "rate_limited"


class QuotaExceeded(GatewayError):
    """The partner's `max_records_per_day` is exhausted."""

    status = 429
    code = "quota_exceeded"


class UpstreamError(GatewayError):
    """The partner refused the connection, reset it, or answered with something unusable."""

    status = 502
    code = "upstream_error"


class ShareLogUnavailable(GatewayError):
    """The share record could not be written, so nothing may be shared."""

    status = 503
    code = "share_log_unavailable"


class RegistryUnavailable(GatewayError):
    """Another writer held the consent registry past its busy timeout (admin API)."""

    status = 503
    code = "registry_busy"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "1"})


class ConsentRegistryUnavailable(GatewayError):
    """The consent registry cannot be read (its file was replaced under the gateway, and no
    reload has opened the one in its place yet), so no share needing consent may go."""

    status = 503
    code = "registry_unavailable"


class Overloaded(GatewayError):
    """The gateway is at its concurrency limit."""

    status = 503
    code = "overloaded"


class UpstreamTimeout(GatewayError):
    """The partner did not answer within the contract's `upstream.timeout_s`."""

    status = 504
    code = "upstream_timeout"


class StartupError(Exception):
    """The gateway cannot start (or reload) safely; one line per problem.

    Here, not with the running gateway's state: every command reports it, and a command that
    never starts the gateway should not import the server to catch it."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
