# leakshim: awaiter chains for asyncio programs. Loaded by boot.py when asyncio.tasks is imported;
# registers tail() with the C side (_ls_set_async_tail), which calls it when a captured stack runs
# through asyncio's Handle._run (a task's step) and splices the frames it returns in there.
#
# A driver that connects inside a task of its own (asyncpg through wait_for, a pool filling itself
# through gather) would otherwise give a stack that stops at the event loop. tail() walks from the
# current task to the task awaiting it, and on (up to MAX_TASKS tasks): each awaiting task's
# suspended coroutines, innermost first, end at the line that awaited, e.g. the endpoint's
# `await asyncpg.connect(...)`.
MAX_TASKS = 8
_aio = []  # the asyncio.tasks module, once patched


def _frames(task):
    '''The suspended frames of task's coroutine chain, innermost first.'''
    out = []
    c = task.get_coro()
    for _ in range(200):
        f = getattr(c, 'cr_frame', None) or getattr(c, 'gi_frame', None)
        if f is None:
            break
        out.append(f)
        c = getattr(c, 'cr_await', None) or getattr(c, 'gi_yieldfrom', None)
        if c is None:
            break
    out.reverse()
    return out


def _awaits(p, t):
    '''Is task p waiting for task t? Directly, through gather, or through a future t's completion
    releases (wait_for's waiter, shield's outer future).'''
    w = getattr(p, '_fut_waiter', None)
    if w is None:
        return False
    if w is t or t in (getattr(w, '_children', None) or ()):
        return True
    for entry in getattr(t, '_callbacks', None) or ():
        cb = entry[0] if isinstance(entry, tuple) else entry
        if getattr(cb, '__self__', None) is w or w in (getattr(cb, 'args', None) or ()):
            return True
    return False


def tail():
    '''The frames of the tasks awaiting the running one (innermost first); [] if none.'''
    out = []
    try:
        tasks = _aio[0]
        t = tasks.current_task()
        if t is None:
            return out
        everyone = None
        seen = {id(t)}
        for _ in range(MAX_TASKS):
            if everyone is None:
                everyone = [x for x in tasks._all_tasks if not x.done()]  # no copy per level
            parent = None
            for p in everyone:
                if id(p) not in seen and _awaits(p, t):
                    parent = p
                    break
            if parent is None:
                break
            seen.add(id(parent))
            out.extend(_frames(parent))
            t = parent
    except Exception:
        pass
    return out


def patch(m):
    if _aio:
        return
    _aio.append(m)
    _ls_set_async_tail(tail)
