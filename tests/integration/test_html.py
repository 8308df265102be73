"""`leakshim report`: the self-contained HTML page of a real staircase run (rendered by headless
Chromium with networking off to a non-blank screenshot; no external reference; the chart's numbers
are the JSON's timeline; strings escaped), and three processes' reports merged by stack.

LEAKSHIM_UPDATE_SCREENSHOT=1 also copies the screenshot to samples/staircase_report.png (the
README shows it)."""

import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser

import jsonschema

from helpers import PY, ROOT, TOOL, run_shim

STAIR = ROOT / "samples" / "py_staircase.py"
FIXED = ROOT / "samples" / "py_staircase_fixed.py"
SCREENSHOT = ROOT / "samples" / "staircase_report.png"


def run_report(script, dsn, tmp_path, name, requests):
    r = run_shim([PY, script, dsn, "--requests", requests, "--pause", "0.08"],
                 options=f"report={tmp_path}/{name}.json:format=json:interval=0.05", timeout=120)
    assert r.returncode == 0, r.stderr
    return tmp_path / f"{name}.json"


def tool(*args):
    return subprocess.run([str(TOOL), *map(str, args)], capture_output=True, text=True, timeout=60)


class Page(HTMLParser):
    """Every tag with its attributes, and the text."""

    def __init__(self):
        super().__init__()
        self.tags = []
        self.text = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag

    def handle_data(self, data):
        self.text.append(data)


def parse(html):
    p = Page()
    p.feed(html)
    return p


