"""A classroom: the instructor fills the baseline cache and writes the handout folder; a student, another
user of the machine, reads both.

A second account cannot be used here without privileges (the interpreter may live in a folder only
its owner can enter), so the other user is simulated: every file and folder the package wrote must
carry the permission bits the umask allows (0666 / 0777 less the umask, as open() and mkdir() give),
so that a member of the group (umask 002: read and write) or anyone (umask 022: read) passes the
kernel's check, which the test computes from the mode bits; the owner's access is checked with
os.access; then the files are read back through the package as the student would.
"""

from __future__ import annotations

import os
import stat

import pytest
import torch
from conftest import make_tiny_dataset

from compresslab.core import cache
from compresslab.core.training import TrainConfig
from compresslab.exercises.releasing import release
from compresslab.techniques import packedfile as pf


@pytest.fixture(params=[0o022, 0o002], ids=["umask022", "umask002"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _kernel_allows(mode: int, who: str, want: str) -> bool:
    """What the permission bits grant a user who is not the owner: `who` 'group' (a member of the
    file's group) or 'other', `want` 'r', 'w' or 'x'."""
    bits = {("group", "r"): stat.S_IRGRP, ("group", "w"): stat.S_IWGRP, ("group", "x"): stat.S_IXGRP,
            ("other", "r"): stat.S_IROTH, ("other", "w"): stat.S_IWOTH, ("other", "x"): stat.S_IXOTH}
    return bool(mode & bits[(who, want)])


def test_a_second_user_reads_the_shared_cache_and_the_handout(umask, tmp_path, monkeypatch):
    course = tmp_path / "course"
    cache_dir, handout = course / "cache", course / "handout"
    monkeypatch.setenv("COMPRESSLAB_CACHE", str(cache_dir))
    data, config = make_tiny_dataset(64, 32, 0), TrainConfig(epochs=1, batch_size=32)

    # the instructor
    first = cache.pretrained("lenet300", data, config, progress=False)
    written = release(handout)
    packed = handout / "lenet300-int8.pk"
    pf.save_model(first.model, packed, "int8")
    files = [*cache_dir.iterdir(), *written, packed]
    assert any(f.suffix == ".pt" for f in files) and any(f.suffix == ".lock" for f in files)
    assert len(written) >= 3  # the student notebooks and the two READMEs

    for folder in (course, cache_dir, handout):
        mode = stat.S_IMODE(folder.stat().st_mode)
        assert mode == 0o777 & ~umask, (folder, oct(mode))
    for f in files:
        mode = stat.S_IMODE(f.stat().st_mode)
        assert mode == 0o666 & ~umask, (f.name, oct(mode))
        assert os.access(f, os.R_OK | os.W_OK)  # the owner
        for who in ("group", "other"):
            assert _kernel_allows(mode, who, "r"), (f.name, who, oct(mode))
        assert _kernel_allows(mode, "group", "w") == (umask == 0o002)  # a group-shared course may update it
        assert not _kernel_allows(mode, "other", "w")
    for folder in (course, cache_dir, handout):  # the student can list and enter the folders
        mode = stat.S_IMODE(folder.stat().st_mode)
        assert all(_kernel_allows(mode, who, p) for who in ("group", "other") for p in "rx")
    assert not [p for p in cache_dir.iterdir() if p.name.endswith(".tmp")]  # no temporaries left

    # the student, with a private umask of their own, reads what the instructor wrote
    os.umask(0o077)
    second = cache.pretrained("lenet300", data, config, progress=False)
    assert second.from_cache and second.key == first.key and second.accuracy == first.accuracy
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()))
    layers = pf.read(packed)
    assert set(layers) == {"fc1", "fc2", "fc3"}
    for path in written:
        assert path.read_text(encoding="utf-8")
