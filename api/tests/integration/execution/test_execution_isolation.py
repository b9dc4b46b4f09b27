"""Executions that cannot hurt the fleet: real pools, real worker processes,
workflows written as a careless or hostile user would write them."""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from src.core import module_cache
from src.services.execution import executions, registry
from tests.support.exchange import CLIENT_SOURCE, Exchange
from tests.support.pools import running_pool
from tests.support.waiting import wait_for

HOSTILE = textwrap.dedent('''
    import enum, json, math, os, signal, subprocess, sys, time
    from collections import defaultdict

    class Color(enum.Enum):
        RED = "red"

    def enum_result():
        return {"color": Color.RED, "tags": {"b", "a"}, "pair": (1, 2)}

    def nested_defaultdict():
        counts = defaultdict(lambda: defaultdict(int))
        counts["a"]["b"] += 2
        return counts

    def local_class():
        class Thing:
            pass
        return Thing()

    def not_a_number():
        return {"mean": math.nan, "top": math.inf, "ok": 1.5}

    def huge(megabytes):
        return "x" * (megabytes * 1024 * 1024)

    def flood(megabytes):
        line = "y" * 1023 + "\\n"
        for _ in range(megabytes * 1024):
            sys.stdout.write(line)
        print("the last line", flush=True)
        print("a warning", file=sys.stderr)
        os.write(2, b"raw bytes on fd 2\\n")
        return "flooded"

    def depth(value):
        n = 0
        while isinstance(value, dict) and value:
            value = value["d"]
            n += 1
        return n

    def patch_json():
        json.dumps = lambda *a, **k: '"patched"'
        os.environ["LEAKED"] = "yes"
        return "patched"

    def read_global():
        return {"dumps_patched": json.dumps([1]) == '"patched"',
                "env": os.environ.get("LEAKED")}

    def spawn_and_hang(pidfile):
        child = subprocess.Popen(["sleep", "300"])
        exchange_append(pidfile, str(child.pid))
        time.sleep(300)

    def leave_zombies(count):
        for _ in range(count):
            if os.fork() == 0:
                os._exit(0)
        return os.getpid()

    def escape_session(pidfile):
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                exchange_append(pidfile, str(os.getpid()))
                time.sleep(300)
            os._exit(0)
        deadline = time.monotonic() + 60
        while not exchange_exists(pidfile) and time.monotonic() < deadline:
            time.sleep(0.01)
        return "escaped"

    def slow(seconds):
        time.sleep(seconds)
        return "done"

    def allocate(megabytes):
        block = bytearray(megabytes * 1024 * 1024)
        return len(block)

    class Sneaky(Exception):
        def __str__(self):
            raise RuntimeError("no message for you")

    def raise_sneaky():
        raise Sneaky()

    def scribble_on_pipes():
        for name in os.listdir("/proc/self/fd"):
            try:
                os.write(int(name), b"\\x80garbage")
            except OSError:
                pass
        return "scribbled"

    def kill_parent():
        os.kill(os.getppid(), signal.SIGKILL)
        return "tried"
''')


@pytest.fixture
def pool_env(sqlite_system: str, redis_url: str, isolated_settings: Path) -> dict[str, str]:
    module_cache.save_file_sync("flows/hostile.py", HOSTILE + CLIENT_SOURCE)
    return {"REDIS_URL": redis_url, "DATABASE_URL": sqlite_system,
            "BIFROST_DATA_DIR": str(isolated_settings),
            "BIFROST_EXECUTION_MEMORY_MB": "256", "BIFROST_MAX_RESULT_BYTES": "1048576",
            "BIFROST_EXECUTION_OUTPUT_BYTES": "4096"}


@pytest.fixture
def pool(pool_env: dict[str, str], redis_client: redis.Redis, tmp_path: Path) -> Iterator[Path]:
    log = tmp_path / "pool.log"
    with running_pool(pool_env, workers=2, log_path=log):
        wait_for(lambda: _idle(redis_client) == 2, 60, what="2 idle workers")
        yield log


