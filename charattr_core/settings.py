"""Every setting of charattr, declared once: name, type, default, validation, its `CHARATTR_*`
environment variable and its command-line option.

Everything else is built from `Settings`:
- the Python API: `create_pipeline({...})` validates its dict here (an unknown key is an error);
  it takes no environment variables, only what it is given;
- the command line: `add_options(parser, scope)` generates a command's options; an option given
  overrides the environment variable, which overrides the default (`Settings.from_options`);
- the Dagster layer: `charattr_dagster.definitions` configures its resources from one `Settings`
  read from the environment when the code location loads, and the code versions from the same one;
- the README's settings table: `python -m charattr_core.settings --markdown`.

One source, one namespace: each source gets its own folder, `<data_dir>/sources/<name>-<hash>/`
(`source_namespace`), holding its warehouse (with the learned probes and policy), its reports and
its Dagster instance, so a second source never mixes into the first one's partitions or outputs.
The results database is shared: results are keyed by image content, and its product table keeps
one row set per source namespace.

A configuration error raises `ConfigError` with one sentence that names the setting the way the
user gave it (the option, the environment variable or the dict key).

To add a setting: one field below, `name: type = setting(default, "help", group=..., scopes=...)`
(with `env=`/`options=` only where the derived `CHARATTR_<NAME>` / `--<name>` do not fit, and
pydantic constraints such as `ge=1`); read it where it is used (`Settings` in the core, a field
`name: type = _setting("name")` on the Dagster resource that needs it, filled by
`from_settings`); add it to `charattr_dagster/versions.py` if it changes an asset's results; then
`python -m charattr_core.settings --update-readme README.md`.
"""

from __future__ import annotations

import argparse
import contextvars
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Sequence, get_args, get_origin

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .namespaces import source_folder, source_namespace

FIXED_STRATEGIES = (
    "conservative_clip", "aggressive_clip", "tag_priority", "visual_priority",
    "confidence_weighted", "uncertainty_aware",
)
BASELINE_STRATEGIES = ("tags_only", "clip_only", "simple_average")
ALL_STRATEGIES = FIXED_STRATEGIES + BASELINE_STRATEGIES
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")  # int8: CPU only, opt-in
RUNTIMES = ("auto", "torch", "onnxruntime", "openvino")
EXECUTORS = ("in_process", "multiprocess", "celery")  # where the graph's steps run (charattr_dagster/executors.py)  # CPU inference runtimes (clip_runtime.py)
DEFAULT_DATA_DIR = Path("data")
ENV_PREFIX = "CHARATTR_"
NO_WEIGHTS = ("none", "null")  # --pretrained values meaning "no pretrained weights" (like "random")

# Scopes: which surfaces use a setting. "pipeline": the in-process pipeline (Python API and
# `charattr extract/batch/eval`); "graph": the Dagster asset graph (`charattr run`, `dagster dev`).
PIPELINE, GRAPH = "pipeline", "graph"
BOTH = (PIPELINE, GRAPH)
GROUPS = {"data": "where data lives", "clip": "CLIP model", "fusion": "fusion",
          "stages": "stages and input safety", "graph": "Dagster graph"}


@dataclass(frozen=True)
class SettingInfo:
    """What the command line, the environment and the docs need to know about one field."""

    group: str
    scopes: tuple[str, ...] = BOTH
    env: str | None = None  # the CHARATTR_* variable; derived from the field name when None
    options: tuple[str, ...] | None = None  # command-line option strings; derived when None; () = none
    default_text: str | None = None  # how the docs state a derived default
    old_options: tuple[str, ...] = ()  # older spellings, still accepted, not shown in --help


def setting(default: Any, help: str, *, group: str, scopes: tuple[str, ...] = BOTH, env: str | None = None,
            options: tuple[str, ...] | None = None, default_text: str | None = None,
            aliases: tuple[str, ...] = (), old_options: tuple[str, ...] = (), **constraints: Any) -> Any:
    """A field of `Settings`: its default, one line of help and where it appears. `aliases`, when
    given, lists every key the field accepts, its own name first (older names stay accepted)."""
    return Field(default, description=help,
                 validation_alias=AliasChoices(*aliases) if aliases else None,
                 json_schema_extra={"charattr": SettingInfo(group, scopes, env, options, default_text, old_options)},
                 **constraints)


