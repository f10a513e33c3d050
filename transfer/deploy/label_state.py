"""The state of a labelling project being labelled (`transfer.deploy.labelling` describes the whole):
the photos, their features, the labels, the queue of what to show, and each action of the page, which
changes the state and the project's files together."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from transfer.core.errors import InvalidOptionError
from transfer.outputs import publishing

#: Labels between two recomputations of the order, the suggestions and the estimate.
REFIT_EVERY = 5
#: How many photos each recomputation orders (the page goes on from them while the next one runs).
QUEUE = 20
LABELS, CONFIG, REVIEWED = "labels.csv", "project.json", "audit_reviewed"


@dataclass
class Labelling:
    """A project being labelled: the photos it knows (`paths`, their `features` row by row), the labels
    by path (rows of `labels.csv` whose photo is gone are kept as they are), the classes, and the queue
    of photos to show, first first. Methods change the state and the files together, under `lock`."""

    folder: Path
    model: str
    paths: list[str]
    features: np.ndarray
    classes: list[str]
    labels: dict[str, str]
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    audit: list[dict] = field(default_factory=list)
    reviewed: set[str] = field(default_factory=set)
    skipped: set[str] = field(default_factory=set)
    queue: list[dict] = field(default_factory=list)
    history: list[tuple] = field(default_factory=list)
    estimate: dict | None = None
    since_refit: int = 0
    refitting: threading.Thread | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self):
        self.index = {path: i for i, path in enumerate(self.paths)}
        self._install(*self._compute(self._snapshot()))

    # --- What the page shows ---------------------------------------------------------------------

    def current(self) -> dict | None:
        """The photo to show now (a queue item), or `None` when nothing is left; recomputes the order
        at once when the queue has run out before a refit brought a new one."""
        with self.lock:
            item = self._head()
            if item is None and self._pool():
                self._install(*self._compute(self._snapshot()))
                item = self._head()
            return item

    def state(self) -> dict:
        with self.lock:
            item = self.current()
            counts = {name: 0 for name in self.classes}
            for label in self.labels.values():
                counts[label] = counts.get(label, 0) + 1
            return {"current": item, "classes": self.classes, "counts": counts, "labelled": len(self.labels),
                    "left": len(self._pool()), "estimate": self.estimate, "refitting": self.is_refitting(),
                    "unreadable": [{"path": p, "reason": r} for p, r in self.unreadable], "can_undo": bool(self.history)}

    def is_refitting(self) -> bool:
        return self.refitting is not None and self.refitting.is_alive()

    def wait(self) -> None:
        """Until the background recomputation, if any, is done (and installed)."""
        while (thread := self.refitting) is not None:  # one may start another as it ends
            thread.join()
            if self.refitting is thread:
                break

    # --- What the page does ----------------------------------------------------------------------

    def label(self, index: int, label: str) -> None:
        """Labels photo `index` with class `label`, at once in `labels.csv`.

        Raises:
            InvalidOptionError: an unknown photo or class.
        """
        with self.lock:
            path = self._path(index)
            if label not in self.classes:
                raise InvalidOptionError(f"{label!r} is not a class of this project ({', '.join(self.classes)}); add it first.")
            self.history.append(("label", path, self.labels.get(path), self._take(index)))
            self.labels[path] = label
            self._save(audited=path)
            self.since_refit += 1
            if self.since_refit >= REFIT_EVERY:
                self.refit()

    def accept(self, index: int) -> str:
        """Labels photo `index` with the suggestion shown for it; returns that label.

        Raises:
            InvalidOptionError: the photo is not the one shown, or has no suggestion yet.
        """
        with self.lock:
            item = self.current()
            if item is None or item["index"] != index or item["suggested"] is None:
                raise InvalidOptionError("no suggestion to accept for this photo yet: label it with a class.")
            self.label(index, item["suggested"])
            return item["suggested"]

    def skip(self, index: int) -> None:
        """Leaves photo `index` for now (until the project is reopened); an audited photo keeps its given label."""
        with self.lock:
            path = self._path(index)
            self.history.append(("skip", path, self.labels.get(path), self._take(index)))
            self.skipped.add(path)
            given = {row["path"]: row["given"] for row in self.audit}
            if path in given:
                self.labels.setdefault(path, given[path])
                self._save(audited=path)

    def undo(self) -> dict | None:
        """Takes back the last label or skip of this session (its row as it was before), shows that photo again."""
        with self.lock:
            if not self.history:
                return None
            action, path, previous, item = self.history.pop()
            self.skipped.discard(path)
            self.reviewed.discard(path)
            if previous is None:
                self.labels.pop(path, None)
            else:
                self.labels[path] = previous
            if action == "label":
                self.since_refit = max(0, self.since_refit - 1)
            self._save()
            if item is not None:
                self.queue.insert(0, item)
            return item

    def add_class(self, name: str) -> None:
        """A new class, written to `project.json` at once.

        Raises:
            InvalidOptionError: an empty name, one with a comma, quote or line break, over 64 characters, or one there already.
        """
        from transfer.core.choices import UNKNOWN

        name = str(name).strip()
        if not name or len(name) > 64 or any(c in name for c in ',"\n\r'):
            raise InvalidOptionError(f"class name {name!r}: expected 1 to 64 characters, without commas, quotes or line breaks.")
        if name == UNKNOWN:
            raise InvalidOptionError(f"class name {name!r} is the answer for photos outside the classes; a run trained with it "
                                     f"records no detector of such photos. Choose another name (such as 'other').")
        with self.lock:
            if name in self.classes:
                raise InvalidOptionError(f"class {name!r} is there already.")
            self.classes.append(name)
            self._save()

    def refit(self) -> None:
        """Recomputes the order, the suggestions and the estimate on a background thread (one at a time)."""
        with self.lock:
            if self.is_refitting():
                return
            self.since_refit = 0
            snapshot = self._snapshot()

            def work():
                computed = self._compute(snapshot)
                with self.lock:
                    self._install(*computed)
                    self.refitting = None
                    if self.since_refit >= REFIT_EVERY:  # labels came in while it ran: once more
                        self.refit()

            self.refitting = threading.Thread(target=work, name="label-refit", daemon=True)
            self.refitting.start()

    # --- Inside ----------------------------------------------------------------------------------

    def _path(self, index: int) -> str:
        if not isinstance(index, int) or not 0 <= index < len(self.paths):
            raise InvalidOptionError(f"photo {index!r}: expected a photo index from 0 to {len(self.paths) - 1}.")
        return self.paths[index]

    def _pool(self) -> list[int]:
        return [i for i, path in enumerate(self.paths) if path not in self.labels and path not in self.skipped]

    def _open_audit(self) -> list[dict]:
        return [row for row in self.audit if row["path"] not in self.reviewed and row["path"] not in self.skipped]

    def _head(self) -> dict | None:
        for item in self.queue:
            path = self.paths[item["index"]]
            if path in self.skipped:
                continue
            if item["kind"] == "audit" and path not in self.reviewed:
                return item
            if item["kind"] != "audit" and path not in self.labels:
                return item
        return None

    def _take(self, index: int) -> dict | None:
        """Removes photo `index`'s item from the queue and returns it."""
        for position, item in enumerate(self.queue):
            if item["index"] == index:
                return self.queue.pop(position)
        return None

    def _snapshot(self):
        labelled = [(self.index[p], self.classes.index(label)) for p, label in self.labels.items() if p in self.index]
        return list(self.classes), labelled, self._pool()

    def _compute(self, snapshot) -> tuple[list[dict], dict | None]:
        from transfer.metrics.acquisition import next_to_label

        classes, labelled, pool = snapshot
        rows = np.array([i for i, _ in labelled], dtype=int)
        labels = np.array([c for _, c in labelled], dtype=int)
        picks = next_to_label(self.features[pool], self.features[rows], labels, min(QUEUE, len(pool)), classes=classes) if pool else []
        queue = [{"index": pool[p.index], "kind": p.kind, "reason": p.reason, "suggested": None if p.suggested is None else classes[p.suggested],
                  "confidence": None if p.confidence is None else round(p.confidence, 3), "audit": None} for p in picks]
        return queue, estimate(self.features[rows], labels)

    def _install(self, queue: list[dict], estimate: dict | None) -> None:
        audited = [{"index": self.index[row["path"]], "kind": "audit", "suggested": row["suggested"], "confidence": None,
                    "reason": f"audit: the label {row['given']} is doubted (chance it is wrong {float(row['score']):.2f}); "
                              f"the audit suggests {row['suggested']}", "audit": row} for row in self._open_audit()]
        shown = self._head() if self.queue else None  # the photo on the page stays until it is labelled
        rest = [item for item in audited + queue if shown is None or item["index"] != shown["index"]]
        if shown is not None and shown["kind"] != "audit":
            fresh = {item["index"]: item for item in queue}
            rest.insert(len([i for i in rest if i["kind"] == "audit"]), fresh.get(shown["index"], shown))
        self.queue, self.estimate = rest, estimate

    def _save(self, audited: str | None = None) -> None:
        """`labels.csv` and `project.json` as the state is now, each written to a temporary name and renamed."""
        import pandas as pd

        if audited is not None and audited in {row["path"] for row in self.audit}:
            self.reviewed.add(audited)
        publishing.write_table(self.folder / LABELS, pd.DataFrame({"path": list(self.labels), "label": list(self.labels.values())},
                                                                 columns=["path", "label"]))
        config = {"model": self.model, "classes": self.classes}
        if self.audit:
            config[REVIEWED] = sorted(self.reviewed)
        if config != getattr(self, "_written", None):
            publishing.write_json(self.folder / CONFIG, config)
            self._written = {**config, "classes": list(self.classes)}


def estimate(features: np.ndarray, labels: np.ndarray) -> dict | None:
    """`{"accuracy", "images", "folds"}`: the out-of-fold accuracy of the tool's logistic head on what is
    labelled (`transfer.metrics.logistic`, stratified folds), once two classes have 2 labels or more
    each (the classes with fewer are left out of the estimate); `None` before."""
    from transfer.metrics.logistic import logistic_out_of_fold, stratified_folds

    counts = np.bincount(labels) if len(labels) else np.zeros(0, int)
    kept = np.flatnonzero(counts >= 2)
    if len(kept) < 2:
        return None
    rows = np.isin(labels, kept)
    dense = np.searchsorted(kept, labels[rows])
    folds = stratified_folds(dense, len(kept), seed=0)
    probabilities = logistic_out_of_fold(features[rows], dense, folds, len(kept), seed=0)
    return {"accuracy": round(float(np.mean(probabilities.argmax(axis=1) == dense)), 4), "images": int(rows.sum()),
            "folds": int(folds.max())}
