"""YAML configs validated by pydantic, with errors that name the key, the value and the file.

Every command that takes flags also takes ``--config FILE.yaml`` with the same
settings; the models live next to the command and derive from :class:`StrictModel`
so an unknown key is an error rather than a silently ignored typo.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml
from click.core import ParameterSource
from pydantic import BaseModel, ConfigDict, ValidationError

from hubtools.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for config models: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        value = e.get("input")
        if e["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{key}' (value {value!r})")
        else:
            lines.append(f"{source}: key '{key}' has invalid value {value!r}: {e['msg']}")
    return "\n".join(lines)


def validate_config(data: Any, model: type[M], source: str = "<config>") -> M:
    """Validate a mapping against ``model``; raise :class:`ConfigError` naming key, value and source."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def load_config(path: str | Path, model: type[M], overrides: dict[str, Any] | None = None) -> M:
    """Read a YAML file, apply non-None ``overrides`` (CLI flags win over the file), validate.

    Raises :class:`ConfigError` for a missing file, malformed YAML, an unknown key or a wrong type.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: malformed YAML: {err}") from None
    if data is None:
        data = {}
    if isinstance(data, dict) and overrides:
        data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    return validate_config(data, model, source=str(path))


def settings_from(config_file: str | Path | None, model: type[M], flags: dict[str, Any]) -> M:
    """A command's settings: the YAML file (if given), then the flags given on the command line on top
    (``None`` = not given), validated by ``model``. Raises :class:`ConfigError` like :func:`load_config`."""
    if config_file is not None:
        return load_config(config_file, model, flags)
    return validate_config({k: v for k, v in flags.items() if v is not None}, model, source="command line")


def config_option(model: type[StrictModel]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a click command ``--config FILE.yaml`` holding the same settings as its flags.

    The YAML keys are the flags' parameter names (``--lfs-threshold`` -> ``lfs_threshold``),
    validated by ``model`` (unknown key or wrong type: an error naming key, value and
    file). A flag given on the command line wins over the file; the file wins over the
    flag's default.
    """

    def decorator(command: Callable[..., Any]) -> Callable[..., Any]:
        @click.option(
            "--config",
            "config_file",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="YAML file with the same settings as the flags (flags given explicitly win).",
        )
        @functools.wraps(command)
        def wrapper(*args: Any, config_file: Path | None = None, **kwargs: Any) -> Any:
            if config_file is not None:
                ctx = click.get_current_context()
                try:
                    cfg = load_config(config_file, model)
                except ConfigError as err:
                    raise click.UsageError(str(err)) from None
                for key, value in cfg.model_dump(exclude_unset=True).items():
                    if ctx.get_parameter_source(key) in (ParameterSource.DEFAULT, None):
                        kwargs[key] = value
            return command(*args, **kwargs)

        return wrapper

    return decorator