class Settings(BaseModel):
    """charattr's settings. Derived defaults (the database, warehouse and reports) follow
    `data_dir` and `source` unless given."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    # -- where data lives -------------------------------------------------------------------------
    data_dir: Path = setting(
        DEFAULT_DATA_DIR, "root of what charattr writes; each source gets its own folder, "
        "`<data_dir>/sources/<name>-<hash>/`", group="data")
    source: Optional[str] = setting(
        None, "the images: a folder with sidecar .txt tags, Parquet files or WebDataset tars", group="data",
        scopes=(GRAPH,), options=(), default_text="`<data_dir>/sample`")
    database_url: Optional[str] = setting(
        None, "results/cache database (SQLite file or postgresql:// URL), shared by every source", group="data",
        default_text="`sqlite:///<data_dir>/charattr.db`")
    warehouse: Optional[str] = setting(
        None, "Parquet warehouse of this source (also holds its learned probes and policy)", group="data",
        scopes=(GRAPH,), default_text="`<data_dir>/sources/<name>-<hash>/warehouse`")
    reports: Optional[str] = setting(
        None, "report folder of this source", group="data", scopes=(GRAPH,),
        default_text="`<data_dir>/sources/<name>-<hash>/reports`")
    vocabulary: Optional[str] = setting(None, "attribute vocabulary TOML", group="data",
                                        default_text="the bundled attributes.toml")
    labels: Optional[str] = setting(None, "user corrections (CSV/Parquet: image_id, attribute, value)",
                                    group="data", scopes=(GRAPH,))
    cache_results: bool = setting(True, "the results cache (read and write)", group="data", scopes=(PIPELINE,),
                                  options=("--no-cache",))
    policy_path: Optional[str] = setting(None, "a trained fusion policy (safetensors + JSON base path)",
                                         group="data", scopes=(PIPELINE,), options=("--policy",))
    probes_path: Optional[str] = setting(None, "trained attribute probes (safetensors + JSON base path)",
                                         group="data", scopes=(PIPELINE,), options=("--probes",))

    # -- CLIP ---------------------------------------------------------------------------------------
    use_clip: bool = setting(True, "CLIP (off: tags only, and torch is never imported)", group="clip",
                             options=("--no-clip",))
    model_name: str = setting("ViT-B-32", "open_clip architecture", group="clip", env="CHARATTR_MODEL",
                              options=("--model",))
    pretrained: Optional[str] = setting(
        "openai", "open_clip weights tag or local checkpoint path; `none`/`random`: random weights",
        group="clip")
    allow_download: Optional[bool] = setting(
        None, "downloading missing weights (off: only the local cache is used)", group="clip",
        default_text="off")
    device: Literal[DEVICES] = setting("auto", "auto picks cuda, mps or cpu", group="clip")
    precision: Literal[PRECISIONS] = setting(
        "auto", "auto: fp16 on CUDA; on a CPU the fastest path whose embeddings match fp32 (checked once per "
        "model); int8 is CPU-only and opt-in", group="clip")
    runtime: Literal[RUNTIMES] = setting(
        "auto", "CPU inference runtime; onnxruntime/openvino need charattr[onnx]/[openvino]", group="clip")
    clip_batch_size: int = setting(32, "images per CLIP forward pass", group="clip", aliases=("clip_batch_size", "batch_size"),
                                   old_options=("--batch-size",), ge=1)
    num_workers: int = setting(2, "decode/preprocess threads beside CLIP inference", group="clip",
                               options=("--workers",), ge=0)

    # -- fusion -------------------------------------------------------------------------------------
    confidence_threshold: float = setting(
        0.8, "a source's answer at or above this is accepted", group="fusion",
        options=("--confidence-threshold", "--threshold"), ge=0.0, le=1.0)
    low_confidence_threshold: float = setting(
        0.3, "below this a source's answer is not trusted", group="fusion",
        options=("--low-confidence-threshold", "--low-threshold"), ge=0.0, le=1.0)
    fusion_strategy: Literal[ALL_STRATEGIES] = setting(
        "confidence_weighted", "fixed fusion strategy, used when no learned policy applies", group="fusion",
        options=("--fusion-strategy", "--strategy"))
    use_learned_policy: bool = setting(True, "the learned fusion policy where one is trained and valid",
                                       group="fusion", aliases=("use_learned_policy", "use_rl"), options=("--no-learned-policy",))

    # -- stages -------------------------------------------------------------------------------------
    stage_batch_size: int = setting(256, "images per stage batch (one cache transaction each)", group="stages",
                                    ge=1)
    max_image_pixels: int = setting(89_478_485, "larger images are refused as decompression bombs "
                                    "(Pillow's limit)", group="stages", ge=1)

    # -- the Dagster graph --------------------------------------------------------------------------
    shards_per_run: int = setting(1, "shards (partitions) materialized per Dagster run (1: each partition keeps "
                                     "its own lineage in the UI; more: fewer runs for tiny shards)", group="graph",
                                  scopes=(GRAPH,), ge=1)
    max_failed_fraction: float = setting(
        0.5, "share of unreadable images above which a shard's later stages are blocked", group="graph",
        scopes=(GRAPH,), ge=0.0, le=1.0)
    max_eval_images: int = setting(20_000, "held-out images the policy evaluation scores", group="graph",
                                   scopes=(GRAPH,), ge=1)
    eval_bootstrap: int = setting(1000, "bootstrap resamples behind the evaluation's confidence intervals",
                                  group="graph", scopes=(GRAPH,), ge=0)
    warehouse_artifacts: Optional[str] = setting(
        None, "shared folder for the learned probes and policy when the warehouse is an s3:// or gs:// URL",
        group="graph", scopes=(GRAPH,))
    executor: Optional[Literal[EXECUTORS]] = setting(
        None, "where steps run: in_process, multiprocess or celery (docs/cluster.md)", group="graph",
        scopes=(GRAPH,), default_text="in-process for `charattr run`, multiprocess in the UI")
    celery_broker: str = setting("redis://127.0.0.1:6379/0", "Celery broker URL (executor celery)", group="graph",
                                 scopes=(GRAPH,))
    celery_backend: str = setting("redis://127.0.0.1:6379/1", "Celery result backend URL (executor celery)",
                                  group="graph", scopes=(GRAPH,))
    celery_shard_seconds: int = setting(
        600, "the longest one shard may take in one step; sets the broker's visibility timeout", group="graph",
        scopes=(GRAPH,), ge=1)

    # -- validation ---------------------------------------------------------------------------------
    @model_validator(mode="before")
    @classmethod
    def _derive_locations(cls, values: Any) -> Any:
        """Absolute paths (a run worker started elsewhere writes to the same place) and the
        derived defaults: the shared database, and the source's own folder."""
        if not isinstance(values, Mapping):
            return values
        values = dict(values)
        derived = derived_locations(values.get("data_dir"), values.get("source"))
        for name, value in derived.items():
            if name in ("data_dir", "source") or values.get(name) in (None, ""):
                values[name] = value
        return values

    @field_validator("warehouse", "reports", "vocabulary", "labels", "policy_path", "probes_path",
                     "warehouse_artifacts")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value in (None, "") or "://" in value:  # a URL (object store) stays as given
            return value or None
        return str(Path(value).expanduser().resolve())

    @field_validator("executor", mode="before")
    @classmethod
    def _executor(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower().replace("-", "_")
            return None if value in ("", "auto", "none") else value
        return value

    @field_validator("pretrained", mode="before")
    @classmethod
    def _no_weights(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip().lower() in NO_WEIGHTS else value

    @model_validator(mode="after")
    def _check(self) -> "Settings":
        if self.low_confidence_threshold > self.confidence_threshold:
            raise ValueError(
                "Confidence thresholds must satisfy low_confidence_threshold <= confidence_threshold "
                f"(got {self.low_confidence_threshold} and {self.confidence_threshold})")
        for name, what in (("vocabulary", "Vocabulary file"), ("labels", "Labels file")):
            path = getattr(self, name)
            if path is not None and "://" not in path and not Path(path).is_file():
                raise ValueError(f"{what} {path} does not exist")
        return self

    def __init__(self, **values: Any) -> None:
        unknown = sorted(set(values) - _ACCEPTED)
        if unknown:
            raise ConfigError(f"Unknown setting(s) {', '.join(unknown)}; known settings are: "
                              f"{', '.join(Settings.model_fields)}.")
        by_field: dict[str, Any] = {}
        for key, value in values.items():  # an older name given after the new one wins, like any later key
            by_field[_FIELD_OF[key]] = value
        try:
            super().__init__(**by_field)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, _ORIGINS.get())) from None

    # -- building -----------------------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None = None, **overrides: Any) -> "Settings":
        """From a dict of settings (the Python API; the seed's keys such as `use_rl` included);
        the environment is not read."""
        return cls(**{**(values or {}), **overrides})

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """From the CHARATTR_* variables (default: the process environment); `overrides` win.
        An empty variable counts as unset."""
        return cls._layered(env, {}, overrides)

    @classmethod
    def from_options(cls, args: argparse.Namespace, env: Mapping[str, str] | None = None,
                     **overrides: Any) -> "Settings":
        """The environment's settings, overridden by the command-line options that were given
        (`add_options`) and then by `overrides` (e.g. a command's positional source)."""
        return cls._layered(env, options_given(args), overrides)

    @classmethod
    def _layered(cls, env: Mapping[str, str] | None, options: Mapping[str, Any],
                 overrides: Mapping[str, Any]) -> "Settings":
        """Defaults < environment < options < overrides; an error names where its value came from."""
        env = _checked_env(env)
        values: dict[str, Any] = {}
        origins: dict[str, str] = {}
        for name in _INFO:
            raw = env.get(env_var(name))
            if raw is not None and raw.strip() != "":
                values[name], origins[name] = raw, f"Environment variable {env_var(name)}"
        for name, value in options.items():
            values[name], origins[name] = value, f"Option {option_strings(name)[0]}"
        for key, value in overrides.items():  # an unknown key stays as given, and is refused by name
            name = _FIELD_OF.get(key, key)
            values[name], origins[name] = value, f"Setting {key}"
        token = _ORIGINS.set(origins)
        try:
            return cls(**values)
        finally:
            _ORIGINS.reset(token)

    def replace(self, **changes: Any) -> "Settings":
        """A copy with `changes`; derived locations follow a changed `data_dir` or `source`."""
        derived = derived_locations(self.data_dir, self.source)
        kept = {name: getattr(self, name) for name in _INFO
                if not (name in _DERIVED and getattr(self, name) == derived[name])}
        return Settings(**{**kept, **{_FIELD_OF.get(key, key): value for key, value in changes.items()}})

    def with_source(self, source: str | Path) -> "Settings":
        return self.replace(source=str(source))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def to_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The CHARATTR_* variables that make `from_env` give these settings, for those that differ
        from what `base` (default: the current environment) gives: what `dagster dev` needs in
        order to load the same definitions as a `charattr run` with command-line options."""
        env = dict(os.environ if base is None else base)
        changes: dict[str, str] = {}
        current = Settings.from_env(env)
        for name in _INFO:  # data_dir and source first: the derived locations follow them
            if getattr(current, name) != getattr(self, name):
                changes[env_var(name)] = _env_text(name, getattr(self, name))
                current = Settings.from_env({**env, **changes})
        return changes

    # -- derived facts ------------------------------------------------------------------------------
    @property
    def namespace(self) -> str:
        """This source's namespace: `<readable name>-<hash of its resolved path>`."""
        return source_namespace(self.source)

    @property
    def source_dir(self) -> Path:
        """This source's own folder under `data_dir` (warehouse, reports, Dagster instance)."""
        return source_folder(self.data_dir, Path(self.source))

    @property
    def dagster_home(self) -> Path:
        """This source's own Dagster instance, used unless $DAGSTER_HOME names another."""
        return self.source_dir / "dagster_home"

    # Older names (the seed's `use_rl`; `batch_size` meant the CLIP batch), still readable.
    @property
    def use_rl(self) -> bool:
        return self.use_learned_policy

    @property
    def batch_size(self) -> int:
        return self.clip_batch_size


