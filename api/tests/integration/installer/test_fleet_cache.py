"""The fleet wheel cache with real environments, real wheels, the real store
(SQLite and PostgreSQL) and a directory backend; installs run offline."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, text
from wheel.wheelfile import WheelFile

from src.foundation.hashing import sha256_hex
from src.foundation.settings import get_settings
from src.services.installer import fleet_cache
from src.services.installer.engine import ensure_environment
from src.store.database import connection_scope, get_engine
from src.store.migrate import _config
from tests.support.s3 import new_bucket
from tests.support.wheels import build_sdist, build_wheel

API_DIR = Path(__file__).resolve().parents[3]
# Longer than any test waits: a held upload goes on only when the test says so.
HOLD_SECONDS = 120
CONTENT = "fleet-a==1.0\nfleet-b\nfleet-pkg==3.0\nfleet-sdist==1.0\n"
HASH = sha256_hex(CONTENT)
EXPECTED_WHEELS = [
    "fleet_a-1.0-py3-none-any.whl",
    "fleet_b-2.0-py3-none-any.whl",
    "fleet_dep-1.5-py3-none-any.whl",
    "fleet_pkg-3.0-py3-none-any.whl",
    "fleet_sdist-1.0-py3-none-any.whl",
]
# Imports every module of CONTENT, the dependency and the package's data file.
IMPORT_ALL = (
    "import importlib.resources, fleet_a, fleet_b, fleet_dep, fleet_pkg, fleet_sdist\n"
    "from fleet_pkg.sub.mod import answer\n"
    "assert answer() == 42 and fleet_dep.VERSION == '1.5' and fleet_sdist.VERSION == '1.0'\n"
    "data = importlib.resources.files('fleet_pkg').joinpath('data/greeting.txt')\n"
    "assert data.read_text() == 'hello\\n'\n"
)
UNREACHABLE_POSTGRES = "postgresql://nobody@127.0.0.1:1/x"
ANCIENT_NS = 1_000_000_000 * 10**9  # 2001-09-09: long before any test ran


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode()}"


def _build_package_wheel(wheelhouse: Path) -> Path:
    """fleet-pkg 3.0: a package folder with a subpackage, a data file and a
    console script (which `--target` installs generate into bin/)."""
    dist_info = "fleet_pkg-3.0.dist-info"
    files: dict[str, bytes] = {
        "fleet_pkg/__init__.py": b"def main():\n    print('fleet-pkg')\n",
        "fleet_pkg/sub/__init__.py": b"",
        "fleet_pkg/sub/mod.py": b"def answer():\n    return 42\n",
        "fleet_pkg/data/greeting.txt": b"hello\n",
        f"{dist_info}/METADATA": b"Metadata-Version: 2.1\nName: fleet-pkg\nVersion: 3.0\n",
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: bifrost-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
        f"{dist_info}/entry_points.txt": b"[console_scripts]\nfleet-pkg = fleet_pkg:main\n",
    }
    record = [f"{path},{_record_hash(data)},{len(data)}" for path, data in files.items()]
    files[f"{dist_info}/RECORD"] = ("\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n").encode()
    path = wheelhouse / "fleet_pkg-3.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            archive.writestr(member, data)
    return path


@pytest.fixture
def wheelhouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The package index of the first host: wheels with a dependency and a
    package folder, and an sdist that the installer builds."""
    house = tmp_path / "wheelhouse"
    build_wheel(house, "fleet-a", "1.0", requires=["fleet-dep>=1"])
    build_wheel(house, "fleet-dep", "1.5")
    build_wheel(house, "fleet-b", "2.0")
    _build_package_wheel(house)
    build_sdist(house, "fleet-sdist", "1.0")
    monkeypatch.setenv("PIP_FIND_LINKS", str(house))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    return house


