"""Every name a user types (methods, layers, fusions, baselines, gates...) is checked before any file is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from conftest import run_cli, tiny_overrides
from defectcam.cams import METHODS, extract_cams
from defectcam.data.synthetic import PROBLEMS
from defectcam.errors import ConfigError
from defectcam.localization.baselines import BASELINES
from defectcam.localization.selection import GATES, POSTPROCESSES, SELECT_ON
from defectcam.models.backbone import ARCHS
from defectcam.stages.settings import DAGM_PROBLEMS, RESNET_BLOCKS, backbone_layers, validate

RESNET50_LAYERS = "layer1, layer2, layer3, layer4 or a block layer1.0..2, layer2.0..3, layer3.0..5, layer4.0..2"
SCORED = ("gradcam, gradcampp, layercam, layercam_fused, multiplicative, multiplicative_geometric, "
          "fullres, full_image, centred_ellipse, random")

# (overrides, fragments the one-line message must hold: the key, the bad name and the valid choices)
BAD_NAMES = [
    (["cam.methods=[layercm]"], ["cam.methods: 'layercm'", ", ".join(METHODS)]),
    (["cam.methods=[]"], ["cam.methods: the list is empty"]),
    (["cam.methods=layercam"], ["cam.methods: 'layercam' must be a list", "cam.methods=[layercam]"]),
    (["cam.layers=[layer9]"], ["cam.layers: 'layer9' is not a module path of resnet50", RESNET50_LAYERS]),
    (["cam.layers=[layer3.6]"], ["cam.layers: 'layer3.6'", "layer3.0..5"]),
    (["model=resnet18", "cam.layers=[layer3.4]"], ["'layer3.4' is not a module path of resnet18", "layer3.0..1"]),
    (["cam.layers=[fc]"], ["cam.layers: 'fc' of resnet50 does not output a (N, K, h, w) map", RESNET50_LAYERS]),
    (["cam.layers=[layer1.0.relu]"], ["'layer1.0.relu' of resnet50 runs more than once", RESNET50_LAYERS]),
    (["cam.parts=[vall]"], ["cam.parts: 'vall' is not one of train, val, test"]),
    (["+cam.fusions.maxfused={method:layercam,layers:[layer1]}"], ["cam.fusions.maxfused", "layercam or multiplicative"]),
    (["cam.fusions.layercam_fused.method=xgradcam"], ["cam.fusions.layercam_fused.method: 'xgradcam'", "add it to cam.methods"]),
    (["cam.fusions.layercam_fused.method=xgc"], ["cam.fusions.layercam_fused.method: 'xgc'", ", ".join(METHODS)]),
    (["cam.fusions.multiplicative.layers=[layer2,layer5]"],
     ["cam.fusions.multiplicative.layers: 'layer5'", "layer1, layer2, layer3, layer4", "~cam.fusions.multiplicative"]),
    (["cam.layers=[layer3.4]"], ["cam.fusions.layercam_fused.layers: 'layer1' is not in cam.layers", "layer3.4"]),
    (["localize.methods=[layercm]"], ["localize.methods: 'layercm'", SCORED]),
    (["localize.methods=[xgradcam]"], ["localize.methods: 'xgradcam'", "add it to cam.methods", "gradcam, gradcampp, layercam"]),
    (["localize.baselines=[full_image]", "localize.methods=[random]"],
     ["localize.methods: 'random'", "add it to localize.baselines", "full_image"]),
    (["localize.methods=[]"], ["localize.methods: the list is empty", "null for all"]),
    (["localize.methods=layercam"], ["localize.methods: 'layercam' must be a list"]),
    (["localize.layers=[layer9]"], ["localize.layers: 'layer9' is not in cam.layers: layer1, layer2, layer3, layer4"]),
    (["localize.baselines=[rand]"], ["localize.baselines: 'rand'", ", ".join(BASELINES)]),
    (["localize.gates=[none,clasifier]"], ["localize.gates: 'clasifier'", ", ".join(GATES)]),
    (["localize.gates=[]"], ["localize.gates: the list is empty"]),
    (["localize.postprocess=[elipse]"], ["localize.postprocess: 'elipse'", ", ".join(POSTPROCESSES)]),
    (["localize.postprocess=[]"], ["localize.postprocess: the list is empty"]),
    (["localize.select_on=iou"], ["localize.select_on: 'iou'", ", ".join(SELECT_ON)]),
    (["localize.bootstrap=0"], ["localize.bootstrap: 0 must be an integer >= 1"]),
    (["localize.bootstrap=2.5"], ["localize.bootstrap: 2.5 must be an integer >= 1"]),
    (["on_stale=ignore"], ["on_stale: 'ignore' is not one of recompute, error"]),
    (["data.problems=[1,11]"], ["data.problems: [1, 11]", "(1..10)"]),
    (["data.problems=[0]"], ["data.problems: [0]", "(1..10)"]),
]


@pytest.mark.parametrize(("overrides", "fragments"), BAD_NAMES, ids=[" ".join(o) for o, _ in BAD_NAMES])
def test_a_bad_name_is_refused_with_the_choices(compose_cfg, overrides: list[str], fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        validate(compose_cfg(*overrides))
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    "overrides",
    [
        ["cam.layers=[layer1,layer2,layer3,layer4,layer3.4,layer3.5,layer4.0.downsample]"],
        ["cam.methods=[gradcam,gradcampp,layercam,xgradcam,hirescam]", "localize.methods=[hirescam,xgradcam]"],
        ["localize.methods=[layercam,layercam_fused,multiplicative_geometric,random]", "localize.layers=[layer2,layer3]"],
        ["localize.methods=null", "localize.layers=null", "localize.baselines=[]"],
        ["model=resnet18", "cam.layers=[layer1,layer2,layer3,layer4,layer3.1]"],
        ["model=resnet18", "cam.layers=[layer3.1]", "~cam.fusions.layercam_fused", "~cam.fusions.multiplicative",
         "fullres.start=[layercam/layer3.1]"],
        ["fullres.start=[multiplicative,gradcam/layer3]", "fullres.supervision=masks", "localize.methods=[supervised,layercam]"],
        ["fullres.supervision=[]", "fullres.start=[]", "cam.layers=[layer4]", "~cam.fusions.layercam_fused",
         "~cam.fusions.multiplicative"],
        ["+cam.fusions.multiplicative_deep={method:gradcam,layers:[layer3,layer4]}",
         "localize.methods=[multiplicative_deep_geometric]"],
        ["data.problems=[1,2,3,4,5,6,7,8,9,10]", "on_stale=error", "localize.select_on=all_miou", "localize.bootstrap=1"],
        ["localize.gates=[classifier]", "localize.postprocess=[ellipse]", "cam.parts=[test,val]"],
    ],
)
def test_valid_names_pass(compose_cfg, overrides: list[str]) -> None:
    validate(compose_cfg(*overrides))


def test_dagm_problems_match_the_synthetic_generator() -> None:
    assert DAGM_PROBLEMS == tuple(range(1, 11)) == tuple(sorted(PROBLEMS))


@pytest.mark.parametrize(
    ("arch", "blocks"), [("resnet18", (2, 2, 2, 2)), ("resnet50", (3, 4, 6, 3)), ("resnet101", (3, 4, 23, 3))]
)
def test_block_counts_are_torchvision_s(arch: str, blocks: tuple[int, ...]) -> None:
    layers = backbone_layers(arch)
    assert layers.blocks == blocks
    assert all(layers.problems[f"layer{i + 1}.{count - 1}"] == "" for i, count in enumerate(blocks))
    assert all(f"layer{i + 1}.{count}" not in layers.problems for i, count in enumerate(blocks))


@pytest.mark.parametrize("arch", ARCHS)
def test_the_table_validation_reads_first_is_torchvision_s(arch: str) -> None:
    """Every stage and block the table lets through without building the network is one backbone_layers hooks."""
    layers = backbone_layers(arch)
    assert RESNET_BLOCKS[arch] == layers.blocks
    fast = [f"layer{i + 1}" for i in range(4)] + [f"layer{i + 1}.{k}" for i, n in enumerate(layers.blocks) for k in range(n)]
    assert all(layers.problems[path] == "" for path in fast)


@pytest.mark.parametrize("path", ["layer1.00", "layer2.01", "layer1.\u0660", "layer3.6", "layer0", "layer5", "layer1.", "layer1.-1"])
def test_a_block_torchvision_does_not_name_is_refused(compose_cfg, path: str) -> None:
    """The table's shortcut accepts only names named_modules spells: no leading zero, no other digit, no block past the stage."""
    assert path not in backbone_layers("resnet50").problems
    with pytest.raises(ConfigError, match="cam.layers"):
        validate(compose_cfg("model.arch=resnet50", f"cam.layers=['{path}']", "cam.fusions=null"))