_ORIGINS: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("charattr_setting_origins", default={})
_INFO: dict[str, SettingInfo] = {name: f.json_schema_extra["charattr"] for name, f in Settings.model_fields.items()}
_DERIVED = ("database_url", "warehouse", "reports")
_FIELD_OF: dict[str, str] = {  # every accepted key (names and older names) -> field name
    alias: name for name, field in Settings.model_fields.items()
    for alias in (field.validation_alias.choices if isinstance(field.validation_alias, AliasChoices) else [name])}
_ACCEPTED = frozenset(_FIELD_OF)

# The compatibility name of the in-process pipeline's settings (the same model).
PipelineConfig = Settings


# Variables that once meant something else: refused with the new names rather than silently ignored.
_RENAMED_ENV = {"CHARATTR_BATCH_SIZE": "CHARATTR_CLIP_BATCH_SIZE (images per CLIP forward pass) or "
                                       "CHARATTR_STAGE_BATCH_SIZE (images per stage batch)"}


def _checked_env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    env = os.environ if env is None else env
    for old, new in _RENAMED_ENV.items():
        if (env.get(old) or "").strip():
            raise ConfigError(f"Environment variable {old} is no longer read; set {new} instead.")
    return env


def derived_locations(data_dir: str | Path | None, source: str | Path | None) -> dict[str, Any]:
    """Absolute `data_dir` and `source`, and the default database, warehouse and reports."""
    data = Path(str(data_dir or DEFAULT_DATA_DIR)).expanduser().resolve()
    path = Path(str(source or data / "sample")).expanduser().resolve()
    folder = source_folder(data, path)
    return {"data_dir": data, "source": str(path), "database_url": f"sqlite:///{data / 'charattr.db'}",
            "warehouse": str(folder / "warehouse"), "reports": str(folder / "reports")}


