"""The confinement's policy: rights per Landlock ABI, structs, what is granted.

What a confined process can and cannot do is tested with real forks in
tests/integration/execution/test_sandbox.py.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
from pathlib import Path

import pytest

from src.confinement import landlock, sandbox, sandbox_grants
from src.confinement.landlock import (
    READ,
    WRITE,
    handled_fs_rights,
    handled_scopes,
    landlock_abi,
)
from src.confinement.sandbox import Confinement
from src.confinement.sandbox_grants import DEV, Grant, plan_grants

ABI = landlock_abi()
needs_landlock = pytest.mark.skipif(ABI == 0, reason="this kernel has no Landlock")
WRITE_BITS = WRITE & ~READ


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """tmp/a/data (the data dir, with the packages dir inside) beside tmp/a/other,
    tmp/a/file and tmp/b."""
    data = tmp_path / "a" / "data"
    packages = data / "site-packages"
    packages.mkdir(parents=True)
    (data / "admin-token").write_text("secret\n")
    (tmp_path / "a" / "other").mkdir()
    (tmp_path / "a" / "file").write_text("x")
    (tmp_path / "b").mkdir()
    return {"root": tmp_path, "data": data, "packages": packages}


def test_structs_have_the_kernel_layout() -> None:
    # struct landlock_path_beneath_attr is packed: __u64 then __s32, 12 bytes.
    assert ctypes.sizeof(landlock._PathBeneathAttr) == 12
    assert landlock._PathBeneathAttr.parent_fd.offset == 8
    # struct landlock_ruleset_attr: three __u64, passed as far as the ABI knows it.
    assert ctypes.sizeof(landlock._RulesetAttr) == 24
    sizes = [landlock._ruleset_attr_size(abi) for abi in range(1, 9)]
    assert sizes == [8, 8, 8, 16, 16, 24, 24, 24]


def test_handled_rights_follow_the_abi() -> None:
    assert handled_fs_rights(0) == 0
    assert handled_fs_rights(1) == 0x1FFF  # EXECUTE .. MAKE_SYM
    assert handled_fs_rights(2) == 0x3FFF  # + REFER
    assert handled_fs_rights(3) == handled_fs_rights(4) == 0x7FFF  # + TRUNCATE; 4 adds net only
    assert handled_fs_rights(5) == handled_fs_rights(7) == 0xFFFF  # + IOCTL_DEV
    assert handled_scopes(5) == 0
    assert handled_scopes(6) == handled_scopes(7) == 0b11  # abstract UNIX sockets, signals


@needs_landlock
def test_the_running_kernel_takes_exactly_the_rights_we_name() -> None:
    """Every right handled for this ABI is accepted; for the ABIs this module
    knows (up to 7), the next bit up is refused: the constants match the kernel."""
    def create(fs: int, scoped: int) -> int:
        attr = landlock._RulesetAttr(handled_access_fs=fs, handled_access_net=0, scoped=scoped)
        fd = int(landlock._sys_create_ruleset(landlock._SYS_LANDLOCK_CREATE_RULESET,
                                             ctypes.addressof(attr),
                                             landlock._ruleset_attr_size(ABI), 0))
        if fd < 0:
            return -ctypes.get_errno()
        os.close(fd)
        return 0

    fs, scopes = handled_fs_rights(ABI), handled_scopes(ABI)
    assert create(fs, scopes) == 0
    if ABI <= 7:
        assert create(fs | (fs + 1), scopes) == -errno.EINVAL
        if ABI >= 6:
            assert create(fs, scopes | (scopes + 1)) == -errno.EINVAL


def test_every_sibling_on_the_way_is_granted_but_the_data_dir(tree: dict[str, Path]) -> None:
    grants = plan_grants(tree["data"], tree["packages"])
    granted = {grant.path: grant.access for grant in grants}
    root = tree["root"]
    for path in (root / "b", root / "a" / "other", root / "a" / "file"):
        assert granted[path] == READ
    assert granted[tree["packages"]] == READ  # read and import, never write
    for path in granted:
        assert not (path == tree["data"] or tree["data"] in path.parents) or \
            path == tree["packages"], path
        # No rule on the way to the data dir: it would reach everything beneath.
        assert path not in tree["data"].parents, path
    # Every entry of / but the one leading to the data dir, /dev apart.
    top = {Path("/") / name for name in os.listdir("/")} - {DEV, Path("/", tree["data"].parts[1])}
    assert top <= set(granted)


@pytest.mark.parametrize("shm", [False, True], ids=["machine's /dev/shm", "private /dev/shm"])
def test_only_the_harmless_devices_and_dev_shm_only_when_private(
        tree: dict[str, Path], shm: bool) -> None:
    granted = {grant.path: grant.access
               for grant in plan_grants(tree["data"], tree["packages"], shm=shm)}
    devices = {path for path in granted if path == DEV or DEV in path.parents}
    safe = {DEV / name for name in sandbox_grants.SAFE_DEVICES}
    assert devices == {DEV, DEV / "pts"} | safe | ({DEV / "shm"} if shm else set())
    assert granted[DEV] == landlock.ACCESS_FS_READ_DIR  # names only: no disk is readable
    if shm:
        assert granted[DEV / "shm"] == WRITE
    writable = {path for path, access in granted.items() if access & WRITE_BITS}
    assert writable <= devices


def test_hidden_dirs_are_left_out_like_the_data_dir(tree: dict[str, Path]) -> None:
    hidden = tree["root"] / "a" / "other"
    granted = {grant.path for grant in plan_grants(tree["data"], tree["packages"], [hidden])}
    assert hidden not in granted
    assert tree["root"] / "a" / "file" in granted


def test_a_packages_dir_outside_the_data_dir_is_granted_read_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    packages = tmp_path / "packages"
    packages.mkdir()
    grants = plan_grants(data, packages)
    assert Grant(packages, READ) in grants


def test_a_data_dir_not_made_yet_is_hidden_all_the_same(tmp_path: Path) -> None:
    data = tmp_path / "later" / "data"
    granted = {grant.path for grant in plan_grants(data, data / "site-packages")}
    assert tmp_path / "later" not in granted
    assert not any(path == tmp_path or path in tmp_path.parents for path in granted)


def test_the_data_dir_cannot_be_the_root() -> None:
    with pytest.raises(ValueError):
        plan_grants(Path("/"), Path("/site-packages"))


@needs_landlock
def test_links_into_the_data_dir_or_above_it_get_no_rule(tree: dict[str, Path]) -> None:
    a = tree["root"] / "a"
    (a / "to-data").symlink_to(tree["data"])
    (a / "to-token").symlink_to(tree["data"] / "admin-token")
    (a / "to-parent").symlink_to(tree["root"])
    (a / "to-packages").symlink_to(tree["packages"])
    confinement = Confinement(tree["data"], tree["packages"])
    try:
        granted = {grant.path for grant in confinement.granted}
        assert a / "to-data" not in granted
        assert a / "to-token" not in granted
        assert a / "to-parent" not in granted
        assert a / "to-packages" in granted  # what it leads to is granted anyway
        assert a / "other" in granted
    finally:
        confinement.close()


@needs_landlock
def test_the_descriptors_are_held_close_on_exec_until_close(tree: dict[str, Path]) -> None:
    confinement = Confinement(tree["data"], tree["packages"])
    descriptors = confinement.descriptors()
    assert len(descriptors) == len(confinement.granted) > 0
    for fd in descriptors:
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    confinement.close()
    assert confinement.descriptors() == []
    for fd in descriptors:
        with pytest.raises(OSError):
            os.fstat(fd)


@needs_landlock
def test_with_a_scratch_root_a_worker_holds_a_dozen_descriptors(tree: dict[str, Path]) -> None:
    """Two layers: however many siblings there are, the worker keeps one
    ruleset and the devices' descriptors, never one per sibling."""
    for index in range(300):
        (tree["root"] / "a" / f"sibling-{index}").mkdir()
    scratch_root = tree["root"] / "scratch"
    scratch_root.mkdir()
    one_layer = Confinement(tree["data"], tree["packages"])
    two_layers = Confinement(tree["data"], tree["packages"], scratch_root=scratch_root)
    try:
        assert len(one_layer.descriptors()) > 300
        assert len(two_layers.descriptors()) <= 12
        granted = {grant.path: grant.access for grant in two_layers.granted}
        assert granted[scratch_root] == WRITE
        assert granted[tree["root"] / "a" / "sibling-7"] == READ
    finally:
        one_layer.close()
        two_layers.close()
    assert two_layers.descriptors() == []


@needs_landlock
def test_a_scratch_root_that_holds_the_data_dir_is_refused(tree: dict[str, Path]) -> None:
    with pytest.raises(ValueError):
        Confinement(tree["data"], tree["packages"], scratch_root=tree["root"])
    assert sandbox.build_confinement(tree["data"], tree["packages"],
                                     scratch_root=tree["root"]) is None
