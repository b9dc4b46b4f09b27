"""What a workflow under test uses to reach the test's exchange (`exchange.py`):
plain `urllib`, so e2e tests can paste this file's text into the workflows
they upload. An execution writes only in its own scratch dir and its own
/dev/shm, which the test cannot see; the loopback is the way out."""

import urllib.error
import urllib.request


def exchange_touch(url: str) -> None:
    """Create the exchange file `url` (empty) if it is not there."""
    urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=30)


def exchange_append(url: str, text: str) -> None:
    urllib.request.urlopen(urllib.request.Request(url, data=text.encode(), method="POST"),
                           timeout=30)


def exchange_exists(url: str) -> bool:
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=30)
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return False
        raise
    return True
