"""The OpenAPI document tells the truth: it lists exactly the routes the app serves, it is served
at /api/openapi.json, and what the live service answers matches the schema the document
declares for that route and status (error codes included)."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from queue_service.app import create_app
from queue_service.clock import ManualClock
from queue_service.http.endpoint import CATCH_ALL
from queue_service.proof_of_work import solve
from queue_service.ratelimit import RateLimitRules, Rule
from queue_service.settings import Settings
from queue_service.tokens import KeyRing, public_jwk
from tests.helpers.support import ADMIN, T0, admit, wave_body

Json = Any
JSON = {"Content-Type": "application/json"}


def admitted_claims_jti(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["jti"])


Client = TestClient[web.Request, web.Application]
# aiohttp keeps `{action:pause|resume|close}` only as a regex group; expand such groups back.
CHOICE_GROUP = re.compile(r"\(\?P<(\w+)>([\w-]+(?:\|[\w-]+)+)\)")
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture(scope="module")
def doc() -> Json:
    text = (resources.files("queue_service") / "static" / "openapi.json").read_text("utf-8")
    return json.loads(text)


@pytest.fixture(scope="module")
def spec(doc: Json) -> Spec:
    return Spec(doc)


# -- the document as JSON Schema 2020-12 (what OpenAPI 3.1 schemas are), through jsonschema ----

DOC_URI = "urn:gelombang:openapi.json"
# Keywords that assert nothing. The document may use these and the 2020-12 keywords that
# jsonschema implements; any other word would be ignored by every validator (JSON Schema
# skips unknown keywords), so the document could silently rely on a check nobody runs.
ANNOTATIONS = {"description", "title", "examples", "default", "format", "$comment", "deprecated"}
KNOWN = set(Draft202012Validator.VALIDATORS) | ANNOTATIONS
SUBSCHEMA_MAPS = {"properties", "patternProperties", "$defs", "dependentSchemas"}
SUBSCHEMA_LISTS = {"allOf", "anyOf", "oneOf", "prefixItems"}
SUBSCHEMAS = {"items", "additionalProperties", "not", "if", "then", "else", "contains"}


def pointer(*parts: str) -> str:
    """A URI fragment (JSON pointer) to the node at `parts` of the document."""
    escaped = (part.replace("~", "~0").replace("/", "~1") for part in parts)
    return "#" + "".join("/" + quote(part, safe="~") for part in escaped)


class Spec:
    """The OpenAPI document as one JSON Schema resource: references are resolved and
    responses validated by `referencing` and `jsonschema`."""

    def __init__(self, doc: Json) -> None:
        self.doc = doc
        self.registry: Registry[Json] = Registry().with_resource(
            DOC_URI, DRAFT202012.create_resource(doc)
        )
        self._resolver = self.registry.resolver(base_uri=DOC_URI)

    def lookup(self, ref: str) -> Json:
        """The node `ref` points at; raises referencing's Unresolvable if it dangles."""
        return self._resolver.lookup(ref).contents

    def follow(self, location: str) -> str:
        """The location of the response, header or parameter object at `location`, or of the
        one its `$ref` points at."""
        while "$ref" in (node := self.lookup(location)):
            location = node["$ref"]
        return location

    def errors(self, schema_location: str, value: Json) -> list[str]:
        """Every way `value` breaks the schema at `schema_location`, readably."""
        validator = Draft202012Validator(
            {"$ref": DOC_URI + schema_location}, registry=self.registry
        )
        return [
            f"{error.json_path}: {error.message}"
            for error in sorted(validator.iter_errors(value), key=lambda e: list(e.path))
        ]


def unknown_keywords(schema: Json) -> set[str]:
    if not isinstance(schema, dict):
        return set()
    unknown = set(schema) - KNOWN
    subs = [schema.get(key) for key in SUBSCHEMAS]
    subs += [sub for key in SUBSCHEMA_MAPS for sub in schema.get(key, {}).values()]
    subs += [sub for key in SUBSCHEMA_LISTS for sub in schema.get(key, [])]
    for sub in subs:
        unknown |= unknown_keywords(sub)
    return unknown