def env_var(name: str) -> str:
    info = _INFO[name]
    return info.env or ENV_PREFIX + name.upper()


def option_strings(name: str) -> tuple[str, ...]:
    info = _INFO[name]
    if info.options is not None:
        return info.options
    return ("--" + name.replace("_", "-"),)


def _env_text(name: str, value: Any) -> str:
    if value is None:
        return "none" if name == "pretrained" else ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _default_text(name: str) -> str:
    field, info = Settings.model_fields[name], _INFO[name]
    if info.default_text:
        return info.default_text
    value = field.default
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "none"
    return f"`{value:_}`".replace("_", ",") if isinstance(value, int) and value >= 10_000 else f"`{value}`"


# -- errors -------------------------------------------------------------------------------------------
_MESSAGES = {
    "bool_parsing": "must be 1 or 0 (or true/false)", "bool_type": "must be 1 or 0 (or true/false)",
    "int_parsing": "must be a whole number", "int_type": "must be a whole number",
    "int_from_float": "must be a whole number", "float_parsing": "must be a number", "float_type": "must be a number",
    "string_type": "must be text", "path_type": "must be a path",
}


def _describe(exc: ValidationError, origins: Mapping[str, str]) -> str:
    """The first error as one sentence naming the setting as the user gave it."""
    error = exc.errors()[0]
    loc = error.get("loc") or ()
    if not loc:  # a model-level rule
        return error["msg"].removeprefix("Value error, ").rstrip(".") + "."
    name = _FIELD_OF.get(str(loc[0]), str(loc[0]))
    where = origins.get(name, f"Setting {loc[0]}")
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "greater_than_equal":
        what = f"must be at least {ctx.get('ge')}"
    elif kind == "less_than_equal":
        what = f"must be at most {ctx.get('le')}"
    elif kind == "literal_error":
        what = f"must be one of: {', '.join(_literal_choices(Settings.model_fields[name].annotation))}"
    elif kind == "value_error":
        return error["msg"].removeprefix("Value error, ").rstrip(".") + "."
    else:
        what = _MESSAGES.get(kind, error["msg"].lower())
    return f"{where} {what} (got {error.get('input')!r})."


