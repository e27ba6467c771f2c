"""Authentication at the HTTP doors, through real HTTP: API keys, JWTs (HS256; RS256/ES256 from a JWKS file or a
JWKS URL), the admin role, and `phloem serve` refusing a non-loopback host without auth."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import Request
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from semantic.demo import create
from server.app import create_app
from server.auth import Authenticator
from server.runtime import Runtime
from tests.server.conftest import LiveServer

SECRET = "a-shared-secret-of-at-least-32-bytes!!"
AUD, ISS = "phloem-test", "https://id.example.test/"
QUERY = {"metrics": ["revenue"], "dimensions": ["channel"]}


def cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, cwd=cwd)


def whoami(request: Request) -> dict:  # a test route behind the same middleware: what the door made of a credential
    c = request.state.context
    return {"user": c.user, "roles": sorted(c.roles), "tenant": c.tenant, "attributes": c.attributes,
            "unrestricted": c.unrestricted}


def serve(app) -> LiveServer:
    app.add_api_route("/api/v1/whoami", whoami)
    server = LiveServer(app)
    server.server.config.lifespan = "off"  # the servers share one Runtime, closed once at the end
    return server.__enter__()


class Keys:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    other_rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    @classmethod
    def jwks(cls) -> dict:
        r = json.loads(RSAAlgorithm.to_jwk(cls.rsa_key.public_key())) | {"kid": "r1", "alg": "RS256", "use": "sig"}
        e = json.loads(ECAlgorithm.to_jwk(cls.ec_key.public_key())) | {"kid": "e1"}
        return {"keys": [r, e]}


def claims(**extra) -> dict:
    now = int(time.time())
    return {"sub": "ada", "aud": AUD, "iss": ISS, "iat": now, "exp": now + 600, "roles": ["analyst"],
            "tenant": "acme", "country": "DE"} | extra


def hs(**extra) -> str:
    return jwt.encode(claims(**extra), SECRET, algorithm="HS256")


def rs(kid: str = "r1", key=None, **extra) -> str:
    return jwt.encode(claims(**extra), key or Keys.rsa_key, algorithm="RS256", headers={"kid": kid})


def es(**extra) -> str:
    return jwt.encode(claims(**extra), Keys.ec_key, algorithm="ES256", headers={"kid": "e1"})


def bearer(credential: str) -> dict:
    return {"Authorization": f"Bearer {credential}"}


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    root = tmp_path_factory.mktemp("auth") / "shop"
    create(root, scale=500)
    runtime = Runtime(root, timeout=10.0)
    runtime.project.build()
    yield runtime
    runtime.close()


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory) -> tuple[Path, str, str]:
    """A keys file made by the CLI: an analyst key and an admin key (printed once, on stdout)."""
    path = tmp_path_factory.mktemp("keys") / "keys.jsonl"
    analyst = cli("keys", "create", "ana", "--role", "analyst", "--tenant", "acme", "--attr", "country=DE",
                  "--attr", 'regions=["eu","us"]', "--file", str(path))
    admin = cli("keys", "create", "root", "--role", "admin", "--file", str(path))
    assert analyst.returncode == 0 and admin.returncode == 0, analyst.stderr + admin.stderr
    return path, analyst.stdout.strip(), admin.stdout.strip()


@pytest.fixture(scope="module")
def secured(runtime, keys_file, tmp_path_factory):
    """API keys, HS256 tokens and RS256/ES256 tokens with keys from a JWKS file; audience and issuer checked."""
    jwks = tmp_path_factory.mktemp("jwks") / "jwks.json"
    jwks.write_text(json.dumps(Keys.jwks()))
    env = {"PHLOEM_API_KEYS_FILE": str(keys_file[0]), "PHLOEM_JWT_SECRET": SECRET, "PHLOEM_JWKS": str(jwks),
           "PHLOEM_JWT_AUDIENCE": AUD, "PHLOEM_JWT_ISSUER": ISS}
    server = serve(create_app(runtime, auth=Authenticator.from_env(env)))
    yield server
    server.__exit__()


class JwksHandler(BaseHTTPRequestHandler):
    fetched = 0

    def do_GET(self):  # noqa: N802 (http.server's name)
        JwksHandler.fetched += 1
        data = json.dumps(Keys.jwks()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def jwks_url_server(runtime):
    """RS256/ES256 only, the JWKS fetched from a real local HTTP server."""
    http = ThreadingHTTPServer(("127.0.0.1", 0), JwksHandler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    env = {"PHLOEM_JWKS": f"http://127.0.0.1:{http.server_address[1]}/.well-known/jwks.json"}
    server = serve(create_app(runtime, auth=Authenticator.from_env(env)))
    yield server
    server.__exit__()
    http.shutdown()


def refused(response: httpx.Response, says: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    error = response.json()["error"]
    assert error["type"] == "auth" and says in error["message"], error


# ------------------------------------------------------------------------------------------ API keys

def test_a_valid_api_key_answers_and_its_holder_is_the_context(secured, keys_file):
    _, analyst, _ = keys_file
    assert httpx.post(secured.url + "/api/v1/query", json=QUERY, headers=bearer(analyst)).status_code == 200
    assert httpx.get(secured.url + "/api/v1/meta", headers={"X-API-Key": analyst}).status_code == 200
    me = httpx.get(secured.url + "/api/v1/whoami", headers=bearer(analyst)).json()
    assert me == {"user": "ana", "roles": ["analyst"], "tenant": "acme",
                  "attributes": {"country": "DE", "regions": ["eu", "us"]}, "unrestricted": False}


def test_the_keys_file_holds_digests_only_with_mode_0600(keys_file):
    path, analyst, admin = keys_file
    text = path.read_text()
    assert analyst not in text and admin not in text and analyst.split("_")[1] in text
    assert path.stat().st_mode & 0o777 == 0o600


def test_no_credentials_is_401_with_a_bearer_challenge(secured):
    r = httpx.post(secured.url + "/api/v1/query", json=QUERY)
    refused(r, "has none")
    assert r.headers["www-authenticate"] == 'Bearer realm="phloem"'
    refused(httpx.post(secured.url + "/graphql", json={"query": "{ __typename }"}), "has none")
    refused(httpx.get(secured.url + "/graphql?query={__typename}"), "has none")


def test_a_wrong_key_is_401_and_says_the_same_for_a_wrong_id_and_a_wrong_secret(secured, keys_file):
    _, analyst, _ = keys_file
    wrong_secret = analyst[:-4] + ("AAAA" if not analyst.endswith("AAAA") else "BBBB")
    wrong_id = "phk_00000000_" + analyst.split("_", 2)[2]
    answers = [httpx.get(secured.url + "/api/v1/meta", headers=bearer(k)) for k in (wrong_secret, wrong_id)]
    for r in answers:
        refused(r, "unknown API key")
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
        assert analyst.split("_", 2)[2][:10] not in r.text  # the key is never echoed
    assert answers[0].json() == answers[1].json()


def test_another_scheme_and_a_non_credential_are_401(secured):
    refused(httpx.get(secured.url + "/api/v1/meta", headers={"Authorization": "Basic YTpi"}), "Basic")
    refused(httpx.get(secured.url + "/api/v1/meta", headers=bearer("hello")), "neither an API key")


def test_keys_created_and_revoked_while_serving_count_from_the_next_request(secured, keys_file):
    path = keys_file[0]
    made = cli("keys", "create", "late", "--role", "analyst", "--file", str(path))
    key = made.stdout.strip()
    assert httpx.get(secured.url + "/api/v1/meta", headers=bearer(key)).status_code == 200
    key_id = key.split("_")[1]
    assert cli("keys", "revoke", key_id, "--file", str(path)).returncode == 0
    refused(httpx.get(secured.url + "/api/v1/meta", headers=bearer(key)), "unknown API key")
    listed = cli("keys", "list", "--file", str(path)).stdout
    assert "ana" in listed and "late" not in listed


def test_probes_and_static_pages_need_no_credentials(secured):
    for path in ("/healthz", "/readyz", "/docs", "/openapi.json", "/"):
        assert httpx.get(secured.url + path).status_code == 200, path


# ------------------------------------------------------------------------------------------ JWT

def test_an_hs256_token_answers_and_its_claims_become_the_context(secured):
    r = httpx.post(secured.url + "/api/v1/query", json=QUERY, headers=bearer(hs()))
    assert r.status_code == 200, r.text
    me = httpx.get(secured.url + "/api/v1/whoami", headers=bearer(hs(roles="analyst viewer"))).json()
    assert me["user"] == "ada" and me["roles"] == ["analyst", "viewer"] and me["tenant"] == "acme"
    assert me["attributes"] == {"country": "DE", "aud": AUD, "iss": ISS} and not me["unrestricted"]


@pytest.mark.parametrize(("token", "says"), [
    (lambda: hs(exp=int(time.time()) - 3600), "expired"),
    (lambda: hs(nbf=int(time.time()) + 3600), "not valid yet"),
    (lambda: hs(aud="someone-else"), "another audience"),
    (lambda: hs(iss="https://evil.example.test/"), "another issuer"),
    (lambda: jwt.encode({k: v for k, v in claims().items() if k != "sub"}, SECRET, algorithm="HS256"), "`sub`"),
    (lambda: jwt.encode({k: v for k, v in claims().items() if k != "exp"}, SECRET, algorithm="HS256"), "`exp`"),
    (lambda: jwt.encode(claims(), "another-secret-that-is-32-bytes-long", algorithm="HS256"), "signature"),
    (lambda: jwt.encode(claims(), None, algorithm="none"), "'none' are not accepted"),
    (lambda: rs(key=Keys.other_rsa_key), "signature"),
    (lambda: rs(kid="unknown"), "no signing key"),
], ids=["expired", "nbf", "aud", "iss", "no-sub", "no-exp", "wrong-secret", "alg-none", "wrong-rsa-key", "kid"])
def test_a_bad_token_is_401_with_what_was_wrong(secured, token, says):
    sent = token()
    r = httpx.get(secured.url + "/api/v1/meta", headers=bearer(sent))
    refused(r, says)
    assert sent not in r.text and sent.split(".")[1][:12] not in r.text  # the token is never echoed


def test_rs256_and_es256_tokens_verify_with_keys_from_a_jwks_file(secured):
    for token in (rs(), es()):
        r = httpx.post(secured.url + "/api/v1/query", json=QUERY, headers=bearer(token))
        assert r.status_code == 200, r.text
    assert httpx.get(secured.url + "/api/v1/whoami", headers=bearer(es(tenant="globex"))).json()["tenant"] == "globex"


def test_rs256_and_es256_tokens_verify_with_keys_from_a_jwks_url(jwks_url_server):
    for token in (rs(), es(), rs(aud="any", iss="any")):  # no audience or issuer configured: not checked
        r = httpx.post(jwks_url_server.url + "/api/v1/query", json=QUERY, headers=bearer(token))
        assert r.status_code == 200, r.text
    assert JwksHandler.fetched >= 1
    fetched = JwksHandler.fetched
    httpx.get(jwks_url_server.url + "/api/v1/meta", headers=bearer(rs()))
    assert JwksHandler.fetched == fetched  # cached, not fetched per request


def test_an_hs_token_is_refused_where_only_public_keys_are_configured(jwks_url_server):
    refused(httpx.get(jwks_url_server.url + "/api/v1/meta", headers=bearer(hs())), "'HS256' are not accepted")
    # algorithm confusion: the RSA public key, as PEM, used as an HMAC secret
    pem = Keys.rsa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    import hashlib
    import hmac as hmac_

    header = jwt.utils.base64url_encode(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "r1"}).encode())
    payload = jwt.utils.base64url_encode(json.dumps(claims()).encode())
    signature = jwt.utils.base64url_encode(hmac_.new(pem, header + b"." + payload, hashlib.sha256).digest())
    forged = b".".join([header, payload, signature]).decode()
    refused(httpx.get(jwks_url_server.url + "/api/v1/meta", headers=bearer(forged)), "not accepted")
    refused(httpx.get(jwks_url_server.url + "/api/v1/meta", headers=bearer("phk_1234_abcd")), "API keys")


def test_a_jwks_url_that_does_not_answer_is_503_not_401(runtime):
    from tests.server.conftest import free_port

    env = {"PHLOEM_JWKS": f"http://127.0.0.1:{free_port()}/jwks.json"}  # nothing listens there
    server = serve(create_app(runtime, auth=Authenticator.from_env(env)))
    try:
        r = httpx.get(server.url + "/api/v1/meta", headers=bearer(rs()))
        assert r.status_code == 503 and "signing keys" in r.json()["error"]["message"], r.text
        assert "127.0.0.1" not in r.text
    finally:
        server.__exit__()


def test_an_rs_token_signed_with_the_ec_key_id_is_refused(secured):
    # a token claiming RS256 with the kid of the EC key: no RSA key of that kid, so no key at all
    refused(httpx.get(secured.url + "/api/v1/meta", headers=bearer(rs(kid="e1"))), "no signing key")


# ------------------------------------------------------------------------------------------ admin

def test_admin_endpoints_need_the_admin_role(secured, keys_file):
    _, analyst, admin = keys_file
    for path in ("/api/v1/admin/validate", "/api/v1/reload"):
        r = httpx.post(secured.url + path, headers=bearer(analyst))
        assert r.status_code == 403 and "`admin` role" in r.json()["error"]["message"], r.text
        assert httpx.post(secured.url + path, headers=bearer(hs())).status_code == 403
        r = httpx.post(secured.url + path, headers=bearer(admin))
        assert r.status_code == 200, r.text
        assert httpx.post(secured.url + path, headers=bearer(hs(roles=["admin"]))).status_code == 200
    assert "problems" in httpx.post(secured.url + "/api/v1/admin/validate", headers=bearer(admin)).json()


def test_the_server_record_token_is_the_local_cli_unrestricted_and_admin(secured):
    runtime = secured.app.state.runtime
    runtime.token = "record-token-from-server-json"
    try:
        me = httpx.get(secured.url + "/api/v1/whoami", headers=bearer(runtime.token)).json()
        assert me["user"] == "phloem-cli" and me["unrestricted"] and me["roles"] == ["admin"]
        assert httpx.post(secured.url + "/api/v1/admin/validate", headers=bearer(runtime.token)).status_code == 200
    finally:
        runtime.token = None
    refused(httpx.get(secured.url + "/api/v1/whoami", headers=bearer("record-token-from-server-json")),
            "neither")


def test_without_auth_everyone_is_the_anonymous_demo_and_admin_still_needs_the_record(runtime):
    server = serve(create_app(runtime, auth=Authenticator.from_env({})))
    try:
        me = httpx.get(server.url + "/api/v1/whoami").json()
        assert me["user"] == "anonymous" and me["unrestricted"]
        assert httpx.post(server.url + "/api/v1/reload").status_code == 200  # as before: the loopback demo
        assert httpx.post(server.url + "/api/v1/admin/validate").status_code == 403
    finally:
        server.__exit__()


# ------------------------------------------------------------------------------------------ phloem serve

def _without_auth() -> dict:
    return {k: "" for k in ("PHLOEM_API_KEYS_FILE", "PHLOEM_JWT_SECRET", "PHLOEM_JWT_SECRET_FILE", "PHLOEM_JWKS")}


def test_serve_on_a_non_loopback_host_without_auth_refuses_to_start(runtime):
    done = cli("serve", str(runtime.root), "--host", "0.0.0.0", "--pg-port", "0", env=_without_auth())
    assert done.returncode == 1
    said = " ".join(done.stderr.split())
    assert "no authentication is configured" in said and "PHLOEM_API_KEYS_FILE" in said and "PHLOEM_JWKS" in said
    assert not (runtime.root / ".phloem" / "server.json").exists()


def test_serve_with_a_short_jwt_secret_refuses_to_start(runtime):
    done = cli("serve", str(runtime.root), "--host", "0.0.0.0", "--pg-port", "0",
               env=_without_auth() | {"PHLOEM_JWT_SECRET": "short"})
    assert done.returncode == 1 and "at least 32 bytes" in done.stderr
