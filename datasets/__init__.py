"""Built-in datasets, materialized as image folders without network access.

This folder installs as `transfer.datasets`. `RECIPES` maps a name to a function
`(out_dir: Path) -> Path` that writes the dataset in the folder layout described in
`datasets/README.md` and returns the folder to train on.
"""

from transfer.datasets.digits import materialize as digits

RECIPES = {"digits": digits}
