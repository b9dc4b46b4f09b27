"""Install-failure alerts over the real stack: two pools on two hosts, two
workers each, one Redis, the API sending to a real webhook receiver.

A package that cannot build makes exactly one alert, POSTed once (after one
refused attempt) naming the package, the hash, the error and both hosts; a
storm of re-syncs and recycles makes every worker fail it again and sends
nothing more; once the hosts can build it (same file, same lock, same hash),
the next round of workers installs it and the alert is resolved.
"""

from __future__ import annotations

import base64
import io
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from src.core import alert_outbox
from tests.support.exchange import Exchange, ExchangePath
from tests.support.stack import Stack
from tests.support.webhook_receiver import webhook_receiver
from tests.support.wheels import build_wheel

PACKAGE, VERSION = "needs-gcc", "1.0"
PIN = f"{PACKAGE}=={VERSION}"

# An in-tree PEP 517 backend that fails like a package needing a C compiler
# the host lacks, until the exchange file FIXED exists ("gcc got installed";
# a build is confined and sees none of the test's files); then it hands out
# the wheel it carries. The sdist's bytes never change, so neither do the
# lock's hash of it nor the requirements hash.
_BACKEND = '''
import base64, os
NAME, VERSION, FIXED, WHEEL = {name!r}, {version!r}, {fixed!r}, {wheel!r}

def get_requires_for_build_wheel(config_settings=None):
    return []

def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    dist_info = os.path.join(metadata_directory, NAME + "-" + VERSION + ".dist-info")
    os.makedirs(dist_info)
    with open(os.path.join(dist_info, "METADATA"), "w") as f:
        f.write("Metadata-Version: 2.1\\nName: " + NAME + "\\nVersion: " + VERSION + "\\n")
    return os.path.basename(dist_info)

def _fixed():
    import urllib.error, urllib.request
    try:
        urllib.request.urlopen(urllib.request.Request(FIXED, method="HEAD"), timeout=30)
    except urllib.error.HTTPError:
        return False
    return True

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    if not _fixed():
        raise RuntimeError("error: command 'gcc' failed: building " + NAME + " needs a C compiler")
    name = NAME + "-" + VERSION + "-py3-none-any.whl"
    with open(os.path.join(wheel_directory, name), "wb") as f:
        f.write(base64.b64decode(WHEEL))
    return name
'''


def build_sdist_until_fixed(wheelhouse: Path, scratch: Path, fixed: ExchangePath) -> None:
    wheel = build_wheel(scratch, PACKAGE, VERSION).read_bytes()
    name = PACKAGE.replace("-", "_")
    root = f"{name}-{VERSION}"
    files = {
        "pyproject.toml": ('[build-system]\nrequires = []\nbuild-backend = "backend"\n'
                           'backend-path = ["."]\n'),
        "backend.py": _BACKEND.format(name=name, version=VERSION, fixed=str(fixed),
                                      wheel=base64.b64encode(wheel).decode()),
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: {VERSION}\n",
    }
    with tarfile.open(wheelhouse / f"{root}.tar.gz", "w:gz") as archive:
        for member, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{root}/{member}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def alerts(stack: Stack, **params: str) -> list[dict[str, Any]]:
    response = stack.client.get("/api/alerts", params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["alerts"])


def test_one_alert_per_failed_package_per_hash_whatever_the_storm(
    make_stack: Callable[..., Stack], tmp_path: Path, redis_client: redis.Redis,
    exchange: Exchange,
) -> None:
    fixed = exchange / "gcc-installed"
    with webhook_receiver(fail_first=1) as receiver:
        stack = make_stack(
            pools=2, workers_per_pool=2, extra_env={"BIFROST_ALERT_WEBHOOK": receiver.url},
            pool_env=[{"BIFROST_HOST_NAME": host, "BIFROST_PACKAGES_DIR": str(tmp_path / host)}
                      for host in ("host-a", "host-b")],
        )
        build_sdist_until_fixed(stack.wheelhouse, tmp_path / "scratch", fixed)
        stack.start()
        requirements_hash = stack.install(PACKAGE, VERSION)["hash"]
        fleet = stack.wait_ready(requirements_hash)
        assert all([f["package"] for f in w["install"]["failed"]] == [PIN]
                   for w in fleet["workers"]), fleet

        # The one alert: refused once, then taken, naming the hosts that had
        # failed by then; the alert itself names both once both have.
        [body] = stack.wait(receiver.bodies, 60, "the alert's POST")
        assert body["package"] == PIN and body["hash"] == requirements_hash
        assert "needs a C compiler" in body["error"]
        assert body["hosts"] and set(body["hosts"]) <= {"host-a", "host-b"}, body
        assert receiver.refused and receiver.refused[0]["id"] == body["id"]
        stack.wait(lambda: sorted(alerts(stack)[0]["hosts"]) == ["host-a", "host-b"], 60,
                   "the alert to name both hosts")

        # A retry storm: every worker of both pools installs (and fails) again, many times.
        reports = alerts(stack)[0]["count"]
        for _ in range(5):
            storm = stack.client.post("/api/packages/install", json={})
            assert storm.status_code == 200, storm.text
        assert stack.client.post("/api/workers/recycle-all").status_code == 202
        stack.wait(lambda: alerts(stack)[0]["count"] >= reports + stack.expected_workers, 90,
                   "every worker to report the failure again")
        stack.wait_ready(requirements_hash)
        stack.wait(lambda: alert_outbox.pending(redis_client) == 0, 30,
                   "no alert delivery left to send")
        assert receiver.bodies() == [body]
        [alert] = alerts(stack)
        assert alert["hash"] == requirements_hash and alert["package"] == PIN
        assert alert["hosts"] == ["host-a", "host-b"] and alert["resolved"] is False
        assert alert["delivery"]["status"] == "sent" and alert["delivery"]["attempts"] == 2

        # The hosts can build it now: the same hash installs it, the alert is resolved.
        fixed.touch()
        assert stack.client.post("/api/packages/install", json={}).status_code == 200
        [resolved] = stack.wait(lambda: [a for a in alerts(stack) if a["resolved"]], 90,
                                "the alert to be resolved")
        assert resolved["id"] == alert["id"] and resolved["resolved_at"] >= alert["last_seen"]
        assert alerts(stack, open="true") == []

        def installed_everywhere() -> bool:
            fleet = stack.fleet()
            return stack.is_ready(fleet, requirements_hash) and all(
                w["install"]["failed"] == [] for w in fleet["workers"])

        stack.wait(installed_everywhere, 90, "every worker to run needs-gcc")
        assert alerts(stack, open="true") == []
        assert receiver.bodies() == [body]
