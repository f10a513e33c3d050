"""Output folders: staging, publishing, replacing only what `transfer` wrote, reading runs back."""

import json
from pathlib import Path

from transfer import outputs


def test_force_moves_the_old_output_aside_before_the_new_one_in(tmp_path, monkeypatch):
    """publish() renames the old output aside before moving the new one in."""
    old = tmp_path / "run"
    old.mkdir()
    (old / outputs.CONFIG).write_text("{}")
    staging = outputs.staging_dir(old)
    (staging / outputs.CONFIG).write_text('{"new": true}')
    seen = []
    original = Path.rename

    def spy(self, target):
        seen.append((self.name, Path(target).name))
        return original(self, target)

    monkeypatch.setattr(Path, "rename", spy)
    outputs.publish(staging, old)
    assert json.loads((old / outputs.CONFIG).read_text()) == {"new": True}
    assert seen == [("run", ".run.old"), (".run.partial", "run")]
    assert not (tmp_path / ".run.old").exists() and not staging.exists()
