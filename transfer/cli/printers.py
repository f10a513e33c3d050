"""What the command line shows: progress, warnings and errors on stderr; results on stdout.

stdout carries only what the user asked for (tables, CSV, JSON, paths written), so it can be
redirected or piped; everything else goes to stderr.
"""

from __future__ import annotations

import csv
import json
import sys
from contextlib import contextmanager
from typing import Iterator

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Column, Table

from transfer.cli.app import messages, results
from transfer.cli.parameters import OutputFormat
from transfer.core.progress import Reporter

class RichReporter(Reporter):
    """Messages and progress bars on stderr, so stdout carries only results."""

    def message(self, text: str) -> None:
        messages.print(escape(text), highlight=False)

    def warning(self, text: str) -> None:
        messages.print(f"[yellow]{escape(text)}[/yellow]", highlight=False)

    @contextmanager
    def progress(self, description: str, total: int) -> Iterator:
        columns = (  # a narrow terminal shortens the description and the bar, never the counts or the time
            TextColumn("{task.description}", table_column=Column(no_wrap=True, overflow="ellipsis")), BarColumn(),
            MofNCompleteColumn(table_column=Column(no_wrap=True, min_width=9)),
            TimeRemainingColumn(elapsed_when_finished=True, table_column=Column(no_wrap=True, min_width=7)),  # when finished: the time it took
        )
        with Progress(*columns, console=messages, transient=False) as bar:
            task = bar.add_task(description, total=total)

            class _Advance:
                def advance(self, amount: int = 1) -> None:
                    bar.advance(task, amount)

            yield _Advance()


def _backbone_column(labels) -> Column:
    """The backbone column of a table, for names from `transfer.outputs.figures.distinct_labels` (two model
    files never look alike): as wide as the longest (up to 48 characters), and never cut short (a
    longer one wraps)."""
    return Column("backbone", overflow="fold", min_width=min(max(map(len, labels), default=8), 48))


def print_trained(result) -> None:
    metrics = result.metrics
    closed_form = metrics.get("best_stage") == "logistic" and metrics["epochs_run"] <= 1  # a logistic fit, no epochs
    epochs = ("a logistic fit" if closed_form else f"{metrics['epochs_run']} epoch{'' if metrics['epochs_run'] == 1 else 's'}") + f", {metrics['train_seconds']} s"
    if (metrics.get("calibration") or {}).get("applied"):
        epochs += "; the log loss after a temperature fitted on these same images"
    if metrics.get("measured_on") == "out_of_fold":  # --refit: the head saw every image, measured before
        scores = (f"cross-validated accuracy {metrics['val_accuracy']:.4f}  log loss {metrics['val_loss']:.4f}  (out of fold on "
                  f"{metrics['num_train']} images, then the head refit on all of them; {epochs})")
    else:
        scores = ((f"val mAP {metrics['val_map']:.4f}  exact label sets {metrics['val_accuracy']:.4f}" if "val_map" in metrics
                   else f"val_accuracy {metrics['val_accuracy']:.4f}")
                  + f"  val_loss {metrics['val_loss']:.4f}  ({metrics['num_train']} train / {metrics['num_val']} val images, {epochs})")
    messages.print("[bold green]done[/bold green] " + scores, highlight=False)
    results.print(f"Run written to {result.run_dir}", highlight=False)
    from transfer.training.distribute import worker_index

    if worker_index() is None:  # the chief, which published the run (another worker of a cluster removed its copy)
        print_next(*next_commands(result.run_dir))


def print_next(*steps: str) -> None:
    """What to do next, after a command's results: a step, or each of several on its own line under
    "Next:"; each a command the user can paste as it stands (paths quoted for the shell), or a sentence."""
    lines = f" {steps[0]}" if len(steps) == 1 else "".join(f"\n  {step}" for step in steps)
    results.print("Next:" + lines, highlight=False, soft_wrap=True)


def next_commands(run_dir) -> list[str]:
    """The commands that follow a run: its report with the user's own test images beside validation's
    (a multi-label run's as a path,labels manifest), a prediction on one of its validation images, an export."""
    from shlex import quote

    from transfer.outputs import artifacts

    run = artifacts.Run.open(run_dir)
    multi_label = bool(run.config().get("multi_label"))
    test = ("TEST.csv   # your labelled images the run never saw: a path,labels CSV" if multi_label else
            "TEST_DIR   # your labelled images the run never saw: one subfolder per class")
    image = run.validation_images()["path"].iloc[0]
    where = quote(str(run_dir))
    return [f"transfer report {where} --test {test}",
            f"transfer predict {where} {quote(str(image))}",
            f"transfer export {where} --out {quote(str(run_dir) + '-export')}"]


