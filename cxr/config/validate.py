"""Config checks before any data is read; each failure is one line: the key, what is wrong, what is valid.

- :func:`check_overrides` looks at a ``cxr-train`` command line before Hydra does: an unknown config
  name (``model=resnet``) or a key that does not exist (``datamodule.batchsize=4``) gets the valid
  names and the nearest match, instead of Hydra's advice to append the key with ``+``.
- :func:`validate_config` looks at a composed config: every ``_target_`` imports and takes exactly
  the keys given (no silently ignored typos), the data folder exists, the model fits the labels, the
  guard settings are known and an explicit ``ckpt_path`` exists.
- :func:`check_run_folder` looks at the run folder a command line names, before Hydra creates it.
- :func:`config_changes` lists what differs from the config a run folder was started with.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cxr.config.compose import CONFIG_DIR, register_resolvers
from cxr.config.runs import IGNORED_KEYS, flatten

HYDRA_KEYS = frozenset({"_target_", "_partial_", "_convert_", "_recursive_", "_args_"})
# arguments train.py passes at instantiate time, so configs do not (and must not) name them
INJECTED = {
    "datamodule": {"augment"},
    "task": {"model"},
    "trainer": {"callbacks", "logger", "default_root_dir"},
}
# a run continued in its folder may also change these: they extend or shorten it, or skip a stage
RESUMABLE_CHANGES = (*IGNORED_KEYS, "train", "test", "trainer.max_epochs", "trainer.max_steps")


class ConfigError(ValueError):
    """A configuration problem, in one line naming the key, the problem and the valid choices."""


def _nearest(word: str, choices: Sequence[str]) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _groups(config_dir: Path) -> list[str]:
    return sorted(p.name for p in config_dir.iterdir() if p.is_dir())


def _compose(config_dir: Path, config_name: str, overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir

    register_resolvers()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def _missing_key(tree: Any, key: str) -> str | None:
    """Why dotted ``key`` is not in the plain ``tree``, or None when it is (or sits below a list)."""
    node, parts = tree, key.split(".")
    for depth, part in enumerate(parts):
        parent = ".".join(parts[:depth]) or "the top level"
        if isinstance(node, list):
            return None
        if not isinstance(node, dict):
            return f"{key}: {parent} is a single value, not a group of keys"
        if part not in node:
            if (default := _target_default(node, part)) is not None:
                return (
                    f"{key}: {node['_target_']} takes it, but the config leaves it at its default "
                    f"({default[0]!r}); set it with +{key}=<value>"
                )
            valid = sorted(str(k) for k in node if k not in HYDRA_KEYS)
            return (
                f"{key}: no such key{_nearest(part, valid)}; keys of {parent}: {', '.join(valid) or '(none)'}"
            )
        node = node[part]
    return None


def _target_default(node: dict, key: str) -> tuple[Any] | None:
    """``(default,)`` when ``node``'s ``_target_`` takes ``key`` with a default, else None."""
    if "_target_" not in node:
        return None
    try:
        param = inspect.signature(_locate(str(node["_target_"]))).parameters.get(key)
    except Exception:
        return None
    return None if param is None or param.default is param.empty else (param.default,)


