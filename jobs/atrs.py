"""Client of the regulator's ATRS REST API (the contract in docs/ncc-compliance.md).

OAuth 2.0 client credentials as an httpx auth flow: the token is fetched on first use and
again about 60 s before it expires, and once more if the server calls it invalid (401) before
then. Transient failures (timeouts, connection resets, 5xx, 429) are retried by tenacity with
bounded exponential backoff; a 429 waits for its `X-RateLimit-Reset`, even past the backoff
cap, as long as the wait ends before the call's deadline (the period's due time). Every
submission carries an `Idempotency-Key`, so a retry whose first try did reach the regulator is
answered with the original result instead of creating a second submission; where the
regulator's honouring of the key is not confirmed, a POST that got no answer is not resent
(`Unanswered`). Every HTTP try is reported to the caller (`on_try`) for the audit trail. TLS is
always verified.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import ssl
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx
import tenacity

log = logging.getLogger(__name__)

TOKEN_LEEWAY_SECONDS = 60.0


class AtrsError(Exception):
    """The regulator's API did not accept the request."""


class Rejected(AtrsError):
    """A definitive refusal (4xx): resending the same request will not help."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"ATRS rejected the request: HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


class Unavailable(AtrsError):
    """Transient failures outlasted the retry budget; the outcome of the last try is unknown."""


class Unanswered(Unavailable):
    """A POST that may have reached the regulator got no answer, and resending it is not safe
    (the regulator's honouring of Idempotency-Key is not confirmed): a person must ask."""


class _Transient(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    backoff_seconds: float = 2.0
    backoff_max_seconds: float = 60.0


@dataclass(frozen=True)
class HttpTry:
    """One HTTP request of a call, as the audit trail records it."""

    method: str
    path: str
    number: int  # 1 for the first try of the call
    started_at: dt.datetime
    seconds: float
    http_status: int | None  # None: no answer (timeout, connection lost)
    error: str | None


@dataclass(frozen=True)
class Receipt:
    http_status: int
    reference: str
    body: dict[str, Any]
    # The regulator already held this submission (a replayed key, or the period under
    # another key): nothing new was created.
    duplicate: bool


class ClientCredentials(httpx.Auth):
    requires_response_body = True

    def __init__(self, token_url: str, client_id: str, client_secret: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._token_url = token_url
        # client_secret_basic (RFC 6749 2.3.1): each part form-encoded, then base64.
        self._basic = base64.b64encode(
            f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()).decode()
        self._clock = clock
        self._token: str | None = None
        self._refresh_at = 0.0

    def _token_request(self) -> httpx.Request:
        return httpx.Request(
            "POST", self._token_url, data={"grant_type": "client_credentials"},
            headers={"Authorization": f"Basic {self._basic}", "Accept": "application/json"})

    def _store(self, response: httpx.Response) -> str:
        if response.status_code >= 500 or response.status_code == 429:
            raise _Transient(response)
        if response.status_code != 200:
            raise Rejected(response.status_code, f"token request: {response.text}")
        body = response.json()
        token, lifetime = body.get("access_token"), body.get("expires_in")
        if not isinstance(token, str) or not isinstance(lifetime, int | float):
            raise Rejected(response.status_code, f"token response lacks access_token or "
                                                 f"expires_in: {response.text}")
        self._token = token
        self._refresh_at = self._clock() + float(lifetime) - TOKEN_LEEWAY_SECONDS
        log.info("obtained ATRS access token valid for %d s", lifetime)
        return token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._token
        if token is None or self._clock() >= self._refresh_at:
            token = self._store((yield self._token_request()))
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            # Revoked or expired early on the server's clock: one fresh token, one replay.
            log.warning("ATRS refused the access token; fetching a new one")
            fresh = self._store((yield self._token_request()))
            request.headers["Authorization"] = f"Bearer {fresh}"
            yield request


def _unanswered(error: BaseException) -> bool:
    """The request may have reached the server, and no answer came back."""
    return isinstance(error, httpx.ReadTimeout | httpx.WriteTimeout | httpx.ReadError
                      | httpx.WriteError | httpx.RemoteProtocolError)


def _retryable(error: BaseException) -> bool:
    if isinstance(error, _Transient):
        return True
    if isinstance(error, httpx.ConnectError):
        # A certificate that fails verification is not going to pass on the next try.
        return not isinstance(error.__context__, ssl.SSLCertVerificationError) \
            and "CERTIFICATE_VERIFY_FAILED" not in str(error)
    return isinstance(error, httpx.TimeoutException | httpx.NetworkError
                      | httpx.RemoteProtocolError)


def rate_limit_reset_seconds(response: httpx.Response, now: float) -> float | None:
    """`X-RateLimit-Reset` as seconds to wait: a delay in seconds, or (values that look like
    one) a Unix time."""
    value = response.headers.get("X-RateLimit-Reset")
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return max(0.0, number - now if number > 1_000_000_000 else number)


class _Backoff(tenacity.wait.wait_base):
    """Exponential, capped; a 429 waits for its reset, past the cap too when the wait ends
    before `deadline` (Unix time): being late is worse for the regulator's calendar than
    waiting, and asking again before the reset only earns another 429."""

    def __init__(self, policy: RetryPolicy, deadline: float | None,
                 now: Callable[[], float]) -> None:
        self._exponential = tenacity.wait_exponential(
            multiplier=policy.backoff_seconds, max=policy.backoff_max_seconds)
        self._max = policy.backoff_max_seconds
        self._deadline = deadline
        self._now = now

    def rate_limit_wait(self, retry_state: tenacity.RetryCallState) -> float | None:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(error, _Transient) and error.response.status_code == 429:
            return rate_limit_reset_seconds(error.response, time.time())
        return None

    def beyond_deadline(self, retry_state: tenacity.RetryCallState) -> bool:
        reset = self.rate_limit_wait(retry_state)
        if reset is None or reset <= self._max:
            return False
        return self._deadline is None or self._now() + reset > self._deadline

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        reset = self.rate_limit_wait(retry_state)
        if reset is not None:
            if reset > self._max and not self.beyond_deadline(retry_state):
                log.warning("ATRS rate limit: waiting %.1f s for X-RateLimit-Reset, beyond the "
                            "backoff cap of %.1f s but before the deadline", reset, self._max)
            return reset if reset > self._max else min(reset, self._max)
        return float(self._exponential(retry_state))


class _StopWhen(tenacity.stop.stop_base):
    def __init__(self, predicate: Callable[[tenacity.RetryCallState], bool]) -> None:
        self._predicate = predicate

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self._predicate(retry_state)


def _log_retry(retry_state: tenacity.RetryCallState) -> None:
    error = retry_state.outcome.exception() if retry_state.outcome else None
    wait = retry_state.next_action.sleep if retry_state.next_action else 0.0
    log.warning("ATRS call failed (%s), try %d; retrying in %.1f s", error or "?",
                retry_state.attempt_number, wait)


class AtrsClient:
    def __init__(self, base_url: str, client_id: str, client_secret: str, *,
                 ca_file: Path | None = None, timeout: float = 30.0,
                 retry: RetryPolicy = RetryPolicy(),
                 now: Callable[[], float] = time.time) -> None:
        base = base_url.rstrip("/")
        if not base.startswith("https://"):
            raise ValueError(f"ATRS base URL must be https: {base_url}")
        verify: ssl.SSLContext | bool = (ssl.create_default_context(cafile=str(ca_file))
                                         if ca_file else True)
        self._http = httpx.Client(
            base_url=base, verify=verify, timeout=timeout,
            auth=ClientCredentials(f"{base}/oauth/token", client_id, client_secret),
            headers={"Accept": "application/json", "User-Agent": "acm-platform-ncc-report"})
        self._retry = retry
        self._now = now  # the job's clock, for deadlines (jobs/clock.py)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AtrsClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, path: str, *, deadline: float | None = None,
              on_try: Callable[[HttpTry], None] | None = None, resend_unanswered: bool = True,
              **kwargs: Any) -> httpx.Response:
        tries = 0

        def once() -> httpx.Response:
            nonlocal tries
            tries += 1
            started, clock_start = dt.datetime.now(dt.UTC), time.monotonic()
            try:
                response = self._http.request(method, path, **kwargs)
            except Exception as error:
                if on_try is not None:
                    on_try(HttpTry(method, path, tries, started, time.monotonic() - clock_start,
                                   None, f"{type(error).__name__}: {error}"[:500]))
                raise
            if on_try is not None:
                on_try(HttpTry(method, path, tries, started, time.monotonic() - clock_start,
                               response.status_code, None))
            if response.status_code == 429 or response.status_code >= 500:
                raise _Transient(response)
            return response

        backoff = _Backoff(self._retry, deadline, self._now)

        def retry(error: BaseException) -> bool:
            if not resend_unanswered and _unanswered(error):
                return False
            return _retryable(error)

        retrying = tenacity.Retrying(
            stop=tenacity.stop_any(tenacity.stop_after_attempt(self._retry.attempts),
                                   _StopWhen(backoff.beyond_deadline)),
            wait=backoff, retry=tenacity.retry_if_exception(retry),
            before_sleep=_log_retry, reraise=True)
        try:
            return retrying(once)
        except _Transient as error:
            reset = rate_limit_reset_seconds(error.response, time.time())
            if error.response.status_code == 429 and reset is not None and \
                    reset > self._retry.backoff_max_seconds:
                raise Unavailable(f"{method} {path}: HTTP 429 whose X-RateLimit-Reset ({reset:.0f}"
                                  " s) ends after the deadline; not retried") from None
            raise Unavailable(f"{method} {path}: HTTP {error.response.status_code} after "
                              f"{tries} tries") from None
        except httpx.TransportError as error:
            if not resend_unanswered and _unanswered(error):
                raise Unanswered(f"{method} {path}: no answer ({type(error).__name__}) after "
                                 "the request was sent; not resent") from None
            raise Unavailable(f"{method} {path}: {type(error).__name__}: {error}") from None

    def health(self) -> dict[str, Any]:
        response = self._call("GET", "/health")
        if response.status_code != 200:
            raise Rejected(response.status_code, response.text)
        return dict(response.json())

    def _submit(self, path: str, payload: dict[str, Any], idempotency_key: str,
                reference_field: str, deadline: float | None,
                on_try: Callable[[HttpTry], None] | None, resend_unanswered: bool) -> Receipt:
        response = self._call("POST", path, json=payload, deadline=deadline, on_try=on_try,
                              resend_unanswered=resend_unanswered,
                              headers={"Idempotency-Key": idempotency_key})
        body: dict[str, Any] = response.json() if response.content else {}
        if response.status_code in (200, 201, 409) and isinstance(body.get(reference_field), str):
            return Receipt(response.status_code, body[reference_field], body,
                           duplicate=response.status_code != 201)
        raise Rejected(response.status_code, response.text)

    def submit_report(self, report: str, payload: dict[str, Any], idempotency_key: str, *,
                      deadline: float | None = None,
                      on_try: Callable[[HttpTry], None] | None = None,
                      resend_unanswered: bool = True) -> Receipt:
        return self._submit(f"/compliance/reports/{report}", payload, idempotency_key,
                            "reference", deadline, on_try, resend_unanswered)

    def submit_incident(self, payload: dict[str, Any], idempotency_key: str, *,
                        deadline: float | None = None,
                        on_try: Callable[[HttpTry], None] | None = None,
                        resend_unanswered: bool = True) -> Receipt:
        return self._submit("/fraud/incidents", payload, idempotency_key, "incidentId",
                            deadline, on_try, resend_unanswered)

    def incident_status(self, incident_id: str) -> dict[str, Any]:
        response = self._call("GET", f"/fraud/incidents/{incident_id}")
        if response.status_code != 200:
            raise Rejected(response.status_code, response.text)
        return dict(response.json())
