"""Signed job webhooks (Standard Webhooks): sent when a job ends, retried with back-off.

Signature: base64(HMAC-SHA256(key, f"{webhook-id}.{webhook-timestamp}.{body}")) sent as
`webhook-signature: v1,<signature>`. The key is the job's secret; a secret written as
`whsec_<base64>` is base64-decoded first, as the Standard Webhooks libraries do.

Every attempt checks the URL again (service/webhook_targets.py: DNS may have changed since the
job was submitted) and connects to the address it checked; redirects are never followed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import httpx
from sqlalchemy.orm import Session, sessionmaker

from service.db import session_scope
from service.job_state import add_event
from service.models import Job, utcnow
from service.secret_box import SecretKeyError, decrypt_secret
from service.settings import Settings
from service.webhook_targets import (
    HostDoesNotResolve,
    WebhookTargetRefused,
    check_target,
    pinned_request,
)

log = logging.getLogger(__name__)

RETRY_DELAYS_SECONDS = (1.0, 2.0, 4.0, 8.0, 16.0)  # after each failed attempt; 6 attempts in all


def signing_key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode()


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def payload(job: Job) -> dict[str, Any]:
    return {
        "type": f"job.{job.status}",
        "timestamp": utcnow().isoformat(),
        "data": {
            "id": job.id,
            "status": job.status,
            "method": job.method,
            "iterations": job.progress_step,
            "error": {"code": job.error_code, "message": job.error_message}
            if job.error_code
            else None,
            "metrics": job.latest_metrics,
        },
    }


def signing_secret(job: Job, settings: Settings) -> str:
    """The job's secret: decrypted, or as stored by a job made before secrets were encrypted."""
    if job.webhook_secret_encrypted:
        return decrypt_secret(settings, job.webhook_secret_encrypted)
    return job.webhook_secret or ""


def deliver_job_webhook(
    sessions: sessionmaker[Session],
    settings: Settings,
    job_id: str,
    delays: tuple[float, ...] = RETRY_DELAYS_SECONDS,
    timeout: float = 10.0,
) -> bool:
    """POST the job's final state to its webhook URL until a 2xx answers; every attempt becomes a
    `webhook` event on the job. Returns whether one was delivered (True when there is no URL).
    A URL refused by the target check or answered with a redirect is not tried again."""
    with sessions() as session:
        job = session.get(Job, job_id)
        if job is None or not job.webhook_url:
            return True
        url = job.webhook_url
        body = json.dumps(payload(job), sort_keys=True).encode()
        message_id = (
            f"msg_{job.id}_{job.status}"  # the same on every retry, so receivers can dedupe
        )
        try:
            secret = signing_secret(job, settings)
        except SecretKeyError as error:
            add_event(session, job_id, "webhook", f"not sent to {url}: {error}")
            session.commit()
            log.error("job %s: %s", job_id, error)
            return False
    for attempt in range(1, len(delays) + 2):
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(secret, message_id, timestamp, body),
        }
        outcome, delivered, final = send_once(url, body, headers, settings, timeout)
        with session_scope(sessions) as session:
            add_event(session, job_id, "webhook", f"attempt {attempt} to {url}: {outcome}")
        if delivered:
            return True
        if final:
            break
        if attempt <= len(delays):
            time.sleep(delays[attempt - 1])
    log.warning("job %s: webhook to %s not delivered (%d attempts)", job_id, url, attempt)
    return False


def send_once(
    url: str, body: bytes, headers: dict[str, str], settings: Settings, timeout: float
) -> tuple[str, bool, bool]:
    """One attempt: (what happened, delivered, whether trying again is pointless)."""
    try:
        target = check_target(url, settings.webhook_allowed_networks)
    except WebhookTargetRefused as error:
        return f"refused, not sent: {error}", False, True
    except HostDoesNotResolve as error:
        return f"not sent: {error}", False, False
    pinned_url, host, extensions = pinned_request(target)
    try:
        # no proxies from the environment: the request goes to the address just checked
        with httpx.Client(trust_env=False, follow_redirects=False, timeout=timeout) as client:
            answer = client.post(
                pinned_url, content=body, headers=headers | host, extensions=extensions
            )
    except httpx.HTTPError as error:
        return f"{type(error).__name__}: {error}", False, False
    if answer.is_redirect:
        return f"HTTP {answer.status_code}: redirects are not followed", False, True
    return f"HTTP {answer.status_code}", answer.is_success, False
