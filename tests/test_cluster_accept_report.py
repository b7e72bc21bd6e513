"""report.md, junit.xml and report.html of ``corral bench cluster`` from a recorded report.json (a quick run on 5
simulated nodes with a 40 Mbit/s link on n3 and a 10 MiB/s write cap on n4; the CPU quota on n2 did not bind on
that heavily loaded machine, which is why the tests now use 5%): golden files, a JUnit parse, and the HTML in
headless chromium with nothing fetched from the network."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from benchmarks.cluster.html import render_html
from benchmarks.cluster.report import baseline_doc, exit_line, render_junit, render_markdown
from tests.infra import browser
from tests.infra.golden import check_golden

RECORDED = Path(__file__).parent / "fixtures" / "cluster" / "report_faults.json"


@pytest.fixture(scope="module")
def report() -> dict:
    return json.loads(RECORDED.read_text())


def test_markdown_golden(report):
    text = render_markdown(report)
    check_golden("cluster/report.md", text)
    assert text.startswith("# Cluster acceptance: FAIL")
    assert text.index("## Findings") < text.index("## Nodes") < text.index("## Figures")


def test_junit_golden_and_readable_by_ci(report):
    text = render_junit(report)
    check_golden("cluster/junit.xml", text)
    root = ET.fromstring(text)
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [n["name"] for n in report["nodes"]]
    failed = {(c.get("classname"), c.get("name")) for c in root.iter("testcase") if c.find("failure") is not None}
    expected = {
        (f"cluster.{n['name']}", f["check"]) for n in report["nodes"] for f in n["findings"] if f["severity"] == "fail"
    }
    assert failed == expected and len(failed) == int(root.get("failures"))
    assert int(root.get("tests")) == sum(len(n["checks"]) for n in report["nodes"])


def test_exit_line_and_baseline(report):
    line = exit_line(report, "acc/report.json")
    assert line.startswith("failed: " + ", ".join(report["exclude"])) and "--exclude-from acc/report.json" in line
    base = baseline_doc(report)
    assert base["schema"] == "corral.bench.cluster.baseline/1" and base["figures"] == report["figures"]


def test_html_is_self_contained(report):
    text = render_html(report)
    assert "<script" not in text and "http://" not in text and "https://" not in text and "@import" not in text
    assert text.count("<svg") >= 4  # bars per figure, the network heat map, the all-reduce curve


@pytest.mark.slow
def test_html_in_headless_chromium_shows_every_node_and_fetches_nothing(report, tmp_path):
    if browser.missing():
        pytest.skip(browser.missing())
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    loaded = browser.load(page, tmp_path / "chromium")
    assert loaded.requests == [], f"the report fetched {loaded.requests}"
    assert 'id="verdict"' in loaded.dom and "Cluster acceptance: FAIL" in loaded.dom
    for n in report["nodes"]:
        row = loaded.dom.split(f'data-node="{n["name"]}"', 1)[1].split("</tr>", 1)[0]
        assert n["name"] in row and f'class="{n["verdict"]}"' in row
    assert loaded.dom.count("<svg") >= 4


@pytest.mark.slow
def test_the_fetch_check_sees_a_page_that_fetches(tmp_path):
    """The control: the same check on a page that pulls an image (from loopback, inside chromium's own namespace)."""
    if browser.missing():
        pytest.skip(browser.missing())
    page = tmp_path / "fetching.html"
    page.write_text('<!DOCTYPE html><html><body><img src="http://127.0.0.1:9/pixel.png"></body></html>')
    loaded = browser.load(page, tmp_path / "chromium")
    assert loaded.requests == ["http://127.0.0.1:9/pixel.png"]
