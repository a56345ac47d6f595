"""A TLS terminator for the integration tests: Debian's ``stunnel4`` in front of a plaintext
service, with the certificates of :func:`tests.integration.certs.make_pki`.

The embedded broker's own TLS options don't work, so the Kafka TLS test puts stunnel in front
of it and has the broker advertise stunnel's port: every client, after bootstrap too, then
talks TLS.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from leadscore.tooling.embedded import Service, start_process
from leadscore.tooling.exceptions import ServiceStartError

from .certs import TlsFiles


def stunnel_binary() -> str:
    for name in ("stunnel4", "stunnel"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("stunnel is not installed (Debian: apt-get install stunnel4; .ci/run does)")


def start_tls_terminator(
    log_dir: Path,
    *,
    accept: int,
    connect: int,
    pki: TlsFiles,
    client_certs: bool = True,
    name: str = "stunnel",
) -> Service:
    """stunnel on 127.0.0.1:``accept``: TLS with ``pki``'s server certificate outside (and,
    with ``client_certs``, only for clients whose certificate ``pki``'s CA signed), plaintext
    to 127.0.0.1:``connect`` inside. Its log is ``log_dir/NAME.log``, one line per accepted
    connection and per failed handshake."""
    conf = log_dir / f"{name}.conf"
    verify = f"verifyChain = yes\nrequireCert = yes\nCAfile = {pki.ca}\n" if client_certs else ""
    conf.write_text(
        "foreground = yes\n"
        "pid =\n"  # no pid file: the process is our child
        "debug = notice\n"
        # Small Kafka requests and answers must not wait for Nagle's algorithm.
        "socket = l:TCP_NODELAY=1\n"
        "socket = r:TCP_NODELAY=1\n"
        f"[{name}]\n"
        f"accept = 127.0.0.1:{accept}\n"
        f"connect = 127.0.0.1:{connect}\n"
        f"cert = {pki.server_cert}\n"
        f"key = {pki.server_key}\n"
        f"{verify}"
    )
    try:
        return start_process(
            name, [stunnel_binary(), str(conf)], log_dir, f"127.0.0.1:{accept}", accept
        )
    except ServiceStartError as exc:
        pytest.fail(f"stunnel did not start: {exc}")
