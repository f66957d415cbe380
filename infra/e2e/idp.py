"""A local OpenID provider for the deployed HTTP API's JWT authorizer.

It serves what an identity provider serves to API Gateway: the discovery document at
``{issuer}/.well-known/openid-configuration`` and the signing keys (a JWKS with one RS256
key) at the ``jwks_uri`` it names, over HTTPS on 127.0.0.1, because the template only
accepts an ``https://`` issuer. It mints tokens the way the provider would for Recoup's
callers: RS256, with ``iss``, ``aud``, ``exp``, ``nbf``, ``iat``, ``sub`` and the ``role``
and ``customer_id`` claims the handlers read (functions/common/src/http.rs).

The TLS certificate is self-signed for IP 127.0.0.1; whoever fetches the keys (the
emulator) must trust it: :meth:`IdentityProvider.write_ca_bundle` writes a bundle of the
system's roots plus this certificate, for ``SSL_CERT_FILE``.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import ssl
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

AUDIENCE = "recoup"
TOKEN_TTL_SECONDS = 3600
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def _b64url_uint(value: int) -> str:
    """A JWK integer: big-endian bytes, base64url without padding."""
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _self_signed_certificate(key: rsa.RSAPrivateKey) -> x509.Certificate:
    """A certificate for IP 127.0.0.1, signed by its own key, valid for a day."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "recoup-e2e-idp")])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


class IdentityProvider:
    """An HTTPS OpenID discovery endpoint and JWKS on 127.0.0.1, and a token minter."""

    def __init__(self, workdir: Path):
        self._workdir = workdir
        self._signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._kid = uuid.uuid4().hex[:16]
        self._tls_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._certificate = _self_signed_certificate(self._tls_key)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.issuer = ""
        self.requests_served: list[str] = []

    def jwks(self) -> dict:
        """The public signing key as a JWK Set."""
        numbers = self._signing_key.public_key().public_numbers()
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "use": "sig",
                    "alg": "RS256",
                    "kid": self._kid,
                    "n": _b64url_uint(numbers.n),
                    "e": _b64url_uint(numbers.e),
                }
            ]
        }

    def discovery(self) -> dict:
        """The OpenID Provider Metadata API Gateway reads to find the keys."""
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{self.issuer}/.well-known/jwks.json",
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
        }

    def start(self) -> None:
        """Serves discovery and keys over HTTPS on a free port of 127.0.0.1."""
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server API)
                provider.requests_served.append(self.path)
                documents = {
                    "/.well-known/openid-configuration": provider.discovery,
                    "/.well-known/jwks.json": provider.jwks,
                }
                document = documents.get(self.path)
                if document is None:
                    self.send_error(404)
                    return
                body = json.dumps(document()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args) -> None:
                pass

        cert_file = self._workdir / "idp-cert.pem"
        key_file = self._workdir / "idp-key.pem"
        cert_file.write_bytes(self._certificate.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            self._tls_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.issuer = f"https://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="idp", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def write_ca_bundle(self) -> Path:
        """A CA bundle with the system's roots and this provider's certificate."""
        bundle = self._workdir / "ca-bundle.pem"
        system = SYSTEM_CA_BUNDLE.read_bytes() if SYSTEM_CA_BUNDLE.exists() else b""
        bundle.write_bytes(system + b"\n" + self._certificate.public_bytes(serialization.Encoding.PEM))
        return bundle

    def token(self, role: str, customer_id: str | None = None, subject: str | None = None, **overrides) -> str:
        """An RS256 access token for a caller, valid for an hour from now.

        ``overrides`` replace or add claims (an expired ``exp``, another ``aud``), for the
        authorizer's refusals.
        """
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": subject or f"{role}-{uuid.uuid4().hex[:8]}",
            "iat": now,
            "nbf": now,
            "exp": now + TOKEN_TTL_SECONDS,
            "role": role,
        }
        if customer_id is not None:
            claims["customer_id"] = customer_id
        claims.update(overrides)
        return jwt.encode(claims, self._signing_key, algorithm="RS256", headers={"kid": self._kid})

    def foreign_token(self, role: str) -> str:
        """A token with this provider's claims and key id, signed by a key it never published."""
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": AUDIENCE, "sub": "intruder", "iat": now, "exp": now + 600, "role": role}
        return jwt.encode(claims, other, algorithm="RS256", headers={"kid": self._kid})