def _workers(client: redis.Redis) -> list[registry.WorkerState]:
    return [w for p in registry.list_pools(client) for w in p["workers"]]


def _idle(client: redis.Redis) -> int:
    return sum(1 for w in _workers(client) if w["status"] == "idle")


def _run(client: redis.Redis, function: str, timeout: float | None = None,
         wait: float = 60, **parameters: object) -> executions.ExecutionRecord:
    execution_id = executions.enqueue_execution("flows.hostile", function, parameters, client,
                                                timeout=timeout)
    return _final(client, execution_id, wait)


def _final(client: redis.Redis, execution_id: str, wait: float = 60) -> executions.ExecutionRecord:
    def ended() -> executions.ExecutionRecord | None:
        record = executions.get_execution(execution_id, client)
        return record if record and record["status"] in executions.FINAL_STATUSES else None

    return wait_for(ended, wait, what=f"execution {execution_id} to end")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return found


def test_results_with_no_plain_json_form_come_back_converted(
    pool: Path, redis_client: redis.Redis
) -> None:
    record = _run(redis_client, "enum_result")
    assert record["status"] == "Success", record
    assert record["result"] == {"color": "red", "tags": ["a", "b"], "pair": [1, 2]}
    assert _run(redis_client, "nested_defaultdict")["result"] == {"a": {"b": 2}}
    nan = _run(redis_client, "not_a_number")
    assert nan["status"] == "Success" and nan["result"] == {"mean": None, "top": None, "ok": 1.5}
    assert any("NaN" in note for note in nan["notes"]) and any("Infinity" in n for n in nan["notes"])


def test_a_result_without_json_form_fails_naming_its_type_and_the_pool_lives(
    pool: Path, redis_client: redis.Redis
) -> None:
    record = _run(redis_client, "local_class")
    assert record["status"] == "Failed"
    assert "local_class.<locals>.Thing" in record["error"], record["error"]
    sneaky = _run(redis_client, "raise_sneaky")
    assert sneaky["status"] == "Failed" and sneaky["error"].startswith("Sneaky: <the message")
    scribbled = _run(redis_client, "scribble_on_pipes")  # its result pipe and workspace socket
    assert scribbled["status"] == "Failed", scribbled
    assert scribbled["error"].startswith(("ResultUnreadable", "WorkspaceRequestRefused")), \
        scribbled["error"]
    assert _run(redis_client, "slow", seconds=0)["result"] == "done"
    assert len(registry.list_pools(redis_client)) == 1


def test_an_oversized_result_fails_with_its_size_and_later_ones_are_saved(
    pool: Path, redis_client: redis.Redis
) -> None:
    record = _run(redis_client, "huge", megabytes=3)
    assert record["status"] == "Failed"
    assert "ResultTooLarge" in record["error"] and "1048576" in record["error"]
    assert _run(redis_client, "slow", seconds=0)["result"] == "done"


def test_a_result_redis_refuses_is_failed_and_does_not_block_the_ones_behind(
    pool_env: dict[str, str], redis_client: redis.Redis, tmp_path: Path
) -> None:
    env = {**pool_env, "BIFROST_MAX_RESULT_BYTES": str(4 * 1024 * 1024)}
    before = redis_client.config_get("proto-max-bulk-len")["proto-max-bulk-len"]
    with running_pool(env, workers=2, log_path=tmp_path / "pool.log"):
        wait_for(lambda: _idle(redis_client) == 2, 60, what="2 idle workers")
        redis_client.config_set("proto-max-bulk-len", 1024 * 1024)  # the smallest Redis allows
        try:
            refused = _run(redis_client, "huge", megabytes=2)  # under our limit, over Redis's
            behind = [executions.enqueue_execution("flows.hostile", "slow", {"seconds": 0},
                                                   redis_client) for _ in range(5)]
            records = [_final(redis_client, i) for i in behind]
        finally:
            redis_client.config_set("proto-max-bulk-len", before)
    assert refused["status"] == "Failed" and "ResultNotSaved" in refused["error"], refused
    assert [r["result"] for r in records] == ["done"] * 5
    assert redis_client.xlen(executions.STREAM_KEY) == 0