# -- the command line -----------------------------------------------------------------------------
_DEST = "setting__"


def _literal_choices(annotation: Any) -> list[str]:
    """The choices of `Literal[...]` or `Optional[Literal[...]]`; [] for other types."""
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    return [c for a in get_args(annotation) if get_origin(a) is Literal for c in get_args(a)]


def _argument_type(annotation: Any) -> tuple[Any, list[str] | None]:
    choices = _literal_choices(annotation)
    if choices:
        return str, choices
    args = [a for a in get_args(annotation) if a is not type(None)] or [annotation]
    base = args[0]
    return (base if base in (int, float) else str), None


def add_options(parser: argparse.ArgumentParser, scope: str, only: Sequence[str] | None = None) -> None:
    """Add the options of every setting of `scope` (or of the settings named in `only`) to `parser`,
    grouped. Options that are not given do not appear in the parsed namespace (`options_given`),
    so the environment still applies."""
    groups: dict[str, Any] = {}
    for name, field in Settings.model_fields.items():
        info = _INFO[name]
        if scope not in info.scopes or not option_strings(name) or (only is not None and name not in only):
            continue
        group = groups.get(info.group) or groups.setdefault(info.group, parser.add_argument_group(GROUPS[info.group]))
        help_text = f"{field.description} (default: {_default_text(name).replace('`', '')}; ${env_var(name)})"
        if field.annotation in (bool, Optional[bool]):
            help_text = f"turn {'off' if field.default else 'on'}: {help_text}"
        kwargs: dict[str, Any] = {"dest": _DEST + name, "default": argparse.SUPPRESS,
                                  "help": help_text.replace("%", "%%")}
        if field.annotation in (bool, Optional[bool]):
            kwargs.update(action="store_const", const=not bool(field.default))
        else:
            kind, choices = _argument_type(field.annotation)
            kwargs.update(type=kind, choices=choices, metavar=None if choices else name.split("_")[-1].upper())
        group.add_argument(*option_strings(name), **kwargs)
        if info.old_options:
            group.add_argument(*info.old_options, **{**kwargs, "help": argparse.SUPPRESS})