def check_overrides(args: Sequence[str], config_name: str = "train", config_dir: Path = CONFIG_DIR) -> None:
    """Compose a command line's overrides (the first value of each sweep) and explain what fails.

    Command lines with flags other than ``-m``/``--multirun`` (``--help``, ``--cfg``, ``-cn`` ...) and
    ``hydra.*`` overrides are left to Hydra.

    Raises:
        ConfigError: an unknown config group option or key, in one line.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException, MissingConfigException

    register_resolvers()  # first, also for the command lines left to Hydra: they compose conf/ too
    words = [a for a in args if a not in ("-m", "--multirun")]
    if any(a.startswith("-") for a in words):
        return
    try:
        parsed = OverridesParser.create().parse_overrides(words)
    except HydraException:
        return  # syntax errors: Hydra's own message points at the character
    groups, selections, values = _groups(config_dir), [], []
    for o in parsed:
        if o.key_or_group.split("/")[0].split(".")[0] == "hydra":
            continue
        try:
            choices = (
                list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
            )
        except HydraException:
            continue  # interval sweeps and the like: nothing to enumerate
        if not choices:
            continue
        is_group = o.key_or_group in groups
        if is_group and not o.is_delete():  # every value of a sweep, not only the first
            options = sorted(p.stem for p in (config_dir / o.key_or_group).glob("*.yaml"))
            for choice in choices:
                if choice not in options and choice != "null":
                    raise ConfigError(
                        f"{o.key_or_group}={choice}: no such config{_nearest(choice, options)}; "
                        f"valid: {', '.join(options) or '(none yet)'}"
                    )
        line = f"{o.get_key_element()}={choices[0]}" if o.is_sweep_override() else o.input_line
        (selections if is_group else values).append((o, line))
    try:
        _compose(config_dir, config_name, [line for _, line in selections + values])
        return
    except MissingConfigException as err:
        group, _, name = str(err.missing_cfg_file or "").rpartition("/")
        options = sorted(err.options or []) or sorted(p.stem for p in (config_dir / group).glob("*.yaml"))
        raise ConfigError(
            f"{group or 'config'}={name}: no such config{_nearest(name, options)}; valid: "
            f"{', '.join(options) or '(none yet)'}"
        ) from None
    except HydraException as err:
        failure = " ".join(str(err).split())
    chosen = _compose(config_dir, config_name, [line for _, line in selections])
    tree = OmegaConf.to_container(chosen, resolve=False)
    for o, _ in values:
        if not (o.is_add() or o.is_force_add()) and (problem := _missing_key(tree, o.key_or_group)):
            raise ConfigError(problem)
    raise ConfigError(failure)


def _targets(node: Any, path: str) -> Iterator[tuple[dict, str]]:
    """Every mapping with a ``_target_`` in a plain config tree, with its dotted path."""
    if isinstance(node, dict):
        if "_target_" in node:
            yield node, path
        for key, child in node.items():
            if key not in HYDRA_KEYS:
                yield from _targets(child, f"{path}.{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _targets(child, f"{path}.{i}")


def _locate(target: str) -> Any:
    """The object a dotted ``_target_`` names (the longest importable module prefix, then attributes)."""
    parts = target.split(".")
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        try:
            obj = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is not None and (name == err.name or name.startswith(f"{err.name}.")):
                continue  # no such module: the rest of the name may be attributes
            raise  # the module exists but needs a package that is not installed
        for depth, attr in enumerate(parts[i:], start=i):
            if not hasattr(obj, attr):
                owner = ".".join(parts[:depth])
                choices = [a for a in dir(obj) if not a.startswith("_")]
                raise ImportError(f"{owner} has no {attr!r}{_nearest(attr, choices)}")
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"no module named {parts[0]!r}")


def _check_target(node: dict, path: str, injected: set[str], cfg: DictConfig | None = None) -> None:
    target = str(node["_target_"])
    try:
        obj = _locate(target)
    except Exception as err:
        raise ConfigError(f"{path}._target_: cannot import {target!r} ({err})") from None
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return  # builtins without a signature
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return  # takes anything; the object checks its own keywords
    accepted = [name for name, p in params.items() if p.kind is not p.VAR_POSITIONAL]
    given = [str(k) for k in node if k not in HYDRA_KEYS]
    valid = sorted(set(accepted) - injected)
    for key in given:
        if key not in accepted or key in injected:
            why = "is set by cxr-train itself" if key in injected else "is not an argument of " + target
            raise ConfigError(f"{path}.{key}: {why}{_nearest(key, valid)}; valid keys: {', '.join(valid)}")
        if cfg is not None:
            _check_value_type(cfg, f"{path}.{key}", params[key], obj)
    if not node.get("_partial_"):
        missing = [
            n
            for n, p in params.items()
            if p.default is p.empty
            and n not in given
            and n not in injected
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        if missing:
            raise ConfigError(f"{path}: {target} needs {', '.join(missing)}, which the config does not set")


def _layout(datamodule: dict) -> str:
    """The datamodule class's ``LAYOUT`` (its expected folder layout) as one line, or ""."""
    try:
        layout = getattr(_locate(str(datamodule["_target_"])), "LAYOUT", "")
    except Exception:
        return ""
    lines = [" ".join(line.split()) for line in str(layout).splitlines() if line.strip()]
    return f"; {lines[0]} {', '.join(lines[1:])}".rstrip() if lines else ""


