"""The host's session uid ranges (salvusctl/uids.py) on their own: a registry
file of the test's, data folders in a temp folder."""

from __future__ import annotations

from salvusctl import uids


def test_a_range_picked_during_an_init_is_not_handed_out_again_before_its_config(tmp_path):
    registry = tmp_path / "uid-ranges.json"
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    # The first init has picked its range; its salvus.conf does not exist yet
    # (initdb is still running) when a second init picks one.
    taken = uids.pick(first, "one", 100, registry)
    assert not (first / "salvus.conf").exists()
    assert uids.pick(second, "two", 100, registry) != taken


def test_a_folder_that_no_longer_holds_its_appliance_frees_its_range(tmp_path):
    registry = tmp_path / "uid-ranges.json"
    gone = tmp_path / "gone"
    gone.mkdir()
    base = uids.pick(gone, "old", 100, registry)
    (gone / uids.MARKER).unlink()  # the folder was emptied (or removed)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert uids.pick(fresh, "new", 100, registry) == base
