"""The connector's error tree: one root, transient and permanent branches.

    ConnectorError
    ├── ConfigError                  bad settings; the CLI exits 2 with one line
    │   └── StateFileError           no state file where a read-only command looks, or one
    │                                that cannot be read or written (corrupt, full disk)
    ├── LockHeldError                another live process holds the state database
    └── ApiError                     anything an API answered (or failed to answer)
        ├── TransientApiError        429, 5xx, timeouts, dropped connections: try again later
        │   ├── AmbiguousWriteError  a create whose outcome is unknown (sent, no answer):
        │   │                        look the object up by its natural key before retrying
        │   └── WriteInDoubtError    such a create, looked for and not found: the next
        │                            attempt looks again before creating it again
        ├── PermanentApiError        other 4xx, undecodable bodies: retrying will not help
        │   └── NotFoundError        404
        ├── AuthError                401/403: the token is refused; the cycle stops, the
        │                            invoices stay as they were (no failure is recorded)
        └── LimitReachedError        the target's budget of requests is spent until a given
                                     moment (Xero's day limit): the cycle ends cleanly, no
                                     invoice is failed for it, the next cycle tries again

The engine catches `TransientApiError` or `PermanentApiError` with one isinstance; an
`AuthError` or `LimitReachedError` is neither, so it passes every handler of one invoice and
stops the cycle. Retries of single requests live only in `connector.http`. Messages never
carry tokens.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Root of every error the connector raises on purpose."""


class ConfigError(ConnectorError):
    """Settings that cannot work: named key, what is wrong, how to fix it."""


class StateFileError(ConfigError):
    """The state file is missing (for a command that only reads), unreadable or unwritable:
    one line naming the file and what to do; nothing can run until it is fixed."""


class LockHeldError(ConnectorError):
    """Another running process holds the state database's writer lock."""


class ApiError(ConnectorError):
    """An API call that did not succeed."""

    def __init__(
        self,
        service: str,
        message: str,
        *,
        status: int | None = None,
        method: str = "",
        path: str = "",
        request_id: str | None = None,
        code: str | None = None,
    ) -> None:
        self.service = service
        self.message = message
        self.status = status
        self.method = method
        self.path = path
        self.request_id = request_id
        self.code = code
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.method} {self.path}".strip()
        status = f" HTTP {self.status}" if self.status is not None else ""
        rid = f" (request id {self.request_id})" if self.request_id else ""
        return f"{self.service}{status} {where}: {self.message}{rid}".replace("  ", " ")


class TransientApiError(ApiError):
    """Worth retrying later: rate limits, server errors, timeouts, connection failures."""

    def __init__(self, *args: object, retry_after: float | None = None, **kwargs: object) -> None:
        self.retry_after = retry_after
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


class AmbiguousWriteError(TransientApiError):
    """A non-idempotent request was sent but no answer came back: it may have been applied."""


class WriteInDoubtError(TransientApiError):
    """A create got no answer, and what it creates is not in the target yet. The server may
    still be applying it (a request can land after the client gave up on it), so it is not
    sent again in this attempt: the next attempt looks for it by its natural key first and
    reuses it. For a while after one, the engine sweeps late writes (`sweep_late_writes`)."""

    @classmethod
    def after(cls, exc: AmbiguousWriteError, what: str, system: str) -> WriteInDoubtError:
        return cls(
            exc.service,
            f"{exc.message}; {what} is not in {system} yet and is looked for again at the next "
            "attempt before it is created again",
            status=exc.status,
            method=exc.method,
            path=exc.path,
            request_id=exc.request_id,
            code=exc.code,
            retry_after=exc.retry_after,
        )


class PermanentApiError(ApiError):
    """The API refused the request; sending it again unchanged will be refused again."""


class NotFoundError(PermanentApiError):
    """The object does not exist (HTTP 404)."""


_TOKEN_FIX = {
    "kantata": "check KANTATA_TOKEN (or KANTATA_TOKEN_FILE): create a new OAuth token for a "
    "user with financial permission",
    "noko": "check NOKO_TOKEN (or NOKO_TOKEN_FILE): create a new personal access token in Noko "
    "(Integrations & Apps)",
    "xero": "check XERO_CLIENT_ID and XERO_CLIENT_SECRET (a custom connection), or run "
    "`kantata-sync xero login` again (XERO_TOKEN_FILE), and XERO_TENANT_ID",
}


class AuthError(ApiError):
    """The API refused the credentials (HTTP 401 or 403): nothing will work until an operator
    replaces the token, so no invoice is to blame."""

    @property
    def fix(self) -> str:
        return _TOKEN_FIX.get(self.service.lower(), "check the API token")

    def summary(self) -> str:
        """One line naming the API, what it answered and the fix."""
        what = "refused the token" if self.status == 401 else "denied access"
        name = {"kantata": "Kantata", "noko": "Noko", "xero": "Xero"}.get(
            self.service.lower(), self.service
        )
        if self.service.lower() == "xero":
            # Xero's refusals come from its identity server too (HTTP 400, a login that did
            # not complete): its own words say which; they never hold a secret.
            status = f" (HTTP {self.status})" if self.status else ""
            return f"Xero refused the credentials{status}: {self.message}; {self.fix}"
        return f"{name} {what} (HTTP {self.status}): {self.fix}"


class LimitReachedError(ApiError):
    """The API's budget of requests is spent until `resume_at` (a day limit): not a failure of
    any invoice. The cycle ends cleanly; the next cycle tries again with one call, whatever
    moment was announced."""

    def __init__(self, service: str, message: str, *, resume_at: object = None, **kwargs: object):
        self.resume_at = resume_at
        super().__init__(service, message, **kwargs)  # type: ignore[arg-type]