def validate_config(cfg: DictConfig) -> list:
    """Check a composed ``cxr-train`` config without instantiating anything but the augmentation, or
    reading data.

    Cheap checks come first (data folder, settings), then every ``_target_`` is imported and its
    signature compared with the keys given; last the augmentation set is built (albumentations
    checks its own arguments), and returned, so that a run builds it once.

    Returns:
        The augmentation transforms of ``cfg.augment`` (:func:`cxr.config.compose.build_augment`).

    Raises:
        ConfigError: the first problem found, in one line.
    """
    tree = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=False)
    if cfg.get("train", True) or cfg.get("test", True):
        _check_data_dir(cfg, tree.get("datamodule") or {})
    _check_checkpoint(cfg.get("ckpt_path"))
    output_dir = OmegaConf.select(cfg, "paths.output_dir", default=None, throw_on_resolution_failure=False)
    if output_dir is not None:
        check_output_folder(output_dir, "paths.output_dir")
    mode = OmegaConf.select(cfg, "callbacks.nonfinite.mode", default=None)
    if mode is not None:
        from cxr.tasks.callbacks.nonfinite import NONFINITE_MODES

        if mode not in NONFINITE_MODES:
            raise ConfigError(
                f"callbacks.nonfinite.mode={mode}: not a mode{_nearest(str(mode), NONFINITE_MODES)}; "
                f"valid: {', '.join(NONFINITE_MODES)}"
            )
    _check_whole_numbers(cfg)
    _check_pairing(cfg, tree)
    # model.num_classes follows datamodule.labels by interpolation; only an explicit override can
    # make them disagree, and then it must still fit the labels
    labels, n_classes = OmegaConf.select(cfg, "datamodule.labels"), OmegaConf.select(cfg, "model.num_classes")
    fits = {"binary": (1, 2), "three_class": (3,)}
    if labels in fits and n_classes is not None and n_classes not in fits[labels]:
        raise ConfigError(
            f"model.num_classes={n_classes} does not fit datamodule.labels={labels}, which needs "
            f"{' or '.join(map(str, fits[labels]))} (leave model.num_classes out: the labels set it)"
        )
    mean, std = OmegaConf.select(cfg, "datamodule.mean"), OmegaConf.select(cfg, "datamodule.std")
    if std is not None and not (isinstance(std, int | float) and math.isfinite(std) and std > 0):
        raise ConfigError(f"datamodule.std={std}: the normalisation divides by it; use a positive number")
    if mean is not None and not (isinstance(mean, int | float) and math.isfinite(mean)):
        raise ConfigError(f"datamodule.mean={mean}: use a finite number")
    in_chans = OmegaConf.select(cfg, "model.in_chans")
    if in_chans is not None and in_chans != 1:
        raise ConfigError(
            f"model.in_chans={in_chans}: the datamodules give 1-channel (grayscale) images; use 1"
        )
    for group in ("datamodule", "model", "task", "trainer", "logger", "callbacks"):
        for node, path in _targets(tree.get(group), group):
            _check_target(node, path, INJECTED.get(group, set()) if path == group else set(), cfg)
    return _build_augment(cfg)


def _build_augment(cfg: DictConfig) -> list:
    from cxr.config.compose import build_augment

    try:
        return build_augment(cfg.get("augment"))
    except ValueError as err:
        raise ConfigError(" ".join(str(err).split())) from None


def _check_data_dir(cfg: DictConfig, datamodule: dict) -> None:
    if "data_dir" not in datamodule:
        return
    try:
        data_dir = Path(str(cfg.datamodule.data_dir))
    except Exception as err:  # an interpolation that does not resolve
        raise ConfigError(f"datamodule.data_dir: cannot resolve {datamodule['data_dir']!r} ({err})") from None
    if not data_dir.is_dir():
        state = "is not a folder" if data_dir.exists() else "does not exist"
        raise ConfigError(
            f"datamodule.data_dir={data_dir} {state} (set datamodule.data_dir=<folder> or $CXR_DATA)"
            f"{_layout(datamodule)}"
        )


