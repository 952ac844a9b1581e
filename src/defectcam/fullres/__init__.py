"""Full-resolution defect maps from image labels: a decoder over a frozen classifier's features.

Pure torch (no Hydra, no Lightning): the network (`network.py`), the training targets drawn from a
starting CAM (`seeds.py`), the losses (`losses.py`), probability maps at test time (`maps.py`) and a product
entry's two maps from one classifier pass (`shared_pass.py`).
Nothing is imported here, so that reading the names below costs no import of the decoder's library.
"""

# supervision -> the method name its decoder's maps are scored under (localize, report, predict)
DECODER_METHODS = {"cams": "fullres", "masks": "supervised"}
METHOD_SUPERVISIONS = {method: supervision for supervision, method in DECODER_METHODS.items()}
REFERENCE_METHODS = ("supervised",)  # trained on true masks: a reference row, never a weakly supervised result
MASKS_LAYER = "masks"  # the `layer` of the supervised reference (its starting point is the true masks)
# fullres.select_on -> the score that keeps a decoder's checkpoint and chooses its starting CAM, always taken at the
# validation threshold localize.select_on picks (None: localize.select_on's own score, which as mIoU sees only the
# defective images). all-mIoU there also scores each defect-free validation image: 1 if nothing is flagged on it, else 0.
DECODER_SELECT_ON = {"all_images": "all_miou", "protocol": None}
