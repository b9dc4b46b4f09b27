"""The lock: its text, read back; what removing a line leaves; its digest."""

from __future__ import annotations

import pytest

from src.foundation.locks import DIRECT, InvalidLock, Lock, LockedPackage

HASH_A = "sha256:" + "a" * 64
HASH_B = "sha256:" + "b" * 64


def _lock(*packages: LockedPackage, requirements_hash: str = "1a2b3c") -> Lock:
    return Lock.of(requirements_hash, packages)


# humanize (a line) and python-dateutil (a line) -> six; six is shared.
SAMPLE = _lock(
    LockedPackage("six", "1.16.0", (HASH_A,), ("humanize", "python-dateutil")),
    LockedPackage("humanize", "4.9.0", (HASH_A, HASH_B), (DIRECT,)),
    LockedPackage("python-dateutil", "2.9.0", (), (DIRECT,)),
)


def test_packages_are_sorted_by_canonical_name() -> None:
    lock = _lock(LockedPackage("Zope_Thing", "1"), LockedPackage("alpha", "2"),
                 LockedPackage("Beta", "3"))
    assert [p.name for p in lock.packages] == ["alpha", "Beta", "Zope_Thing"]


def test_text_is_a_requirements_file_with_a_header() -> None:
    text = SAMPLE.text()
    assert text.splitlines() == [
        "# Locked by Bifrost: the exact versions of requirements 1a2b3c, do not edit",
        f"humanize==4.9.0 --hash={HASH_A} --hash={HASH_B}  # via requirements.txt",
        "python-dateutil==2.9.0  # via requirements.txt",
        f"six==1.16.0 --hash={HASH_A}  # via humanize, python-dateutil",
    ]
    assert text.endswith("\n")


@pytest.mark.parametrize("lock", [
    SAMPLE,
    _lock(),
    _lock(LockedPackage("Foo.Bar", "1.0rc1")),  # no hashes, no via
    _lock(LockedPackage("x", "1!2.0.post3", (HASH_B,), ("a", "b", DIRECT))),
])
def test_text_reads_back_as_the_same_lock(lock: Lock) -> None:
    again = Lock.parse(lock.text())
    assert again == lock
    assert again.text() == lock.text()


def test_pins_and_find() -> None:
    assert SAMPLE.pins() == ["humanize==4.9.0", "python-dateutil==2.9.0", "six==1.16.0"]
    found = SAMPLE.find("Python_Dateutil")
    assert found is not None and found.version == "2.9.0"
    assert SAMPLE.find("requests") is None


@pytest.mark.parametrize("text, says", [
    ("", "no header"),
    ("six==1.16.0\n", "no header"),
    ("# Locked by Bifrost\nsix==1.16.0\n", "no requirements hash"),
    ("# Locked by Bifrost: the exact versions of requirements , do not edit\n",
     "no requirements hash"),
])
def test_a_text_without_its_header_is_refused(text: str, says: str) -> None:
    with pytest.raises(InvalidLock, match=says):
        Lock.parse(text)


HEADER = "# Locked by Bifrost: the exact versions of requirements 1a2b3c, do not edit\n"


@pytest.mark.parametrize("line, says", [
    ("six>=1.16", "not an exact pin"),
    ("six", "not an exact pin"),
    ("six==1.*", "not an exact pin"),
    ("six==1.16,<2", "not an exact pin"),
    ("six[extra]==1.16", "not an exact pin"),
    ("six==1.16;python_version<'3'", "not an exact pin"),
    ("six @ https://example.org/six.whl", "not an exact pin"),
    ("six==1.16 --index-url=https://evil.example", "unexpected"),
    ("six==1.16 --hash=", "not a hash"),
    ("six==1.16 --hash=sha256:XYZ", "not a hash"),
    ("six==1.16 # via requirements.txt", "unexpected"),
    ("# a comment", "line 2"),
    ("===", "line 2"),
])
def test_a_line_that_is_no_exact_pin_is_refused(line: str, says: str) -> None:
    with pytest.raises(InvalidLock, match=says):
        Lock.parse(HEADER + line + "\n")


