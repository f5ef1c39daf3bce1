"""The simulator's guest file manager (simulators/vcsim/guest.go), through pyVmomi.

vcsim 0.24.2 runs guest operations only for Docker-backed VMs; dpflow-vcsim writes into
the ext4 file system on the VM's first disk instead. These tests pin down what the
in-guest restore relies on: the guest login and power state checked as vCenter does,
MakeDirectoryInGuest, InitiateFileTransferToGuest + HTTP PUT landing in the current disk
image (checked with debugfs), conflicts, partitioned disks, snapshots and faults.
"""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from simulators.guest_fs_images import MiB, ext4_from_tree, ntfs_with_files, partitioned_disk
from simulators.vcsim import Vcsim

_n = itertools.count()
FM = vim.vm.guest.FileManager


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vcsim]:
    with Vcsim(cert_dir=tmp_path_factory.mktemp("certs"), guest_user="admin",
               guest_password="s3cret guest") as s:
        yield s


@pytest.fixture(autouse=True)
def _no_faults(sim: Vcsim) -> Iterator[None]:
    yield
    sim.clear_faults()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("guest-images")

    def stage(root: Path) -> None:
        (root / "etc").mkdir()
        (root / "etc/hostname").write_bytes(b"guest\n")

    ext4_from_tree(d / "ext4.img", 8 * MiB, stage)
    ntfs_with_files(d / "ntfs.img", 8 * MiB, {"a.txt": b"a"})
    offs = partitioned_disk(d / "gpt.img", 24 * MiB, "gpt",
                            [(d / "ntfs.img", "ntfs"), (d / "ext4.img", "linux")])
    moffs = partitioned_disk(d / "mbr.img", 24 * MiB, "mbr", [(d / "ext4.img", "linux")])
    (d / "offsets").write_text(f"{offs[1]} {moffs[0]}")
    return {"ext4": d / "ext4.img", "gpt": d / "gpt.img", "mbr": d / "mbr.img",
            "ntfs": d / "ntfs.img", "dir": d}


