"""What --isolate refuses before anything runs: other names for the hidden files (pure parts)."""

from __future__ import annotations

import pytest

from vaultd.isolation.plan import (
    IsolationUnavailable,
    Mount,
    check_no_other_mounts,
    parse_mountinfo,
)

# As /proc/self/mountinfo writes them: id, parent, major:minor, root, point, ...
ROOT = b"22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw"
PROC = b"23 22 0:21 / /proc rw - proc proc rw"
KEY_DIR = "/home/jo/.config/vaultd"


def mounts(*lines: bytes) -> list[Mount]:
    return parse_mountinfo(b"\n".join([ROOT, PROC, *lines]))


def test_one_mount_of_each_file_system_is_fine() -> None:
    check_no_other_mounts([KEY_DIR, "/home/jo/.local/share/vaultd"], mounts())


@pytest.mark.parametrize(
    ("line", "there"),
    [
        # The home directory bound elsewhere (a backup tool's, a container's).
        (b"40 22 254:0 /home/jo /mnt/jo rw - ext4 /dev/vda rw", "/mnt/jo/.config/vaultd"),
        # The same file system mounted a second time, whole.
        (b"41 22 254:0 / /media/disk rw - ext4 /dev/vda rw", "/media/disk/home/jo/.config/vaultd"),
        # The hidden directory itself, bound elsewhere.
        (b"42 22 254:0 /home/jo/.config/vaultd /srv/v rw - ext4 /dev/vda rw", "/srv/v"),
    ],
)
def test_another_way_to_the_same_files_is_refused(line: bytes, there: str) -> None:
    with pytest.raises(IsolationUnavailable, match="also reachable at") as refused:
        check_no_other_mounts([KEY_DIR], mounts(line))
    assert there in str(refused.value)


def test_mounts_of_other_file_systems_or_other_directories_are_fine() -> None:
    check_no_other_mounts(
        [KEY_DIR],
        mounts(
            b"43 22 259:1 / /mnt/usb rw - vfat /dev/sdb1 rw",
            b"44 22 254:0 /var/lib/x /srv/x rw - ext4 /dev/vda rw",
            # A bind of the hidden directory onto a place that is hidden too.
            b"45 22 254:0 /home/jo/.config/vaultd /home/jo/.config/vaultd rw - ext4 x rw",
        ),
    )


def test_names_with_spaces_and_utf8_are_read_as_the_kernel_wrote_them() -> None:
    # mountinfo escapes a space as \040 and leaves UTF-8 bytes as they are.
    home = "/home/jos\u00e9 a"
    raw = "46 22 254:0 /home/jos\u00e9\\040a /mnt/b rw - ext4 /dev/vda rw".encode()
    (mount,) = parse_mountinfo(raw)
    assert (mount.root, mount.point) == (home, "/mnt/b")
    with pytest.raises(IsolationUnavailable, match=r"also reachable at /mnt/b/\.config/vaultd"):
        check_no_other_mounts([f"{home}/.config/vaultd"], mounts(raw))
