# leakshim's pytest plugin (issue 11): which test left database connections open. Importable as
# `leakshim` under the shim (boot.py); registered with every pytest the shim runs
# (attribution.patch_pytest), or named with `-p leakshim`; `-p no:leakshim` turns it off.
#
# Per test: every tracked creation and pool checkout is numbered by the core (_ls_seq). The plugin
# keeps which numbers each owner got -- the test (its setup, call and teardown outside fixtures)
# or a fixture (its setup) -- and asks the core which of them are still open (_ls_live, an exit
# report of just those). A test's own are checked after its teardown and a gc.collect(); a
# fixture's after its own teardown (so module and session fixtures are checked when their scope
# ends, and a fixture closed properly is never a leak), attributed to the fixture and the tests
# that requested it. Bridge names (_ls_*) and _attribution come from boot.py.
import gc
import json
import warnings

import pytest


class LeakWarning(UserWarning):
    '''A test or fixture left database connections open (leakshim). `-W error::leakshim.LeakWarning`
    makes it an error.'''


MODES = ('warn', 'fail', 'off')
MARKER = 'leakshim_allow'


def pytest_addoption(parser):
    parser.addini('leakshim_mode', 'leakshim: what a test that leaves database connections open gets: '
                  'warn (a LeakWarning), fail (an error at teardown) or off', default='warn')
    parser.addini('leakshim_ignore', 'leakshim: suppressions (`leak:PATTERN` lines, as in a suppressions file) '
                  'for leaks the plugin ignores', type='linelist', default=[])
    parser.getgroup('leakshim').addoption('--leakshim', dest='leakshim_mode', choices=MODES, default=None,
                                          help='leakshim per-test mode (overrides the leakshim_mode ini option)')


def parse_ignore(lines):
    '''The patterns of `leak:PATTERN` lines (comments and blank lines skipped); (patterns, bad lines).'''
    pats, bad = [], []
    for line in lines:
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        kind, sep, pat = line.partition(':')
        if sep and kind.strip() == 'leak' and pat.strip():
            pats.append(pat.strip())
        else:
            bad.append(line)
    return pats, bad


class Owners:
    '''Which creation numbers each owner got: an owner is current from switch() to the next switch().'''

    def __init__(self, seq):
        self.seq = seq
        self.cur = None
        self.lo = 0
        self.segs = {}

    def switch(self, owner):
        now = self.seq()
        if self.cur is not None and now > self.lo:
            self.segs.setdefault(self.cur, []).append((self.lo, now))
        prev, self.cur, self.lo = self.cur, owner, now
        return prev

    def take(self, owner):
        '''The ranges owner got (forgotten here), closing its current one.'''
        if owner == self.cur:
            self.switch(owner)
        return self.segs.pop(owner, [])


def flat(ranges):
    if len(ranges) > 64:  # the bridge takes 64 ranges: the rest as one (it may then cover a fixture's)
        ranges = ranges[:63] + [(ranges[63][0], ranges[-1][1])]
    out = []
    for lo, hi in ranges:
        out += [lo, hi]
    return out