class PredictionPrinter:
    """Predictions on stdout as they come (csv, json) or as one table at the end; every file that
    was not scored is also named on stderr with the reason."""

    def __init__(self, format: OutputFormat, threshold: float | None = None):
        """`threshold`: the model's novelty threshold, shown in the table's novelty heading."""
        self.format, self.count, self.failed, self.rows, self.threshold = format, 0, 0, [], threshold
        self.writer = csv.writer(sys.stdout, lineterminator="\n")  # LF, as every other CSV file written here

    def add(self, p) -> None:
        """Prints one prediction; the CSV header comes with the first, so a command that fails
        before any image is scored leaves stdout empty."""
        self.count += 1
        if self.format is OutputFormat.csv and self.count == 1:
            self.writer.writerow(["path", "rank", "label", "probability", "answer", "error", "novelty", "why_unknown"])
        if p.error is not None:
            self.failed += 1
            messages.print(f"[yellow]skipped {escape(f'{p.path}: {p.error}')}[/yellow]", highlight=False)
        if self.format is OutputFormat.csv:
            if p.error is not None:
                self.writer.writerow([p.path, "", "", "", "", p.error, "", ""])
            novelty = "" if p.novelty is None else f"{p.novelty:.6g}"
            for rank, (label, probability) in enumerate(zip(p.labels, p.probabilities), start=1):
                self.writer.writerow([p.path, rank, label, f"{probability:.6f}", p.answer, "", novelty, p.why_unknown or ""])
            sys.stdout.flush()
        elif self.format is OutputFormat.json:
            print(("[\n" if self.count == 1 else ",\n") + _indented(json.dumps(p.to_dict(), indent=2)), end="", flush=True)
        else:
            self.rows.append(p)

    def close(self) -> None:
        """Ends the output: the JSON list is closed where one was opened (nothing is printed when no
        image was scored: the command failed before)."""
        if self.format is OutputFormat.json and self.count:
            print("\n]", flush=True)
        elif self.format is OutputFormat.table and any(p.error is None for p in self.rows):
            k = max((len(p.labels) for p in self.rows), default=0)
            from transfer.evaluation.prediction import UNKNOWN

            multi = any(p.chosen is not None for p in self.rows)  # multi-label: the labels given, then the ranks
            unknown = multi or any(p.answer == UNKNOWN for p in self.rows)  # the answer column is shown where it differs
            novelty = any(p.novelty is not None for p in self.rows)
            beyond = f" (unknown > {self.threshold:.3g})" if self.threshold is not None else ""
            table = Table("image", *(["labels" if multi else "answer"] if unknown else []), *[f"#{rank}" for rank in range(1, k + 1)],
                          *([Column("novelty" + beyond, justify="right")] if novelty else []))
            why = {"novel": " (novel)", "low_confidence": " (low confidence)"}
            for p in self.rows:
                cells = [escape(f"{label} {probability:.1%}") for label, probability in zip(p.labels, p.probabilities)]
                cells += [f"{p.novelty:.3f}" if p.novelty is not None else ""] if novelty and cells else []
                answer = [escape((p.answer or ("(none)" if multi else "")) + why.get(p.why_unknown, ""))] if unknown else []
                table.add_row(escape(p.path), *(answer + cells if cells else [f"[red]{escape(p.error)}[/red]"]))
            results.print(table)


def pd_isna(value) -> bool:
    return value is None or value != value  # NaN is the one value unequal to itself


