"""``leadscore api`` (serve the scoring and lookup API) and ``leadscore api keygen``."""

from __future__ import annotations

import argparse
from typing import Any

import orjson

from leadscore.cli.common import say
from leadscore.errors import ConfigError
from leadscore.settings import Settings

DESCRIPTION = """The scoring and lookup API, an ASGI service apart from the workers (it reads
the same Redis and model registry and writes nothing):
  GET  /leads/{id}          features and latest score (?at=now or an RFC 3339 time)
  GET  /leads/{id}/score    the latest score record (schemas/score.json)
  POST /score               score any lead from a profile and recent events
  POST /score:batch         up to 100 leads
  GET  /health /ready /metrics
OpenAPI 3.1 at /openapi.json, docs at /docs. Errors are RFC 9457 problem details.
API keys (LEADSCORE_API_KEYS or LEADSCORE_API_KEYS_FILE, from `leadscore api keygen`) are
required when it binds a non-loopback address."""


def register(sub: Any) -> None:
    a = sub.add_parser(
        "api",
        help="the scoring and lookup API (FastAPI; `api keygen` makes an API key)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument("--host", help="bind address (default LEADSCORE_API_HOST, 127.0.0.1)")
    a.add_argument("--port", type=int, help="port (default LEADSCORE_API_PORT, 8080)")
    a.set_defaults(func=cmd_api)
    asub = a.add_subparsers(dest="api_command", metavar="SUBCOMMAND")
    k = asub.add_parser(
        "keygen",
        help="print a new API key and the entry for LEADSCORE_API_KEYS",
        description="Prints a random key (give it to the client) and its settings entry "
        "name=sha256[:scopes] (only the hash is stored). Scopes: read (GET /leads), score "
        "(POST /score); default both.",
    )
    k.add_argument("name", help="a name for the key (shown in metrics and errors)")
    k.add_argument("--scopes", default="read,score", help="comma-separated: read, score")
    k.add_argument("--json", action="store_true", help="print one JSON object")
    k.set_defaults(func=cmd_keygen)


def cmd_keygen(args: argparse.Namespace, settings: Settings) -> int:
    from leadscore.api.auth import hash_key, new_key, parse_entry

    key = new_key()
    scopes = "+".join(s.strip() for s in args.scopes.split(",") if s.strip())
    entry = f"{args.name}={hash_key(key)}:{scopes}"
    parse_entry(entry)  # refuses a bad name or scope with a clear error
    if args.json:
        print(orjson.dumps({"name": args.name, "key": key, "entry": entry}).decode())
    else:
        print(f"key:   {key}")
        print(f"entry: {entry}")
        say("give the key to the client; add the entry to LEADSCORE_API_KEYS (comma-separated)")
    return 0


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from leadscore.api.app import create_app
    from leadscore.api.auth import is_loopback

    settings.require_redis()
    host = args.host or settings.api_host
    port = args.port if args.port is not None else settings.api_port
    app = create_app(settings)
    keys = app.state.api.keys
    if not keys.enabled and not is_loopback(host) and not settings.api_allow_anonymous:
        raise ConfigError(
            f"the API would serve lead data on {host} without authentication: set "
            "LEADSCORE_API_KEYS (see `leadscore api keygen`), bind 127.0.0.1, or set "
            "LEADSCORE_API_ALLOW_ANONYMOUS=true behind a gateway that authenticates"
        )
    auth = f"{len(keys.keys)} API key(s)" if keys.enabled else "no API keys"
    say(f"leadscore api: http://{host}:{port} (docs /docs, spec /openapi.json; {auth})")
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        timeout_keep_alive=int(settings.web_keepalive_timeout_s),
        server_header=False,
    )
    return 0
