"""Built-in datasets, materialized as image folders without network access.

`RECIPES` maps a name to a function `(out_dir: Path) -> Path` that writes the dataset in the
folder layout described in `datasets/README.md` and returns the folder to train on.
"""

from datasets.digits import materialize as digits

RECIPES = {"digits": digits}