class Plugin:
    def __init__(self, config, mode):
        self.config = config
        self.mode = mode
        self.owners = Owners(_ls_seq)
        self.item = None
        self.fixtures = {}   # id(fixturedef) -> fixture record while it is set up
        self.found = {}      # nodeid -> findings made during its teardown
        self.results = []    # (nodeid, worker, payload) from every report (xdist: from workers)
        self.tok = None
        self.nfix = 0

    @pytest.hookimpl(hookwrapper=True)
    def pytest_fixture_setup(self, fixturedef, request):
        self.nfix += 1
        owner = ('fixture', self.nfix)
        rec = {'name': fixturedef.argname, 'scope': fixturedef.scope, 'owner': owner, 'requested_by': []}
        node = getattr(request, '_pyfuncitem', None)
        if node is not None and fixturedef.scope == 'function':
            rec['requested_by'].append(node.nodeid)
        prev = self.owners.switch(owner)
        try:
            yield
        finally:
            self.owners.switch(prev)
            self.fixtures[id(fixturedef)] = rec

    def pytest_fixture_post_finalizer(self, fixturedef, request):
        rec = self.fixtures.pop(id(fixturedef), None)
        if rec is None:
            return
        try:
            ranges = self.owners.take(rec['owner'])
            if not ranges or self.mode == 'off':
                return
            leaks, report = self._check(ranges)
            if leaks:
                where = self.item.nodeid if self.item is not None else ''
                self.found.setdefault(where, []).append(dict(rec, leaks=leaks, report=report))
        except Exception as e:  # never the suite's problem
            _ls_warn('pytest plugin: checking fixture %r failed: %r' % (rec.get('name'), e))

    def _check(self, ranges):
        gc.collect()  # what nothing refers to any more is closed by its finalizer, not leaked
        r = _ls_live(1, *flat(ranges))
        if not r:
            return 0, ''
        return r[0], r[2] or ''

    # ---- after the teardown (fixtures' post-finalizers have run): the test's own
    @pytest.hookimpl(trylast=True)
    def pytest_runtest_teardown(self, item, nextitem):
        phases = self.config.pluginmanager.get_plugin('leakshim-phases')
        if phases is not None:
            phases.done()
        ranges = self.owners.take(('test', item.nodeid))
        self.owners.switch(None)
        self.item = None
        findings = self.found.pop(item.nodeid, [])
        if self.mode == 'off':
            return
        try:
            own, report = self._check(ranges) if ranges else (0, '')
            msg = self._report(item, own, report, findings)
        except Exception as e:  # never the suite's problem
            _ls_warn('pytest plugin: checking %s failed: %r' % (item.nodeid, e))
            return
        if not msg:
            return
        if self.mode == 'fail':
            pytest.fail(msg, pytrace=False)
        fspath, lineno, _ = item.location
        warnings.warn_explicit(LeakWarning(msg), LeakWarning, str(getattr(item, 'path', fspath)), (lineno or 0) + 1)

    def _report(self, item, own, report, findings):
        '''Records the test's result (report section, user_properties for the summary and xdist);
        returns the warning or failure message, None when there is nothing to say.'''
        count = own + sum(f['leaks'] for f in findings if f['scope'] == 'function')
        if not count and not findings:
            return None
        allowed = item.get_closest_marker(MARKER) is not None
        payload = {'leaks': count, 'allowed': allowed,
                   'fixtures': [{'name': f['name'], 'scope': f['scope'], 'leaks': f['leaks'],
                                 'requested_by': f['requested_by']} for f in findings]}
        item.user_properties.append(('leakshim', json.dumps(payload, sort_keys=True)))
        item.add_report_section('teardown', 'leakshim', section_text(item.nodeid, own, report, findings))
        if allowed:
            return None
        total = own + sum(f['leaks'] for f in findings)
        return 'leakshim: %d database connection%s left open (%s)' % (total, plural(total), summary_of(payload))

    # ---- results: from this process's reports, or (xdist controller) from the workers'
    def pytest_runtest_logreport(self, report):
        if report.when != 'teardown':
            return
        for k, v in getattr(report, 'user_properties', ()):
            if k == 'leakshim':
                node = getattr(report, 'node', None)
                worker = getattr(getattr(node, 'gateway', None), 'id', None) or getattr(node, 'workerid', None)
                try:
                    self.results.append((report.nodeid, worker, json.loads(v)))
                except ValueError:
                    pass

    def pytest_terminal_summary(self, terminalreporter):
        if getattr(self.config, 'workerinput', None) is not None:
            return  # an xdist worker: the controller shows the results it was sent
        for line in summary_lines(self.results):
            if line is None:
                terminalreporter.section('leakshim')
            else:
                terminalreporter.write_line(line)


