"""docker-compose.yml against what the README tells a developer to do with it: the Elasticsearch node compose
starts is reachable from the host where the README's contract-suite command looks for it, and only there."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _readme_commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [ln.split("#")[0].strip() for b in blocks for ln in b.splitlines() if ln.strip()]


def test_elasticsearch_is_published_on_loopback_where_the_readme_points_the_contract_suite():
    services = _compose()["services"]
    es = services["elasticsearch"]
    # security is off on this node: reachable from this host only, never from the network
    assert es["ports"] == ["127.0.0.1:9200:9200"], es.get("ports")
    host_ip, host_port, container_port = es["ports"][0].split(":")

    commands = _readme_commands()
    assert "docker compose up -d elasticsearch" in commands, commands
    [suite] = [c for c in commands if c.startswith("ELASTICSEARCH_URL=")]
    words = shlex.split(suite)
    url = urlsplit(words[0].partition("=")[2])
    assert (url.hostname, url.port) == (host_ip, int(host_port)), suite
    tests = [w for w in words if w.startswith("tests/")]
    assert tests, suite
    for path in tests:  # each names a file that runs against ELASTICSEARCH_URL
        text = (ROOT / path).read_text()
        assert "ELASTICSEARCH_URL" in text or "test_search_contract import" in text, path

    # the services inside compose reach the same node on its container port
    app_url = urlsplit(services["listings"]["environment"]["ELASTICSEARCH_URL"])
    assert (app_url.hostname, app_url.port) == ("elasticsearch", int(container_port))
