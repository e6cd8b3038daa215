"""Webhook rules without a server: which destinations pass, the secrets file, the signature as the documented
receiver snippet checks it, and the outbox a restarted or surviving process resumes."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from jobs.deliveries import Delivery, Outbox, backoff_s
from jobs.records import now
from jobs.webhooks import DestinationRefused, Destinations, parse_secrets, sign

ROOT = Path(__file__).resolve().parent.parent.parent


def documented_verify() -> Any:
    """The `verify` function docs/webhooks.md gives receivers, run as written."""
    text = (ROOT / "docs" / "webhooks.md").read_text()
    code = next(block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "def verify" in block)
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/webhooks.md", "exec"), namespace)
    return namespace["verify"]


def test_the_documented_snippet_verifies_a_signature_and_refuses_a_forgery_or_a_replay() -> None:
    verify = documented_verify()
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    body, stamp = b'{"id": "abc", "state": "succeeded"}', int(time.time())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(base64.b64decode(secret[6:]), "msg_1", stamp, body),
    }
    assert verify(secret, headers, body)
    assert not verify(secret, headers, body.replace(b"succeeded", b"failed"))
    assert not verify(secret, {**headers, "webhook-id": "msg_2"}, body)
    old = {**headers, "webhook-timestamp": str(stamp - 600)}
    old["webhook-signature"] = sign(base64.b64decode(secret[6:]), "msg_1", stamp - 600, body)
    assert not verify(secret, old, body)


ALLOWED = Destinations(("127.0.0.1", "hooks.example.com", "*.example.org", "*"))


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        ("http://127.0.0.2:9000/hook", "loopback, link-local or private"),
        ("http://[::1]:9000/hook", "loopback, link-local or private"),
        ("http://0x7f000001:9000/hook", "usual dotted form"),
        ("http://127.1/hook", "usual dotted form"),
        ("http://169.254.169.254/latest", "loopback, link-local or private"),
        ("http://10.0.0.8/hook", "loopback, link-local or private"),
        ("http://[fe80::1]/hook", "loopback, link-local or private"),
        ("ftp://hooks.example.com/x", "http:// or https://"),
        ("https://user:pw@hooks.example.com/x", "credentials"),
        ("not a url", "http:// or https://"),
    ],
)
def test_special_addresses_and_odd_forms_are_refused(url: str, refusal: str) -> None:
    with pytest.raises(DestinationRefused, match=refusal):
        ALLOWED.check(url)


def test_listed_hosts_and_wildcards_pass() -> None:
    assert ALLOWED.check("http://127.0.0.1:8123/hook") == "127.0.0.1"  # listed by itself
    assert ALLOWED.check("https://HOOKS.example.com./x") == "hooks.example.com"
    assert ALLOWED.check("https://a.b.example.org/x") == "a.b.example.org"
    assert ALLOWED.check("https://8.8.8.8/x") == "8.8.8.8"  # public, through `*`
    narrow = Destinations(("hooks.example.com", "*.example.org"))
    for url in ("https://example.org/x", "https://evil.com/x", "https://hooks.example.com.evil.com/x"):
        with pytest.raises(DestinationRefused, match="not among this server's allowed webhook hosts"):
            narrow.check(url)
    with pytest.raises(DestinationRefused, match="webhooks are off"):
        Destinations(()).check("https://hooks.example.com/x")


def test_a_name_that_resolves_to_loopback_is_refused_unless_listed() -> None:
    with pytest.raises(DestinationRefused, match="loopback, link-local or private"):
        asyncio.run(ALLOWED.check_resolved("http://localhost:9000/hook"))
    asyncio.run(Destinations(("localhost",)).check_resolved("http://localhost:9000/hook"))


def test_secrets_file_lines() -> None:
    good = base64.b64encode(b"k" * 24).decode()
    secrets = parse_secrets(f"# comment\nalice whsec_{good}\n* whsec_{good}  # global\nbob whsec_!!notbase64!!\nbad\n")
    assert set(secrets) == {"alice", "*"} and secrets["alice"] == b"k" * 24


def test_backoff_doubles_from_one_second_to_a_cap() -> None:
    assert [backoff_s(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8] and backoff_s(40) == 300


def delivery(name: str) -> Delivery:
    stamp = now()
    return Delivery(
        id=name,
        job_id="j",
        caller="anonymous",
        url="http://127.0.0.1/x",
        event="completed",
        body="{}",
        next_at=stamp,
        give_up_at=stamp + timedelta(seconds=60),
    )


def test_an_outbox_file_is_claimed_by_one_process_once_its_owner_stopped_touching_it(tmp_path: Path) -> None:
    dead, alive, other = (Outbox(tmp_path, owner) for owner in ("dead", "alive", "other"))
    dead.keep(delivery("msg_a"))
    alive.keep(delivery("msg_b"))
    assert alive.claim(older_than_s=30) == [] and other.claim(older_than_s=30) == []  # both still fresh
    old = time.time() - 60
    os.utime(dead.path("msg_a"), (old, old))
    assert [d.id for d in other.claim(older_than_s=30)] == ["msg_a"]
    assert alive.claim(older_than_s=30) == []  # claimed once: it is `other`'s now, and fresh
    assert sorted(p.name for p in tmp_path.iterdir()) == ["msg_a.other.json", "msg_b.alive.json"]
    other.drop(delivery("msg_a"))
    assert [d.id for d in Outbox(tmp_path, "restarted").claim(older_than_s=0)] == ["msg_b"]
