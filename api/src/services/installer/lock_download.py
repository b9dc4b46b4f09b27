"""Downloading a lock's files from the operator's index, in a process of its
own (`lock_fetch.download` starts it): unearth finds, for each pin, the file
that suits this interpreter among those with the lock's sha256 (the
operator's index and find-links, as the installers read them), and the files
are downloaded side by side, each checked against the lock's sha256.

Run as `python -m src.services.installer.lock_download`, a JSON spec on
stdin: `{"dest", "seconds", "pins": [{"pin", "sha256": [hex]}]}`; it prints
`{"fetched": [{"pin", "file"}], "problems": [str]}`.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from src.services.installer.commands import index_sources

# Files downloaded side by side (the index serves them; the disk takes them).
DOWNLOADS_AT_ONCE = 8
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+!-]*$")


def main() -> int:
    spec = json.load(sys.stdin)
    dest, deadline = Path(spec["dest"]), time.monotonic() + float(spec["seconds"])
    pins = [(str(item["pin"]), {str(h) for h in item["sha256"]}) for item in spec["pins"]]
    fetched, problems = download(pins, dest, deadline)
    json.dump({"fetched": fetched, "problems": problems}, sys.stdout)
    return 0


def download(pins: list[tuple[str, set[str]]], dest: Path, deadline: float
             ) -> tuple[list[dict[str, str]], list[str]]:
    from unearth import PackageFinder

    sources = index_sources()
    finder = PackageFinder(index_urls=sources.index_urls, find_links=sources.find_links)
    found: list[tuple[str, set[str], Any]] = []
    problems: list[str] = []
    for pin, hashes in pins:  # one page per project; the finder is not shared by threads
        try:
            match = finder.find_best_match(pin, hashes={"sha256": sorted(hashes)})
        except Exception as exc:
            problems.append(f"{pin}: {type(exc).__name__}: {exc}"[:300])
            continue
        if match.best is None or match.best.link is None:
            problems.append(f"{pin}: no file with the lock's sha256 suits this host")
            continue
        found.append((pin, hashes, match.best.link))

    def fetch(item: tuple[str, set[str], Any]) -> tuple[str, str | None, str]:
        pin, hashes, link = item
        try:
            return pin, _fetch(finder, link, hashes, dest, deadline), ""
        except Exception as exc:
            return pin, None, f"{pin}: {type(exc).__name__}: {exc}"[:300]

    fetched: list[dict[str, str]] = []
    with ThreadPoolExecutor(max_workers=max(1, min(DOWNLOADS_AT_ONCE, len(found)))) as pool:
        for pin, name, problem in pool.map(fetch, found):
            if name is not None:
                fetched.append({"pin": pin, "file": name})
            else:
                problems.append(problem)
    return fetched, problems


def _fetch(finder: Any, link: Any, hashes: set[str], dest: Path, deadline: float) -> str:
    """The file at `link` into `dest`, whole and checked; its name."""
    name = str(link.filename)
    if not _SAFE_NAME.match(name):
        raise ValueError(f"the index names a file {name[:80]!r}")
    target = dest / name
    digest = hashlib.sha256()
    with open(target, "wb") as out:
        if link.is_file:
            data = Path(link.file_path).read_bytes()
            digest.update(data)
            out.write(data)
        else:
            timeout = max(deadline - time.monotonic(), 1.0)
            with finder.session.stream("GET", link.normalized, timeout=timeout) as response:
                response.raise_for_status()
                for chunk in response.iter_bytes():
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() not in hashes:
        target.unlink()
        raise ValueError(f"the index gave {name} with sha256 {digest.hexdigest()[:12]}, "
                         "which the lock does not name")
    return name


if __name__ == "__main__":
    sys.exit(main())
