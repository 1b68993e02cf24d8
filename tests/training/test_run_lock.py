"""The output folder's lock: a second live ldm-train into the same folder is refused naming the
running PID; a lock left by a killed run is taken over (so --resume works); other ranks only check."""

import os
import signal
import subprocess
import sys
import textwrap

from test_cli_train import REPO, assert_one_line_error, train_main, write_config

from ldm.training.run_lock import LOCK_NAME, Holder, RunLock, lock_output_dir, read_holder, this_process

HOLD = textwrap.dedent(
    """
    import sys, time
    from ldm.training.run_lock import RunLock
    RunLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(120)
    """
)


def start_holder(output_dir):
    """Another process that holds the folder's lock, as a live run would."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(output_dir)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_run_into_a_live_runs_folder_is_refused_and_a_killed_runs_lock_is_taken_over(tmp_path):
    config = write_config(tmp_path)
    holder = start_holder(tmp_path / "run")
    try:
        result = train_main("--config", config)
        assert_one_line_error(result, "is in use by a running ldm-train", f"PID {holder.pid}")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The killed run's lock is stale: --resume goes on (here to say there is no checkpoint yet).
    result = train_main("--config", config, "--resume", "latest")
    assert_one_line_error_after_notice(result, f"taking over {tmp_path / 'run' / LOCK_NAME} (PID {holder.pid}, no longer running)", "no checkpoint")
    assert not (tmp_path / "run" / LOCK_NAME).exists()  # released when the command ended


def assert_one_line_error_after_notice(result, notice, error):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 2, result.stderr
    assert notice in lines[0] and error in lines[1], result.stderr


def test_the_lock_is_held_until_released_and_a_reused_pid_is_not_the_holder(tmp_path, capsys):
    lock = RunLock(tmp_path).acquire()
    assert read_holder(tmp_path / LOCK_NAME) == this_process()
    RunLock(tmp_path).acquire().release()  # the same process again (main() run twice in one process)
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()
    # A live PID whose start time differs is a reused PID, not the run that wrote the lock.
    me = this_process()
    (tmp_path / LOCK_NAME).write_text(Holder(me.pid, "1", me.parent, me.host).line())
    RunLock(tmp_path).acquire().release()
    assert "taking over" in capsys.readouterr().err
    (tmp_path / LOCK_NAME).write_text("garbage")  # a torn file is stale too
    RunLock(tmp_path).acquire().release()


def test_other_ranks_check_without_taking_the_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    lock_output_dir(tmp_path).release()  # no lock: nothing to say, nothing written
    assert not (tmp_path / LOCK_NAME).exists()
    me = this_process()
    (tmp_path / LOCK_NAME).write_text(Holder(os.getppid(), None, me.parent, me.host).line())  # rank 0 of this launch
    lock_output_dir(tmp_path).release()
    assert (tmp_path / LOCK_NAME).exists()  # rank 0's lock stays
    holder = start_holder(tmp_path / "other")  # a live run of another launch
    try:
        try:
            lock_output_dir(tmp_path / "other")
        except Exception as error:
            assert f"PID {holder.pid}" in str(error)
        else:
            raise AssertionError("rank 1 was not refused")
    finally:
        holder.kill()
        holder.wait()
