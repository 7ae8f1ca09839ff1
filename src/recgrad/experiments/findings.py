"""docs/findings.md from the experiments' results: every claim, its experiment, its numbers, its verdict.

Nothing in the page is written by hand: the table rows are the `claims` the experiments return
(their verdicts and evidence are computed from the measured numbers), and each experiment's
section is its verdict paragraph and its figures. Rerun `recgrad experiment all --out docs/figures`
to regenerate it.
"""

import os
from pathlib import Path


def write(results, failures, path, figures_dir, command, seed, made=None):
    """Write the findings page to `path`.

    Args:
        results: result dicts of the experiments that ran (runner.run_one's, with "seconds",
            "quick" and "description" added), in running order.
        failures: [{"name", "error"}] of the experiments that raised.
        path: the Markdown file to write (its folder is created).
        figures_dir: the folder holding the figures and JSON files (links are relative to `path`).
        command: the command line that regenerates the page. seed: the seed used.
        made: how the run is identified beside the command, e.g. "on 2026-12-03 at commit 1a2b3c4".
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    link = Path(os.path.relpath(Path(figures_dir).resolve(), path.parent.resolve())).as_posix()
    lines = [
        "# Findings: every claim, measured",
        "",
        f"Generated {made + ' ' if made else ''}by `{command}` (seed {seed}); do not edit by hand, rerun "
        "the command. Each verdict",
        "below is computed from the measured numbers by the experiment's code",
        "(`src/recgrad/experiments/`); the numbers behind every figure are in the JSON file of the",
        f"same experiment in [{link}/]({link}/).",
        "",
    ]
    quick = [result["name"] for result in results if result["quick"]]
    if quick:
        lines += [f"Run in quick mode (smaller data, fewer steps): {', '.join(quick)}.", ""]
    lines += ["| Claim | Data | Experiment | Measured result | Verdict |", "|---|---|---|---|---|"]
    for result in results:
        for claim in result["claims"]:
            figure = claim.get("figure") or (result["figures"][0] if result["figures"] else None)
            measured = _cell(claim["evidence"])
            if figure is not None:
                measured += f" ([figure]({link}/{figure}))"
            lines.append(f"| {_cell(claim['claim'])} | {_cell(claim.get('data', ''))} | "
                         f"[{result['name']}](#{_anchor(result['name'])}) | {measured} | **{claim['verdict']}** |")
    for failure in failures:
        lines.append(f"| (the claims of {failure['name']}) | | {failure['name']} | "
                     f"the experiment failed: {_cell(failure['error'])} | not measured |")
    lines.append("")
    lines += _data_dependent(results)
    for result in results:
        mode = "quick mode" if result["quick"] else "full run"
        lines += [
            f"## {result['name']}",
            "",
            f"{result['description']} ({mode}, {result['seconds']:.0f} s; `recgrad experiment {result['name']}"
            f"{' --quick' if result['quick'] else ''}`; numbers: "
            f"[{result['name']}.json]({link}/{result['name']}.json))",
            "",
            result["verdict"],
            "",
        ]
        for figure in result["figures"]:
            lines += [f"![{result['name']}: {figure}]({link}/{figure})", ""]
    for failure in failures:
        lines += [f"## {failure['name']}", "", f"Failed: `{failure['error']}`", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _data_dependent(results):
    """Lines listing the claims whose verdict differs between the data sets they were measured on."""
    verdicts = {}
    for result in results:
        for claim in result["claims"]:
            if "data" in claim:
                verdicts.setdefault((result["name"], claim["claim"]), {})[claim["data"]] = claim["verdict"]
    changing = {key: by_data for key, by_data in verdicts.items() if len(set(by_data.values())) > 1}
    if not changing:
        return []
    lines = ["Verdicts that change with the data:", ""]
    for (_, statement), by_data in changing.items():
        lines.append(f"- {statement}: " + "; ".join(f"{verdict} on {data}" for data, verdict in by_data.items()) + ".")
    return lines + [""]


def _cell(text):
    """Text safe inside a Markdown table cell (no pipes, no line breaks)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _anchor(name):
    """GitHub's heading anchor for a heading that is just the experiment name."""
    return "".join(c for c in name.lower() if c.isalnum() or c in "-_ ").replace(" ", "-")
