"""Errors a user can act on. The stage shell prints them as one line and exits with code 2."""


def one_line(exc: BaseException | str, limit: int = 300) -> str:
    """An exception's (or a text's) message folded onto one line, cut at `limit` characters."""
    return " ".join(str(exc).split())[:limit]


class DefectcamError(Exception):
    """Base class of every error defectcam reports to the user."""


class DatasetError(DefectcamError):
    """A dataset tree, label file, image or mask is missing or malformed."""


class ConfigError(DefectcamError):
    """A configuration value is unknown or inconsistent."""


class ModelError(DefectcamError):
    """A model, weights file or checkpoint is missing or does not fit."""


class StageOrderError(DefectcamError):
    """A stage was run before the stage whose output it reads."""


class StaleInputError(DefectcamError):
    """A stage's input was made from other settings or another checkpoint than the ones asked for now."""
