"""The pieces under the save / export / decode rules: unique output names, the decode manifest, and the
folder swap that never deletes what it did not write."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from vqkit.utils.atomic import atomic_directory
from vqkit.utils.manifest import Manifest
from vqkit.utils.names import item_stem, unique_names

MANIFEST = Manifest("out.json", "test.out", writer="the test")
OWNER = MANIFEST.owner("-o", "--force")


def test_unique_names_keep_unique_names() -> None:
    assert unique_names(["a", "b", "c"], ".png") == ["a.png", "b.png", "c.png"]


def test_unique_names_append_the_position_to_shared_names() -> None:
    assert unique_names(["x", "y", "x"], ".png") == ["x-0.png", "y.png", "x-2.png"]
    assert unique_names(["X", "x"], ".wav") == ["X-0.wav", "x-1.wav"]  # one file on case-folding systems
    # The disambiguated name is taken by another input: a further counter.
    assert unique_names(["x", "x-1", "x"], ".png") == ["x-0.png", "x-1.png", "x-2.png"]
    assert unique_names(["x", "x", "x-1"], ".png") == ["x-0.png", "x-1-1.png", "x-1.png"]
    names = unique_names(["x"] * 5 + ["x-3", "x-0"], ".png")
    assert len({n.casefold() for n in names}) == 7


def test_item_stems_use_only_the_last_component() -> None:
    assert item_stem("shirt.png", 0) == "shirt"
    assert item_stem("../../etc/passwd.png", 1) == "passwd"
    assert item_stem("..", 2) == "item-2" and item_stem("", 3) == "item-3" and item_stem(None, 4) == "None"


def test_manifest_outputs_are_replaced_and_other_files_kept(tmp_path: Path) -> None:
    out = tmp_path / "out"
    MANIFEST.publish(out, {"a.png": b"a", "b.png": b"b"}, OWNER, overwrite=False)
    manifest = json.loads((out / "out.json").read_text())
    assert manifest["files"] == {
        "a.png": hashlib.sha256(b"a").hexdigest(),
        "b.png": hashlib.sha256(b"b").hexdigest(),
    }
    MANIFEST.publish(out, {"c.png": b"c"}, OWNER, overwrite=False)  # a previous output: swapped whole
    assert sorted(p.name for p in out.iterdir()) == ["c.png", "out.json"]
    (out / "notes.txt").write_text("mine")
    with pytest.raises(
        FileExistsError, match=r"-o: expected a new or empty folder .* holding 'notes.txt'; pass --force"
    ):
        MANIFEST.publish(out, {"d.png": b"d"}, OWNER, overwrite=False)
    MANIFEST.publish(out, {"d.png": b"d"}, OWNER, overwrite=True)  # our stale c.png goes, notes.txt stays
    assert sorted(p.name for p in out.iterdir()) == ["d.png", "notes.txt", "out.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_an_edited_output_is_no_longer_ours(tmp_path: Path) -> None:
    out = MANIFEST.publish(tmp_path / "out", {"a.png": b"a"}, OWNER, overwrite=False)
    (out / "a.png").write_bytes(b"edited by hand")
    with pytest.raises(FileExistsError, match="holding 'a.png'"):
        MANIFEST.publish(out, {"a.png": b"new"}, OWNER, overwrite=False)
    with pytest.raises(FileExistsError, match=r"-o: '.*a.png' was not written by the test, and --force"):
        MANIFEST.publish(out, {"a.png": b"new"}, OWNER, overwrite=True)
    assert (out / "a.png").read_bytes() == b"edited by hand"


def test_a_manifest_cannot_claim_files_outside_its_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "victim.txt").write_bytes(b"v")
    digest = hashlib.sha256(b"v").hexdigest()
    (out / "out.json").write_text(json.dumps({"format": "test.out", "files": {"../victim.txt": digest}}))
    MANIFEST.publish(out, {"a.png": b"a"}, OWNER, overwrite=True)
    assert (tmp_path / "victim.txt").read_bytes() == b"v"


def test_a_file_that_appears_during_the_swap_puts_the_old_folder_back(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    (target / "ours").write_text("old")
    (target / "late").write_text("appeared after the check")
    with (
        pytest.raises(FileExistsError, match=r"gained \['late'\] while it was being written"),
        atomic_directory(target, replaceable={"ours"}) as staging,
    ):
        (staging / "ours").write_text("new")
    assert (
        sorted(p.name for p in target.iterdir()) == ["late", "ours"]
        and (target / "ours").read_text() == "old"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["t"]
