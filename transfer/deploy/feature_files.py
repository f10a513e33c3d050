"""`transfer features`: each image's pooled backbone features as a Parquet table.

Every option, the model reference and the output are checked here before TensorFlow is imported
(`transfer.training.features`, which extracts and caches the features, is imported after), so a mistake is
answered at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transfer.outputs import artifacts, layout, publishing
from transfer.core import extras
from transfer.models.registry import get_backbone
from transfer.models.external import FILE_SUFFIX, HUB_PREFIX
from transfer.models.imagenet import ImageNetClassifier, is_imagenet
from transfer.core.errors import require
from transfer.core.progress import SILENT, Reporter
from transfer.data.sources import list_folder


@dataclass(frozen=True)
class FeatureSource:
    """The model whose features are written: a run directory, `imagenet:NAME` (with `weights`, its
    weights file without top), a Keras model file (with `preprocess`, as `--preprocess` of `train`)
    or `keras-hub:PRESET`."""

    model: str | Path
    weights: str | None = None
    preprocess: str | None = None


def write_features(
    source: FeatureSource,
    data_dir: Path,
    out_file: Path,
    *,
    batch_size: int = 32,
    cache_dir: Path | None = None,
    force: bool = False,
    reporter: Reporter = SILENT,
):
    """`transfer features`: one Parquet row per image of `data_dir`: `path`, `label`, and the
    pooled features as columns `f0000`, `f0001`, ... (`pandas.read_parquet`, then
    `table.filter(like="f")` is scikit-learn's `X`), in `out_file` (a `.parquet` name), or in
    `features.parquet` inside it where it is a folder. Returns the table; skipped files are listed
    in its `skipped` attribute, the file written in its `path`.

    Raises:
        DependencyMissingError: pyarrow is not installed (`pip install 'keras-transfer[features]'`).
    """
    model_ref, weights, preprocess = source.model, source.weights, source.preprocess
    require(batch_size >= 1, "--batch-size", batch_size, "an integer >= 1")
    out_file = publishing.output_file(out_file, name=layout.FEATURES_FILE, suffixes=(".parquet", ".pq"))
    extras.require("features")
    _check_model(model_ref, preprocess, weights)
    publishing.check_destination(out_file, kind="features", force=force, data=(data_dir,))
    listing = list_folder(Path(data_dir), allow_split_names=True)  # folder names are only labels here

    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from transfer.data.folders import find_unreadable
    from transfer.training.features import FeatureCache, default_cache_dir, extract_features, model_feature_extractor

    extractor, size = model_feature_extractor(model_ref, weights, preprocess, reporter)
    paths = listing.files["path"].tolist()
    unreadable = find_unreadable(paths, size, reporter)
    kept = listing.files[~listing.files["path"].isin(unreadable)]
    features = extract_features(
        extractor, kept["path"].tolist(), batch_size, reporter=reporter, description="Features",
        cache=FeatureCache(cache_dir or default_cache_dir(), extractor, size),
    )
    columns = {f"f{i:04d}": features[:, i] for i in range(features.shape[1])}
    table = pd.concat([kept[["path", "label"]].reset_index(drop=True), pd.DataFrame(columns)], axis=1)
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), layout.PARQUET_MARKER: publishing.marker_json("features")})
    with publishing.atomic_path(out_file) as temporary:
        pq.write_table(arrow, temporary)
    skipped = pd.concat([listing.skipped, pd.DataFrame(
        [(path, label, unreadable[path]) for path, label in zip(listing.files["path"], listing.files["label"]) if path in unreadable],
        columns=layout.SKIPPED_COLUMNS,
    )], ignore_index=True)
    table.attrs["skipped"] = skipped
    table.attrs["path"] = out_file
    return table


def _check_model(model_ref: str | Path, preprocess: str | None, weights: str | None) -> None:
    """Refuses a model reference that cannot work, before anything heavy: a model file that is not
    one, a run directory that is not there, an unknown `imagenet:NAME` or a weights path that is
    not a file, `--preprocess` for anything but a model file."""
    text = str(model_ref)
    if text.startswith(HUB_PREFIX) or Path(text).suffix.lower() == FILE_SUFFIX:
        get_backbone(text, preprocess)
        return
    require(preprocess is None, "--preprocess", preprocess, "given only with a model file (a run has its own)")
    if is_imagenet(text):
        ImageNetClassifier.open(text, weights)
    else:
        artifacts.Run.open(Path(text))