def _indented(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def print_cross_validation(summary: dict, folds: int) -> None:
    """The cross-validation's summary: mean +- sd of each metric per backbone, and the failed folds."""
    top_k = f"top-{summary['top_k']}" if summary.get("top_k") else "top-k"
    metrics = summary.get("metrics", ["accuracy", "top_k_accuracy", "log_loss"])
    names = {"accuracy": "accuracy", "top_k_accuracy": top_k, "log_loss": "log loss", "mean_average_precision": "mAP",
             "exact_match": "exact sets", "micro_f1": "micro F1"}
    numbers = [Column(name, justify="right") for name in ["folds", *(names[m] for m in metrics)]]
    from transfer.outputs.figures import distinct_labels

    shown = dict(zip(summary["backbones"], distinct_labels(list(summary["backbones"]))))
    table = Table(_backbone_column(shown.values()), *numbers, "failed folds", title=f"{folds}-fold cross-validation: mean +- sd over the held-out folds")
    for name, entry in summary["backbones"].items():
        def cell(metric):
            value = entry[metric]
            if value["mean"] is None:
                return ""
            return f"{value['mean']:.4f}" + (f" +- {value['std']:.4f}" if value["std"] is not None else "")

        failed = "; ".join(f"{f['fold']}: {f['error']}" for f in entry["failed"])
        table.add_row(escape(shown[name]), str(entry["folds_completed"]), *(cell(metric) for metric in metrics), escape(failed))
    results.print(table)
    if summary.get("verdict"):
        results.print(summary["verdict"], highlight=False)


def print_audit(result) -> None:
    """What the audit found, how far its list of label issues can be trusted, and what to do next."""
    summary, table = result.summary, result.table
    results.print(
        f"{summary['num_images']} images, {summary['folds']}-fold out-of-fold accuracy {summary['out_of_fold_accuracy']:.4f}: "
        f"{summary['label_issues']} label issue(s), {summary['near_duplicate_pairs']} near-duplicate pair(s), "
        f"{summary['outliers']} outlier(s).", highlight=False,
    )
    if summary["estimated_precision"] is not None:
        results.print(f"Estimated precision of the label issues {summary['estimated_precision']:.2f} (the mean chance that a "
                      f"flagged label is wrong); about {summary['expected_wrong_labels']:.1f} wrong label(s) expected in "
                      f"all, {summary['estimated_recall']:.0%} of them in the list.", highlight=False)
    issues = table[table["kind"] == "label_issue"]
    if len(issues):
        shown = Table("path", "given", "suggested", Column("chance wrong", justify="right"), title="The surest label issues")
        for row in issues.head(10).itertuples():
            shown.add_row(escape(row.path), escape(row.given), escape(row.suggested), f"{row.score:.3f}")
        results.print(shown)
    out = result.path
    print_next(f"look at the top of {out}/audit.html (every flagged image beside its given and suggested class); "
               f"all of them are in {out}/audit.csv.")
    results.print(summary["advice"], highlight=False)
    if summary["clean_advised"]:
        backbone = f" --backbone {summary['backbone']}" if summary.get("backbone") else ""
        results.print(f"Then train on the {summary['clean_images']} images of clean.csv (the validation images are those of "
                      f"original.csv, so the two runs compare): transfer train --manifest {out}/clean.csv{backbone} "
                      f"--out RUN_DIR", highlight=False)


def print_probe(result) -> None:
    """The backbones ranked by the probe, what that is, and the curve's sentences."""
    numbers = [Column(name, justify="right") for name in ("probe accuracy", "log loss", "LogME", "features", "pass s", "images/s")]
    from transfer.outputs.figures import distinct_labels

    shown = dict(zip(result.table["backbone"], distinct_labels(result.table["backbone"])))
    table = Table(_backbone_column(shown.values()), *numbers, "error", title="Linear probe on frozen features, best first")
    for row in result.table.itertuples():
        failed = bool(row.error)
        table.add_row(escape(shown[row.backbone]), *([""] * 6 if failed else [
            f"{row.accuracy:.4f} +- {row.accuracy_sd:.4f}", f"{row.log_loss:.4f}", f"{row.log_me:.4f}", str(row.feature_size),
            f"{row.pass_seconds:.1f}", f"{row.images_per_second:.1f}"]), escape(row.error or ""))
    results.print(table)
    summary = result.summary
    margin = f", {summary['margin']:+.3f} ahead of the next" if summary.get("margin") is not None else ""
    results.print(f"Best: {summary['best']}{margin}. {summary['note']}", highlight=False)
    for name, sentence in (summary.get("curve") or {}).items():
        if sentence:
            results.print(f"{name}: {sentence}", highlight=False)
    written = "probe.csv, probe.png" + (", curve.csv, curve.png" if len(result.curve) else "")
    results.print(f"Written to {result.path}: {written}, config.json", highlight=False)


def print_leaderboard(leaderboard) -> None:
    """A comparison's leaderboard, best first; a failed backbone shows its error."""
    multi = leaderboard.attrs.get("rank_by") == "val_map"  # multi-label: mAP, and the share of exact label sets
    second = "val mAP" if multi else f"top-{leaderboard.attrs.get('top_k', 3)}"
    numbers = [Column(name, justify="right") for name in ("parameters", "trainable", "exact sets" if multi else "val acc", second, "train s", "images/s")]
    from transfer.outputs.figures import distinct_labels

    shown = dict(zip(leaderboard["backbone"], distinct_labels(leaderboard["backbone"])))
    table = Table(_backbone_column(shown.values()), "mode", *numbers, "error")
    for row in leaderboard.itertuples():
        failed = bool(row.error)
        table.add_row(
            escape(shown[row.backbone]), row.mode, "" if failed else f"{row.parameters:,}", "" if failed else f"{row.trainable_parameters:,}",
            "" if failed else f"{row.val_accuracy:.4f}", "" if failed else f"{row.val_map if multi else row.top3_accuracy:.4f}",
            "" if failed else f"{row.train_seconds:.0f}", "" if failed else f"{row.images_per_second:.1f}", row.error or "",
        )
    results.print(table)
    if leaderboard.attrs.get("verdict"):
        results.print(leaderboard.attrs["verdict"], highlight=False)


def print_evaluation(evaluation) -> None:
    """Accuracy, top-k and log loss, a row per class, and the skipped files (on stderr); for a
    multi-label model, mean average precision, F1 and exact matches, a row per label; then, where the
    model has an open-set detector, how it separates (`transfer.evaluation.unknown`)."""
    print_scores(evaluation)
    s = evaluation.summary
    if "in_class_unknown" in s:
        line = f"Unknown images: {s['in_class_unknown']:.1%} of the labelled images wrongly answered unknown"
        if "unknown_auroc" in s:
            line += (f"; {s['other_unknown']:.1%} of the {s['num_other']} images outside the classes (--unknown-dir) answered "
                     f"unknown (AUROC {s['unknown_auroc']:.3f})")
        line += f"; novelty threshold {s['unknown_threshold']:.4g}"
        results.print(line + ".", highlight=False)


def print_scores(evaluation) -> None:
    s = evaluation.summary
    if evaluation.multi_label:
        results.print(
            f"mAP {s['mean_average_precision']:.4f}   micro F1 {s['micro_f1']:.4f}   macro F1 {s['macro_f1']:.4f}   exact label "
            f"sets {s['exact_match']:.4f}   ({s['num_images']} images, {s['images_without_label']} without a label)", highlight=False,
        )
        columns = ("precision", "recall", "f1", "average_precision", "support", "threshold")
        table = Table("label", *[Column(name.replace("average_precision", "AP"), justify="right") for name in columns])
        for name, row in evaluation.per_class.iterrows():
            table.add_row(str(name), *("" if pd_isna(row[c]) else str(int(row[c])) if c == "support" else f"{row[c]:.3f}" for c in columns))
        results.print(table)
        for row in evaluation.skipped.itertuples():
            messages.print(f"[yellow]skipped {escape(f'{row.path}: {row.reason}')}[/yellow]", highlight=False)
        return
    numbers = [Column(name, justify="right") for name in ("precision", "recall", "f1", "support")]
    results.print(  # a line of its own: as a table title it wrapped at the table's width
        f"accuracy {s['accuracy']:.4f}   top-{s['top_k']} {s['top_k_accuracy']:.4f}   log loss {s['log_loss']:.4f}"
        f"   ECE {s['ece']:.4f}   ({s['num_images']} images, TTA {'on' if s['tta'] else 'off'})", highlight=False,
    )
    table = Table("class", *numbers)
    for name, row in evaluation.per_class.iterrows():
        table.add_row(str(name), f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(int(row["support"])))
    results.print(table)
    for row in evaluation.skipped.itertuples():
        messages.print(f"[yellow]skipped {escape(f'{row.path}: {row.reason}')}[/yellow]", highlight=False)


def print_backbones(rows: list[dict]) -> None:
    """The registry: input size, parameters and pretrained weights file of each backbone."""
    table = Table("backbone", "input", "parameters", "pretrained weights file")
    for row in rows:
        table.add_row(row["name"], row["input"], f"{row['parameters']:,} {row['counted']}", row["weights_file"])
    results.print(table)