@pytest.fixture(params=["store", "dir"])
def backend(request: pytest.FixtureRequest, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> str:
    """BIFROST_WHEEL_CACHE: the store (SQLite here) or a shared directory."""
    if request.param == "store":
        request.getfixturevalue("sqlite_system")
        setting = "store"
    else:
        setting = f"dir:{tmp_path / 'shared-wheels'}"
    monkeypatch.setenv("BIFROST_WHEEL_CACHE", setting)
    get_settings.cache_clear()
    return setting


@pytest.fixture(autouse=True)
def _no_upload_left_running() -> Iterator[None]:
    yield
    assert fleet_cache.wait_for_uploads(30)


def _build_env(content: str = CONTENT) -> Path:
    """Build as a worker does. The engine publishes each build by itself: it does
    so into a cache of its own here, so that what a test publishes, fetches and
    counts is only what the test itself did."""
    saved = os.environ.get("BIFROST_WHEEL_CACHE")
    os.environ["BIFROST_WHEEL_CACHE"] = f"dir:{get_settings().data_path / 'engine-wheel-cache'}"
    get_settings.cache_clear()
    try:
        outcome, env = ensure_environment(content, sha256_hex(content), "w-fleet")
        assert fleet_cache.wait_for_uploads(60)
    finally:
        if saved is None:
            os.environ.pop("BIFROST_WHEEL_CACHE", None)
        else:
            os.environ["BIFROST_WHEEL_CACHE"] = saved
        get_settings.cache_clear()
    shutil.rmtree(_local(), ignore_errors=True)
    assert outcome["ok"], outcome
    assert env is not None
    return env


def _local() -> Path:
    return fleet_cache.local_wheel_dir()


def _digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.glob("*.whl"))}


def _install_offline(target: Path, find_links: Path, content: str = CONTENT) -> None:
    requirements = target.parent / f"{target.name}-requirements.txt"
    requirements.write_text(content)
    done = subprocess.run(
        [sys.executable, "-m", "uv", "pip", "install", "--target", str(target),
         "-r", str(requirements), "--find-links", str(find_links), "--no-index",
         "--python", sys.executable],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr


def _python_ok(path: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(path)})


