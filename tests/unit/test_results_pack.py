"""shared.results.pack: the archive's layout, with the exit code and the output a task did not
write added from memory (no file made in the workdir for them)."""

from __future__ import annotations

import tarfile
from pathlib import Path

from shared.results import ARCHIVE, pack, unpack


def _members(archive: Path) -> dict[str, bytes]:
    out = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile():
                f = tar.extractfile(member)
                assert f is not None
                out[member.name] = f.read()
    return out


def test_a_task_that_printed_only_stdout_has_an_empty_stderr_and_its_exit_code(
    tmp_path: Path,
) -> None:
    (tmp_path / "stdout").write_bytes(b"soak\n")
    archive = pack(tmp_path, [], 3)
    assert archive == tmp_path / ARCHIVE
    assert _members(archive) == {"stdout": b"soak\n", "stderr": b"", "exitCode": b"3\n"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [ARCHIVE, "stdout"]  # nothing else made


def test_no_exit_code_is_an_empty_file_and_result_folders_go_in_by_name(tmp_path: Path) -> None:
    (tmp_path / "stderr").write_bytes(b"warning\n")
    data = tmp_path / "outputs" / "data"
    data.mkdir(parents=True)
    (data / "a.csv").write_text("1,2\n")
    archive = pack(tmp_path, ["data", "missing"], None)
    members = _members(archive)
    assert members == {
        "stdout": b"",
        "stderr": b"warning\n",
        "exitCode": b"",
        "data/a.csv": b"1,2\n",
    }
    got = unpack(archive, tmp_path / "got")  # the safe extraction accepts what pack made
    assert [p.name for p in got] == ["data", "exitCode", "stderr", "stdout"]
    assert (tmp_path / "got" / "exitCode").read_bytes() == b""
