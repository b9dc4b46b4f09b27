"""Unit tests for the worker process (`src/services/execution/simple_worker.py`).

Three sections:
1. The worker start-up spec's own tests (`TestInstallRequirementsFromCache`),
   exactly as the spec (shared/spec/phase-4-worker-startup.md) gives them: do
   not edit them; the names and patch points they use stay in simple_worker.
2. Every path of the install function, beyond the spec's cases.
3. `run_worker_process`: start-up order and the loop.
"""

import json
from unittest.mock import MagicMock, call, patch

import pytest

from src.services.execution.simple_worker import _install_requirements_from_cache_sync

# === 1. The worker start-up spec's tests: verbatim, do not edit ====================


class TestInstallRequirementsFromCache:
    @patch("src.services.execution.simple_worker.subprocess.run")
    @patch("src.services.execution.simple_worker.redis.from_url")
    def test_installs_from_cache(self, mock_redis_factory, mock_subprocess):
        """Test successful installation from cached requirements."""
        # Setup mock Redis
        mock_client = MagicMock()
        cached = {"content": "flask==2.3.0\nrequests==2.31.0\n", "hash": "abc123"}
        mock_client.get.return_value = json.dumps(cached)
        mock_redis_factory.return_value = mock_client

        # Setup mock subprocess
        mock_subprocess.return_value = MagicMock(returncode=0, stdout="", stderr="")

        # Run
        _install_requirements_from_cache_sync("test-worker")

        # Verify pip was called
        assert mock_subprocess.called
        call_args = mock_subprocess.call_args
        assert "-m" in call_args[0][0]
        assert "pip" in call_args[0][0]
        assert "install" in call_args[0][0]
        assert "-r" in call_args[0][0]

    @patch("src.services.execution.simple_worker.redis.from_url")
    def test_handles_redis_unavailable(self, mock_redis_factory):
        """Test graceful handling when Redis is unavailable."""
        import redis

        mock_redis_factory.side_effect = redis.ConnectionError("Connection refused")

        # Should not raise
        _install_requirements_from_cache_sync("test-worker")

    @patch("src.services.execution.simple_worker.redis.from_url")
    def test_handles_empty_cache(self, mock_redis_factory):
        """Test handling when cache is empty."""
        mock_client = MagicMock()
        mock_client.get.return_value = None
        mock_redis_factory.return_value = mock_client

        # Should not raise
        _install_requirements_from_cache_sync("test-worker")

    @patch("src.services.execution.simple_worker.redis.from_url")
    def test_handles_empty_content(self, mock_redis_factory):
        """Test handling when cached content is empty."""
        mock_client = MagicMock()
        cached = {"content": "", "hash": "abc123"}
        mock_client.get.return_value = json.dumps(cached)
        mock_redis_factory.return_value = mock_client

        # Should not raise
        _install_requirements_from_cache_sync("test-worker")


# === 2. Every path of the install function ========================================

import logging
import queue
import subprocess
from pathlib import Path

import redis

from src.foundation.hashing import sha256_hex
from src.services.execution import simple_worker
from src.services.execution.results import decode_outcome
from src.services.execution.simple_worker import run_worker_process

W = "w-unit"


def _client(data):
    client = MagicMock()
    client.get.return_value = data
    return client


def _cached(content, digest=None):
    """The key as the API writes it: the content under its sha256."""
    return json.dumps({"content": content, "hash": digest or sha256_hex(content)})


@pytest.fixture
def from_url():
    with patch("src.services.execution.simple_worker.redis.from_url") as factory:
        yield factory


@pytest.fixture
def run():
    with patch("src.services.execution.simple_worker.subprocess.run") as runner:
        runner.return_value = MagicMock(returncode=0, stdout="", stderr="")
        yield runner


@pytest.fixture
def sleep():
    with patch("src.services.execution.simple_worker.time.sleep") as sleeper:
        yield sleeper


