"""Test helpers for authentication: an issuer that signs JWTs and publishes its JWKS, and
the expected outcome of a call for a role."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from alphaswarm_common.auth import PUBLIC, SERVICE, role_allows

PROTOS = Path(__file__).resolve().parents[1] / "protos"


def service_methods() -> list[Any]:
    """The method descriptors of every service of every proto under protos/."""
    import importlib

    from google.protobuf import descriptor_pool

    methods = []
    for proto in sorted(PROTOS.rglob("*.proto")):
        rel = proto.relative_to(PROTOS).as_posix()
        importlib.import_module(rel.removesuffix(".proto").replace("/", ".") + "_pb2")
        fd = descriptor_pool.Default().FindFileByName(rel)
        for service in fd.services_by_name.values():
            methods += list(service.methods)
    return methods


def every_rpc() -> list[str]:
    """Every RPC as gRPC names it (/package.Service/Method)."""
    return [f"/{m.containing_service.full_name}/{m.name}" for m in service_methods()]


class Issuer:
    """An RSA key pair; `jwks_file` holds its public key, `token()` signs claims."""

    def __init__(self, directory: Path, *, issuer: str = "https://issuer.test", kid: str = "k1") -> None:
        import jwt
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.issuer = issuer
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})
        self.jwks_file = directory / f"jwks-{kid}.json"
        self.jwks_file.write_text(json.dumps({"keys": [jwk]}))

    def token(
        self, *, role: Any = "viewer", sub: str = "alice", aud: str = "alphaswarm", **claims: Any
    ) -> str:
        import jwt

        now = int(time.time())
        doc = {"iss": self.issuer, "sub": sub, "aud": aud, "iat": now, "exp": now + 600, "role": role}
        doc.update(claims)
        return jwt.encode(doc, self.key, algorithm="RS256", headers={"kid": self.kid})


def expected(credential: str, need: str) -> str:
    """`allowed`, `401` or `403` for a credential (a role, or anonymous/revoked/expired/...)."""
    if need == PUBLIC:
        return "allowed"
    if credential in ("anonymous", "revoked", "expired_jwt", "wrong_issuer"):
        return "401"
    if need == SERVICE:
        return "403"
    return "allowed" if role_allows(credential, need) else "403"