# -- the document against the app -------------------------------------------------------------


def app_routes(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, path template) for every route; HEAD (added by aiohttp for GET) and the
    catch-all that answers 404/405 left out."""
    routes: set[tuple[str, str]] = set()
    for route in app.router.routes():
        if (
            route.method == "HEAD"
            or route.resource is None
            or route.resource.canonical == CATCH_ALL
        ):
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        if "path" in info:
            routes.add((route.method, info["path"]))
            continue
        paths = [info["formatter"]]
        for name, choices in CHOICE_GROUP.findall(info["pattern"].pattern):
            paths = [p.replace(f"{{{name}}}", c) for p in paths for c in choices.split("|")]
        routes |= {(route.method, path) for path in paths}
    return routes


def documented_routes(doc: Json) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in METHODS
    }


def operation_for(doc: Json, method: str, path: str) -> tuple[str, Json]:
    for template, item in doc["paths"].items():
        literal_parts = re.split(r"\{[^}]+\}", template)
        pattern = "[^/]+".join(map(re.escape, literal_parts))
        if method.lower() in item and re.fullmatch(pattern, path):
            return template, item[method.lower()]
    raise AssertionError(f"{method} {path} matches no operation in the document")


async def conform(spec: Spec, response: aiohttp.ClientResponse) -> Json:
    """Check a live response against what the document declares for its route and status;
    return the body (parsed when JSON)."""
    method, status = response.method, response.status
    template, operation = operation_for(spec.doc, method, response.url.path)
    declared = operation["responses"]
    assert str(status) in declared, f"{method} {template} answered {status}: not in the document"
    at = spec.follow(pointer("paths", template, method.lower(), "responses", str(status)))
    described = spec.lookup(at)
    for name in described.get("headers", {}):
        if spec.lookup(spec.follow(f"{at}/headers/{name}")).get("required"):
            assert name in response.headers, f"{method} {template} {status} lacks {name}"
    content = described.get("content")
    if content is None:
        assert await response.read() == b"", f"{method} {template} {status} has a body"
        return None
    assert response.content_type in content, f"{method} {template} {status}: content type"
    if response.content_type != "application/json":
        return await response.text()
    body = await response.json()
    errors = spec.errors(f"{at}/content/application~1json/schema", body)
    assert not errors, f"{method} {template} {status}: {errors} in {body}"
    return body


async def error_code(spec: Spec, response: aiohttp.ClientResponse) -> str:
    body = await conform(spec, response)
    return str(body["error"]["code"])


def test_every_route_is_documented_and_nothing_else(
    doc: Json, keyring: KeyRing, tmp_path: Path
) -> None:
    app = create_app(Settings(state_dir=tmp_path), keyring=keyring)
    routes = app_routes(app)
    assert ("POST", "/admin/v1/waves/{wave}/resume") in routes  # the expansion works
    assert documented_routes(doc) == routes


def test_document_is_well_formed(spec: Spec) -> None:
    doc = spec.doc
    assert doc["openapi"].startswith("3.1.")
    refs: list[str] = []

    def walk(node: Json) -> None:
        if isinstance(node, dict):
            refs.extend(v for k, v in node.items() if k == "$ref")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert refs
    for ref in refs:
        spec.lookup(ref)  # raises Unresolvable for a dangling reference
    schemes = set(doc["components"]["securitySchemes"])
    operation_ids = []
    for path, item in doc["paths"].items():
        parameters = range(len(item.get("parameters", [])))
        declared = {
            spec.lookup(spec.follow(pointer("paths", path, "parameters", str(i))))["name"]
            for i in parameters
        }
        assert declared == set(re.findall(r"\{(\w+)\}", path)), path
        for method, operation in item.items():
            if method not in METHODS:
                continue
            operation_ids.append(operation["operationId"])
            assert operation["responses"], f"{method} {path} declares no response"
            for requirement in operation.get("security", doc["security"]):
                assert set(requirement) <= schemes, f"{method} {path}: {requirement}"
    assert len(operation_ids) == len(set(operation_ids))
    for name, schema in doc["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)  # against the 2020-12 meta-schema
        assert not unknown_keywords(schema), f"{name}: no validator checks these"


async def test_document_is_served_by_the_app(spec: Spec, client: Client) -> None:
    response = await client.get("/api/openapi.json")
    assert response.status == 200
    assert await conform(spec, response) == spec.doc


async def test_real_answers_match_the_document(
    spec: Spec, client: Client, clock: ManualClock
) -> None:
    base = "/api/v1/waves/w1"
    created = await conform(
        spec, await client.put("/admin/v1/waves/w1", json=wave_body(admit_rate=1), headers=ADMIN)
    )
    assert created["state"] == "open"
    updated = await client.put("/admin/v1/waves/w1", json={"title": "Gelombang 70"}, headers=ADMIN)
    assert updated.status == 200 and (await conform(spec, updated))["wave"]["title"]
    advised = wave_body(
        autopilot={"mode": "advise", "prometheus_url": "http://prometheus:9090", "max_active": 50}
    )
    with_autopilot = await client.put("/admin/v1/waves/a1", json=advised, headers=ADMIN)
    assert (await conform(spec, with_autopilot))["autopilot"]["mode"] == "advise"

    first = await client.post(f"{base}/join", json={"registrant": "akun-1"})
    assert first.status == 201
    alice = await conform(spec, first)
    again = await client.post(f"{base}/join", json={"registrant": "akun-1"})
    assert again.status == 200 and (await conform(spec, again))["ticket"] == alice["ticket"]
    bob = await conform(spec, await client.post(f"{base}/join", json={"registrant": "akun-2"}))
    waiting = await conform(spec, await client.get(f"{base}/status?ticket={bob['ticket']}"))
    assert (waiting["state"], waiting["position"]) == ("waiting", 2)

    step = await admit(client, "w1")
    assert [a.seq for a in step.admitted] == [1]
    admitted = await conform(
        spec, await client.get(f"{base}/status", headers={"X-Queue-Ticket": alice["ticket"]})
    )
    assert admitted["state"] == "admitted" and "gelombang_token=" in admitted["redirect"]
    bearer = {"Authorization": f"Bearer {admitted['token']}"}
    assert await conform(spec, await client.post(f"{base}/complete", headers=bearer)) is None
    bob_leaves = await client.post(f"{base}/leave", headers={"X-Queue-Ticket": bob["ticket"]})
    assert bob_leaves.status == 204 and await conform(spec, bob_leaves) is None

    revoked = await conform(spec, await client.get(f"{base}/revoked?after_ms=0"))
    assert revoked["revoked"] == [admitted_claims_jti(admitted["token"])]
    challenge = await conform(spec, await client.get(f"{base}/challenge"))
    assert challenge == {"challenge": None, "bits": 0, "expires_in_s": 0}
    info = await conform(spec, await client.get(base))
    assert info["wave"] == "w1"
    view = await conform(spec, await client.get("/admin/v1/waves/w1", headers=ADMIN))
    assert view["counts"]["completed"] == 1 and view["counts"]["left"] == 1
    listed = await conform(spec, await client.get("/admin/v1/waves", headers=ADMIN))
    assert [v["wave"]["id"] for v in listed["waves"]] == ["a1", "w1"]
    jwks = await conform(spec, await client.get("/.well-known/jwks.json"))
    assert len(jwks["keys"]) == 1
    assert "<html" in (await conform(spec, await client.get("/w/w1"))).lower()
    form_join = await client.post("/w/w1", data={"registrant": "akun-4"}, allow_redirects=False)
    assert form_join.status == 303 and await conform(spec, form_join) is None
    assert form_join.headers["Location"] == "/w/w1"
    assert "gelombang_" in await conform(spec, await client.get("/metrics"))
    assert await conform(spec, await client.get("/healthz")) == {"status": "ok"}
    ready = await conform(spec, await client.get("/readyz"))
    assert ready["status"] == "ready" and ready["max_inflight"] == 100_000  # pinned in the tests

    for action, state in (("pause", "paused"), ("resume", "open"), ("close", "closed")):
        changed = await client.post(f"/admin/v1/waves/w1/{action}", headers=ADMIN)
        assert (await conform(spec, changed))["state"] == state
    resume = await client.post("/admin/v1/waves/w1/resume", headers=ADMIN)
    assert await error_code(spec, resume) == "wave_closed"
    late = await client.post(f"{base}/join", json={"registrant": "akun-3"})
    assert await error_code(spec, late) == "wave_closed"
    later = wave_body(opens_at=T0 + 600, closes_at=T0 + 3600)
    scheduled = await client.put("/admin/v1/waves/later", json=later, headers=ADMIN)
    assert (await conform(spec, scheduled))["state"] == "scheduled"
    early = await client.post("/api/v1/waves/later/join", json={"registrant": "akun-1"})
    assert await error_code(spec, early) == "wave_not_open_yet"
    assert early.headers["Retry-After"] == "600"

    pow_wave = await client.put("/admin/v1/waves/pow", json=wave_body(pow_bits=4), headers=ADMIN)
    await conform(spec, pow_wave)
    issued = await conform(spec, await client.get("/api/v1/waves/pow/challenge"))
    assert issued["bits"] == 4 and issued["challenge"]
    unproven = await client.post("/api/v1/waves/pow/join", json={"registrant": "akun-9"})
    assert await error_code(spec, unproven) == "proof_of_work_required"
    in_use = await client.delete("/admin/v1/waves/w1", headers=ADMIN)
    assert in_use.status == 204 and await conform(spec, in_use) is None  # closed: nobody waits
    await client.post(
        "/api/v1/waves/pow/join",
        json={
            "registrant": "akun-9",
            "pow": {
                "challenge": issued["challenge"],
                "counter": solve(issued["challenge"], "akun-9", 4),
            },
        },
    )
    refused = await client.delete("/admin/v1/waves/pow", headers=ADMIN)
    assert await error_code(spec, refused) == "wave_in_use"
    forced = await client.delete("/admin/v1/waves/pow?force=true", headers=ADMIN)
    assert forced.status == 204 and await conform(spec, forced) is None


async def test_refusals_match_the_document(spec: Spec, client: Client) -> None:
    site_key = public_jwk(Ed25519PrivateKey.generate().public_key())
    await client.put("/admin/v1/waves/w1", json=wave_body(), headers=ADMIN)
    verified = wave_body(verified_joins=True, enqueue_keys=[site_key])
    await client.put("/admin/v1/waves/v1", json=verified, headers=ADMIN)
    base = "/api/v1/waves/w1"
    held = await client.post(f"{base}/join", json={"registrant": "held"})
    assert held.status == 201  # a place held elsewhere: joining bare again is refused
    client.session.cookie_jar.clear()
    bearer_x, admin_x = {"Authorization": "Bearer x"}, {"Authorization": "x"}
    refusals: list[tuple[str, str, str, dict[str, Any]]] = [
        ("invalid_json", "POST", f"{base}/join", {"data": b"{not json", "headers": JSON}),
        ("unsupported_media_type", "POST", f"{base}/join", {"data": b'{"registrant": "a"}'}),
        ("already_queued", "POST", f"{base}/join", {"json": {"registrant": "held"}}),
        (
            "invalid_enqueue_token",
            "POST",
            "/api/v1/waves/v1/join",
            {"json": {"enqueue_token": "x"}},
        ),
        ("enqueue_token_required", "POST", "/api/v1/waves/v1/join", {"json": {"registrant": "a"}}),
        ("enqueue_token_not_accepted", "POST", f"{base}/join", {"json": {"enqueue_token": "x"}}),
        ("invalid_query", "GET", f"{base}/revoked", {"params": {"after": "1-x"}}),
        ("invalid_query", "GET", f"{base}/revoked", {"params": {"after_ms": "soon"}}),
        ("invalid_registrant", "POST", f"{base}/join", {"json": {"registrant": ""}}),
        ("invalid_registrant", "POST", f"{base}/join", {"json": {"registrant": "x" * 129}}),
        ("invalid_wave_id", "POST", "/api/v1/waves/Bad!/join", {"json": {"registrant": "a"}}),
        ("unknown_wave", "POST", "/api/v1/waves/nope/join", {"json": {"registrant": "a"}}),
        ("unknown_wave", "GET", "/api/v1/waves/nope", {}),
        ("payload_too_large", "POST", f"{base}/join", {"data": b"x" * 5000}),
        ("missing_ticket", "GET", f"{base}/status", {}),
        ("invalid_ticket", "GET", f"{base}/status", {"headers": {"X-Queue-Ticket": "1.forged"}}),
        ("missing_ticket", "POST", f"{base}/leave", {}),
        ("missing_token", "POST", f"{base}/complete", {}),
        ("invalid_token", "POST", f"{base}/complete", {"headers": bearer_x}),
        ("invalid_admin_token", "GET", "/admin/v1/waves", {}),
        ("invalid_admin_token", "GET", "/admin/v1/waves/w1", {"headers": admin_x}),
        ("unknown_wave", "GET", "/admin/v1/waves/nope", {"headers": ADMIN}),
        ("unknown_wave", "POST", "/admin/v1/waves/nope/pause", {"headers": ADMIN}),
        ("invalid_wave", "PUT", "/admin/v1/waves/w2", {"json": {"colour": 1}, "headers": ADMIN}),
        ("invalid_wave", "PUT", "/admin/v1/waves/w1", {"json": {"quota": -1}, "headers": ADMIN}),
        ("invalid_json", "PUT", "/admin/v1/waves/w1", {"json": [1], "headers": ADMIN}),
    ]
    for expected, method, path, options in refusals:
        response = await client.request(method, path, **options)
        assert await error_code(spec, response) == expected, f"{method} {path}"

    # The waiting page stays a page: an unknown wave or a bad id is a page that says so.
    for path in ("/w/nope", "/w/Bad!"):
        response = await client.get(path)
        assert response.status == 404
        assert "Wave not found" in await conform(spec, response)
    moved = await client.put("/admin/v1/waves/w1", json={"opens_at": T0 + 600}, headers=ADMIN)
    assert await error_code(spec, moved) == "wave_already_opened"

    # Outside every documented route the error shape and its code enum still hold.
    for path, method, expected in (
        ("/nowhere", "GET", "not_found"),
        (f"{base}/join", "GET", "method_not_allowed"),
    ):
        response = await client.request(method, path)
        body = await response.json()
        assert body["error"]["code"] == expected
        assert spec.errors(pointer("components", "schemas", "Error"), body) == []


async def test_limits_and_disabled_admin_match_the_document(
    spec: Spec,
    aiohttp_client: Callable[..., Awaitable[Client]],
    make_settings: Callable[..., Settings],
    clock: ManualClock,
    keyring: KeyRing,
) -> None:
    one_only = Rule(rate_per_s=0.001, burst=1)
    settings = make_settings(
        admin_token=None,
        rate_limits=RateLimitRules(join_per_registrant=one_only, status_per_ticket=one_only),
        waves=({"id": "w1", **wave_body()},),
    )
    # no admission loop: on a loaded machine it could admit "a" before the poll asks its place
    app = create_app(settings, clock=clock, keyring=keyring, run_admission=False)
    client = await aiohttp_client(app)
    base = "/api/v1/waves/w1"
    joined = await conform(spec, await client.post(f"{base}/join", json={"registrant": "a"}))
    # the per-registrant rule is charged to the holder's own joins (the cookie proves it)
    await conform(spec, await client.post(f"{base}/join", json={"registrant": "a"}))
    again = await client.post(f"{base}/join", json={"registrant": "a"})
    assert await error_code(spec, again) == "rate_limited"
    assert "join_per_registrant" in again.headers["RateLimit-Policy"]
    poll = {"X-Queue-Ticket": joined["ticket"]}
    assert (await conform(spec, await client.get(f"{base}/status", headers=poll)))["position"] == 1
    limited = await client.get(f"{base}/status", headers=poll)
    assert await error_code(spec, limited) == "rate_limited"
    assert int(limited.headers["Retry-After"]) >= 1
    disabled = await client.get("/admin/v1/waves", headers=ADMIN)
    assert await error_code(spec, disabled) == "admin_disabled"


async def test_public_proof_answers_match_the_document(
    spec: Spec, client: Client, clock: ManualClock
) -> None:
    """The ledger's pages, head, 304s and refusals; the wave info's draw (issue 25)."""
    await client.put("/admin/v1/waves/w1", json=wave_body(admit_rate=5), headers=ADMIN)
    for i in range(3):
        await client.post("/api/v1/waves/w1/join", json={"registrant": f"akun-{i}"})
    await admit(client, "w1")
    info = await conform(spec, await client.get("/api/v1/waves/w1"))
    assert info["draw"]["seed"] and info["ledger"] == "/api/v1/waves/w1/ledger"
    page = await client.get("/api/v1/waves/w1/ledger?from=0&limit=2")
    assert (await conform(spec, page))["complete"]
    again = await client.get(
        "/api/v1/waves/w1/ledger?from=0&limit=2", headers={"If-None-Match": page.headers["ETag"]}
    )
    assert again.status == 304 and await conform(spec, again) is None
    tail = await conform(spec, await client.get("/api/v1/waves/w1/ledger?from=2"))
    assert tail["next"] is None and tail["entries"][-1]["kind"] == "ticket"
    head = await client.get("/api/v1/waves/w1/ledger/head")
    assert (await conform(spec, head))["count"] == tail["total"]
    cached = await client.get(
        "/api/v1/waves/w1/ledger/head", headers={"If-None-Match": head.headers["ETag"]}
    )
    assert cached.status == 304 and await conform(spec, cached) is None
    bad = await client.get("/api/v1/waves/w1/ledger?limit=5000")
    assert await error_code(spec, bad) == "invalid_query"
    unknown = await client.get("/api/v1/waves/nope/ledger/head")
    assert await error_code(spec, unknown) == "unknown_wave"


async def test_the_verify_route_answers_match_the_document(
    spec: Spec, client: Client, clock: ManualClock
) -> None:
    """What nginx, Caddy and Traefik read from the verify route (issue 25)."""
    await client.put("/admin/v1/waves/w1", json=wave_body(admit_rate=5), headers=ADMIN)
    joined = await (await client.post("/api/v1/waves/w1/join", json={"registrant": "a"})).json()
    await admit(client, "w1")
    view = await (
        await client.get("/api/v1/waves/w1/status", headers={"X-Queue-Ticket": joined["ticket"]})
    ).json()
    client.session.cookie_jar.clear()
    verify = "/api/v1/waves/w1/verify"
    bearer = {"Authorization": f"Bearer {view['token']}"}
    assert (await client.get(verify, headers=bearer)).status == 200
    await conform(spec, await client.get(verify, headers=bearer))
    from_url = {"X-Forwarded-Uri": f"/daftar?gelombang_token={view['token']}"}
    moved = await client.get(f"{verify}?proxy=forward", headers=from_url, allow_redirects=False)
    assert moved.status == 302 and await conform(spec, moved) is None
    client.session.cookie_jar.clear()
    assert await error_code(spec, await client.get(verify)) == "missing_token"
    forged = {"Authorization": "Bearer x.y.z"}
    assert await error_code(spec, await client.get(verify, headers=forged)) == "invalid_token"
    assert await error_code(spec, await client.get(f"{verify}?proxy=x")) == "invalid_query"


async def test_the_status_board_answers_match_the_document(spec: Spec, client: Client) -> None:
    await client.put("/admin/v1/waves/w1", json=wave_body(), headers=ADMIN)
    board = await conform(spec, await client.get("/api/v1/status"))
    assert [w["wave"] for w in board["waves"]] == ["w1"]
    page = await client.get("/status?lang=en")
    assert "Queue status" in await conform(spec, page)
    same = await client.get("/status?lang=en", headers={"If-None-Match": page.headers["ETag"]})
    assert same.status == 304 and await conform(spec, same) is None
    assert await error_code(spec, await client.get("/status?lang=xx")) == "invalid_query"


async def test_call_back_answers_match_the_document(
    spec: Spec, client: Client, clock: ManualClock
) -> None:
    from queue_service.http.appkeys import CALLBACKS, SERVICE

    notify = {"channels": ["sms", "webpush"], "webhook_url": "http://127.0.0.1:9/sms"}
    body = wave_body(abandon_after_s=5, notify=notify)
    assert (await conform(spec, await client.put("/admin/v1/waves/cb", json=body, headers=ADMIN)))[
        "wave"
    ]["notify"]["channels"] == ["sms", "webpush"]
    info = await conform(spec, await client.get("/api/v1/waves/cb"))
    assert info["callbacks"]["vapid_public_key"]
    joined = await client.post(
        "/api/v1/waves/cb/join",
        json={"registrant": "a", "contact": {"kind": "sms", "address": "081234567890"}},
    )
    ticket = (await conform(spec, joined))["ticket"]
    other = await conform(
        spec, await client.post("/api/v1/waves/cb/join", json={"registrant": "b"})
    )
    opted = await client.post(
        "/api/v1/waves/cb/notify",
        json={"contact": {"kind": "sms", "address": "081234567899"}, "language": "en"},
        headers={"X-Queue-Ticket": other["ticket"]},
    )
    assert opted.status == 201 and (await conform(spec, opted))["callback"]["state"] == "away"
    changed = await client.post(
        "/api/v1/waves/cb/notify",
        json={"contact": {"kind": "sms", "address": "081234567898"}},
        headers={"X-Queue-Ticket": other["ticket"]},
    )
    assert changed.status == 200 and await conform(spec, changed)
    bad = await client.post(
        "/api/v1/waves/cb/notify",
        json={"contact": {"kind": "sms", "address": "1"}},
        headers={"X-Queue-Ticket": ticket},
    )
    assert await error_code(spec, bad) == "invalid_contact"
    off = await client.put("/admin/v1/waves/plain", json=wave_body(), headers=ADMIN)
    await conform(spec, off)
    plain = await conform(
        spec, await client.post("/api/v1/waves/plain/join", json={"registrant": "p"})
    )
    refused = await client.post(
        "/api/v1/waves/plain/notify",
        json={"contact": {"kind": "sms", "address": "081234567890"}},
        headers={"X-Queue-Ticket": plain["ticket"]},
    )
    assert await error_code(spec, refused) == "callbacks_off"
    runtime = await client.app[SERVICE].registry.get("cb")
    code = client.app[CALLBACKS].codes.code("cb", runtime.uid, ticket.split(".")[2])
    page = await client.get(f"/w/cb/return?code={code}")
    assert "<form" in await conform(spec, page)
    back = await client.post("/api/v1/waves/cb/return", json={"code": code})
    assert (await conform(spec, back))["result"] == "waiting"
    used = await client.post("/api/v1/waves/cb/return", json={"code": code})
    assert await error_code(spec, used) == "return_link_used"
    again = await client.post("/w/cb/return", data={"code": code}, allow_redirects=False)
    assert again.status == 409 and await conform(spec, again)
    form = await client.post(
        "/w/cb/notify", data={"kind": "sms", "address": "0812"}, allow_redirects=False
    )
    assert form.status == 303 and await conform(spec, form) is None
    worker = await client.get("/push-sw.js")
    assert "showNotification" in await conform(spec, worker)
    view = await conform(spec, await client.get("/admin/v1/waves/cb", headers=ADMIN))
    assert view["counts"]["called"] == 0