def _check_checkpoint(ckpt_path: Any) -> None:
    # whether it loads safely is checked by cxr.cli.train just before resuming, once "last" is resolved
    if ckpt_path in (None, "last"):
        return
    path = Path(str(ckpt_path))
    if not path.is_file():
        raise ConfigError(
            f"ckpt_path={path}: no such file; use a checkpoint file, 'last' (the run folder's "
            "checkpoints/last.ckpt) or null"
        )


def _basic_types(annotation: Any) -> set | None:
    """The plain types an annotation admits (``int``, ``float``, ``bool``, ``str``, ``NoneType``;
    ``Literal`` values count as their types; containers as ``list``/``dict``), or None when unknown."""
    import types
    import typing

    if annotation is inspect.Parameter.empty or isinstance(annotation, str) or annotation is Any:
        return None
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return {type(v) for v in typing.get_args(annotation)}
    if origin in (typing.Union, types.UnionType):
        found: set = set()
        for arg in typing.get_args(annotation):
            inner = _basic_types(arg)
            if inner is None:
                return None
            found |= inner
        return found
    if annotation in (int, float, bool, str, type(None)):
        return {annotation}
    if origin in (list, tuple, typing.Sequence) or annotation in (list, tuple):
        return {list}
    if origin is dict or annotation is dict:
        return {dict}
    return None  # a class, a callable, a tensor ...: not checked here


def _annotation(obj: Any, name: str, param: inspect.Parameter) -> Any:
    if not isinstance(param.annotation, str):
        return param.annotation
    import typing

    try:  # `from __future__ import annotations` leaves strings; resolve them if they resolve
        hints = typing.get_type_hints(obj.__init__ if inspect.isclass(obj) else obj)
    except Exception:
        return param.annotation
    return hints.get(name, param.annotation)


def _check_value_type(cfg: DictConfig, key: str, param: inspect.Parameter, obj: Any) -> None:
    """A word where the constructor takes a number or a flag (``trainer.max_epochs=abc``), or a
    fraction where it takes a whole number, is a ConfigError naming the key and what it takes."""
    value = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
    if value is None or isinstance(value, DictConfig | dict) or OmegaConf.is_list(value):
        return
    accepted = _basic_types(_annotation(obj, param.name, param))
    if accepted is None and isinstance(param.default, int | float) and param.default is not None:
        accepted = {type(param.default)} | ({float} if isinstance(param.default, float) else set())
    if not accepted:
        return
    words = {"int": "a whole number", "float": "a number", "bool": "true or false"}
    wanted = " or ".join(words[t.__name__] for t in (int, float, bool) if t in accepted) or "a value"
    if isinstance(value, str) and str not in accepted and accepted & {int, float, bool}:
        raise ConfigError(f"{key}={value}: expected {wanted}")
    if isinstance(value, float) and float not in accepted and int in accepted and not value.is_integer():
        raise ConfigError(f"{key}={value}: expected {wanted}")


def _check_whole_numbers(cfg: DictConfig) -> None:
    seed = OmegaConf.select(cfg, "seed", default=None, throw_on_resolution_failure=False)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"seed={seed}: expected a whole number")


def _kind_of_model(cls: Any) -> str | None:
    """``"detection"``: the torchvision detection contract as cxr's DetectionTask uses it
    (``losses_and_detections``); ``"classification"``: the timm classifier vocabulary (``forward_head``)."""
    if callable(getattr(cls, "losses_and_detections", None)):
        return "detection"
    if callable(getattr(cls, "forward_head", None)):
        return "classification"
    return None


def _kind_of(group: str, target: str) -> str | None:
    """What a task needs, a model is or a datamodule gives: ``"detection"``, ``"classification"``
    or None (not known: not checked)."""
    try:
        cls = _locate(target)
    except Exception:
        return None
    if group == "model":
        return _kind_of_model(cls)
    if group == "task":
        from cxr.tasks.classification import ClassificationTask
        from cxr.tasks.detection import DetectionTask

        kinds = {DetectionTask: "detection", ClassificationTask: "classification"}
    else:
        from cxr.data.ped_cxr import PedChestXrayDataModule
        from cxr.data.rsna import RSNADataModule

        kinds = {RSNADataModule: "detection", PedChestXrayDataModule: "classification"}
    return next((k for c, k in kinds.items() if inspect.isclass(cls) and issubclass(cls, c)), None)


