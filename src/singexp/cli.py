"""The command line's checks and quoting, before Hydra composes: group options that exist
(:func:`check_group_overrides`), keys that exist (:func:`check_override_keys`), options that
Hydra would read as numbers (:func:`quote_group_overrides`); and :func:`compose_config`, the
config the command line composes, outside a Hydra run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from singexp.config import CONF_DIR
from singexp.errors import ConfigError, SingexpError


def group_options(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    """The option names of a config group (the YAML files in ``conf/GROUP``)."""
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def check_group_overrides(args: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Reject ``group=option`` overrides naming an option that does not exist, in one line.

    Hydra's own message for this spans many lines; this check runs before Hydra composes.
    Sweeps (``dataset=a,b``) are checked option by option.
    """
    for arg in args:
        if "=" not in arg or arg.startswith(("hydra", "~")):
            continue
        key, _, value = arg.partition("=")
        key = key.lstrip("+")
        if "." in key or "/" in key or not (conf_dir / key).is_dir():
            continue
        options = group_options(key, conf_dir)
        for option in value.split(","):
            option = option.strip().strip("'\"")  # bcr="'1_768','1_192'": quoted by hand
            if option in ("null", "") or option.startswith(("glob(", "choice(", "range(")):
                continue
            if option not in options:
                hint = ""
                if key == "bcr" and "/" in option:  # a ratio by value is bcr.ratio
                    hint = f" (or any ratio by value: bcr.ratio={option})"
                raise ConfigError(
                    key, f"unknown option {option!r}; choose one of: {', '.join(options)}{hint}"
                )


#: Hydra's flags that take a value (the next argument is not an override)
_VALUE_FLAGS = frozenset(
    ("-c", "--cfg", "-p", "--package", "-cp", "--config-path", "-cn", "--config-name", "-cd",
     "--config-dir", "--info", "--experimental-rerun")
)  # fmt: skip


def overrides_only(args: list[str]) -> list[str]:
    """The overrides among the command line's arguments (Hydra's flags and their values out)."""
    overrides, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = arg in _VALUE_FLAGS
        else:
            overrides.append(arg)
    return overrides


def check_override_syntax(args: list[str]) -> None:
    """An override Hydra's grammar cannot parse (``channel.snr_db=[1,``, ``channel.snr_db``
    without ``=``) in one line naming it and what is wrong; Hydra's own message spans three
    lines and exits 1."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for arg in overrides_only(args):
        try:
            parser.parse_overrides([arg])
        except OverrideParseException as error:
            if "=" not in arg:
                why = "has no '='; write KEY=VALUE (e.g. channel.snr_db=5), or ~KEY to remove a key"
            else:
                lines = [line for line in str(error).splitlines() if line.strip()]
                detail = next(
                    (line for line in lines if not line.startswith(("Error parsing", "See "))),
                    "cannot be parsed",
                )
                why = (
                    f"cannot be parsed ({detail}); quote values with brackets, commas or spaces "
                    "in the shell, e.g. 'channel.snr_db=[1,2]' (see Hydra's override grammar)"
                )
            raise SingexpError(f"override {arg!r} {why}") from None


def _is_multirun(args: list[str], conf_dir: Path) -> bool:
    """Whether the command line is a multirun: ``-m``, ``hydra.mode=MULTIRUN``, or an
    experiment whose config sets ``hydra.mode: MULTIRUN`` (``paper_grid``, ``tuning``, ...)."""
    if any(a in ("-m", "--multirun") for a in args):
        return True
    for arg in overrides_only(args):
        key, _, value = arg.partition("=")
        key = key.lstrip("+")
        if key == "hydra.mode":
            return value.strip() == "MULTIRUN"
        if key == "experiment":
            for name in value.split(","):
                if _experiment_is_multirun(name.strip().strip(chr(39) + chr(34)), conf_dir):
                    return True
    return False


def _experiment_is_multirun(name: str, conf_dir: Path, seen: frozenset[str] = frozenset()) -> bool:
    """Whether ``experiment/<name>.yaml`` or an experiment its defaults list composes (``-
    paper_grid`` in ``paper_grid_fast``) sets ``hydra.mode: MULTIRUN``."""
    from omegaconf import OmegaConf

    if name in seen:
        return False
    try:
        node = OmegaConf.load(conf_dir / "experiment" / f"{name}.yaml")
    except Exception:  # a missing or odd experiment: Hydra's checks say so
        return False
    if str(OmegaConf.select(node, "hydra.mode", default="")) == "MULTIRUN":
        return True
    for entry in OmegaConf.select(node, "defaults", default=None) or []:
        # a plain name in an experiment's defaults list is another experiment of the group
        plain = isinstance(entry, str) and not entry.startswith("/") and entry != "_self_"
        if plain and _experiment_is_multirun(str(entry), conf_dir, seen | {name}):
            return True
    return False


def check_launcher_multirun(args: list[str], conf_dir: Path = CONF_DIR) -> None:
    """``launcher=slurm`` (any ``launcher`` option) without ``-m``: Hydra ignores a launcher in a
    single run and runs locally; say so in one line instead."""
    for arg in overrides_only(args):
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+") in ("launcher", "hydra/launcher") and value not in ("", "null"):
            if not _is_multirun(args, conf_dir):
                raise ConfigError(
                    key.lstrip("+"),
                    f"{value} applies to multiruns (sweeps) only: without -m the run is local; "
                    "add -m to run it through the launcher",
                )
            return


def _first_values(args: list[str]) -> list[str]:
    """The overrides with each sweep (``a=1,2``, ``range(...)``) replaced by its first value and
    Hydra's own keys left out: one config of the sweep, composable without Hydra's runtime."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    single = []
    for override in OverridesParser.create().parse_overrides(args):
        if override.key_or_group.startswith("hydra"):
            continue
        line = override.input_line or ""  # always set for overrides parsed from strings
        if override.is_sweep_override():
            key = line.partition("=")[0]
            single.append(f"{key}={next(iter(override.sweep_string_iterator()))}")
        else:
            single.append(line)
    return single


