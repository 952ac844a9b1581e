"""The backbone factory: weights none / imagenet (offline) / a state-dict file, with one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import run_cli
from defectcam.errors import ConfigError, ModelError
from defectcam.models.backbone import build_backbone, imagenet_file


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_two_way_head(arch: str) -> None:
    net = build_backbone(arch, "none")
    assert net.fc.out_features == 2
    assert net.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 2)


def test_unknown_arch() -> None:
    with pytest.raises(ConfigError, match="model.arch: 'vgg'"):
        build_backbone("vgg")


def test_imagenet_absent_names_the_file_to_place(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as info:
        build_backbone("resnet18", "imagenet", torch_home=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "model.weights=none" in message and "\n" not in message


def test_imagenet_file_from_local_cache(tmp_path: Path) -> None:
    source = build_backbone("resnet18", "none")
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    state |= {"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}  # ImageNet's 1000-way head
    path = imagenet_file.__globals__["IMAGENET_WEIGHTS"]["resnet18"].url.rsplit("/", 1)[-1]
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(state, tmp_path / "hub" / "checkpoints" / path)
    net = build_backbone("resnet18", "imagenet", torch_home=tmp_path)
    assert torch.equal(net.conv1.weight, source.conv1.weight) and net.fc.out_features == 2


def test_state_dict_path_and_mismatched_keys(tmp_path: Path) -> None:
    source = build_backbone("resnet18", "none")
    good = tmp_path / "good.pth"
    torch.save(source.state_dict(), good)
    net = build_backbone("resnet18", str(good))
    assert torch.equal(net.fc.weight, source.fc.weight)  # a fitting head is kept
    bad = tmp_path / "bad.pth"
    state = source.state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(3, 3, 1, 1)
    torch.save(state, bad)
    with pytest.raises(ModelError, match=r"bad.pth: key 'layer1.0.conv1.weight' has shape \(3, 3, 1, 1\)"):
        build_backbone("resnet18", str(bad))
    with pytest.raises(ModelError, match=r"good.pth: key 'layer1.0.conv1.weight' has shape \(64, 64, 3, 3\), the model needs"):
        build_backbone("resnet50", str(good))


def test_weights_file_that_would_run_code_is_refused(tmp_path: Path) -> None:
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ModelError, match="not a loadable state-dict file"):
        build_backbone("resnet18", str(path))


def test_cli_imagenet_offline_is_one_line(tmp_path: Path) -> None:
    result = run_cli(
        "train", "data.problems=[1]", f"data.root={tmp_path / 'syn'}", f"paths.output_dir={tmp_path / 'out'}",
        "data.synthetic.image_size=32", "data.image_size=32", "data.synthetic.n_train=12", "data.synthetic.n_test=8",
        "model.weights=imagenet", f"paths.torch_home={tmp_path / 'torch'}",
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "resnet50-0676ba61.pth" in lines[0] and "ImageNet weights" in lines[0]