class Phases:
    '''Runs first in each phase: the current context becomes (test id, phase).'''

    def __init__(self, plugin):
        self.plugin = plugin
        self.tok = None

    def _phase(self, item, phase):
        self.done()
        self.tok = _attribution['enter'](item.nodeid, phase, process=True)

    def done(self):
        if self.tok is not None:
            _attribution['leave'](self.tok, process=True)
            self.tok = None

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item):
        self.plugin.item = item
        self.plugin.owners.switch(('test', item.nodeid))
        self._phase(item, 'setup')

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_call(self, item):
        self._phase(item, 'call')
        names = getattr(item, 'fixturenames', ())
        defs = getattr(getattr(item, '_fixtureinfo', None), 'name2fixturedefs', {})
        for name in names:  # the tests that requested each fixture that is set up
            for fd in defs.get(name, ()):
                rec = self.plugin.fixtures.get(id(fd))
                if rec is not None and item.nodeid not in rec['requested_by']:
                    rec['requested_by'].append(item.nodeid)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_teardown(self, item):
        self._phase(item, 'teardown')


def plural(n):
    return '' if n == 1 else 's'


def section_text(nodeid, own, report, findings):
    lines = []
    if own:
        lines.append('%s left %d database connection%s open:' % (nodeid, own, plural(own)))
        lines.append(report.rstrip())
    for f in findings:
        lines.append("fixture '%s' (%s scope), requested by %s, left %d database connection%s open after its "
                     'teardown:' % (f['name'], f['scope'], ', '.join(f['requested_by']) or '?', f['leaks'],
                                    plural(f['leaks'])))
        lines.append(f['report'].rstrip())
    return '\n'.join(lines) + '\n'


def summary_of(payload):
    parts = []
    own = payload['leaks'] - sum(f['leaks'] for f in payload['fixtures'] if f['scope'] == 'function')
    if own:
        parts.append('by the test: %d' % own)
    for f in payload['fixtures']:
        parts.append("fixture '%s' (%s scope): %d" % (f['name'], f['scope'], f['leaks']))
    return ', '.join(parts)


def summary_lines(results):
    '''The `leakshim` terminal section: None (the section title) then one line per leaking test and
    per wider-scope fixture, per worker under xdist; nothing when no test leaked.'''
    if not results:
        return []
    out = [None]
    workers = sorted({w for _, w, _ in results if w}, key=str)
    for w in workers or [None]:
        rows = [(n, p) for n, ww, p in results if ww == w]
        if w:
            out.append('[%s]' % w)
        for nodeid, p in rows:
            if p['leaks']:
                out.append('%s: %d connection%s left open%s' % (nodeid, p['leaks'], plural(p['leaks']),
                                                              ' (allowed by @pytest.mark.%s)' % MARKER
                                                              if p['allowed'] else ''))
            for f in p['fixtures']:
                if f['scope'] != 'function':
                    out.append("fixture '%s' (%s scope): %d connection%s left open after its teardown, requested "
                               'by %s' % (f['name'], f['scope'], f['leaks'], plural(f['leaks']),
                                          ', '.join(f['requested_by']) or '?'))
    n = sum(p['leaks'] + sum(f['leaks'] for f in p['fixtures'] if f['scope'] != 'function')
            for _, _, p in results if not p['allowed'])
    t = sum(1 for _, _, p in results if not p['allowed'])
    out.append('leakshim: %d database connection%s left open by %d test%s' % (n, plural(n), t, plural(t)))
    return out


def pytest_configure(config):
    config.addinivalue_line('markers', '%s(reason=None): this test may leave database connections open '
                            '(leakshim reports them as allowed, without a warning or failure)' % MARKER)
    mode = config.getoption('leakshim_mode', None) or config.getini('leakshim_mode') or 'warn'
    if mode not in MODES:
        _ls_warn("leakshim_mode = %r is not one of %s: using 'warn'" % (mode, '|'.join(MODES)))
        mode = 'warn'
    pats, bad = parse_ignore(config.getini('leakshim_ignore'))
    for line in bad:
        _ls_warn('leakshim_ignore: %r is not a `leak:PATTERN` line: ignored' % (line,))
    for pat in pats:
        _ls_suppress(pat)
    _attribution['_state']['pytest'] = True
    plugin = Plugin(config, mode)
    config.pluginmanager.register(plugin, 'leakshim-plugin')
    config.pluginmanager.register(Phases(plugin), 'leakshim-phases')