def options_given(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the command line gave (by field name)."""
    return {key[len(_DEST):]: value for key, value in vars(args).items() if key.startswith(_DEST)}


# -- the docs -------------------------------------------------------------------------------------
def markdown_table() -> str:
    """The README's settings table: every setting, its variable, option, default and use."""
    lines = ["| setting | environment variable | option | default | used by | meaning |",
             "|---|---|---|---|---|---|"]
    used = {BOTH: "all", (PIPELINE,): "API, extract/batch/eval", (GRAPH,): "`charattr run`, Dagster"}
    for name, field in Settings.model_fields.items():
        options = " ".join(f"`{o}`" for o in option_strings(name)) or "(positional)"
        lines.append(f"| `{name}` | `{env_var(name)}` | {options} | {_default_text(name)} | "
                     f"{used[_INFO[name].scopes]} | {field.description} |")
    return "\n".join(lines) + "\n"


TABLE_START, TABLE_END = "<!-- settings table: generated by `python -m charattr_core.settings --update-readme README.md` -->", \
    "<!-- end of settings table -->"


def table_in(text: str) -> str:
    """The settings table between the markers of a README (ConfigError when they are missing)."""
    try:
        return text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip("\n") + "\n"
    except IndexError:
        raise ConfigError("The README has no settings-table markers.") from None


def with_table(text: str) -> str:
    """`text` with the generated table between its markers."""
    table_in(text)
    head, rest = text.split(TABLE_START, 1)
    return f"{head}{TABLE_START}\n{markdown_table()}{TABLE_END}{rest.split(TABLE_END, 1)[1]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m charattr_core.settings",
                                     description="Print charattr's settings table (Markdown) or current values.")
    parser.add_argument("--markdown", action="store_true", help="the README's settings table")
    parser.add_argument("--update-readme", metavar="README", help="write the table into README between its markers")
    parser.add_argument("--dagster-home", action="store_true",
                        help="the Dagster instance of the source that CHARATTR_SOURCE names (for `make ui`)")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown_table())
        return 0
    if args.update_readme:
        path = Path(args.update_readme)
        path.write_text(with_table(path.read_text(encoding="utf-8")), encoding="utf-8")
        return 0
    try:
        current = Settings.from_env()
    except ConfigError as exc:
        sys.stderr.write(f"charattr: error: {exc}\n")
        return 1
    if args.dagster_home:
        print(current.dagster_home)
        return 0
    for name in _INFO:
        print(f"{name} = {getattr(current, name)!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