def _forget_this_host(wheelhouse: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """As on a new host: no index, no packages dir, no installer cache."""
    shutil.rmtree(wheelhouse)
    shutil.rmtree(get_settings().packages_dir)
    shutil.rmtree(get_settings().data_path / "engine-wheel-cache", ignore_errors=True)
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache-of-another-host"))


# --- repacking ------------------------------------------------------------------


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_repacked_wheels_install_and_import(
    wheelhouse: Path, tmp_path: Path, installer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BIFROST_INSTALLER", installer)
    get_settings.cache_clear()
    env = _build_env()
    out = tmp_path / "repacked"
    assert fleet_cache.produce_wheels(env, out) == EXPECTED_WHEELS
    with WheelFile(out / "fleet_pkg-3.0-py3-none-any.whl") as wheel:
        members = set(wheel.namelist())
        for member in members:
            wheel.read(member)  # checks every file against the regenerated RECORD
    assert {"fleet_pkg/sub/mod.py", "fleet_pkg/data/greeting.txt",
            "fleet_pkg-3.0.dist-info/entry_points.txt", "fleet_pkg-3.0.dist-info/RECORD"} <= members
    installer_made = ("INSTALLER", "REQUESTED", "direct_url.json", "uv_", ".pyc", "bin/")
    with zipfile.ZipFile(out / "fleet_sdist-1.0-py3-none-any.whl") as wheel:
        members |= set(wheel.namelist())
    assert not [m for m in members if any(word in m for word in installer_made)]

    shutil.rmtree(wheelhouse)  # what is installed now comes from the repacked wheels
    target = tmp_path / "reinstalled"
    _install_offline(target, out)
    done = _python_ok(target, IMPORT_ALL)
    assert done.returncode == 0, done.stderr
    assert (target / "bin" / "fleet-pkg").is_file()  # the script was generated again


def test_wheels_already_made_are_not_repacked(wheelhouse: Path, tmp_path: Path) -> None:
    env = _build_env()
    out = tmp_path / "repacked"
    fleet_cache.produce_wheels(env, out)
    # An mtime no rewrite could give (a file written now gets the clock's time),
    # and the inode (a replace gives a new one): neither depends on how fast
    # the second call comes.
    for wheel in out.glob("*.whl"):
        os.utime(wheel, ns=(ANCIENT_NS, ANCIENT_NS))
    before = {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in out.glob("*.whl")}
    assert fleet_cache.produce_wheels(env, out) == EXPECTED_WHEELS
    assert {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in out.glob("*.whl")} == before
    assert sorted(p.name for p in out.iterdir()) == EXPECTED_WHEELS  # no temp dirs left


def test_wheel_filenames_follow_the_installed_wheel_file(tmp_path: Path) -> None:
    dist_info = tmp_path / "Some_Pkg-2.0+local.dist-info"
    dist_info.mkdir()
    (dist_info / "WHEEL").write_text(
        "Wheel-Version: 1.0\nRoot-Is-Purelib: false\nBuild: 7\n"
        "Tag: cp311-cp311-manylinux_2_17_x86_64\nTag: cp311-cp311-manylinux2014_x86_64\n"
    )
    assert fleet_cache.wheel_filename(dist_info) == (
        "Some_Pkg-2.0+local-7-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"
    )
    (dist_info / "WHEEL").write_text("Wheel-Version: 1.0\nTag: py2-none-any\nTag: py3-none-any\n")
    assert fleet_cache.wheel_filename(dist_info) == "Some_Pkg-2.0+local-py2.py3-none-any.whl"


def test_a_distribution_with_a_missing_file_is_left_out(
    wheelhouse: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = _build_env()
    (env / "fleet_pkg" / "sub" / "mod.py").unlink()
    made = fleet_cache.produce_wheels(env, tmp_path / "repacked")
    assert made == [name for name in EXPECTED_WHEELS if not name.startswith("fleet_pkg")]
    assert "fleet_pkg/sub/mod.py is in the RECORD of fleet_pkg-3.0.dist-info" in caplog.text


# --- publish and fetch, on each backend -------------------------------------------


def test_publish_is_idempotent(wheelhouse: Path, backend: str) -> None:
    env = _build_env()
    assert fleet_cache.publish(HASH, env) == len(EXPECTED_WHEELS)
    assert fleet_cache.publish(HASH, env) == 0
    cache = fleet_cache.wheel_cache(get_settings())
    assert cache.get_manifest(HASH) == EXPECTED_WHEELS
    assert all(cache.has(name) for name in EXPECTED_WHEELS)
    assert sorted(p.name for p in _local().iterdir()) == EXPECTED_WHEELS


def test_fetch_restores_deleted_local_wheels_byte_for_byte(wheelhouse: Path, backend: str) -> None:
    fleet_cache.publish(HASH, _build_env())
    published = _digests(_local())
    assert sorted(published) == EXPECTED_WHEELS
    shutil.rmtree(_local())
    assert fleet_cache.fetch(HASH) == _local()
    assert _digests(_local()) == published
    assert not [p for p in _local().iterdir() if p.name.startswith(".")]  # no partial files


def test_fetch_without_a_manifest(wheelhouse: Path, backend: str,
                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    assert fleet_cache.fetch(HASH) is None
    assert "no wheels known for" in caplog.text
    # Wheels of an earlier build on this host still help a build of another hash.
    fleet_cache.publish(HASH, _build_env())
    assert fleet_cache.fetch(sha256_hex("fleet-b\n")) == _local()


def test_a_second_host_rebuilds_with_no_index(
    wheelhouse: Path, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _build_env()
    assert fleet_cache.publish(HASH, env) == len(EXPECTED_WHEELS)
    _forget_this_host(wheelhouse, monkeypatch, tmp_path)
    with pytest.raises(AssertionError):  # proof that nothing else could serve the install
        _install_offline(tmp_path / "without-cache", tmp_path / "empty")

    fetched = fleet_cache.fetch(HASH)
    assert fetched is not None and sorted(p.name for p in fetched.glob("*.whl")) == EXPECTED_WHEELS
    target = tmp_path / "second-host"
    _install_offline(target, fetched)
    done = _python_ok(target, IMPORT_ALL)
    assert done.returncode == 0, done.stderr


def test_the_engine_builds_from_fetched_wheels(
    wheelhouse: Path, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the engine will do once it passes the fetched dir as find-links."""
    fleet_cache.publish(HASH, _build_env())
    _forget_this_host(wheelhouse, monkeypatch, tmp_path)
    fetched = fleet_cache.fetch(HASH)
    assert fetched is not None
    monkeypatch.setenv("PIP_FIND_LINKS", str(fetched))
    env = _build_env()
    done = _python_ok(env, IMPORT_ALL)
    assert done.returncode == 0, done.stderr


def test_publish_in_background(
    wheelhouse: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _build_env()
    # The upload is held until the test lets it go: the caller returning while
    # it is held proves it does not wait for the upload, however fast or slow
    # the machine. (A caller that waited would get here only after the hold
    # ran out and the upload finished.)
    release, finished = threading.Event(), threading.Event()
    real_publish = fleet_cache._publish

    def held_publish(*args: object, **kwargs: object) -> object:
        release.wait(HOLD_SECONDS)
        try:
            return real_publish(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            finished.set()

    monkeypatch.setattr(fleet_cache, "_publish", held_publish)
    try:
        thread = fleet_cache.publish_in_background(HASH, env)
        assert thread.daemon
        assert not finished.is_set(), "the caller waited for the upload"
        assert fleet_cache.wheel_cache(get_settings()).get_manifest(HASH) is None
    finally:
        release.set()
    assert fleet_cache.wait_for_uploads(60)
    assert finished.is_set()
    assert fleet_cache.wheel_cache(get_settings()).get_manifest(HASH) == EXPECTED_WHEELS


def test_a_manifest_keeps_wheels_another_host_published(wheelhouse: Path, backend: str) -> None:
    fleet_cache.publish(HASH, _build_env())
    partial = _build_env("fleet-b\n")  # as if a host's build of HASH had only this
    assert fleet_cache.publish(HASH, partial) == 0
    assert fleet_cache.wheel_cache(get_settings()).get_manifest(HASH) == EXPECTED_WHEELS


# --- the store backend on SQLite and PostgreSQL -------------------------------------


def test_store_backend(system: str, wheelhouse: Path,
                       monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = _build_env()
    assert fleet_cache.publish(HASH, env) == len(EXPECTED_WHEELS)
    assert fleet_cache.publish(HASH, env) == 0
    published = _digests(_local())
    _forget_this_host(wheelhouse, monkeypatch, tmp_path)
    assert fleet_cache.fetch(HASH) == _local()
    assert _digests(_local()) == published
    with get_engine(system).connect() as connection:
        rows = connection.execute(text("SELECT filename, sha256, size FROM fleet_wheels")).all()
    assert sorted(row.filename for row in rows) == EXPECTED_WHEELS
    assert {row.filename: row.sha256 for row in rows} == published
    assert {row.filename: row.size for row in rows} == {
        name: (_local() / name).stat().st_size for name in EXPECTED_WHEELS}


def test_store_backend_hosts_racing_on_one_wheel(system: str) -> None:
    cache = fleet_cache.StoreWheelCache(get_settings())
    errors: list[BaseException] = []
    go = threading.Barrier(6)

    def put(data: bytes) -> None:
        go.wait(10)
        try:
            cache.put("race-1.0-py3-none-any.whl", data)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(bytes([i]) * 1000,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    data = cache.get("race-1.0-py3-none-any.whl")
    assert data is not None and len(set(data)) == 1  # one writer's whole wheel


def test_store_backend_refuses_a_corrupted_wheel(
    system: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache = fleet_cache.StoreWheelCache(get_settings())
    cache.put("bad-1.0-py3-none-any.whl", b"wheel bytes")
    with connection_scope(system) as connection:
        connection.execute(text("UPDATE fleet_wheels SET sha256 = :x"), {"x": "0" * 64})
    assert cache.get("bad-1.0-py3-none-any.whl") is None
    assert "does not match its sha256" in caplog.text


# --- failures: never raised ---------------------------------------------------------


def test_an_unreachable_store_costs_nothing_but_a_warning(
    wheelhouse: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    env = _build_env()
    monkeypatch.setenv("DATABASE_URL", UNREACHABLE_POSTGRES)
    get_settings.cache_clear()
    shutil.rmtree(_local(), ignore_errors=True)
    started = time.monotonic()
    assert fleet_cache.publish(HASH, env) == 0
    assert "could not publish the wheels" in caplog.text and "store unavailable" in caplog.text
    shutil.rmtree(_local(), ignore_errors=True)  # publish made local wheels before failing
    assert fleet_cache.fetch(HASH) is None
    assert "could not fetch the wheels" in caplog.text
    # Refused at once (port 1): no retries, no waiting on a connect timeout.
    # The bound only catches a hang; the work itself may take seconds on a busy machine.
    assert time.monotonic() - started < 60


def test_a_worker_without_a_store_leaves_no_sqlite_file(isolated_settings: Path) -> None:
    assert fleet_cache.fetch(HASH) is None
    assert not (isolated_settings / "bifrost.db").exists()


def test_object_storage_keeps_wheels_and_manifests(
    wheelhouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = new_bucket()  # a real S3 server over HTTP (moto's)
    for name, value in bucket.env().items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    env = _build_env()
    assert fleet_cache.publish(HASH, env) == 5
    assert set(bucket.keys("wheels/")) == {f"wheels/{p.name}" for p in _local().glob("*.whl")}
    assert json.loads(bucket.read(f"manifests/{HASH}.json")) == sorted(
        p.name for p in _local().glob("*.whl"))
    shutil.rmtree(_local())  # another host: none of the wheels are here
    assert fleet_cache.fetch(HASH) == _local()
    assert {p.name for p in _local().glob("*.whl")} == {k[7:] for k in bucket.keys("wheels/")}


def test_a_manifest_cannot_name_paths(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    names = ["../up-1.0-py3-none-any.whl", "/etc/x-1.0-py3-none-any.whl",
             "ok-1.0-py3-none-any.whl"]
    (shared / f"{HASH}.json").write_text(json.dumps(names))
    cache = fleet_cache.DirectoryWheelCache(shared)
    assert cache.get_manifest(HASH) == ["ok-1.0-py3-none-any.whl"]
    assert "ignored 2 bad names" in caplog.text
    with pytest.raises(ValueError, match="not a wheel filename"):
        cache.put("../x-1.0-py3-none-any.whl", b"")
    assert fleet_cache.publish("../etc", tmp_path) == 0


def test_workers_do_not_load_sqlalchemy(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from src.services.installer import fleet_cache\n"
        "fleet_cache.fetch('ab' * 32)\n"
        "assert 'sqlalchemy' not in sys.modules, 'sqlalchemy was imported'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=API_DIR, capture_output=True, text=True,
        env={**os.environ, "BIFROST_WHEEL_CACHE": f"dir:{tmp_path / 'shared'}"},
    )
    assert done.returncode == 0, done.stderr


# --- the migration ------------------------------------------------------------------


def _version(url: str) -> str | None:
    with get_engine(url).connect() as connection:
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def test_migration_0002_applies_on_top_of_0001(empty_store_url: str) -> None:
    with connection_scope(empty_store_url) as connection:
        command.upgrade(_config(connection), "0001")
    assert _version(empty_store_url) == "0001"
    assert "fleet_wheels" not in inspect(get_engine(empty_store_url)).get_table_names()

    with connection_scope(empty_store_url) as connection:
        command.upgrade(_config(connection), "0002")  # later migrations have their own tests
    assert _version(empty_store_url) == "0002"
    tables = set(inspect(get_engine(empty_store_url)).get_table_names())
    assert {"workspace_files", "fleet_wheels", "fleet_manifests"} <= tables

    with connection_scope(empty_store_url) as connection:
        command.downgrade(_config(connection), "0001")
    assert _version(empty_store_url) == "0001"
    assert "fleet_wheels" not in inspect(get_engine(empty_store_url)).get_table_names()