def png_pixels(path):
    """(width, height, rows of RGB(A) tuples) of an 8-bit, non-interlaced PNG (Chromium's)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and ctype in (2, 6) and interlace == 0
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    bpp = 4 if ctype == 6 else 3
    raw = zlib.decompress(idat)
    stride = w * bpp
    prev = bytearray(stride)
    colours = {}
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if f == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif f == 2:
            for i in range(stride):
                line[i] = (line[i] + prev[i]) & 255
        elif f == 3:
            for i in range(stride):
                line[i] = (line[i] + ((line[i - bpp] if i >= bpp else 0) + prev[i]) // 2) & 255
        elif f == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        for x in range(0, stride, bpp * 2):  # every other pixel is enough to count colours
            px = bytes(line[x:x + 3])
            colours[px] = colours.get(px, 0) + 1
        prev = line
    return w, h, colours


def screenshot(html_path, png):
    """Headless Chromium with networking off: every request goes to a proxy that is not there."""
    r = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--proxy-server=127.0.0.1:1", "--proxy-bypass-list=<-loopback>",
                        "--disable-background-networking", "--disable-component-update", "--no-first-run",
                        "--disable-dev-shm-usage",
                        f"--user-data-dir={png.parent / 'chromium-profile'}", "--window-size=1150,1250",
                        f"--screenshot={png}", f"file://{html_path}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and png.exists(), r.stderr[-2000:]


def test_html_page_of_a_staircase_run(pg, tmp_path):
    path = run_report(STAIR, pg.dsn, tmp_path, "stair", 14)
    doc = json.loads(path.read_text())
    out = tmp_path / "report.html"
    r = tool("report", "--format", "html", "-o", out, path)
    assert r.returncode == 0, r.stderr
    html = out.read_text()
    page = parse(html)
    tags = {t for t, _ in page.tags}
    # self-contained: no script, no external reference of any kind
    assert not tags & {"script", "link", "img", "iframe", "object", "embed"}
    assert not re.search(r"(?i)https?:|//[a-z]|url\(|@import|\bsrc=", html)
    assert all(not a.get("href") for _, a in page.tags)
    # the chart's numbers are the JSON's timeline: the total and every group drawn
    lines = [a for t, a in page.tags if t == "polyline"]
    total = [a for a in lines if a["class"] == "total"]
    assert len(total) == 1 and list(map(int, total[0]["data-live"].split())) == [s["live"] for s in doc["timeline"]]
    groups = [a for a in lines if a["class"] == "group"]
    assert len(groups) == len(doc["timeline_groups"])
    for a in groups:
        k = int(a["data-group"])
        assert list(map(int, a["data-live"].split())) == [s["groups"][k][0] for s in doc["timeline"]]
    (times,) = [a["data-t"] for t, a in page.tags if t == "g" and a.get("class") == "samples"]
    assert [float(t) for t in times.split()] == [s["t"] for s in doc["timeline"]]
    # the leak group is drawn red and marked; the pool's highest count is its dashed line
    leak_k = [k for k, t in enumerate(doc["timeline_groups"]) if t["group"] is not None
              and doc["groups"][t["group"]]["leak"]]
    (leak_line,) = [a for a in groups if int(a["data-group"]) in leak_k]
    assert leak_line["stroke"] == "#d62728"
    assert sum(1 for t, a in page.tags if a.get("class") == "leakmark") == 1
    pool_k = [k for k, t in enumerate(doc["timeline_groups"]) if t["pool"]]
    (poolmax,) = [a for t, a in page.tags if a.get("class") == "poolmax"]
    assert int(poolmax["data-group"]) == pool_k[0]
    text = " ".join(page.text)
    assert f"pool max {max(s['groups'][pool_k[0]][0] for s in doc['timeline'])}" in text
    # then the leak group with its stack, the user's frame first; the churn table
    assert doc["groups"][0]["title"] in text
    assert re.search(r"at\s+open_for_request \(samples/py_staircase\.py:\d+\)", text)
    assert "Creations per stack" in text and "Pools" in text and "Suspects" in text
    # it renders, offline, to a page that is not blank: the leak's red is on it
    png = tmp_path / "report.png"
    screenshot(out, png)
    w, h, colours = png_pixels(png)
    assert w >= 900 and h >= 900
    assert len(colours) > 20, "a blank page"
    assert colours.get(bytes([0xd6, 0x27, 0x28]), 0) > 50, "the leak line is not drawn"
    if os.environ.get("LEAKSHIM_UPDATE_SCREENSHOT") == "1":
        shutil.copy(png, SCREENSHOT)


def test_html_page_of_a_healthy_run(pg, tmp_path):
    path = run_report(FIXED, pg.dsn, tmp_path, "fixed", 8)
    doc = json.loads(path.read_text())
    r = tool("report", "--format", "html", path)
    assert r.returncode == 0, r.stderr
    page = parse(r.stdout)
    lines = [a for t, a in page.tags if t == "polyline"]
    assert len(lines) == 1 + len(doc["timeline_groups"]) and len(doc["timeline"]) >= 5
    assert not [a for t, a in page.tags if a.get("class") == "leakmark"]
    assert not [a for a in lines if a["stroke"] == "#d62728"]
    assert "No leaked database connection." in " ".join(page.text)
    assert "0 leaked database connections in 1 report." in " ".join(page.text)


def test_every_string_is_escaped(pg, tmp_path):
    path = run_report(STAIR, pg.dsn, tmp_path, "stair", 3)
    doc = json.loads(path.read_text())
    evil = '<script>alert("x")</script>&<b>'
    doc["program"] = evil
    doc["groups"][0]["title"] = evil
    for st in doc["stacks"].values():
        for f in st.get("pyframes", []):
            f["func"] = evil
    bad = tmp_path / "evil.json"
    bad.write_text(json.dumps(doc))
    r = tool("report", "--format", "html", bad)
    assert r.returncode == 0, r.stderr
    assert "<script" not in r.stdout and "<b>" not in r.stdout
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&lt;b&gt;" in r.stdout
    page = parse(r.stdout)
    assert evil in " ".join(page.text)  # shown as text, intact


def test_three_processes_merged_by_stack(pg, tmp_path):
    a = run_report(STAIR, pg.dsn, tmp_path, "a", 3)
    b = run_report(STAIR, pg.dsn, tmp_path, "b", 5)
    c = run_report(FIXED, pg.dsn, tmp_path, "c", 4)
    r = tool("report", "--format", "json", a, b, c)
    assert r.returncode == 0, r.stderr
    merged = json.loads(r.stdout)
    schema = json.loads((ROOT / "tools" / "merged.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(merged)
    assert [x["pid"] for x in merged["reports"]] == [json.loads(p.read_text())["pid"] for p in (a, b, c)]
    leaks = [g for g in merged["groups"] if g["leak"]]
    assert len(leaks) == 1  # the two leaky processes' groups are one group
    (g,) = leaks
    assert g["processes"] == 2 and g["total"] == 8 and g["counts"] == [3, 5, None]
    assert g["title"].endswith("leaked in 2 of 3 processes, 8 in all")
    assert re.fullmatch(r"open_for_request \(samples/py_staircase\.py:\d+\)", g["frames"][0])
    text = tool("report", a, b, c)
    assert text.returncode == 0 and "leaked in 2 of 3 processes, 8 in all" in text.stdout
    assert "8 leaked database connections in 3 reports" in text.stdout
    html = tool("report", "--format", "html", a, b, c)
    assert html.returncode == 0
    assert "leaked in 2 of 3 processes, 8 in all" in html.stdout
    assert html.stdout.count('<svg class="chart"') == 3


def test_report_refuses_what_is_not_a_report(tmp_path):
    junk = tmp_path / "junk.json"
    junk.write_text('{"hello": 1}')
    r = tool("report", junk)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "not a leakshim JSON report" in r.stderr
    assert tool("report").returncode == 2
    assert tool("report", "--format", "pdf", junk).returncode == 2
    assert tool("report", "--frobnicate", junk).returncode == 2
    missing = tool("report", tmp_path / "nope.json")
    assert missing.returncode == 1 and "cannot read" in missing.stderr
