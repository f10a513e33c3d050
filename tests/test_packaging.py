"""What installing the project adds: one importable name, `transfer`; and a run loaded by user code."""

import shutil
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

from tests.helpers import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel built from a copy of the project (the build writes build/ and *.egg-info there)."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    source = tmp_path_factory.mktemp("source")
    for name in tracked:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "--quiet", "-w", str(out)],
        check=True,
    )
    (built,) = out.glob("*.whl")
    return built


@pytest.mark.slow
def test_the_wheel_installs_one_top_level_name(wheel):
    assert wheel.name.startswith("keras_transfer-")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"transfer", wheel.name.split("-py3")[0] + ".dist-info"}
    assert {"transfer/cli/__init__.py", "transfer/cli/__main__.py", "transfer/datasets/__init__.py", "transfer/datasets/digits.py"} <= set(names)
    assert "[console_scripts]\ntransfer = transfer.cli:app" in entry_points


def test_import_transfer_and_help_do_not_import_tensorflow():
    script = "import sys, transfer, transfer.cli; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    printed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert printed.split() == ["False", "False"]


@pytest.mark.slow
def test_user_code_loads_a_run_with_one_line_in_a_fresh_process(digits_run, digits_dir, tmp_path):
    """`transfer.load_model(RUN)` and `transfer.load_model(RUN/model.keras)` give the run's scores."""
    from PIL import Image

    from transfer.evaluation.scorers import load_scorer

    image = digits_dir / "7" / sorted(p.name for p in (digits_dir / "7").iterdir())[0]
    expected = load_scorer(digits_run).score_pixels(
        np.asarray(Image.open(image).convert("RGB"), np.float32)[None]  # 32x32 already: no resize
    ).probabilities
    script = textwrap.dedent(f"""
        import numpy as np
        from PIL import Image
        import transfer

        pixels = np.asarray(Image.open({str(image)!r}).convert("RGB"), np.float32)[None]
        for where in ({str(digits_run)!r}, {str(digits_run / "model.keras")!r}):
            model = transfer.load_model(where)
            print(" ".join(f"{{p:.6f}}" for p in model.predict(pixels, verbose=0)[0]))
    """)
    printed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr[-2000:]
    for line in printed.stdout.split("\n")[:2]:
        np.testing.assert_allclose([float(p) for p in line.split()], expected[0], atol=1e-5)
