"""`audit.html`: the audit's flagged images as thumbnails, each beside typical images of its given
class and of the class the model suggests, so that a person can decide at a glance.

A class's typical images are those the out-of-fold model gives their own label the highest
probability, among the images nothing flagged. The page is self-contained (`transfer.reports.pages`).
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from transfer.outputs import layout
from transfer.reports import pages

#: At most this many rows of each kind on the page (all of them are in `audit.csv`).
SHOWN = {"label_issue": 60, "near_duplicate": 30, "outlier": 30}
EXAMPLES = 3

STYLE = """<style>
.issue { display: grid; grid-template-columns: 200px 1fr 1fr; gap: 1rem; align-items: start; padding: .8rem 0; border-bottom: 1px solid #eee; }
.examples { display: flex; gap: .4rem; flex-wrap: wrap; } .examples img { width: 96px; }
.issue h3 { margin: 0 0 .3rem 0; font-size: .95rem; } .flagged img { width: 180px; }
.pair { display: flex; gap: 1rem; align-items: center; padding: .6rem 0; border-bottom: 1px solid #eee; }
.pair figure, .flagged figure { margin: 0; } small { color: #777; word-break: break-all; }
.next { background: #f4f8ff; border: 1px solid #cde; border-radius: 6px; padding: .6rem 1rem; }
</style>"""


def render(images: pd.DataFrame, probabilities: np.ndarray, table: pd.DataFrame, class_names: list[str], summary: dict) -> str:
    """The page of an audit: `images` (`path`, `label`) with their out-of-fold `probabilities`, and `audit.csv`'s `table`."""
    examples = _typical(images, probabilities, set(table["path"]) | set(table["other"].dropna()), class_names)
    kinds = {kind: table[table["kind"] == kind] for kind in SHOWN}
    body = [
        STYLE,
        f"<h1>Audit of {summary['num_images']} images</h1>",
        _headline(summary),
        pages.section(f"Labels to check ({len(kinds['label_issue'])})", _label_issues(kinds["label_issue"], examples)),
        pages.section(f"Near-duplicates ({len(kinds['near_duplicate'])} pairs)", _pairs(kinds["near_duplicate"])),
        pages.section(f"Outliers ({len(kinds['outlier'])})", _outliers(kinds["outlier"], examples)),
    ]
    return pages.page(f"transfer audit: {Path(summary['data']).name}", "\n".join(body))


def _headline(summary: dict) -> str:
    precision = summary["estimated_precision"]
    estimate = "" if precision is None else (
        f" Estimated precision of the labels to check: {precision:.2f} (the mean chance that a flagged label is wrong);"
        f" about {summary['expected_wrong_labels']:.1f} wrong label(s) expected in all.")
    if summary["clean_advised"]:
        then = (f"Then train on <code>{layout.CLEAN_CSV}</code> ({summary['clean_images']} images; its validation images are "
                f"those of <code>original.csv</code>, so the two runs compare), or fix the folders yourself.")
    else:
        then = "Training on <code>clean.csv</code> is not advised: fix the labels that are wrong yourself."
    return (
        f"<p class=headline>{summary['label_issues']} label issue(s), {summary['near_duplicate_pairs']} near-duplicate "
        f"pair(s), {summary['outliers']} outlier(s). Out-of-fold accuracy {summary['out_of_fold_accuracy']:.1%} "
        f"({summary['folds']} folds, {html.escape(str(summary['backbone']))}: {html.escape(summary['method'])}).{estimate}</p>"
        f"<div class=next><b>What to do next.</b> {html.escape(summary['advice'])} Look at the labels to check below, the "
        f"surest first: where the suggested class is right, the image is in the wrong folder. {then} This audit changed "
        f"nothing in the data.</div>"
    )


def _typical(images: pd.DataFrame, probabilities: np.ndarray, flagged: set, class_names: list[str]) -> dict[str, list[str]]:
    """Up to `EXAMPLES` thumbnails per class: the unflagged images whose own label is the most probable out of fold."""
    index = images["label"].map({name: i for i, name in enumerate(class_names)}).to_numpy()
    own = probabilities[np.arange(len(images)), index]
    ranked = images.assign(own=own)[~images["path"].isin(flagged)].sort_values("own", ascending=False, kind="stable")
    return {
        name: [pages.thumbnail(path, 96) for path in ranked.loc[ranked["label"] == name, "path"].head(EXAMPLES)]
        for name in class_names
    }


def _label_issues(rows: pd.DataFrame, examples: dict[str, list[str]]) -> str:
    if rows.empty:
        return "<p>No label is contradicted by the out-of-fold probabilities.</p>"
    items = []
    for row in rows.head(SHOWN["label_issue"]).itertuples():
        items.append(
            f'<div class="issue label-issue"><figure class=flagged>{pages.thumbnail(row.path, 180)}'
            f"<figcaption><b>{html.escape(row.given)} &rarr; {html.escape(row.suggested)}?</b><br>{html.escape(row.note)}<br>"
            f"{_file(row.path)}</figcaption></figure>"
            f"{_examples('given', row.given, examples)}{_examples('suggested', row.suggested, examples)}</div>"
        )
    return "".join(items) + _more(rows, "label_issue")


def _examples(role: str, label: str, examples: dict[str, list[str]]) -> str:
    return f"<div><h3>{role}: {html.escape(label)}</h3><div class=examples>{''.join(examples.get(label, []))}</div></div>"


def _pairs(rows: pd.DataFrame) -> str:
    if rows.empty:
        return "<p>No two images are nearly the same in feature space.</p>"
    items = [
        f'<div class="pair near-duplicate"><figure>{pages.thumbnail(row.path, 140)}<figcaption>{html.escape(row.given)}<br>'
        f"{_file(row.path)}</figcaption></figure><figure>{pages.thumbnail(row.other, 140)}"
        f"<figcaption>{html.escape(row.suggested or row.given)}<br>{_file(row.other)}</figcaption></figure>"
        f"<div>{html.escape(row.note)}</div></div>"
        for row in rows.head(SHOWN["near_duplicate"]).itertuples()
    ]
    return "".join(items) + _more(rows, "near_duplicate")


def _outliers(rows: pd.DataFrame, examples: dict[str, list[str]]) -> str:
    if rows.empty:
        return "<p>No image is far from all the others in feature space.</p>"
    items = [
        f'<div class="issue outlier"><figure class=flagged>{pages.thumbnail(row.path, 180)}<figcaption>'
        f"<b>{html.escape(row.given)}</b><br>{html.escape(row.note)}<br>{_file(row.path)}</figcaption></figure>"
        f"{_examples('given', row.given, examples)}<div></div></div>"
        for row in rows.head(SHOWN["outlier"]).itertuples()
    ]
    return "".join(items) + _more(rows, "outlier")


def _file(path: str) -> str:
    """The file's name, its whole path on hover."""
    return f'<small title="{html.escape(path)}">{html.escape(Path(path).name)}</small>'


def _more(rows: pd.DataFrame, kind: str) -> str:
    hidden = len(rows) - SHOWN[kind]
    return f"<p>{hidden} more in {layout.AUDIT_CSV}.</p>" if hidden > 0 else ""
