"""The browser packages (`clients/js`, `clients/react`) say what the server serves: the same client, the same
version."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_js_package_holds_the_client_the_server_serves() -> None:
    served = ROOT / "src/jobcast/web/static/jobcast.js"
    packaged = ROOT / "clients/js/jobcast.js"
    assert packaged.read_bytes() == served.read_bytes(), (
        "clients/js/jobcast.js differs from the one the server serves; the server's is the source: "
        "cp src/jobcast/web/static/jobcast.js clients/js/")


def test_the_packages_have_the_projects_version_and_the_hooks_depend_on_the_client() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    js = json.loads((ROOT / "clients/js/package.json").read_text())
    react = json.loads((ROOT / "clients/react/package.json").read_text())
    assert js["version"] == react["version"] == version
    assert react["dependencies"] == {js["name"]: "file:../js"} and "react" in react["peerDependencies"]
    for package, manifest in (("js", js), ("react", react)):
        for name in manifest["files"]:
            assert (ROOT / "clients" / package / name).is_file(), f"clients/{package}/{name} is missing"