def test_deeply_nested_parameters_reach_the_function(
    pool: Path, redis_client: redis.Redis
) -> None:
    value: dict[str, object] = {}
    for _ in range(500):
        value = {"d": value}
    record = _run(redis_client, "depth", value=value)
    assert record["status"] == "Success" and record["result"] == 500


def test_executions_do_not_share_an_interpreter(pool: Path, redis_client: redis.Redis) -> None:
    assert _run(redis_client, "patch_json")["result"] == "patched"
    for _ in range(4):  # whichever worker runs it
        assert _run(redis_client, "read_global")["result"] == {"dumps_patched": False,
                                                               "env": None}


def test_a_timeout_kills_the_whole_process_group(pool: Path, redis_client: redis.Redis,
                                                 exchange: Exchange) -> None:
    pidfile = exchange / "sleep.pid"
    # Long enough for the workflow to start its subprocess before the timeout
    # on a busy machine too (a timeout that came first would leave no pidfile).
    record = _run(redis_client, "spawn_and_hang", timeout=5, pidfile=str(pidfile))
    assert record["status"] == "Timeout" and "exceeded 5 s" in record["error"], record
    sleeper = int(pidfile.read_text())
    wait_for(lambda: not _alive(sleeper), 60, what="the workflow's subprocess to die")
    # the worker itself survived the timeout, and is idle again
    wait_for(lambda: _idle(redis_client) == 2, 60, what="both workers idle")


def test_zombies_and_escaped_sessions_are_reaped(pool: Path, redis_client: redis.Redis,
                                                 exchange: Exchange) -> None:
    record = _run(redis_client, "leave_zombies", count=5)
    assert record["status"] == "Success"
    pidfile = exchange / "escaped.pid"
    assert _run(redis_client, "escape_session", pidfile=str(pidfile))["result"] == "escaped"
    escaped = int(pidfile.read_text())
    wait_for(lambda: not _alive(escaped), 30, what="the escaped process to be killed")
    workers = [w["pid"] for w in _workers(redis_client) if w["pid"]]
    # under each worker, nothing but the one child it keeps ready for the next
    # execution: no zombie, nothing the executions left
    wait_for(lambda: all(len(kids := _children_of(pid)) <= 1 and all(_alive(k) for k in kids)
                         for pid in workers), 30, what="no process left under any worker")


def test_cancel_a_running_and_a_pending_execution(pool: Path, redis_client: redis.Redis) -> None:
    running = [executions.enqueue_execution("flows.hostile", "slow", {"seconds": 300},
                                            redis_client) for _ in range(2)]
    wait_for(lambda: all(executions.get_execution(i, redis_client)["status"] == "Running"
                         for i in running), 60, what="both running")
    pending = executions.enqueue_execution("flows.hostile", "slow", {"seconds": 0}, redis_client)
    assert executions.cancel_execution(pending, redis_client) == "Pending"
    assert executions.cancel_execution(running[0], redis_client) == "Running"
    record = _final(redis_client, running[0], wait=60)
    assert record["status"] == "Failed" and record["error"].startswith("Cancelled")
    assert record["duration_ms"] < 60_000  # cut short: the workflow sleeps 300 s
    executions.cancel_execution(running[1], redis_client)
    _final(redis_client, running[1], wait=60)
    assert executions.get_execution(pending, redis_client)["status"] == "Failed"
    with pytest.raises(executions.ExecutionFinished):
        executions.cancel_execution(pending, redis_client)
    # the cancelled pending one never ran; the workers go on
    assert _run(redis_client, "slow", seconds=0)["result"] == "done"
    assert executions.get_execution(pending, redis_client)["worker_id"] is None


