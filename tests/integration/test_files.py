"""Report files (issue item "Files"): a name planted at the predictable report path never gets the
report (nor redirects it into someone else's file); files are private whatever the umask; fd paths
such as /dev/stderr work; format=both follows the same rules. A refused path costs one warning line
naming it and the reason, and the report goes to stderr: it is never lost."""

import json
import os
import stat
import subprocess

from helpers import ROOT, shim_env

SAMPLES = ROOT / "samples"
NOBODY = 65534
SUMMARY = "SUMMARY: leakshim: 3 leaked database connections in 1 group"


def run_leaky(redis_server, options, plant=None, umask=-1):
    """raw_dbport leaking 3 sockets under the shim. plant(pid) runs in the child just before exec
    (same pid as the shimmed program), to put something at the expanded report name."""
    opts = f"ports=+{redis_server.port}:" + options

    def pre():
        if plant:
            plant(os.getpid())

    return subprocess.run([str(SAMPLES / "raw_dbport"), "127.0.0.1", str(redis_server.port), "9"],
                          env=shim_env(opts), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60, preexec_fn=pre, umask=umask)


def refusals(stderr):
    return [l for l in stderr.splitlines() if l.startswith("leakshim: cannot write report to")]


def public_dir(tmp_path):
    """A /tmp-like directory: world-writable with the sticky bit."""
    d = tmp_path / "pub"
    d.mkdir()
    d.chmod(0o1777)
    return d


def test_planted_symlink_is_not_followed_and_the_report_goes_to_stderr(tmp_path, redis_server):
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    victim.chmod(0o600)
    pub = public_dir(tmp_path)

    def plant(pid):  # another user's symlink at the name the service will use
        link = pub / f"x.{pid}.txt"
        os.symlink(victim, link)
        os.lchown(link, NOBODY, NOBODY)

    proc = run_leaky(redis_server, f"report={pub}/x.%p.txt", plant)
    assert proc.returncode == 0, proc.stderr
    assert victim.read_text() == "root's file\n"
    (link,) = list(pub.iterdir())
    (line,) = refusals(proc.stderr)
    assert f"'{link}'" in line
    assert "symbolic link" in line and "writing it to stderr instead" in line
    assert proc.stderr.rstrip().splitlines()[-1] == SUMMARY


def test_dangling_symlink_creates_nothing(tmp_path, redis_server):
    pub = public_dir(tmp_path)
    target = tmp_path / "would-be-created"
    proc = run_leaky(redis_server, f"report={pub}/x.%p.txt", lambda pid: os.symlink(target, pub / f"x.{pid}.txt"))
    assert not target.exists() and not target.is_symlink()
    assert len(refusals(proc.stderr)) == 1 and "symbolic link" in proc.stderr
    assert SUMMARY in proc.stderr


def test_someone_elses_file_at_the_name_is_left_alone(tmp_path, redis_server):
    pub = public_dir(tmp_path)

    def plant(pid):
        f = pub / f"x.{pid}.txt"
        f.write_text("theirs\n")
        f.chmod(0o644)
        os.chown(f, NOBODY, NOBODY)

    proc = run_leaky(redis_server, f"report={pub}/x.%p.txt", plant)
    (f,) = list(pub.iterdir())
    assert f.read_text() == "theirs\n"
    (line,) = refusals(proc.stderr)
    assert f"'{f}'" in line and "uid 65534" in line
    assert proc.stderr.rstrip().splitlines()[-1] == SUMMARY


def test_world_writable_directory_without_sticky_bit_is_refused(tmp_path, redis_server):
    d = tmp_path / "open"
    d.mkdir()
    d.chmod(0o777)
    proc = run_leaky(redis_server, f"report={d}/x.%p.txt")
    assert list(d.iterdir()) == []
    (line,) = refusals(proc.stderr)
    assert "not sticky" in line
    assert proc.stderr.rstrip().splitlines()[-1] == SUMMARY


def test_report_files_are_private_whatever_the_umask(tmp_path, redis_server):
    pub = public_dir(tmp_path)  # a sticky public directory is fine for our own new file
    proc = run_leaky(redis_server, f"report={pub}/x.%p.txt:format=both", umask=0)
    assert proc.returncode == 0 and refusals(proc.stderr) == [], proc.stderr
    files = sorted(pub.iterdir())
    assert sorted(f.suffix for f in files) == [".json", ".txt"]
    for f in files:
        st = f.stat()
        assert stat.S_IMODE(st.st_mode) == 0o600, (f, oct(st.st_mode))
        assert st.st_uid == os.geteuid()
    text = next(f for f in files if f.suffix == ".txt").read_text()
    js = json.loads(next(f for f in files if f.suffix == ".json").read_text())
    assert text.rstrip().splitlines()[-1] == SUMMARY
    assert js["summary"]["leaks"] == 3
    assert "leaked" not in proc.stderr


def test_existing_own_file_is_appended_to(tmp_path, redis_server):
    out = tmp_path / "r.txt"
    for _ in range(2):
        proc = run_leaky(redis_server, f"report={out}")
        assert refusals(proc.stderr) == [], proc.stderr
    assert out.read_text().count(SUMMARY) == 2
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_dev_stderr_is_the_process_stderr(tmp_path, redis_server):
    proc = run_leaky(redis_server, "report=/dev/stderr")
    assert refusals(proc.stderr) == []
    assert proc.stderr.rstrip().splitlines()[-1] == SUMMARY
    # format=both on an fd: text and JSON both go to it (no "/dev/stderr.json" file)
    proc = run_leaky(redis_server, "report=/dev/stderr:format=both")
    assert refusals(proc.stderr) == [] and not os.path.exists("/dev/stderr.json")
    assert SUMMARY in proc.stderr
    js = [json.loads(l) for l in proc.stderr.splitlines() if l.startswith("{")]
    assert len(js) == 1 and js[0]["summary"]["leaks"] == 3
    # /dev/stdout and /proc/self/fd/N name the process's own fds too
    proc = run_leaky(redis_server, "report=/proc/self/fd/1")
    assert SUMMARY in proc.stdout and refusals(proc.stderr) == []


def test_format_both_refuses_each_file_on_its_own(tmp_path, redis_server):
    """format=both writes PATH and PATH.json by the same rules: a symlink planted at the .json
    name costs one line, and the JSON goes to stderr while the text file is written."""
    pub = public_dir(tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("v\n")
    proc = run_leaky(redis_server, f"report={pub}/x.%p:format=both",
                     lambda pid: os.symlink(victim, pub / f"x.{pid}.json"))
    assert victim.read_text() == "v\n"
    (line,) = refusals(proc.stderr)
    assert ".json'" in line and "symbolic link" in line
    (text,) = [f for f in pub.iterdir() if f.suffix != ".json"]
    assert text.read_text().rstrip().splitlines()[-1] == SUMMARY
    assert stat.S_IMODE(text.stat().st_mode) == 0o600
    js = [json.loads(l) for l in proc.stderr.splitlines() if l.startswith("{")]
    assert len(js) == 1 and js[0]["summary"]["leaks"] == 3
