"""Password hashing and signed bearer tokens (standard library only)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(8)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 1000)
    return f"{salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    salt, _, _ = stored.partition("$")
    return hmac.compare_digest(hash_password(password, bytes.fromhex(salt)), stored)


def make_token(secret: str, username: str, ttl_s: int = 3600) -> str:
    payload = base64.urlsafe_b64encode(json.dumps({"sub": username, "exp": time.time() + ttl_s}).encode()).decode()
    sig = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    return f"{payload}.{sig}"


def read_token(secret: str, token: str) -> str | None:
    payload, _, sig = token.rpartition(".")
    if not payload or not hmac.compare_digest(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest(),
                                              sig):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(payload.encode()))
    except ValueError:
        return None
    return data["sub"] if data.get("exp", 0) > time.time() else None