def test_a_package_locked_twice_is_refused() -> None:
    with pytest.raises(InvalidLock, match="twice"):
        Lock.parse(HEADER + "six==1.16.0\nSix==1.15.0\n")


def test_blank_lines_are_ignored() -> None:
    assert Lock.parse(HEADER + "\nsix==1.16.0\n\n").pins() == ["six==1.16.0"]


def test_without_a_line_drops_what_only_it_brought_in() -> None:
    lock = _lock(
        LockedPackage("app", "1", (), (DIRECT,)),
        LockedPackage("lib", "1", (), ("app",)),
        LockedPackage("deep", "1", (), ("lib",)),
        LockedPackage("other", "1", (), (DIRECT,)),
    )
    after = lock.without("App", "new-hash")
    assert after.requirements_hash == "new-hash"
    assert after.pins() == ["other==1"]


def test_without_keeps_a_shared_dependency_for_the_lines_left() -> None:
    after = SAMPLE.without("humanize", "h2")
    assert after.pins() == ["python-dateutil==2.9.0", "six==1.16.0"]
    six = after.find("six")
    assert six is not None and six.via == ("python-dateutil",) and six.hashes == (HASH_A,)


def test_without_keeps_the_package_when_a_remaining_line_needs_it() -> None:
    lock = _lock(
        LockedPackage("lib", "1", (), (DIRECT, "app")),
        LockedPackage("app", "1", (), (DIRECT,)),
    )
    after = lock.without("lib", "h2")
    assert after.pins() == ["app==1", "lib==1"]
    lib = after.find("lib")
    assert lib is not None and lib.via == ("app",)  # no longer a line of its own


def test_without_follows_a_cycle_and_ends() -> None:
    lock = _lock(
        LockedPackage("a", "1", (), (DIRECT, "b")),
        LockedPackage("b", "1", (), ("a",)),
        LockedPackage("c", "1", (), (DIRECT,)),
    )
    assert lock.without("a", "h2").pins() == ["c==1"]
    # ... and a cycle still needed by a line stays whole
    lock = _lock(
        LockedPackage("a", "1", (), (DIRECT, "b")),
        LockedPackage("b", "1", (), ("a", "c")),
        LockedPackage("c", "1", (), (DIRECT,)),
    )
    assert lock.without("a", "h2").pins() == ["a==1", "b==1", "c==1"]


def test_without_keeps_what_has_no_record_and_matches_via_names_loosely() -> None:
    lock = _lock(
        LockedPackage("app", "1", (), (DIRECT,)),
        LockedPackage("mystery", "1"),  # no via: nothing says what needs it
        LockedPackage("Zope_Dep", "1", (), ("Other_App",)),
        LockedPackage("other-app", "1", (), (DIRECT,)),
    )
    after = lock.without("app", "h2")
    assert after.pins() == ["mystery==1", "other-app==1", "Zope_Dep==1"]
    mystery = after.find("mystery")
    assert mystery is not None and mystery.via == ()


def test_without_a_name_not_locked_changes_only_the_hash() -> None:
    after = SAMPLE.without("requests", "h2")
    assert after.packages == SAMPLE.packages and after.requirements_hash == "h2"


def test_digest_is_stable() -> None:
    reordered = Lock.of(SAMPLE.requirements_hash, reversed(SAMPLE.packages))
    assert reordered.digest() == SAMPLE.digest()
    assert Lock.parse(SAMPLE.text()).digest() == SAMPLE.digest()
    assert len(SAMPLE.digest()) == 64
    moved = _lock(*[LockedPackage(p.name, "9" if p.name == "six" else p.version, p.hashes, p.via)
                    for p in SAMPLE.packages])
    assert moved.digest() != SAMPLE.digest()
    rehashed = _lock(*[LockedPackage(p.name, p.version, (HASH_B,), p.via)
                       for p in SAMPLE.packages])
    assert rehashed.digest() != SAMPLE.digest()
