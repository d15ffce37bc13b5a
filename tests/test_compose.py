"""docker-compose.test.yml runs the README's set-up and test commands in a clean Python 3.11."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```[^\n`]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _command_text(service: dict) -> str:
    parts = [service.get("entrypoint") or [], service.get("command") or []]
    return " ".join(p if isinstance(p, str) else " ".join(map(str, p)) for p in parts)


def _python311_services() -> dict[str, dict]:
    compose = yaml.safe_load((ROOT / "docker-compose.test.yml").read_text())
    services = compose.get("services") or {}
    return {name: s for name, s in services.items()
            if re.match(r"^(docker\.io/)?(library/)?python:3\.11(?![0-9])", str(s.get("image", "")))}


def test_compose_runs_setup_and_tests_in_python311():
    services = _python311_services()
    assert services, "no service with a python:3.11 image in docker-compose.test.yml"
    runs_both = [name for name, s in services.items()
                 if re.search(r"scripts/setup\.sh\b.*scripts/test\.sh\b", _command_text(s), re.DOTALL)]
    assert runs_both, "no python:3.11 service runs scripts/setup.sh and then scripts/test.sh"


def test_compose_scripts_exist():
    for script in ("scripts/setup.sh", "scripts/test.sh"):
        assert (ROOT / script).is_file(), script


def test_readme_first_code_blocks_are_setup_and_test():
    readme = ROOT / "README.md"
    assert readme.is_file(), "README.md is missing"
    blocks = FENCE.findall(readme.read_text())
    assert len(blocks) >= 2, "README.md needs a set-up and a test code block first"
    first, second = blocks[0], blocks[1]
    assert "bash scripts/setup.sh" in first, first
    assert "bash scripts/test.sh" in second, second


def test_ci_runs_the_readme_test_command_and_it_runs_pytest():
    blocks = FENCE.findall((ROOT / "README.md").read_text())
    test_command = blocks[1].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci.splitlines(), f".ci/run must run {test_command!r} verbatim"
    assert "python -m pytest" in (ROOT / "scripts" / "test.sh").read_text()


def test_compose_has_an_s3_service_the_s3_tests_use():
    """The S3 tests run against compose's moto service (tests/s3_server.py reads the variable)."""
    compose = yaml.safe_load((ROOT / "docker-compose.test.yml").read_text())
    services = compose["services"]
    s3 = [name for name, s in services.items() if "moto" in str(s.get("image", ""))]
    assert s3, "no moto (S3) service in docker-compose.test.yml"
    (tests_name,) = _python311_services()
    tests = services[tests_name]
    assert s3[0] in (tests.get("depends_on") or {}), "the tests service must wait for the S3 one"
    endpoint = str((tests.get("environment") or {}).get("EXORAY_TEST_S3_ENDPOINT", ""))
    assert re.fullmatch(rf"http://{s3[0]}:\d+", endpoint), endpoint
    port = endpoint.rsplit(":", 1)[1]
    assert str((services[s3[0]].get("environment") or {}).get("MOTO_PORT")) == port
    assert "EXORAY_TEST_S3_ENDPOINT" in (ROOT / "tests" / "s3_server.py").read_text()
