#!/usr/bin/env python3
"""Generates the NATS decentralized-auth fixtures tests/sinks.rs uses (operator mode): an
operator, an account with JetStream, the system account JetStream requires, a user credentials file signed by that account, and a
"rogue" credentials file whose user is signed by an account the server does not know.

These keys protect nothing but a test server on loopback. The fixtures are committed so the
tests need neither this script nor Python's `cryptography`; run it again only to replace them:

    python3 tests/nats-auth/generate.py tests/nats-auth

NKeys: base32 (no padding) of a prefix byte, the raw key, and a little-endian CRC-16/XMODEM;
seeds carry two prefix bytes ('S' + the key type). JWTs: header {"typ":"JWT","alg":"ed25519-nkey"},
claims with jti = base32(SHA-512/256 of the claims without jti), signed with the issuer's Ed25519
key over "header.claims" (base64url, no padding) — as github.com/nats-io/jwt/v2 does.
"""

import base64
import hashlib
import json
import os
import sys
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

PREFIX = {"operator": 14 << 3, "account": 0 << 3, "user": 20 << 3}
SEED_PREFIX = 18 << 3


def crc16(data: bytes) -> int:
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def b32(data: bytes) -> str:
    return base64.b32encode(data).decode().rstrip("=")


def with_crc(data: bytes) -> bytes:
    c = crc16(data)
    return data + bytes([c & 0xFF, c >> 8])


class Key:
    def __init__(self, kind: str):
        self.private = Ed25519PrivateKey.generate()
        raw = self.private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        public = self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        prefix = PREFIX[kind]
        self.public = b32(with_crc(bytes([prefix]) + public))
        seed_head = bytes([SEED_PREFIX | (prefix >> 5), (prefix & 31) << 3])
        self.seed = b32(with_crc(seed_head + raw))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def jwt(issuer: Key, subject: str, name: str, nats: dict) -> str:
    claims = {"iat": int(time.time()), "iss": issuer.public, "name": name, "sub": subject, "nats": nats}
    claims["jti"] = b32(hashlib.new("sha512_256", json.dumps(claims).encode()).digest())
    header = b64url(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = b64url(json.dumps(claims).encode())
    signature = issuer.private.sign(f"{header}.{body}".encode())
    return f"{header}.{body}.{b64url(signature)}"


UNLIMITED = {
    "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True,
    "conn": -1, "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
}


def creds(user_jwt: str, seed: str) -> str:
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{seed}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )


def user(account: Key, name: str) -> str:
    key = Key("user")
    claims = {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2}
    return creds(jwt(account, key.public, name, claims), key.seed)


def main(out: str) -> None:
    operator = Key("operator")
    account = Key("account")
    # JetStream needs a system account for its internal subscriptions.
    system = Key("account")
    stranger = Key("account")
    files = {
        "operator.jwt": jwt(operator, operator.public, "hookgate-test", {"type": "operator", "version": 2}),
        "account.pub": account.public,
        "account.jwt": jwt(
            operator, account.public, "events", {"limits": UNLIMITED, "type": "account", "version": 2}
        ),
        "system.pub": system.public,
        "system.jwt": jwt(operator, system.public, "SYS", {"type": "account", "version": 2}),
        "user.creds": user(account, "hookgate-ingest"),
        "rogue.creds": user(stranger, "rogue"),
    }
    for name, text in files.items():
        with open(os.path.join(out, name), "w") as f:
            f.write(text if text.endswith("\n") else text + "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__)))
