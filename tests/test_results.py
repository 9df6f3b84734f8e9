"""The output rule of blindspot.results: staging folders known by their marker, one lock per output,
undecodable names, and a target that appears while a command runs."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest

from blindspot.errors import BlindspotError
from blindspot.results import (
    MARKER,
    STAGING,
    check_output,
    lock_path,
    make_staging,
    output_lock,
    remove_staging,
    result_folder,
    staging_path,
    staging_state,
    write_json,
    write_text,
)


def finish(out: Path, fingerprint="pitfalls intensity", **options) -> Path:
    """A finished result folder written by ``result_folder``."""
    with result_folder(out, fingerprint=fingerprint, **options) as folder:
        write_text(folder / "summary.md", f"# {fingerprint}\n")
    return out


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_lock(out: Path, pid: int, host: str | None = None) -> Path:
    path = lock_path(out.resolve())
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "command": "pitfalls texture"}))
    return path


# ---------------------------------------------------------------------------------------- staging marker


def test_a_finished_result_keeps_the_blindspot_marker_but_not_the_staging_marker(tmp_path):
    out = finish(tmp_path / "q")
    assert (out / MARKER).is_file() and not (out / STAGING).exists()
    assert sorted(files(out)) == [MARKER, "summary.md"]
    assert not staging_path(out).exists() and not lock_path(out).exists()


def test_staging_states(tmp_path):
    target = (tmp_path / "q").resolve()
    assert staging_state(target, "evaluate") == "none"
    make_staging(target, "evaluate")
    assert staging_state(target, "evaluate") == "ours"
    assert staging_state(target, "pitfalls intensity") == "other"
    moved = (tmp_path / "r").resolve()
    os.rename(staging_path(target), staging_path(moved))  # a staging folder renamed by hand is not r's
    assert staging_state(moved, "evaluate") == "foreign"
    finished = finish(tmp_path / "done", "evaluate")
    shutil.copytree(finished, staging_path(target))  # a finished result copied aside under the staging name
    assert staging_state(target, "evaluate") == "foreign"


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_finished_result_named_like_the_staging_folder_is_never_touched(tmp_path, overwrite):
    finished = finish(tmp_path / "done", "evaluate")
    aside = staging_path(tmp_path / "q")
    shutil.copytree(finished, aside)
    before = files(aside)
    with pytest.raises(BlindspotError, match=r"^'.*q\.partial' exists and is not this command's staging folder; move it "
                                             r"away or choose another --out\.$"):
        finish(tmp_path / "q", "evaluate", overwrite=overwrite)
    assert files(aside) == before and not (tmp_path / "q").exists()


def test_another_commands_staging_folder_is_replaced_only_with_overwrite(tmp_path):
    target = (tmp_path / "q").resolve()
    staging = make_staging(target, "audit")
    write_text(staging / "half.txt", "audit's work")
    with pytest.raises(BlindspotError, match="another command's staging folder: --overwrite replaces it"):
        finish(target, "evaluate")
    assert (staging / "half.txt").read_text() == "audit's work"
    finish(target, "evaluate", overwrite=True)
    assert sorted(files(target)) == [MARKER, "summary.md"] and not staging.exists()


def test_the_same_command_resumes_from_its_staging_folder(tmp_path):
    target = (tmp_path / "q").resolve()
    write_text(make_staging(target, "evaluate") / "chunk.txt", "done before")
    with result_folder(target, fingerprint="evaluate") as folder:
        assert (folder / "chunk.txt").read_text() == "done before"
    assert (target / "chunk.txt").read_text() == "done before"


def test_a_user_error_removes_only_our_staging_folder(tmp_path):
    with pytest.raises(BlindspotError, match="bad option"):
        with result_folder(tmp_path / "q", fingerprint="evaluate"):
            raise BlindspotError("bad option.")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_remove_staging_refuses_a_folder_that_is_no_staging_folder(tmp_path):
    target = (tmp_path / "q").resolve()
    aside = finish(tmp_path / "done")
    os.rename(aside, staging_path(target))
    with pytest.raises(BlindspotError, match="is not this command's staging folder; it is never deleted"):
        remove_staging(target, "pitfalls intensity", any_command=True)
    assert (staging_path(target) / "summary.md").is_file()


@pytest.mark.parametrize("name", ["q.partial", "nested/q.partial"])
def test_an_out_named_like_a_staging_folder_is_refused(tmp_path, name):
    with pytest.raises(BlindspotError, match=r"ends in '\.partial', the name blindspot gives its staging folders"):
        check_output(tmp_path / name)


# ---------------------------------------------------------------------------------------- the end of a run


def test_a_target_that_appeared_meanwhile_is_kept_and_the_result_stays_in_staging(tmp_path):
    out = tmp_path / "q"
    with pytest.raises(BlindspotError, match=r"appeared while this command ran and is not replaced .*; the finished "
                                             r"result is in '.*q\.partial'\.$"):
        with result_folder(out, fingerprint="evaluate") as folder:
            write_text(folder / "summary.md", "new")
            finish(tmp_path / "other", "audit")
            os.rename(tmp_path / "other", out)  # another tool, or a user, made it while this command ran
    assert (out / "summary.md").read_text() == "# audit\n"
    assert (staging_path(out) / "summary.md").read_text() == "new"


def test_with_overwrite_a_target_that_is_not_ours_is_never_replaced_at_the_end(tmp_path):
    out = tmp_path / "q"
    with pytest.raises(BlindspotError, match="appeared while this command ran"):
        with result_folder(out, fingerprint="evaluate", overwrite=True):
            out.mkdir()
            (out / "thesis.tex").write_text("years of work")
    assert (out / "thesis.tex").read_text() == "years of work"


def test_overwrite_replaces_our_own_folder(tmp_path):
    out = finish(tmp_path / "q", "audit")
    finish(out, "evaluate", overwrite=True)
    assert (out / "summary.md").read_text() == "# evaluate\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q"]


# ---------------------------------------------------------------------------------------- the lock


def test_a_live_lock_is_refused_naming_its_holder(tmp_path, live_pid):
    out = tmp_path / "q"
    lock = write_lock(out, live_pid)
    before = lock.read_text()
    message = (rf"^--out '{out}' is in use by another blindspot command \(pitfalls texture, pid {live_pid} on host "
               rf"{socket.gethostname()}\); wait until it ends, or delete '.*\.q\.out\.lock' if it no longer runs\.$")
    with pytest.raises(BlindspotError, match=message):
        check_output(out)
    with pytest.raises(BlindspotError, match=message):
        finish(out)
    with pytest.raises(BlindspotError, match=message):
        with output_lock(out, "train"):
            pass
    assert lock.read_text() == before and not out.exists() and not staging_path(out).exists()


def test_a_lock_of_another_host_is_never_taken_over(tmp_path, dead_pid):
    lock = write_lock(tmp_path / "q", dead_pid, host="elsewhere.example")
    with pytest.raises(BlindspotError, match=f"pid {dead_pid} on host elsewhere.example"):
        finish(tmp_path / "q")
    assert json.loads(lock.read_text())["host"] == "elsewhere.example"


def test_an_unreadable_lock_is_refused(tmp_path):
    lock = lock_path((tmp_path / "q").resolve())
    lock.write_text("")
    with pytest.raises(BlindspotError, match="is locked by '.*', which cannot be read; if no blindspot command writes there"):
        finish(tmp_path / "q")


def test_a_stale_lock_is_taken_over_and_released(tmp_path, dead_pid):
    lock = write_lock(tmp_path / "q", dead_pid)
    with output_lock(tmp_path / "q", "evaluate"):
        held = json.loads(lock.read_text())
        assert (held["pid"], held["host"], held["command"]) == (os.getpid(), socket.gethostname(), "evaluate")
    assert not lock.exists()
    write_lock(tmp_path / "q", dead_pid)
    finish(tmp_path / "q")
    assert not lock.exists() and (tmp_path / "q" / "summary.md").is_file()


@pytest.mark.parametrize("error", [KeyboardInterrupt, BlindspotError, RuntimeError])
def test_the_lock_is_released_on_every_exit(tmp_path, error):
    with pytest.raises(error):
        with result_folder(tmp_path / "q", fingerprint="evaluate"):
            assert lock_path((tmp_path / "q").resolve()).is_file()
            raise error("stop.")
    assert not lock_path((tmp_path / "q").resolve()).exists()


def test_a_process_may_take_its_own_lock_again(tmp_path):
    with output_lock(tmp_path / "q", "train"):
        finish(tmp_path / "q", "train")
        assert lock_path((tmp_path / "q").resolve()).is_file()
    assert not lock_path((tmp_path / "q").resolve()).exists()


def test_takeover_replaces_a_live_lock_for_a_caller_that_excludes_others(tmp_path, live_pid):
    lock = write_lock(tmp_path / "q", live_pid)
    with output_lock(tmp_path / "q", "sweep latent", takeover=True):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


# ---------------------------------------------------------------------------------------- names


def test_undecodable_names_are_written_as_their_bytes(tmp_path):
    name = os.fsdecode(b"donn\xe9es")  # Latin-1: a str with a surrogate escape
    write_text(tmp_path / "summary.md", f"data `{name}`\n")
    assert (tmp_path / "summary.md").read_bytes() == b"data `donn\xe9es`\n"
    write_json(tmp_path / "config.json", {"data": name})
    assert json.loads((tmp_path / "config.json").read_text())["data"] == name


def test_messages_show_the_out_as_typed(tmp_path, monkeypatch, live_pid):
    monkeypatch.chdir(tmp_path)
    write_lock(Path("held"), live_pid)
    with pytest.raises(BlindspotError, match=r"^--out 'held' is in use .*; wait until it ends, or delete '\.held\.out\.lock'"):
        check_output("held")
    with monkeypatch.context() as patch:
        patch.setattr(os, "access", lambda path, mode: False)  # as for a user without write permission
        with pytest.raises(BlindspotError, match=r"^--out 'new/q': the folder '\.' is not writable\.$"):
            check_output("new/q")
    finish(Path("q"))
    with pytest.raises(BlindspotError, match=r"^--out 'q' already exists; pass --overwrite"):
        check_output("q")
    Path("link").symlink_to(tmp_path / "q", target_is_directory=True)
    with pytest.raises(BlindspotError, match=rf"^--out 'link' \(resolves to '{tmp_path / 'q'}'\) already exists"):
        check_output("link")
    shutil.copytree("q", "r.partial")
    with pytest.raises(BlindspotError, match=r"^'r\.partial' exists and is not this command's staging folder"):
        check_output("r", fingerprint="evaluate")
