"""Load and validate params (params.yaml or a demo config): the one place config is read.

Snakemake validates the same file against the same JSON schema (snakemake.utils.validate);
the CLI validates here, fills the schema's documented defaults, and reports every problem with
the key, the bad value and what is allowed.
"""

from __future__ import annotations

import copy
import json
import re
from functools import lru_cache
from pathlib import Path

import yaml

from actionrepro.errors import ConfigError

SCHEMA_PATH = Path(__file__).with_name("schemas") / "params.schema.json"


@lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def _key_path(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _describe(error, source: str) -> str:
    """One readable line per schema violation: key, value, what is allowed."""
    key = _key_path(error.absolute_path)
    validator, expected = error.validator, error.validator_value
    if validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        return f"{source}: unknown key(s) {', '.join(repr(k) for k in extra)} under '{key}'; allowed keys: {', '.join(allowed)}"
    if validator == "enum":
        return f"{source}: key '{key}' has value {error.instance!r}; allowed values: {', '.join(map(repr, expected))}"
    if validator == "type":
        return f"{source}: key '{key}' has value {error.instance!r} of type {type(error.instance).__name__}; expected {expected}"
    if validator == "required":
        return f"{source}: {error.message} under '{key}'"
    return f"{source}: key '{key}' has value {error.instance!r}: {error.message}"


def validate(params: dict, source: str = "params") -> dict:
    """Raise ConfigError listing every violation; return params with defaults filled in."""
    import jsonschema

    params = normalise_custom(params)
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(params), key=lambda e: list(map(str, e.absolute_path)))
    problems = [_describe(e, source) for e in errors] or dataset_problems(params, source)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return fill_defaults(params, schema())


def normalise_custom(params: dict) -> dict:
    """YAML reads `splits: {1: ...}` with integer keys; JSON schema (and Snakemake) want strings."""
    custom = params.get("custom_datasets")
    if not isinstance(custom, dict) or not any(isinstance(v, dict) and isinstance(v.get("splits"), dict)
                                               for v in custom.values()):
        return params
    out = copy.deepcopy(params)
    for spec in out["custom_datasets"].values():
        if isinstance(spec, dict) and isinstance(spec.get("splits"), dict):
            spec["splits"] = {str(k): v for k, v in spec["splits"].items()}
    return out


def dataset_problems(params: dict, source: str) -> list[str]:
    """What the schema cannot say: every dataset is built in or declared, custom names do not
    shadow built-ins, and every split asked for exists in every dataset asked for."""
    from actionrepro.data import sources

    builtin = list(sources.REGISTRY)
    custom = params.get("custom_datasets") or {}
    problems = [f"{source}: custom_datasets.{name} has the name of a built-in dataset; choose another name "
                f"(built-in: {', '.join(builtin)})" for name in custom if name in builtin]
    for name in params.get("augment", {}).get("hflip", {}):
        if name not in builtin and name not in custom:
            problems.append(f"{source}: augment.hflip names dataset {name!r}, which is neither built in "
                            f"({', '.join(builtin)}) nor declared under custom_datasets")
    for i, name in enumerate(params["datasets"]):
        if name not in builtin and name not in custom:
            problems.append(f"{source}: key 'datasets[{i}]' has value {name!r}; allowed values: "
                            f"{', '.join(map(repr, builtin + list(custom)))} (or a dataset declared under "
                            f"custom_datasets)")
            continue
        has = (sorted(int(k) for k in custom[name]["splits"]) if name in custom and name not in builtin
               else list(sources.BUILTIN_SPLITS))
        lacking = [k for k in params["splits"] if k not in has]
        if lacking:
            problems.append(f"{source}: key 'splits' asks for split(s) {lacking} but dataset {name!r} has splits "
                            f"{has}")
    return problems


def fill_defaults(params: dict, node: dict) -> dict:
    """Copy of params with every schema 'default' applied where the key is absent."""
    out = copy.deepcopy(params)
    props = node.get("properties", {})
    for key, sub in props.items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if isinstance(out.get(key), dict) and sub.get("type") == "object":
            out[key] = fill_defaults(out[key], sub)
    return out


