"""The report leads with the answer for a person: a sentence per problem from the tables, a strip of test
overlays for the entry validation chose, and tables that fit a 1400 px window."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from defectcam.report.build import answer_sentences, summary_table
from defectcam.stages.answer_strip import chosen_entry, strip_picks

SUMMARY = pd.DataFrame([
    {"problem": 1, "gate": "none", "chosen_by": "miou", "method": "layercam", "layer": "layer1", "postprocess": "ellipse",
     "miou": 0.678, "miou_ci_low": 0.645, "miou_ci_high": 0.708, "all_miou": 0.2, "image_false_alarm": 1.0,
     "n_defect_free": 70, "best_baseline": "centred_ellipse", "baseline_miou": 0.126},
    {"problem": 1, "gate": "classifier", "chosen_by": "miou", "method": "gradcampp", "layer": "layer1", "postprocess": "none",
     "miou": 0.66, "miou_ci_low": 0.6, "miou_ci_high": 0.7, "all_miou": 0.905, "image_false_alarm": 1 / 70,
     "n_defect_free": 70, "best_baseline": "random + ellipse", "baseline_miou": 0.03},
    {"problem": 1, "gate": "none", "chosen_by": "all_miou", "method": "gradcam", "layer": "layer4", "postprocess": "none",
     "miou": 0.2, "miou_ci_low": 0.1, "miou_ci_high": 0.3, "all_miou": 0.5, "image_false_alarm": 0.3,
     "n_defect_free": 70, "best_baseline": "full_image", "baseline_miou": 0.05},
])


def test_the_sentence_says_the_entry_its_interval_the_false_alarms_and_the_baseline() -> None:
    sentence = answer_sentences(SUMMARY, "miou")[1]
    assert sentence == ("Problem 1: layercam layer1 + ellipse (chosen on validation) finds defects with test mIoU 0.68 "
                        "[0.65, 0.71] and flags 70 of 70 defect-free test images. Gated by the classifier, gradcampp layer1 "
                        "flags 1 of 70 defect-free test images (test mIoU 0.66 [0.60, 0.70], all-mIoU 0.91). "
                        "The best baseline (centred_ellipse) scores 0.13.")
    assert "gradcam layer4" in answer_sentences(SUMMARY, "all_miou")[1]  # the selection score decides which row speaks


def test_the_strip_shows_best_median_worst_and_a_defect_free_image() -> None:
    defective = np.array([True, False, True, True, False, True, True])
    ious = {0: 0.5, 2: 0.9, 3: 0.1, 5: 0.7, 6: 0.3, 1: 0.0, 4: 1.0}
    picks = strip_picks(ious, defective)
    assert [i for i, _ in picks] == [2, 0, 3, 1]  # ranked 2, 5, 0, 6, 3: best 2, median 0, worst 3; first defect-free 1
    assert picks[0][1] == "best: IoU 0.90" and picks[-1][1] == "defect-free"
    assert [i for i, _ in strip_picks({0: 0.4}, np.array([True]))] == [0]  # one defective image is shown once


def test_the_strip_entry_is_the_summary_entry(pipeline) -> None:
    for problem in (1, 2):
        folder = pipeline["out"] / f"problem_{problem}"
        rows, images = pd.read_csv(folder / "localization.csv"), pd.read_csv(folder / "localization_images.csv")
        test_ids = images["image_id"].unique()
        entry = chosen_entry(rows, images, "miou", test_ids)
        summary = summary_table(rows)
        chosen = summary[(summary["gate"] == "none") & (summary["chosen_by"] == "miou")].iloc[0]
        assert (entry.method, entry.layer, entry.postprocess) == (chosen["method"], chosen["layer"], chosen["postprocess"])
        assert len(entry.ious) == len(images[(images["gate"] == "none") & (images["method"] == entry.method)
                                             & (images["layer"] == entry.layer) & (images["postprocess"] == entry.postprocess)])
        assert (folder / "figures" / "answer_strip.png").is_file()


def test_no_entry_without_a_validation_score() -> None:
    rows = pd.DataFrame([{"problem": 1, "method": "layercam", "layer": "layer1", "gate": "none", "postprocess": "none",
                          "split": split, "selection": "val-best", "select_on": "miou", "threshold": 0.5, "miou": float("nan"),
                          "all_miou": float("nan")} for split in ("val", "test")])
    assert chosen_entry(rows, pd.DataFrame(columns=["method", "layer", "gate", "postprocess", "image_id", "iou"]), "miou", np.array([])) is None


def test_the_page_opens_on_sentences_and_pictures_and_wide_tables_fold(pipeline) -> None:
    html = (pipeline["out"] / "report.html").read_text()
    summary = pd.read_csv(pipeline["out"] / "tables" / "localization_summary.csv")
    first_screen = html[: html.index("<h2>", html.index("The answer") + 1)]
    for problem, sentence in answer_sentences(summary, "miou").items():
        assert sentence.replace("&", "&amp;") in first_screen, problem
    assert len(re.findall(r"data:image/(?:png|jpeg);base64,", first_screen)) == 2  # one strip per problem, before any table
    assert "<table" not in re.sub(r"<details>.*?</details>", "", first_screen, flags=re.S)
    for table in re.findall(r"<table.*?</table>", re.sub(r"<details[^>]*>.*?</details>", "", html, flags=re.S), flags=re.S):
        header = table.split("</tr>", 1)[0]
        assert header.count("<th") <= 12, header[:300]  # anything wider is folded into <details>


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no headless Chromium here (apt-get install chromium)")
def test_no_sideways_scroll_at_1400_px(pipeline, tmp_path: Path) -> None:
    page = (pipeline["out"] / "report.html").read_text()
    # Open every <details> and record the page's scroll width where the browser can read it back.
    probe = "<script>document.querySelectorAll('details').forEach(d=>d.open=true);" \
            "document.body.setAttribute('data-width',document.documentElement.scrollWidth)</script></body>"
    copy = tmp_path / "report.html"
    copy.write_text(page.replace("</body>", probe))
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,900",
                          "--dump-dom", copy.as_uri()], capture_output=True, text=True, timeout=120).stdout
    width = int(re.search(r'data-width="(\d+)"', dom).group(1))
    assert width <= 1400


def test_the_supervised_reference_is_never_chosen_and_is_named_beside_the_weak_entry() -> None:
    rows = []
    for method, layer, val, test in (("layercam", "layer2", 0.5, 0.45), ("fullres", "layercam/layer2", 0.7, 0.66),
                                     ("supervised", "masks", 0.9, 0.8), ("full_image", "-", 0.05, 0.04)):
        for split, score in (("val", val), ("test", test)):
            rows.append({"problem": 1, "method": method, "layer": layer, "gate": "none", "postprocess": "none", "split": split,
                         "selection": "val-best", "select_on": "miou", "threshold": 0.5, "miou": score, "miou_ci_low": score - 0.05,
                         "miou_ci_high": score + 0.05, "all_miou": score, "all_miou_ci_low": 0.0, "all_miou_ci_high": 1.0,
                         "false_alarm": 0.0, "image_false_alarm": 0.0, "n_defect_free": 50})
    summary = summary_table(pd.DataFrame(rows))
    assert set(summary["method"]) == {"fullres"}  # the best on validation is the reference, and it is left out
    row = summary.iloc[0]
    assert row["reference_miou"] == 0.8 and row["share_of_reference"] == pytest.approx(0.66 / 0.8)
    sentence = answer_sentences(summary, "miou")[1]
    assert sentence.startswith("Problem 1: the full-resolution map (from layercam/layer2) (chosen on validation) finds defects")
    assert "The fully supervised reference (the decoder trained on true masks of the train part) scores 0.80" in sentence
    assert "reaches 82 % of it" in sentence