class TestInstallPaths:
    def test_three_attempts_and_two_sleeps_when_redis_refuses(self, from_url, run, sleep, caplog):
        from_url.side_effect = redis.ConnectionError("refused")
        with caplog.at_level(logging.INFO):
            outcome = _install_requirements_from_cache_sync(W)
        assert from_url.call_count == 3
        assert sleep.call_args_list == [call(1.0), call(1.0)]
        assert f"[{W}] Redis unavailable after 3 attempts" in caplog.text
        assert not run.called
        assert outcome["skipped"] is True

    def test_recovers_when_redis_answers_on_the_third_attempt(self, from_url, run, sleep):
        from_url.side_effect = [
            redis.ConnectionError("refused"),
            redis.ConnectionError("refused"),
            _client(_cached("alpha==1.0\n")),
        ]
        outcome = _install_requirements_from_cache_sync(W)
        assert sleep.call_count == 2
        assert run.call_count == 1
        assert outcome["ok"] is True

    def test_one_get_of_the_key_with_the_sync_client_then_close(self, from_url, run):
        client = _client(_cached("alpha==1.0\n"))
        from_url.return_value = client
        _install_requirements_from_cache_sync(W)
        args, kwargs = from_url.call_args
        assert kwargs == {"decode_responses": True, "socket_timeout": 5.0}
        client.get.assert_called_once_with("bifrost:requirements:content")
        client.close.assert_called_once()

    def test_invalid_json_installs_nothing(self, from_url, run, caplog):
        from_url.return_value = _client("{not json")
        with caplog.at_level(logging.INFO):
            _install_requirements_from_cache_sync(W)
        assert f"[{W}] Invalid JSON in cached requirements" in caplog.text
        assert not run.called

    def test_missing_content_key_counts_as_empty(self, from_url, run, caplog):
        from_url.return_value = _client(json.dumps({"hash": "abc"}))
        with caplog.at_level(logging.INFO):
            _install_requirements_from_cache_sync(W)
        assert f"[{W}] Cached requirements.txt is empty" in caplog.text
        assert not run.called

    def test_whitespace_only_content_installs_nothing(self, from_url, run, caplog):
        from_url.return_value = _client(_cached("  \n\t\n"))
        with caplog.at_level(logging.INFO):
            outcome = _install_requirements_from_cache_sync(W)
        assert f"[{W}] Cached requirements.txt is empty" in caplog.text
        assert not run.called
        assert outcome["skipped"] is True

    def test_absent_key_logs_and_installs_nothing(self, from_url, run, caplog):
        from_url.return_value = _client(None)
        with caplog.at_level(logging.INFO):
            _install_requirements_from_cache_sync(W)
        assert f"[{W}] No cached requirements.txt found" in caplog.text
        assert not run.called

    def test_installer_builds_inside_the_packages_dir_with_a_timeout(self, from_url, run):
        from_url.return_value = _client(_cached("alpha==1.0\n"))
        _install_requirements_from_cache_sync(W)
        argv = run.call_args[0][0]
        packages_dir = simple_worker.get_settings().packages_dir
        target = Path(argv[argv.index("--target") + 1])
        assert target.parent == packages_dir / ".envs"  # a build dir, renamed when done
        assert 0 < run.call_args.kwargs["timeout"] <= 300
        environment = packages_dir / ".envs" / (sha256_hex("alpha==1.0\n") + ".1")
        assert environment.is_dir()
        assert str(environment) in __import__("sys").path

    def test_installer_failure_is_logged_and_reported(self, from_url, run, caplog):
        from_url.return_value = _client(_cached("alpha==1.0\n"))
        run.return_value = MagicMock(returncode=1, stdout="", stderr="ERROR: no alpha")
        with caplog.at_level(logging.INFO):
            outcome = _install_requirements_from_cache_sync(W)
        assert "install failed; installing line by line: ERROR: no alpha" in caplog.text
        assert f"[{W}] x alpha==1.0 failed" in caplog.text
        assert f"[{W}] 1 of 1 requirements failed to install: alpha==1.0" in caplog.text
        assert outcome["ok"] is False
        assert outcome["failed"] == [{"package": "alpha==1.0", "error": "ERROR: no alpha"}]

    def test_installer_timeout_is_logged(self, from_url, run, caplog):
        from_url.return_value = _client(_cached("alpha==1.0\n"))
        run.side_effect = subprocess.TimeoutExpired(cmd="pip", timeout=300)
        with caplog.at_level(logging.INFO):
            outcome = _install_requirements_from_cache_sync(W)
        assert "install timed out" in caplog.text
        assert outcome["ok"] is False

    def test_unexpected_error_never_escapes(self, from_url, run, caplog):
        from_url.side_effect = ValueError("bad url")
        outcome = _install_requirements_from_cache_sync(W)
        assert outcome["ok"] is True and outcome["skipped"] is True
        assert "bad url" in caplog.text

    @pytest.mark.parametrize("returncode", [0, 1])
    def test_temp_file_holds_the_content_and_is_removed(self, from_url, run, returncode):
        content = "alpha==1.0\nbeta>=2\n"
        from_url.return_value = _client(_cached(content))
        seen = {}

        def fake_run(argv, **kwargs):
            path = Path(argv[argv.index("-r") + 1])
            seen["path"], seen["content"] = path, path.read_text()
            return MagicMock(returncode=returncode, stdout="", stderr="x")

        run.side_effect = fake_run
        _install_requirements_from_cache_sync(W)
        assert seen["content"] == content
        assert not seen["path"].exists()

    def test_temp_file_removed_after_timeout(self, from_url, run):
        from_url.return_value = _client(_cached("alpha==1.0\n"))
        seen = {}

        def fake_run(argv, **kwargs):
            seen["path"] = Path(argv[argv.index("-r") + 1])
            raise subprocess.TimeoutExpired(cmd=argv, timeout=1)

        run.side_effect = fake_run
        _install_requirements_from_cache_sync(W)
        assert not seen["path"].exists()

    def test_log_line_counts_requirements_not_comments(self, from_url, run, caplog):
        content = "# pinned by ops\nalpha==1.0\n\nbeta>=2  # why\n"
        from_url.return_value = _client(_cached(content))
        with caplog.at_level(logging.INFO):
            outcome = _install_requirements_from_cache_sync(W)
        assert f"[{W}] Installing packages from cached requirements.txt" in caplog.text
        assert f"[{W}] Installed 2 packages from requirements.txt" in caplog.text
        assert outcome["ok"] is True and outcome["failed"] == []


