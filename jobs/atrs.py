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
import json
import logging
import ssl
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote_plus

import httpx
import tenacity

log = logging.getLogger(__name__)

TOKEN_LEEWAY_SECONDS = 60.0
# RFC 6749 makes `expires_in` optional. Without it a token is assumed to live this long; a
# server that ends it sooner answers 401, after which one fresh token is fetched.
ASSUMED_TOKEN_LIFETIME_SECONDS = 300.0
# The error codes of RFC 6749 section 5.2: the only part of a token error answer that is
# repeated in a message (the rest of the body is never logged or stored).
OAUTH_ERRORS = frozenset({"invalid_request", "invalid_client", "invalid_grant",
                          "unauthorized_client", "unsupported_grant_type", "invalid_scope"})


class AtrsError(Exception):
    """The regulator's API did not accept the request."""


class Rejected(AtrsError):
    """A definitive refusal (4xx): resending the same request will not help."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"ATRS rejected the request: HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


class Unauthorized(AtrsError):
    """The regulator refused a token it had just issued (401 after a refresh): a credentials
    or token-service problem on its side or ours, not a verdict on the submission. Recorded as
    `failed`, so the next run tries again; the package was not refused."""


class TokenRefused(AtrsError):
    """The token endpoint did not issue a token. Its answer is never logged or stored: it may
    carry a token (a 200 of an unexpected shape) or credentials echoed back."""


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
    # None: the regulator answered 2xx (or 409, "already held") without a usable reference,
    # a body that is not JSON or lacks the field. It holds the submission all the same; the
    # job records it as accepted without reference and never sends it again.
    reference: str | None
    body: dict[str, Any]
    # The regulator already held this submission (a replayed key, or the period under
    # another key): nothing new was created.
    duplicate: bool
    # The answer as it came, for the evidence archive.
    text: str = ""


def request_bytes(payload: dict[str, Any]) -> bytes:
    """The exact bytes a submission posts: JSON with sorted keys and no spaces, so that the
    evidence archive can write the same bytes from the body the audit trail keeps."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


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
            raise TokenRefused(f"the token endpoint answered HTTP {response.status_code}"
                               f"{_oauth_error(response)}: check the ATRS client id and secret")
        try:
            body = response.json()
        except ValueError:
            body = None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise TokenRefused("the token endpoint answered HTTP 200 without an access_token "
                               "(its answer is not shown: it may hold a credential)")
        lifetime = _lifetime(body.get("expires_in"))
        self._token = token
        # Renewed a minute before it ends; a token shorter than two minutes at half its life.
        self._refresh_at = self._clock() + (lifetime - TOKEN_LEEWAY_SECONDS
                                            if lifetime > 2 * TOKEN_LEEWAY_SECONDS
                                            else lifetime / 2)
        log.info("obtained ATRS access token valid for %d s%s", lifetime,
                 "" if "expires_in" in body else " (assumed: the answer gave no expires_in)")
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


def _oauth_error(response: httpx.Response) -> str:
    """`: invalid_client` when the answer names a registered OAuth error, else nothing."""
    try:
        code = response.json().get("error")
    except (ValueError, AttributeError):
        return ""
    return f" ({code})" if code in OAUTH_ERRORS else ""


def _lifetime(value: object) -> float:
    """`expires_in` in seconds: a number, or a string of digits (some servers send one);
    anything else, or nothing, counts as absent."""
    if isinstance(value, bool):
        return ASSUMED_TOKEN_LIFETIME_SECONDS
    if isinstance(value, int | float) and value > 0:
        return float(value)
    if isinstance(value, str) and value.strip().isdigit() and int(value) > 0:
        return float(value)
    return ASSUMED_TOKEN_LIFETIME_SECONDS


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
    """Exponential, capped. A 429 waits for its reset; past the cap too when the wait ends
    before `deadline` (Unix time): being late is worse for the regulator's calendar than
    waiting, and asking again before the reset only earns another 429. A reset that would end
    after the deadline stops the retries (the run fails loudly while there is time to act);
    once the deadline has passed (an overdue period) or without one, a wait is capped."""

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
            return rate_limit_reset_seconds(error.response, self._now())
        return None

    def _before_deadline(self) -> bool:
        return self._deadline is not None and self._now() < self._deadline

    def beyond_deadline(self, retry_state: tenacity.RetryCallState) -> bool:
        reset = self.rate_limit_wait(retry_state)
        if reset is None or reset <= self._max or not self._before_deadline():
            return False
        assert self._deadline is not None
        return self._now() + reset > self._deadline

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        reset = self.rate_limit_wait(retry_state)
        if reset is None:
            return float(self._exponential(retry_state))
        if reset <= self._max:
            return reset
        if self._before_deadline():
            log.warning("ATRS rate limit: waiting %.1f s for X-RateLimit-Reset, beyond the "
                        "backoff cap of %.1f s but before the deadline", reset, self._max)
            return reset
        log.warning("ATRS rate limit: X-RateLimit-Reset is %.1f s away; %s, so waiting the "
                    "backoff cap of %.1f s", reset, "the deadline has passed"
                    if self._deadline is not None else "the call has no deadline", self._max)
        return self._max


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
            started = dt.datetime.fromtimestamp(self._now(), dt.UTC)
            clock_start = time.monotonic()
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
            reset = rate_limit_reset_seconds(error.response, self._now())
            if error.response.status_code == 429 and reset is not None and deadline is not None \
                    and reset > self._retry.backoff_max_seconds \
                    and self._now() < deadline < self._now() + reset:
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
            _refusal(response)
        return _json_object(response) or {}

    def _submit(self, path: str, payload: dict[str, Any], idempotency_key: str,
                reference_field: str, deadline: float | None,
                on_try: Callable[[HttpTry], None] | None, resend_unanswered: bool) -> Receipt:
        response = self._call("POST", path, content=request_bytes(payload), deadline=deadline,
                              on_try=on_try, resend_unanswered=resend_unanswered,
                              headers={"Idempotency-Key": idempotency_key,
                                       "Content-Type": "application/json"})
        status = response.status_code
        if not (200 <= status < 300 or status == 409):
            _refusal(response)
        body = _json_object(response)
        reference = body.get(reference_field) if body is not None else None
        if not isinstance(reference, str) or not reference.strip():
            log.warning("ATRS answered %s HTTP %d without a usable %s (%s): it holds the "
                        "submission; recorded as accepted without a reference", path, status,
                        reference_field, "no JSON object" if body is None
                        else f"fields: {', '.join(sorted(body)) or 'none'}")
            reference = None
        return Receipt(status, reference, body or {}, duplicate=status != 201,
                       text=response.text)

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
            _refusal(response)
        body = _json_object(response)
        if body is None:
            raise AtrsError(f"GET /fraud/incidents/{incident_id}: HTTP 200 whose body is not a "
                            "JSON object")
        return body


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _refusal(response: httpx.Response) -> NoReturn:
    """A 401 here came after a freshly fetched token (ClientCredentials replays once)."""
    if response.status_code == 401:
        raise Unauthorized(f"{response.request.method} {response.request.url.path}: HTTP 401 "
                           "with a freshly issued access token; the submission was not judged, "
                           "the next run tries again")
    raise Rejected(response.status_code, response.text)