class _Yaml12BoolLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 booleans: only true/false, so `off`, `on`, `yes` and `no`
    stay strings. `dvc exp run -S` rewrites params.yaml with a YAML 1.2 writer, which drops the quotes
    of `amp: "off"`; YAML 1.1 would then read the bool False."""


_Yaml12BoolLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12BoolLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def load(path: str | Path = "params.yaml", overrides: list[str] = ()) -> dict:
    """Read a params file, apply one-off `KEY=VALUE` overrides (dotted keys, YAML values), and
    validate the result; errors name the file and the override."""
    path = Path(path)
    params = read_with_base(path, ())
    for override in overrides:
        apply_override(params, override)
    source = f"{path} with --set {' --set '.join(overrides)}" if overrides else str(path)
    return validate(params, source=source)


def read_mapping(path: Path) -> dict:
    """One params file's own YAML mapping (no base applied, no validation)."""
    if not path.is_file():
        raise ConfigError(f"params file {path} not found; run from the project root or pass --params FILE")
    try:
        params = yaml.load(path.read_text(), Loader=_Yaml12BoolLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(params, dict):
        raise ConfigError(f"{path} must hold a mapping of keys (seed, datasets, ...), not {type(params).__name__}")
    return params


def read_with_base(path: Path, chain: tuple[Path, ...]) -> dict:
    """`path`'s params overlaid on those of its `base:` file (a path relative to `path`'s folder),
    recursively: a variant of params.yaml (config/smoke.yaml) states only what it changes and
    follows every later change of the recipes. Mappings merge key by key; lists and values replace.
    DVC reads params.yaml's own keys only: keep `base:` for configs run through Snakemake or the CLI."""
    params = read_mapping(path)
    base = params.pop("base", None)
    if base is None:
        return params
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: 'base' must be the path of another params file, got {base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in chain or base_path == path.resolve():
        names = " -> ".join(str(p) for p in (*chain, path.resolve(), base_path))
        raise ConfigError(f"{path}: 'base' files form a cycle ({names}); one of them must not name a base")
    return _overlay(read_with_base(base_path, (*chain, path.resolve())), params)


def apply_override(params: dict, override: str) -> None:
    """Set `KEY=VALUE` in params: KEY dotted (train.epochs), VALUE read as YAML (1, 0.1, [0.3, 0.5], off)."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {override!r}: write KEY=VALUE, e.g. --set train.epochs=1")
    try:
        value = yaml.load(text, Loader=_Yaml12BoolLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {override!r}: the value is not valid YAML ({err})") from err
    *parents, leaf = key.strip().split(".")
    node = params
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {} if part not in node else node[part]
        if not isinstance(node[part], dict):
            raise ConfigError(f"--set {override!r}: {part!r} is not a section of the params")
        node = node[part]
    node[leaf] = value


# ---------------------------------------------------------------- per-model recipes
RECIPE_BLOCKS = ("train", "evaluate", "prune", "augment")
INIT_NAMES = ("none", "imagenet", "kinetics400")


def recipe_of(params: dict, model: str, dataset: str | None = None) -> dict:
    """The raw recipe of `model` (params["recipes"][model], {} if none); with `dataset`, narrowed to
    what that dataset's runs read: the datasets part for `dataset` only (see recipe_dataset)."""
    recipe = copy.deepcopy((params.get("recipes") or {}).get(model) or {})
    if dataset is not None:
        parts = recipe.pop("datasets", None) or {}
        key = recipe_dataset(recipe | {"datasets": parts}, dataset)
        if key is not None:
            recipe["datasets"] = {key: parts[key]}
    return recipe


def recipe_dataset(recipe: dict, dataset: str) -> str | None:
    """Which datasets.<name> part of `recipe` applies to `dataset`: its own, else (synth_*) that of
    the dataset it imitates, else none."""
    parts = recipe.get("datasets") or {}
    if dataset in parts:
        return dataset
    if dataset.startswith("synth_") and dataset.removeprefix("synth_") in parts:
        return dataset.removeprefix("synth_")
    return None


def recipe_init(recipe: dict, dataset: str) -> str:
    """The init `recipe` gives `dataset`'s runs: its dataset part's, else its own, else none. Also
    reads a recipe recorded in a run's provenance, so the report knows what a run started from."""
    init = recipe.get("init", "none")
    part = recipe_dataset(recipe, dataset)
    return (recipe["datasets"][part] or {}).get("init", init) if part else init


def _overlay(base: dict, top: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in top.items():
        out[key] = _overlay(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else copy.deepcopy(value)
    return out


def resolve(params: dict, dataset: str, model: str) -> dict:
    """The params one run (dataset, model) uses: the global blocks overlaid with the model's recipe,
    then with the recipe's part for `dataset`, then with `after_recipes` (what a smoke or debugging
    run imposes on every model: one epoch, fewer views). Also sets
      architectures[model]  the model's options (global, then recipe `architecture`, then the dataset's)
      init                  none | imagenet | kinetics400 | a checkpoint path (default none)
      anchor                the recipe's anchor ({} if none)
      recipes               {model: the recipe narrowed to `dataset`} (what a change must touch)
    Everything else is the params as given. Idempotent: resolving resolved params changes nothing."""
    if params.get("resolved_for") == [dataset, model]:
        return params
    recipe = recipe_of(params, model, dataset)
    layers = [recipe] + list((recipe.get("datasets") or {}).values())
    out = copy.deepcopy(params)
    options = dict((out.get("architectures") or {}).get(model) or {})
    for layer in layers:
        for block in RECIPE_BLOCKS:
            if layer.get(block):
                out[block] = _overlay(out[block], layer[block])
        options.update(layer.get("architecture") or {})
    out["architectures"] = {**(out.get("architectures") or {}), model: options}
    out["init"] = recipe_init(recipe, dataset)
    for block, settings in (out.get("after_recipes") or {}).items():
        out[block] = _overlay(out[block], settings)
    anchor = dict(recipe.get("anchor") or {})
    for layer in layers[1:]:
        anchor.update(layer.get("anchor") or {})
    out["anchor"] = anchor
    out["recipes"] = {model: recipe}
    out["resolved_for"] = [dataset, model]
    return out
