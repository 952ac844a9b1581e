"""Hydra configs, shipped inside the package as `defectcam.conf` (pyproject.toml maps this folder to it)."""
