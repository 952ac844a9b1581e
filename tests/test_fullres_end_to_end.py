"""A small end-to-end run on synthetic data: the full-resolution decoder beats the CAM it was trained from."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from conftest import run_cli


def test_the_decoder_beats_its_starting_cam(tmp_path: Path) -> None:
    # One problem at 64 px, a classifier of 4 epochs, a decoder of 100 steps: small, but past the point where a
    # decoder is only its initial noise. Only what the comparison needs is computed (one CAM, no gate, no ellipse).
    result = run_cli(
        "reproduce", "data.problems=[1]", f"data.root={tmp_path / 'synthetic'}", f"paths.output_dir={tmp_path / 'out'}",
        "data.synthetic.image_size=64", "data.image_size=64", "data.synthetic.n_train=120", "data.synthetic.n_test=60",
        "trainer.max_epochs=4", "train.progress_bar=false", "evaluate.latency_images=2", "evaluate.warmup=1",
        "cam.methods=[layercam]", "cam.layers=[layer2]", "cam.fusions=null", "cam.figure_images=1",
        "localize.gates=[none]", "localize.postprocess=[none]", "localize.baselines=[]", "localize.bootstrap=100",
        "fullres.steps=100", "fullres.eval_every=25", "fullres.start=[layercam/layer2]", "report.html=false",
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = pd.read_csv(tmp_path / "out" / "problem_1" / "localization.csv")
    test = rows[(rows["split"] == "test") & (rows["selection"] == "val-best")].set_index("method")
    decoder, start = test.loc["fullres"], test.loc["layercam"]
    assert decoder["layer"] == "layercam/layer2"
    # Thresholds chosen on validation, scores on test: the decoder localizes better, by mIoU and by PxAP...
    assert decoder["miou"] > start["miou"] + 0.02, (decoder["miou"], start["miou"])
    assert decoder["pxap"] > start["pxap"] + 0.03, (decoder["pxap"], start["pxap"])
    # (No claim on defect-free images here: at 64 px and 100 steps the threshold that validation's mIoU picks still
    # flags most of them on some CPUs; the real-data runs of the README measure that.)