def test_hookable_paths_are_what_the_extractor_accepts() -> None:
    """Validation and the CAM extractor agree on a real resnet18: every path passed works, every path refused fails."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=2)
    images = torch.randn(2, 3, 32, 32)
    problems = backbone_layers("resnet18").problems
    assert set(problems) == {name for name, _ in net.named_modules() if name}
    ok = [name for name, why in problems.items() if not why]
    result = extract_cams(net, images, ok, ["layercam"])
    assert set(result.maps["layercam"]) == set(ok)
    refused = [name for name, why in problems.items() if why]
    assert "fc" in refused and "layer1.0.relu" in refused
    for name in refused:
        with pytest.raises(ConfigError):
            extract_cams(net, images, [name], ["layercam"])


@pytest.mark.parametrize(
    ("stage", "override", "fragment"),
    [
        ("localize", "localize.methods=[layercm]", "localize.methods: 'layercm' is not one of"),
        ("localize", "localize.layers=[layer9]", "localize.layers: 'layer9' is not in cam.layers"),
        ("cams", "cam.layers=[layer9]", "cam.layers: 'layer9' is not a module path of resnet50"),
    ],
)
def test_cli_refuses_a_bad_name_before_writing(tmp_path: Path, stage: str, override: str, fragment: str) -> None:
    data, out = tmp_path / "synthetic", tmp_path / "out"
    # Hydra's own run folder (its logs) goes elsewhere, so anything under `out` would be the stage's.
    result = run_cli(stage, *tiny_overrides(data, out, "[1]"), override, f"hydra.run.dir={tmp_path / 'hydra'}", timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"defectcam-{stage}: error: ") and fragment in lines[0]
    assert not out.exists() and not data.exists()
