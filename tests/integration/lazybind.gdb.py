"""gdb script for test_binding.py: which of the shim's calls go through a lazily bound PLT slot
on a host's stack inside a hook.

The shim is linked with lazy binding, except the libc functions shim/ls_bind.h marks noplt (called
through the GOT, bound when the shim loads). A call through a PLT stub may run the loader's lazy
resolver (a few KB of stack) the first time, so no such call may happen where the host's stack is
all there is: in a hook, on the host's thread. Places where the shim may use a few KB are allowed:
its constructors, its private stacks (ls_call_on_stack), its reporter thread, the dlopen hook (the
loader's dlopen needs far more than the resolver) and the Python bridge (shim/hook_python.c,
called by CPython's evaluation loop, whose own frames are larger).

Every PLT stub of the shim gets a breakpoint from just before main (main_wrapper) on: a stub hit
outside those places prints one HOST line, "HOST <function> from <frames>", and that stub's
breakpoint is dropped; "SEEN n" at the end counts the stub hits in allowed places (the
breakpoints work). Environment: LS_PLT "offset:name,..." (the stubs, from objdump),
LS_ANCHOR "offset" (main_wrapper's offset in the shim), LS_FOLLOW "child" to follow the first
fork's child instead of the parent."""
import os

import gdb

ALLOWED = {"ls_call_on_stack", "_dl_init", "call_init", "reporter_main", "dlopen", "dlmopen", "dl_open"}
REPORTER = "leakshim"  # the reporter thread's name (reporter.c)
seen = 0


def frame_names(limit=60):
    names, f = [], gdb.newest_frame()
    while f is not None and len(names) < limit:
        names.append(f.name() or "??")
        try:
            f = f.older()
        except gdb.error:
            break
    return names


class Stub(gdb.Breakpoint):
    def __init__(self, addr, callee):
        super().__init__("*%d" % addr, internal=True)
        self.callee = callee

    def stop(self):
        global seen
        names = frame_names()
        thread = gdb.selected_thread()
        if thread is not None and thread.name == REPORTER:
            seen += 1  # the shim's own thread (its stack is the shim's)
        elif ALLOWED.intersection(names) or from_python_bridge(names):
            seen += 1
        else:
            gdb.write("HOST %s from %s\n" % (self.callee, " < ".join(names[1:12])))
            self.enabled = False
        return False


def from_python_bridge(names):
    """Under a function of shim/hook_python.c, which only CPython calls (from Python code, its
    audit hooks or its finalisation)."""
    f = gdb.newest_frame()
    while f is not None:
        try:
            sal = f.find_sal()
            if sal.symtab is not None and sal.symtab.filename.endswith("hook_python.c"):
                return True
            f = f.older()
        except gdb.error:
            return False
    return False


gdb.execute("set pagination off")
gdb.execute("set confirm off")
gdb.execute("set breakpoint pending on")
gdb.execute("set follow-fork-mode %s" % ("child" if os.environ.get("LS_FOLLOW") == "child" else "parent"))
gdb.execute("set detach-on-fork on")
gdb.execute("tbreak main_wrapper")
gdb.execute("run", to_string=True)
base = int(gdb.parse_and_eval("(unsigned long)&main_wrapper")) - int(os.environ["LS_ANCHOR"], 0)
stubs = [s.split(":", 1) for s in os.environ["LS_PLT"].split(",") if s]
for off, name in stubs:
    Stub(base + int(off, 0), name)
gdb.write("STUBS %d\n" % len(stubs))
# A followed child that exits while gdb is still taking in a thread it just started makes gdb
# fail to read that thread ("No such process", "Cannot find user-level thread"): go on until
# every process is gone; any other error is the test's failure.
for _ in range(20):
    try:
        gdb.execute("continue")
        break
    except gdb.error as e:
        if not any(inf.pid for inf in gdb.inferiors()) or "not being run" in str(e):
            break
        if "No such process" not in str(e) and "user-level thread" not in str(e):
            raise
gdb.write("SEEN %d\n" % seen)