def test_memory_over_the_bound_fails_with_the_reason(pool: Path, redis_client: redis.Redis) -> None:
    record = _run(redis_client, "allocate", megabytes=1024)
    assert record["status"] == "Failed"
    assert "memory limit of 256 MB" in record["error"], record["error"]
    assert _run(redis_client, "allocate", megabytes=16)["result"] == 16 * 1024 * 1024


def test_user_code_cannot_kill_its_worker(pool: Path, redis_client: redis.Redis) -> None:
    before = {w["worker_id"] for w in _workers(redis_client)}
    record = _run(redis_client, "kill_parent")
    assert record["status"] in ("Success", "Failed")
    assert _run(redis_client, "slow", seconds=0)["result"] == "done"
    assert {w["worker_id"] for w in _workers(redis_client)} == before


def test_the_queue_refuses_rather_than_drops(
    sqlite_system: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from src.foundation.settings import get_settings

    monkeypatch.setenv("BIFROST_MAX_QUEUED_EXECUTIONS", "5")
    get_settings.cache_clear()
    ids = [executions.enqueue_execution("m", "f", {}, redis_client) for _ in range(5)]
    with pytest.raises(executions.QueueFull) as refused:
        executions.enqueue_execution("m", "f", {}, redis_client)
    assert refused.value.retry_after > 0
    entries = redis_client.xrange(executions.STREAM_KEY)
    assert [fields["id"] for _, fields in entries] == ids  # nothing trimmed
    assert json.loads(entries[0][1]["parameters"]) == {}


def test_the_queue_limit_counts_what_waits_not_what_runs(
    sqlite_system: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Executions a pool has taken (running, delivered to its consumer and not
    yet acknowledged) leave room for as many new ones."""
    from src.foundation.settings import get_settings

    monkeypatch.setenv("BIFROST_MAX_QUEUED_EXECUTIONS", "3")
    get_settings.cache_clear()
    redis_client.xgroup_create(executions.STREAM_KEY, executions.GROUP, id="0", mkstream=True)
    for _ in range(3):
        executions.enqueue_execution("m", "f", {}, redis_client)
    with pytest.raises(executions.QueueFull):
        executions.enqueue_execution("m", "f", {}, redis_client)
    # A pool takes two (as its stream consumer reads them): two places free up.
    taken = redis_client.xreadgroup(executions.GROUP, "pool-x", {executions.STREAM_KEY: ">"},
                                    count=2)
    assert len(taken[0][1]) == 2
    assert executions.waiting_executions(redis_client) == 1
    for _ in range(2):
        executions.enqueue_execution("m", "f", {}, redis_client)
    with pytest.raises(executions.QueueFull) as refused:
        executions.enqueue_execution("m", "f", {}, redis_client)
    assert "3" in str(refused.value)


def test_output_is_captured_per_stream_bounded_and_kept_out_of_the_log(
    pool: Path, redis_client: redis.Redis
) -> None:
    record = _run(redis_client, "flood", megabytes=50)
    assert record["status"] == "Success" and record["result"] == "flooded", record.get("error")
    stdout, stderr = record.get("stdout", ""), record.get("stderr", "")
    # The last 4 KiB of each stream, saying how much came before.
    assert stdout.endswith("the last line\n"), stdout[-200:]
    head, _, kept = stdout.partition("]\n")
    assert head.startswith("[") and int(head[1:].split()[0]) > 50 * 1024 * 1024 - 4096, head
    assert len(kept.encode()) == 4096
    assert stderr == "a warning\nraw bytes on fd 2\n"
    # None of it in the platform's log (the pool's and its workers' output).
    log = pool.read_text(errors="replace")
    assert "y" * 1023 not in log and "the last line" not in log and "a warning" not in log
    assert _run(redis_client, "slow", seconds=0)["result"] == "done"  # the worker goes on