def check_override_keys(args: list[str], conf_dir: Path = CONF_DIR) -> None:
    """A key that is not in the config (``channel.snr=5``) in one line, with the nearest keys;
    Hydra's own message spans several lines. Composes the config once (a sweep's first point);
    any other problem is left for Hydra to report."""
    import difflib

    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    def composed(overrides: list[str]) -> DictConfig:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            return compose("config", overrides=overrides)

    try:
        single = _first_values(args)
        composed(single)
        return
    except ConfigCompositionException as error:
        message = str(error)
    except Exception:  # not ours to judge: Hydra reports it with its own message
        return
    if not message.startswith("Could not override '"):
        return
    key = message.split("'")[1]
    key_value = next(
        (a.partition("=")[2] for a in single if a.partition("=")[0].lstrip("+~") == key), "..."
    )
    try:  # the nearest keys where the path first leaves the config
        node: Any = composed([a for a in single if a.partition("=")[0].lstrip("+~") != key])
        path: list[str] = []
        for part in key.split("."):
            if not isinstance(node, DictConfig) or part not in node:
                known = [str(k) for k in node] if isinstance(node, DictConfig) else []
                near = [".".join([*path, k]) for k in difflib.get_close_matches(part, known, n=3)]
                break
            node, path = node[part], [*path, part]
        else:
            near = []
    except Exception:
        near = []
    if "." not in key and "/" not in key:  # a misspelt group (lanucher=joblib)?
        groups = sorted(p.name for p in conf_dir.iterdir() if p.is_dir())
        close = difflib.get_close_matches(key, groups, n=3)
        if close:
            options = ", ".join(f"{g}={key_value}" for g in close)
            raise ConfigError(
                key, f"is neither a config key nor a config group; did you mean {options}?"
            )
    hint = f"; did you mean {' or '.join(near)}?" if near else ""
    raise ConfigError(key, f"is not a config key{hint} (a new key is added with +{key}=...)")


def quote_group_overrides(args: list[str], conf_dir: Path = CONF_DIR) -> list[str]:
    """Quote group options that Hydra's override grammar would read as numbers, and append
    ``experiment=NAME`` as ``+experiment=NAME`` (the group has no default to override).

    ``bcr=1_768`` is the integer 1768 to Hydra (underscores are digit separators), which it
    refuses as a group option; ``bcr='1_768'`` is the option named 1_768.
    """
    quoted = []
    for arg in args:
        if arg.startswith("experiment="):  # not in the defaults list: Hydra wants it appended
            arg = f"+{arg}"
        key, sep, value = arg.partition("=")
        group = key.lstrip("+~")
        if sep and "." not in group and (conf_dir / group).is_dir():
            parts = [
                f"'{p}'" if p.replace("_", "").isdigit() and "_" in p else p
                for p in value.split(",")
            ]
            arg = f"{key}={','.join(parts)}"
        quoted.append(arg)
    return quoted


def compose_config(overrides: list[str] | tuple[str, ...] = (), config_dir: Any = None) -> Any:
    """The config the command line composes for ``overrides`` (same groups, same quoting),
    outside a Hydra run."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir or CONF_DIR), version_base="1.3"):
        return compose("config", overrides=quote_group_overrides(list(overrides)))
