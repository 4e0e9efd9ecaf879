"""`charattr eval` streams: it never holds more than a few batches of per-image signals, however
many images the source has. Counted, not timed: every `Signals` object created during the run is
tracked, and the most alive at once must stay within a few batches."""

from __future__ import annotations

import sys
import weakref
from pathlib import Path

import pytest

import charattr_core.learning as learning
from charattr_core.cli import main
from charattr_core.synthetic import write_demo_dataset

N_IMAGES = 96
BATCH = 8  # --stage-batch-size: images per batch, so the source is 12 batches


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("streaming") / "sample"
    write_demo_dataset(out, n_images=N_IMAGES, n_shards=2, size=48, seed=7)
    return out


# With --compare-precision the images are embedded on a second path and learnt from again: still streamed.
COMPARED = ["--precision", "fp32", "--compare-precision", "int8", "--compare-runtime", "torch"]


@pytest.mark.parametrize("extra", [[], COMPARED], ids=["one path", "two paths"])
def test_eval_holds_a_few_batches_of_signals_not_the_whole_source(sample, tmp_path, monkeypatch, capsys, extra):
    import charattr_core.pipeline  # noqa: F401  (loaded before patching; modules loaded later see the patch)
    import charattr_core.signal_spill  # noqa: F401  (loaded before patching, so that the patch is undone after)

    original = learning.Signals
    alive, created, peak = [0], [0], [0]

    def released() -> None:
        alive[0] -= 1

    class CountedSignals(original):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            created[0] += 1
            alive[0] += 1
            peak[0] = max(peak[0], alive[0])
            weakref.finalize(self, released)

    for module in list(sys.modules.values()):  # wherever the class is referenced by name
        if getattr(module, "Signals", None) is original:
            monkeypatch.setattr(module, "Signals", CountedSignals)

    code = main(["eval", str(sample), "--model", "charattr-tiny", "--pretrained", "random", "--stage-batch-size", str(BATCH),
                 "--database-url", f"sqlite:///{tmp_path / 'cache.db'}", "--out-dir", str(tmp_path / "eval"),
                 "--bootstrap", "20", *extra])
    _out, err = capsys.readouterr()
    assert code == 0, err
    assert f"{N_IMAGES} images (0 failed)" in err
    assert peak[0] <= 3 * BATCH, f"{peak[0]} images' signals held at once"  # a batch or two at a time ...
    assert created[0] > 2 * N_IMAGES * (2 if extra else 1)  # ... over several passes (of each path)
    assert not list((tmp_path / "eval").glob("charattr-signals-*"))  # the spill is removed afterwards
