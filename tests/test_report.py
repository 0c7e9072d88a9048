"""analysis.report: one folder of tables, figures, report.md and a self-contained report.html."""
from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path

import html5lib
import pytest

from ablations.experiment import Selection
from analysis import report
from analysis.synthetic import write_run

ROOT = Path(__file__).resolve().parents[1]
PE, REDUCTION = ROOT / "sweeps" / "pe.yaml", ROOT / "sweeps" / "reduction.yaml"
# top-1 per seed: LE clearly below PA (a CI that excludes 0), the others within noise
TOP1 = {"none": [72.0, 72.6, 71.1], "LE": [69.0, 69.2, 68.9], "GL": [72.3, 71.7, 72.6], "PA": [72.5, 72.0, 72.4],
        "Avg": [72.0, 72.9, 71.8], "Max": [71.0, 73.0, 72.1]}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """A report of the pe and reduction sweeps over synthetic runs with known numbers (3 seeds)."""
    results = tmp_path_factory.mktemp("r") / "results"
    for sweep, cells in ((PE, ("none", "LE", "GL", "PA")), (REDUCTION, ("Avg", "Max"))):
        for cell in cells:
            for seed in range(3):
                write_run(results / sweep.stem, cell, seed, top1=TOP1[cell][seed], sweep_file=sweep)
    assert report.main([str(PE), str(REDUCTION), "--results-root", str(results), "--seeds", "0,1,2"]) == 0
    (folder,) = (results / "reports" / "pe+reduction").iterdir()
    return folder


def test_the_report_folder_holds_every_table_and_figure(written):
    for sweep in ("pe", "reduction"):
        names = sorted(p.name for p in (written / sweep).iterdir())
        assert names == ["bars.pdf", "bars.png", "curves.pdf", "curves.png", "table.csv", "table.md", "table.tex",
                         "table_long.csv"], names
        assert "\\begin{table}" in (written / sweep / "table.tex").read_text()  # ready to \\input
    text = (written / "report.md").read_text()
    for heading in ("## Protocol", "### Deviations from the published protocol", "## Provenance",
                    "### What the numbers show"):
        assert heading in text
    assert "pe: the published numbers come from recipe paper-ablation, these runs from quick" in text
    assert "| DWConv | 3 |" in text and "72.88" in text  # the shared baseline is the reduction table's DWConv row
    assert "code: git commit " + "0" * 40 in text and "seeds: 0, 1, 2" in text
    # reduction's DWConv is pe's PA run: the caption and the figures' subtitle say where it was launched
    assert "Runs shared with another table (one config, one run, launched there): DWConv = pe PA." in text
    from analysis.figures import short_protocol
    from analysis.runs import collect
    from analysis.source import load_layout
    from analysis.table import build_table

    results = written.parents[2]
    layout = load_layout(REDUCTION, results_root=results, selection=Selection(seeds=(0, 1, 2)))
    table = build_table(collect(results, run_dirs=layout.run_dirs, metas=layout.run_meta)[0], layout)
    assert "shared runs: DWConv = pe PA" in short_protocol(table)


def test_what_the_numbers_show_follows_the_numbers(written):
    text = (written / "report.md").read_text()
    pe, reduction = text.split("(sweep reduction)")
    assert re.search(r"top-1 differs beyond seed-to-seed noise for: LE \(-3\.27, 95 % CI \[-\d", pe), pe
    assert "The 95 % interval of none, GL against PA contains 0" in pe
    assert "The paper's order of the rows (PA > GL > LE > none) does not hold in our means" in pe
    assert "leave the order unestablished" in pe
    assert "The 95 % interval of Avg, Max against DWConv contains 0" in reduction
    assert "not comparable with the paper's" in reduction


def test_the_html_is_well_formed_and_self_contained(written):
    page = (written / "report.html").read_bytes()
    parser = html5lib.HTMLParser(strict=True)
    document = parser.parse(page)  # raises on any parse error
    ns = {"h": "http://www.w3.org/1999/xhtml"}
    images = document.findall(".//h:img", ns)
    assert len(images) == 4 and len(document.findall(".//h:table", ns)) == 2
    for img in images:
        src = img.get("src")
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    refs = [e.get(a) for e in document.iter() for a in ("src", "href") if e.get(a)]
    assert all(r.startswith("data:") for r in refs), "nothing is fetched from elsewhere"


def test_the_html_opens_offline_in_a_browser_engine(written, browser, tmp_path):
    """Headless Chromium loads the page with every network name unresolvable; a script appended to a copy
    reports what it rendered: the images decoded, the tables and headings."""
    probe = ("<script>addEventListener('load', () => { document.title = JSON.stringify({"
             "images: [...document.images].map(i => i.complete && i.naturalWidth > 0), "
             "tables: document.querySelectorAll('table').length, "
             "headings: document.querySelectorAll('h2').length}); });</script>")
    page = tmp_path / "page.html"
    page.write_text((written / "report.html").read_text().replace("</body>", probe + "</body>"))
    out = subprocess.run([browser, "--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP * ~NOTFOUND",
                          "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    title = re.search(r"<title>(.*?)</title>", out.stdout)
    assert title, out.stderr[-2000:]
    seen = json.loads(title.group(1).replace("&quot;", '"'))
    assert seen == {"images": [True] * 4, "tables": 2, "headings": 4}, seen


def test_a_report_of_sweeps_never_launched_is_refused(tmp_path, capsys):
    assert report.main([str(PE), "--results-root", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert "no run of these sweeps" in err and err.count("\n") == 1
    assert not (tmp_path / "results").exists()


def test_a_row_without_an_interval_is_never_said_to_be_within_noise(tmp_path):
    """PA with 3 seeds, GL with one seed far above: GL has no interval, and the text says so."""
    from analysis.runs import collect
    from analysis.source import load_layout
    from analysis.table import build_table

    results = tmp_path / "results"
    for seed in range(3):
        write_run(results / "pe", "PA", seed, top1=72.0 + seed / 10, sweep_file=PE)
    write_run(results / "pe", "GL", 0, top1=80.0, sweep_file=PE)
    layout = load_layout(PE, results_root=results, selection=Selection(seeds=(0, 1, 2)))
    text = report.reading(build_table(collect(results, run_dirs=layout.run_dirs, metas=layout.run_meta)[0], layout))
    assert "No interval for GL" in text and "contains 0" not in text and "differs beyond" not in text, text
    assert "No finished run for none, LE" in text