# === 3. run_worker_process ========================================================

WF = "tests.support.sample_workflows"


def _item(item_id, function, **parameters):
    return {"id": item_id, "module": WF, "function": function, "parameters": parameters}


def _results(result_queue):
    """The worker's messages, with each result's JSON payload (what the
    execution's own process encoded) read back into its fields."""
    messages = []
    while not result_queue.empty():
        message = result_queue.get_nowait()
        if message["type"] == "result":
            message = {**message, **decode_outcome(message["payload"])}
        messages.append(message)
    return [m for m in messages if m["type"] == "result"], messages


@pytest.fixture
def no_install():
    outcome = {"ok": True, "skipped": True, "installed": [], "failed": [],
               "duration_ms": 0, "requirements_hash": None}
    with patch.object(simple_worker, "_install_requirements_from_cache_sync",
                      return_value=outcome) as install:
        yield install


class TestRunWorkerProcess:
    def test_install_then_hook_then_first_item(self):
        order = []
        work = MagicMock()
        work.get.side_effect = lambda *a, **k: order.append("get") or None
        with patch.object(simple_worker, "_install_requirements_from_cache_sync",
                          side_effect=lambda w: order.append("install")), \
             patch("src.services.execution.virtual_import.install_virtual_import_hook",
                   side_effect=lambda: order.append("hook")):
            run_worker_process(work, queue.Queue(), W)
        assert order == ["install", "hook", "get"]

    def test_packages_dir_is_on_sys_path_before_install(self, monkeypatch):
        seen = {}
        monkeypatch.setattr("sys.path", list(__import__("sys").path))
        work = queue.Queue()
        work.put(None)

        def install(worker_id):
            seen["on_path"] = str(simple_worker.get_settings().packages_dir) in __import__("sys").path
            seen["last"] = __import__("sys").path[-1]

        with patch.object(simple_worker, "_install_requirements_from_cache_sync", side_effect=install):
            run_worker_process(work, queue.Queue(), W)
        assert seen["on_path"] is True
        # after the platform's own entries: user packages never shadow the platform
        assert seen["last"] == str(simple_worker.get_settings().packages_dir)

    def test_several_items_then_sentinel(self, no_install):
        work, results = queue.Queue(), queue.Queue()
        for i in range(3):
            work.put(_item(f"e{i}", "add", a=i, b=10))
        work.put(_item("e3", "async_add", a=1, b=2))
        work.put(None)
        work.put(_item("never", "add", a=0, b=0))
        run_worker_process(work, results, W)
        done, messages = _results(results)
        assert [m["type"] for m in messages[:2]] == ["installing", "ready"]
        assert messages[1]["worker_id"] == W
        assert [(r["id"], r["status"], r["result"]) for r in done] == [
            ("e0", "Success", 10), ("e1", "Success", 11), ("e2", "Success", 12),
            ("e3", "Success", 3),
        ]
        assert all(r["worker_id"] == W and r["duration_ms"] >= 0 for r in done)
        assert work.get_nowait()["id"] == "never"  # nothing after the sentinel was taken

    def test_failing_item_gives_failed_result_and_loop_goes_on(self, no_install):
        work, results = queue.Queue(), queue.Queue()
        for item in (_item("a", "boom"), _item("b", "exit_now"), _item("c", "not_json"),
                     {"id": "d", "module": "no_such_module_xyz", "function": "f",
                      "parameters": {}},
                     _item("e", "add", a=2, b=2)):
            work.put(item)
        work.put(None)
        run_worker_process(work, results, W)
        done, _ = _results(results)
        by_id = {r["id"]: r for r in done}
        assert by_id["a"]["status"] == "Failed" and by_id["a"]["error"] == "ValueError: boom"
        assert by_id["b"]["status"] == "Failed" and by_id["b"]["error"].startswith("SystemExit")
        assert by_id["c"]["status"] == "Failed" and "TypeError" in by_id["c"]["error"]
        assert by_id["d"]["error"].startswith("ModuleNotFoundError")
        assert by_id["e"]["status"] == "Success" and by_id["e"]["result"] == 4

    def test_ready_message_carries_the_install_outcome(self, no_install):
        work, results = queue.Queue(), queue.Queue()
        work.put(None)
        run_worker_process(work, results, W)
        _, messages = _results(results)
        assert messages[1]["install"] == no_install.return_value
        assert messages[1]["pid"] == __import__("os").getpid()


def test_user_code_sees_no_admin_token_or_database_url(no_install, monkeypatch):
    monkeypatch.setenv("BIFROST_ADMIN_TOKEN", "secret-token")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw@db/x")
    simple_worker.get_settings.cache_clear()
    work, results = queue.Queue(), queue.Queue()
    work.put({"id": "env", "module": "os", "function": "getenv",
              "parameters": {"key": "BIFROST_ADMIN_TOKEN"}})
    work.put({"id": "db", "module": "os", "function": "getenv",
              "parameters": {"key": "DATABASE_URL"}})
    work.put(None)
    run_worker_process(work, results, W)
    done, _ = _results(results)
    assert [(r["id"], r["result"]) for r in done] == [("env", None), ("db", None)]
    # once started, the worker forgets where the store is: executions are forked
    # from it, and must not find the store's URL in its settings
    assert simple_worker.get_settings().database_url is None