def new_vm(sim: Vcsim, image: Path, power_on: bool = True) -> str:
    name = f"g{next(_n)}"
    sim.create_vm(name, [(image.stat().st_size + MiB - 1) // MiB * MiB])
    sim.seed_disk(name, 0, image)
    if power_on:
        WaitForTask(sim.vm(name).PowerOnVM_Task())
    return name


def auth(sim: Vcsim, password: str | None = None) -> vim.vm.guest.NamePasswordAuthentication:
    return vim.vm.guest.NamePasswordAuthentication(
        username=sim.guest_user, password=sim.guest_password if password is None else password)


def fm(sim: Vcsim):
    return sim.si().content.guestOperationsManager.fileManager


def debugfs(sim: Vcsim, vm: str, request: str, offset: int = 0) -> str:
    return debugfs_bytes(sim, vm, request, offset).decode("latin-1")


def debugfs_bytes(sim: Vcsim, vm: str, request: str, offset: int = 0) -> bytes:
    flat = str(sim.current_disk_path(vm, 0)) + (f"?offset={offset}" if offset else "")
    return subprocess.run(["debugfs", "-R", request, flat], capture_output=True,
                          check=True).stdout


def upload(sim: Vcsim, vm: str, path: str, data: bytes, overwrite: bool = False,
           attrs: vim.vm.guest.FileManager.FileAttributes | None = None) -> requests.Response:
    url = fm(sim).InitiateFileTransferToGuest(
        vm=sim.vm(vm), auth=auth(sim), guestFilePath=path,
        fileAttributes=attrs or FM.PosixFileAttributes(), fileSize=len(data),
        overwrite=overwrite)
    parts = urlsplit(url)
    assert parts.hostname == "*"  # as ESXi: the host the client called
    real = urlunsplit(parts._replace(netloc=f"{sim.host}:{sim.port}"))
    return requests.put(real, data=data, verify=str(sim.ca_file), timeout=30)


def test_guest_login_and_power_state_are_checked(sim, images):
    vm = new_vm(sim, images["ext4"], power_on=False)
    with pytest.raises(vim.fault.InvalidPowerState) as off:
        fm(sim).MakeDirectoryInGuest(vm=sim.vm(vm), auth=auth(sim), directoryPath="/x",
                                     createParentDirectories=False)
    assert off.value.existingState == "poweredOff"
    WaitForTask(sim.vm(vm).PowerOnVM_Task())
    with pytest.raises(vim.fault.InvalidGuestLogin):
        fm(sim).MakeDirectoryInGuest(vm=sim.vm(vm), auth=auth(sim, "wrong"),
                                     directoryPath="/x", createParentDirectories=False)
    with pytest.raises(vim.fault.InvalidGuestLogin):
        fm(sim).InitiateFileTransferToGuest(
            vm=sim.vm(vm), auth=auth(sim, "wrong"), guestFilePath="/x",
            fileAttributes=FM.PosixFileAttributes(), fileSize=1, overwrite=False)
    assert "x" not in debugfs(sim, vm, "ls -p /")


def test_mkdir_and_its_conflicts(sim, images):
    vm = new_vm(sim, images["ext4"])
    f = fm(sim)
    f.MakeDirectoryInGuest(vm=sim.vm(vm), auth=auth(sim), directoryPath="/a/b c/d",
                           createParentDirectories=True)
    assert "Type: directory" in debugfs(sim, vm, 'stat "/a/b c/d"')
    with pytest.raises(vim.fault.FileAlreadyExists):
        f.MakeDirectoryInGuest(vm=sim.vm(vm), auth=auth(sim), directoryPath="/a/b c",
                               createParentDirectories=True)
    with pytest.raises(vim.fault.FileAlreadyExists):
        f.MakeDirectoryInGuest(vm=sim.vm(vm), auth=auth(sim), directoryPath="/",
                               createParentDirectories=False)
    with pytest.raises(vim.fault.FileNotFound):
        f.MakeDirectoryInGuest(vm=sim.vm(vm), auth=auth(sim), directoryPath="/no/such",
                               createParentDirectories=False)
    with pytest.raises(vim.fault.NotADirectory):
        f.MakeDirectoryInGuest(vm=sim.vm(vm), auth=auth(sim),
                               directoryPath="/etc/hostname/sub", createParentDirectories=True)
    with pytest.raises(vmodl.fault.InvalidArgument):
        f.MakeDirectoryInGuest(vm=sim.vm(vm), auth=auth(sim), directoryPath="relative",
                               createParentDirectories=True)


def test_upload_lands_in_the_disk_image_with_its_attributes(sim, images):
    vm = new_vm(sim, images["ext4"])
    data = bytes(range(256)) * 5000
    when = datetime(2021, 5, 6, 7, 8, 9, tzinfo=UTC)
    attrs = FM.PosixFileAttributes(modificationTime=when, permissions=0o640, ownerId=1000,
                                   groupId=100)
    r = upload(sim, vm, "/etc/new file.bin", data, attrs=attrs)
    assert r.status_code == 200, r.text
    assert debugfs_bytes(sim, vm, 'cat "/etc/new file.bin"') == data
    st = debugfs(sim, vm, 'stat "/etc/new file.bin"')
    assert "Mode:  0640" in st and "User:  1000" in st and "Group:   100" in st
    assert f"mtime: {int(when.timestamp()):#x}:" in st
    out = subprocess.run(["e2fsck", "-fn", str(sim.current_disk_path(vm, 0))],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    # the ticket is single use
    assert requests.put(r.url, data=data, verify=str(sim.ca_file), timeout=30).status_code == 404


def test_upload_conflicts_and_overwrite(sim, images):
    vm = new_vm(sim, images["ext4"])
    with pytest.raises(vim.fault.FileAlreadyExists):
        upload(sim, vm, "/etc/hostname", b"other\n")
    with pytest.raises(vim.fault.NotAFile):
        upload(sim, vm, "/etc", b"x", overwrite=True)
    with pytest.raises(vim.fault.FileNotFound):
        upload(sim, vm, "/nodir/f", b"x")
    assert upload(sim, vm, "/etc/hostname", b"other\n", overwrite=True).status_code == 200
    assert debugfs(sim, vm, "cat /etc/hostname") == "other\n"
    # a size that does not match what InitiateFileTransferToGuest announced
    url = fm(sim).InitiateFileTransferToGuest(
        vm=sim.vm(vm), auth=auth(sim), guestFilePath="/short", fileSize=10,
        fileAttributes=FM.PosixFileAttributes(), overwrite=False)
    real = url.replace("*", f"{sim.host}:{sim.port}", 1)
    assert requests.put(real, data=b"123", verify=str(sim.ca_file), timeout=30).status_code == 400
    assert "short" not in debugfs(sim, vm, "ls -p /")


@pytest.mark.parametrize("layout", ["gpt", "mbr"])
def test_partitioned_disk_first_ext_partition(sim, images, layout):
    vm = new_vm(sim, images[layout])
    offset = int((images["dir"] / "offsets").read_text().split()[0 if layout == "gpt" else 1])
    fm(sim).MakeDirectoryInGuest(vm=sim.vm(vm), auth=auth(sim), directoryPath="/restored",
                                 createParentDirectories=False)
    assert upload(sim, vm, "/restored/f.txt", b"in a partition\n").status_code == 200
    assert debugfs(sim, vm, "cat /restored/f.txt", offset) == "in a partition\n"


def test_upload_after_a_snapshot_goes_to_the_delta(sim, images):
    vm = new_vm(sim, images["ext4"])
    sim.create_snapshot(vm, "s1")
    assert upload(sim, vm, "/after.txt", b"new\n").status_code == 200
    frozen = sim.snapshot_disk_path(vm, "s1", 0)
    assert frozen != sim.current_disk_path(vm, 0)
    assert debugfs(sim, vm, "cat /after.txt") == "new\n"
    ls = subprocess.run(["debugfs", "-R", "ls -p /", str(frozen)], capture_output=True,
                        text=True, check=True).stdout
    assert "after.txt" not in ls


def test_list_download_delete(sim, images):
    vm = new_vm(sim, images["ext4"])
    f = fm(sim)
    listing = f.ListFilesInGuest(vm=sim.vm(vm), auth=auth(sim), filePath="/etc")
    names = {x.path: x for x in listing.files}
    assert names["hostname"].type == "file" and names["hostname"].size == 6
    assert names["."].type == "directory"
    info = f.InitiateFileTransferFromGuest(vm=sim.vm(vm), auth=auth(sim),
                                           guestFilePath="/etc/hostname")
    assert info.size == 6
    got = requests.get(info.url.replace("*", f"{sim.host}:{sim.port}", 1),
                       verify=str(sim.ca_file), timeout=30)
    assert got.content == b"guest\n"
    f.DeleteFileInGuest(vm=sim.vm(vm), auth=auth(sim), filePath="/etc/hostname")
    assert "hostname" not in debugfs(sim, vm, "ls -p /etc")
    with pytest.raises(vim.fault.FileNotFound):
        f.DeleteFileInGuest(vm=sim.vm(vm), auth=auth(sim), filePath="/etc/hostname")


def test_no_ext_file_system_and_injected_faults(sim, images):
    vm = new_vm(sim, images["ntfs"])
    with pytest.raises(vim.fault.GuestOperationsUnavailable):
        fm(sim).MakeDirectoryInGuest(vm=sim.vm(vm), auth=auth(sim), directoryPath="/x",
                                     createParentDirectories=False)
    vm = new_vm(sim, images["ext4"])
    sim.set_fault(method="InitiateFileTransferToGuest", kind="soap",
                  fault="GuestOperationsUnavailable", count=1)
    with pytest.raises(vim.fault.GuestOperationsUnavailable):
        upload(sim, vm, "/f", b"x")
    sim.set_fault(method="MakeDirectoryInGuest", kind="task", fault="GuestPermissionDenied",
                  count=1)
    with pytest.raises(vim.fault.GuestPermissionDenied):
        fm(sim).MakeDirectoryInGuest(vm=sim.vm(vm), auth=auth(sim), directoryPath="/x",
                                     createParentDirectories=False)
    assert upload(sim, vm, "/f", b"x").status_code == 200
    sim.set_fault(path="^/guestFile$", verb="PUT", kind="http", status=503, count=1)
    assert upload(sim, vm, "/g", b"x").status_code == 503
