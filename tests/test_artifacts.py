from pathlib import Path

from singexp.artifacts import ensure, identity_hash


def test_ensure_builds_once_per_identity(tmp_path: Path) -> None:
    calls: list[Path] = []

    def build(folder: Path) -> Path:
        calls.append(folder)
        path = folder / "model.bin"
        path.write_bytes(b"x")
        return path

    a = ensure(tmp_path, "jscc", {"bcr": "1/768", "seed": 0}, build)
    b = ensure(tmp_path, "jscc", {"seed": 0, "bcr": "1/768"}, build)  # key order is irrelevant
    c = ensure(tmp_path, "jscc", {"bcr": "1/192", "seed": 0}, build)
    assert a == b != c and len(calls) == 2
    assert identity_hash({"a": 1}) == identity_hash({"a": 1}) != identity_hash({"a": 2})
    a.unlink()  # a lost file is rebuilt
    assert ensure(tmp_path, "jscc", {"bcr": "1/768", "seed": 0}, build) == a and len(calls) == 3