def _check_pairing(cfg: DictConfig, tree: dict) -> None:
    """The task, the model and the datamodule must be of one kind (detection or classification):
    checked from their ``_target_`` classes, before anything is built or read."""
    choices = OmegaConf.select(cfg, "hydra.runtime.choices", default=None, throw_on_resolution_failure=False)
    if choices is None:  # under @hydra.main the hydra node lives in HydraConfig, not in cfg
        from hydra.core.hydra_config import HydraConfig

        choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else None
    kinds, names = {}, {}
    for group in ("task", "model", "datamodule"):
        target = (tree.get(group) or {}).get("_target_") if isinstance(tree.get(group), dict) else None
        if target is None:
            continue
        kinds[group] = _kind_of(group, str(target))
        chosen = choices.get(group) if choices is not None else None
        names[group] = f"{group}={chosen}" if chosen else f"{group} ({str(target).rsplit('.', 1)[-1]})"
    task = kinds.get("task")
    if task is None:
        return
    fix = {
        "detection": "detection runs use datamodule=rsna model=retinanet task=detection",
        "classification": "classification runs use datamodule=ped_cxr task=classification and a "
        "classifier (plain_cnn, depthwise_cnn, mobilenet)",
    }
    what = {"model": {"detection": "a detector", "classification": "a classifier"},
            "datamodule": {"detection": "detection data (boxes)", "classification": "classification data (labels)"}}  # fmt: skip
    for group in ("model", "datamodule"):
        kind = kinds.get(group)
        if kind is not None and kind != task:
            raise ConfigError(
                f"{names[group]} is {what[group][kind]}, but {names['task']} needs "
                f"{what[group][task]}; {fix[task]}"
            )


def check_output_folder(path: str | Path, key: str) -> None:
    """A run or output folder must be a folder or creatable as one: not an existing file, not under one.

    Raises:
        ConfigError: naming ``key``, the path and the file in the way.
    """
    path = Path(str(path))
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{key}={path}: is an existing file, not a folder")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{key}={path}: {parent} is a file, not a folder")
            return


def _first_values(words: Sequence[str]) -> list[str]:
    """Overrides with each sweep (``seed=0,1``, ``choice(...)``) replaced by its first value, so that
    the config of a sweep's first job can be composed; what cannot be enumerated is kept as written."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    lines = []
    for word in words:
        try:
            (o,) = OverridesParser.create().parse_overrides([word])
            first = next(o.sweep_string_iterator()) if o.is_sweep_override() else None
        except (HydraException, StopIteration, ValueError):
            first = None
        lines.append(word if first is None else f"{o.get_key_element()}={first}")
    return lines


def check_run_folder(args: Sequence[str], config_name: str = "train") -> None:
    """The run folder (``hydra.run.dir``, or ``hydra.sweep.dir`` with ``-m``) of a command line, before
    Hydra creates it: one line when it is a file or lies under one (Hydra's own error is a traceback).

    Raises:
        ConfigError: see :func:`check_output_folder`.
    """
    from hydra.errors import HydraException

    from cxr.config.compose import compose

    words = [a for a in args if a not in ("-m", "--multirun")]
    if any(a.startswith("-") for a in words):
        return
    key = "hydra.sweep.dir" if len(words) < len(args) else "hydra.run.dir"
    try:
        cfg = compose(_first_values(words), config_name=config_name)
        folder = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
    except (HydraException, ValueError):
        return  # check_overrides and Hydra explain these
    if folder is not None:
        check_output_folder(folder, key)


def config_changes(old: Mapping, new: Mapping) -> list[str]:
    """``key: old -> new`` for every value that differs, ignoring :data:`RESUMABLE_CHANGES`."""
    a, b = flatten(old), flatten(new)
    changes = []
    for key in sorted(set(a) | set(b)):
        name = key.rstrip(".")
        if any(name == k or name.startswith(f"{k}.") for k in RESUMABLE_CHANGES):
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            changes.append(f"{name}: {a.get(key, '<absent>')} -> {b.get(key, '<absent>')}")
    return changes
