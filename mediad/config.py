"""Configuration: `config.toml`, overridden by `MEDIAD_<SECTION>_<KEY>` environment variables.

Every key has a default here and in the documented `config.toml`; a value is parsed by the
kind of its field (size, duration, list, ...) and any mistake is a ConfigError naming the key.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mediad import __version__, errors, stages
from mediad.storage import objectkeys

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_size(value: object) -> int:
    """Bytes from `123`, `"100MB"`, `"1.5GiB"`; units are decimal, `i` units binary."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 100MB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if not isinstance(value, str):
        raise ValueError("expected a size such as 100MB")
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
    if match is None or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"{value!r} is not a size such as 100MB")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def parse_optional_size(value: object) -> int | None:
    """Like parse_size, but an empty string means "no limit"."""
    if value == "" or value is None:
        return None
    return parse_size(value)


def parse_duration(value: object) -> float:
    """Seconds from `5`, `"30s"`, `"250ms"`, `"1h30m"`."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", value)
        if not parts or re.sub(r"\s+", "", value) != "".join(n + u for n, u in parts):
            raise ValueError(f"{value!r} is not a duration such as 30s")
        seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    else:
        raise ValueError("expected a duration such as 30s")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def _parse_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _parse_positive_int(value: object) -> int:
    number = _parse_int(value)
    if number < 1:
        raise ValueError(f"must be at least 1, got {number}")
    return number


def _parse_non_negative_float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    if value < 0:
        raise ValueError(f"must not be negative, got {value}")
    return float(value)


def _parse_non_negative_int(value: object) -> int:
    number = _parse_int(value)
    if number < 0:
        raise ValueError(f"cannot be negative, got {number}")
    return number


def _parse_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _parse_str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _parse_str_list(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"expected a list of strings, got {value!r}")
    return tuple(value)


def _one_of(*choices: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = _parse_str(value)
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {text!r}")
        return text

    return parse


def _parse_level(value: object) -> str:
    text = _parse_str(value).lower()
    if text not in ("debug", "info", "warning", "error", "critical"):
        raise ValueError(f"expected debug, info, warning, error or critical, got {text!r}")
    return text


def _parse_database_url(value: object) -> str:
    text = _parse_str(value).strip()
    if text and not re.match(r"postgres(ql)?://", text):
        raise ValueError("expected a postgresql:// URL, or empty for the embedded database")
    return text


def _parse_key_template(value: object) -> str:
    text = _parse_str(value)
    objectkeys.parse(text)
    return text


def _parse_storage_class(value: object) -> str:
    text = _parse_str(value)
    if text and not re.fullmatch(r"[A-Z][A-Z_]*", text):
        raise ValueError(f"expected an S3 storage class such as STANDARD_IA, got {text!r}")
    return text


def _parse_sse(value: object) -> str:
    text = _parse_str(value)
    if text not in ("", "AES256", "aws:kms"):
        raise ValueError(f"expected empty, AES256 or aws:kms, got {text!r}")
    return text


def _parse_part_size(value: object) -> int:
    size = parse_size(value)
    # S3's own bounds for every part but the last.
    if not 5 * 1024**2 <= size <= 5 * 1024**3:
        raise ValueError("must be between 5MiB and 5GiB")
    return size


def _parse_presign_expiry(value: object) -> float:
    seconds = parse_duration(value)
    # SigV4 presigned URLs live at most seven days.
    if not 1 <= seconds <= 7 * 86400:
        raise ValueError("must be between 1s and 7d")
    return seconds


def _parse_quality(value: object) -> int:
    number = _parse_int(value)
    if not 1 <= number <= 100:
        raise ValueError(f"must be between 1 and 100, got {number}")
    return number


def parse_listen(value: object) -> tuple[str, int] | None:
    """`host:port` (`[::1]:8765` for IPv6) as (host, port), port 0 for any free one; empty
    means off (None)."""
    text = _parse_str(value).strip()
    if not text:
        return None
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^\s:\[\]]+):(\d{1,5})", text)
    if match is None:
        raise ValueError(f"{text!r} is not host:port (e.g. 127.0.0.1:8765, [::1]:8765)")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if port > 65535:
        raise ValueError(f"port {port} is over 65535")
    return host, port


def _key(default: Any, parse: Callable[[object], Any]) -> Any:
    """A config key: its default as written in config.toml, and the parser of its kind."""
    return field(default=parse(default), metadata={"parse": parse})


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = _key("", _parse_database_url)


@dataclass(frozen=True)
class StorageConfig:
    root: str = _key("var/media", _parse_str)
    public_base_url: str = _key("", _parse_str)
    max_file_size: int = _key("100MB", parse_size)
    max_cache_size: int | None = _key("", parse_optional_size)
    # How often the daemon checks the store against max_cache_size.
    evict_interval: float = _key("5m", parse_duration)
    # Names this store in the rows it holds (empty: the host name). Hosts sharing one storage
    # root give it the same name; see node_name.
    node: str = _key("", _parse_str)

    @property
    def node_name(self) -> str:
        """The store's name as rows record it: `node`, or else this host's name."""
        return self.node or socket.gethostname()


@dataclass(frozen=True)
class DownloadConfig:
    concurrency: int = _key(16, _parse_positive_int)
    per_host_concurrency: int = _key(4, _parse_positive_int)
    connect_timeout: float = _key("10s", parse_duration)
    read_timeout: float = _key("30s", parse_duration)
    # The whole transfer of one file, so a trickling origin cannot hold a slot forever.
    total_timeout: float = _key("30m", parse_duration)
    max_attempts: int = _key(5, _parse_positive_int)
    allowed_networks: tuple[str, ...] = _key([], _parse_str_list)
    user_agent: str = _key(f"mediad/{__version__}", _parse_str)


@dataclass(frozen=True)
class ArchiveConfig:
    enabled: bool = _key(False, _parse_bool)
    endpoint_url: str = _key("", _parse_str)
    region: str = _key("us-east-1", _parse_str)
    bucket: str = _key("", _parse_str)
    key_template: str = _key("media/{sha256[:2]}/{sha256}.{ext}", _parse_key_template)
    concurrency: int = _key(4, _parse_positive_int)
    max_attempts: int = _key(8, _parse_positive_int)
    addressing_style: str = _key("auto", _one_of("auto", "path", "virtual"))
    # Empty: the bucket's default class.
    storage_class: str = _key("", _parse_storage_class)
    # Server-side encryption: empty (the bucket's default), AES256 or aws:kms.
    sse: str = _key("", _parse_sse)
    sse_kms_key_id: str = _key("", _parse_str)
    # Files larger than part_size are uploaded in parts of this size, upload_concurrency at once.
    part_size: int = _key("8MiB", _parse_part_size)
    upload_concurrency: int = _key(4, _parse_positive_int)
    presign_expiry: float = _key("1h", _parse_presign_expiry)
    connect_timeout: float = _key("10s", parse_duration)
    read_timeout: float = _key("60s", parse_duration)
    # When S3 is unreachable or refuses us, the stage pauses this long, doubling up to the max.
    outage_pause: float = _key("5s", parse_duration)
    outage_pause_max: float = _key("5m", parse_duration)


@dataclass(frozen=True)
class AnalysisConfig:
    enabled: bool = _key(False, _parse_bool)
    # "local": offline on this CPU (OCR, perceptual hashes, colours); "openai": any
    # OpenAI-compatible chat-completions endpoint with vision.
    backend: str = _key("local", _one_of("local", "openai"))
    concurrency: int = _key(2, _parse_positive_int)
    max_attempts: int = _key(5, _parse_positive_int)
    # openai: the API base, e.g. https://api.openai.com/v1 or http://127.0.0.1:11434/v1.
    endpoint_url: str = _key("", _parse_str)
    model: str = _key("", _parse_str)
    # Empty: the built-in prompt. prompt_file reads it from a file instead.
    prompt: str = _key("", _parse_str)
    prompt_file: str = _key("", _parse_str)
    # Long side of the JPEG sent; originals never leave the host.
    max_image_px: int = _key(1024, _parse_positive_int)
    # The longest answer read; a longer one is a bad response.
    max_response_size: int = _key("1MiB", parse_size)
    max_output_tokens: int = _key(800, _parse_positive_int)
    # Client-side limits across the pool (0: none).
    requests_per_minute: int = _key(0, _parse_int)
    tokens_per_minute: int = _key(0, _parse_int)
    # USD per million tokens, for cost accounting; daily_budget 0 means none.
    input_price_per_mtok: float = _key(0.0, _parse_non_negative_float)
    output_price_per_mtok: float = _key(0.0, _parse_non_negative_float)
    daily_budget: float = _key(0.0, _parse_non_negative_float)
    timeout: float = _key("120s", parse_duration)
    # When credentials, the model or the quota fail, the stage pauses this long, doubling while
    # it lasts, up to outage_pause_max. No row fails for it.
    outage_pause: float = _key("30s", parse_duration)
    outage_pause_max: float = _key("30m", parse_duration)
    # backend = "local": the address-space limit of each of its own decoder workers (one per
    # row analysed at once): OCR's models and buffers need more than media.worker_memory.
    worker_memory: int = _key("2GiB", parse_size)
    # `mediad duplicates`: the largest Hamming distance of perceptual hashes called near.
    near_duplicate_distance: int = _key(10, _parse_int)

    def prompt_text(self) -> str:
        """The prompt: prompt_file's text, else prompt; empty for the built-in one."""
        if self.prompt_file:
            return Path(self.prompt_file).read_text(encoding="utf-8")
        return self.prompt


@dataclass(frozen=True)
class DeriveConfig:
    enabled: bool = _key(True, _parse_bool)
    concurrency: int = _key(2, _parse_positive_int)
    max_attempts: int = _key(3, _parse_positive_int)
    # Long side in pixels of the WebP thumbnail and preview (EXIF orientation applied, sRGB,
    # never upscaled).
    thumbnail_px: int = _key(320, _parse_positive_int)
    preview_px: int = _key(1280, _parse_positive_int)
    # The progressive JPEG, kept only when smaller than the original.
    optimized: bool = _key(True, _parse_bool)
    optimized_px: int = _key(1920, _parse_positive_int)
    optimized_quality: int = _key(85, _parse_quality)
    # The original less its GPS, device serials and maker notes (JPEG, PNG, WebP).
    public_copy: bool = _key(True, _parse_bool)


@dataclass(frozen=True)
class HttpConfig:
    # /metrics, /healthz, /readyz and the dashboard; empty: off. Any address but loopback needs
    # the bearer token in $MEDIAD_HTTP_TOKEN.
    listen: tuple[str, int] | None = _key("127.0.0.1:8765", parse_listen)
    # Connections served at once; more wait in the kernel's backlog, costing the stages nothing.
    max_connections: int = _key(64, _parse_positive_int)
    # A connection idle this long (before or between requests) is closed.
    idle_timeout: float = _key("15s", parse_duration)
    # Row counts read from the database are reused this long: scrapes cost the database nothing.
    counts_max_age: float = _key("5s", parse_duration)


@dataclass(frozen=True)
class DaemonConfig:
    state_dir: str = _key("var", _parse_str)
    lease: float = _key("60s", parse_duration)
    poll_interval: float = _key("5s", parse_duration)
    shutdown_grace: float = _key("30s", parse_duration)
    # Retry n waits about backoff_base * 2**(n-1), with jitter, capped at backoff_max.
    backoff_base: float = _key("10s", parse_duration)
    backoff_max: float = _key("1h", parse_duration)
    # How many rows one claim statement may lease at most.
    claim_batch: int = _key(100, _parse_positive_int)
    # Empty: host:pid. Names this process in leases and events.
    worker_name: str = _key("", _parse_str)
    # A stage loop that has not turned for this long (or 3 poll intervals, if longer) is stuck:
    # the systemd watchdog stops being fed and /healthz answers 503.
    stuck_after: float = _key("30s", parse_duration)
    # Worker processes on this host (mediad/supervisor.py); 0: one per core.
    processes: int = _key(1, _parse_non_negative_int)

    @property
    def process_count(self) -> int:
        """`processes`, or else the cores this process may run on."""
        return self.processes or len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class MediaConfig:
    # Decoder worker processes (Pillow, PyAV, OCR), the host's; 0: one per core. Left unset, it
    # is 2, or one per worker process where daemon.processes is more (see load).
    workers: int = _key(2, _parse_non_negative_int)
    # The address-space limit (RLIMIT_AS) of each worker.
    worker_memory: int = _key("1GiB", parse_size)
    # One decode's wall-clock limit; the worker is killed past it.
    decode_timeout: float = _key("60s", parse_duration)
    # Decodes in flight are admitted by their pixel bytes (width x height x bands) up to this.
    decode_memory: int = _key("512MiB", parse_size)
    # Decode in the daemon's own threads instead: only for benchmarks that compare the cost.
    # Never in production: a decoder crash or a bomb would then take the whole daemon down.
    in_process: bool = _key(False, _parse_bool)

    @property
    def worker_count(self) -> int:
        """`workers`, or else the cores this process may run on."""
        return self.workers or len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class LogConfig:
    format: str = _key("json", _one_of("json", "console"))
    level: str = _key("info", _parse_level)
    # A `progress` line this often (nothing while idle); 0: none.
    progress_interval: float = _key("60s", parse_duration)


@dataclass(frozen=True)
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    derive: DeriveConfig = field(default_factory=DeriveConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    log: LogConfig = field(default_factory=LogConfig)

    @property
    def log_level(self) -> int:
        return logging.getLevelNamesMapping()[self.log.level.upper()]


_Section = TypeVar("_Section")

_SECTION_TYPES: dict[str, type[Any]] = {
    "database": DatabaseConfig,
    "storage": StorageConfig,
    "download": DownloadConfig,
    "archive": ArchiveConfig,
    "analysis": AnalysisConfig,
    "derive": DeriveConfig,
    "http": HttpConfig,
    "daemon": DaemonConfig,
    "media": MediaConfig,
    "log": LogConfig,
}


def _env_value(raw: str, parse: Callable[[object], Any]) -> object:
    """Turn an environment string into the TOML-typed value its key expects."""
    text = raw.strip()
    if parse in (_parse_int, _parse_positive_int, _parse_non_negative_int):
        try:
            return int(text)
        except ValueError:
            return raw
    if parse is _parse_non_negative_float:
        try:
            return float(text)
        except ValueError:
            return raw
    if parse is _parse_bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        return raw
    if parse is _parse_str_list:
        if text.startswith("["):
            try:
                return tomllib.loads(f"v = {text}")["v"]
            except tomllib.TOMLDecodeError:
                return raw
        return [item.strip() for item in text.split(",") if item.strip()]
    return raw


# Keys that once did something and no longer do, and what became of them. A config file (or an
# environment) still naming one loads, since config files outlive versions; `load` hands the
# notice to its caller, which logs it.
RETIRED: dict[tuple[str, str], str] = {
    ("archive", "verify_after_upload"): "no longer used, remove it: every archived object is"
    " verified before its row completes (from the upload's answer where it proves the bytes,"
    " else by a HEAD)",
}


def _retired_notices(
    section: str, values: Mapping[str, object], env: Mapping[str, str]
) -> list[str]:
    notices = []
    for (name, key), notice in RETIRED.items():
        if name == section and _given(section, key, values, env):
            notices.append(f"{name}.{key}: {notice}")
    return notices


def _env_name(section: str, key: str) -> str:
    """The environment variable that overrides `section.key`."""
    return f"MEDIAD_{section.upper()}_{key.upper()}"


def _given(section: str, key: str, values: Mapping[str, object], env: Mapping[str, str]) -> bool:
    """Whether `section.key` is set: in the section's `values` from the file, or in `env`."""
    return key in values or _env_name(section, key) in env


def _build_section(
    cls: type[_Section], name: str, values: Mapping[str, object], env: Mapping[str, str]
) -> _Section:
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in values:
        if key not in known and (name, key) not in RETIRED:
            raise errors.ConfigError(f"{name}.{key}: unknown key")
    kwargs: dict[str, Any] = {}
    for key, fld in known.items():
        parse = fld.metadata["parse"]
        env_name = _env_name(name, key)
        source: object
        if env_name in env:
            source, where = _env_value(env[env_name], parse), env_name
        elif key in values:
            source, where = values[key], f"{name}.{key}"
        else:
            continue
        try:
            kwargs[key] = parse(source)
        except ValueError as exc:
            raise errors.ConfigError(f"{where}: {exc}") from None
    return cls(**kwargs)


def load(
    path: Path | None, env: Mapping[str, str] | None = None, *, notices: list[str] | None = None
) -> Config:
    """Read the config file (a missing default file is fine) and apply environment overrides;
    what should be said about retired keys it names is appended to `notices`."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with path.open("rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError:
            raise errors.ConfigError(f"{path}: no such config file") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise errors.ConfigError(f"{path}: {exc}") from None
    sections = {f.name: f for f in dataclasses.fields(Config)}
    for name, value in data.items():
        if name not in sections:
            raise errors.ConfigError(f"{name}: unknown section")
        if not isinstance(value, dict):
            raise errors.ConfigError(f"{name}: expected a [{name}] table")
    built: dict[str, Any] = {
        name: _build_section(_SECTION_TYPES[name], name, data.get(name, {}), env)
        for name in sections
    }
    if notices is not None:
        for name in sections:
            notices += _retired_notices(name, data.get(name, {}), env)
    config = Config(**built)
    if not _given("media", "workers", data.get("media", {}), env):
        config = _decoders_for_every_process(config)
    _check(config)
    return config


def _decoders_for_every_process(config: Config) -> Config:
    """`config` with media.workers raised to daemon.processes' count where that is more: each
    worker process probes in a decoder of its own, and the default of 2 (a small host's) would
    otherwise make `processes = 0` (one per core) a config error on any host of 3 cores or more.
    A media.workers that is set is kept, and checked."""
    processes = config.daemon.process_count
    if processes <= config.media.worker_count:
        return config
    return dataclasses.replace(config, media=dataclasses.replace(config.media, workers=processes))


def _check(config: Config) -> None:
    """Cross-key rules a single key's parser cannot see."""
    if config.daemon.lease < 2:
        raise errors.ConfigError("daemon.lease: must be at least 2s, so heartbeats can renew it")
    if config.daemon.poll_interval <= 0:
        raise errors.ConfigError("daemon.poll_interval: must be more than 0s")
    if config.archive.enabled and not config.archive.bucket:
        raise errors.ConfigError("archive.bucket: required when archive.enabled is true")
    if config.archive.sse_kms_key_id and config.archive.sse != "aws:kms":
        raise errors.ConfigError('archive.sse_kms_key_id: needs archive.sse = "aws:kms"')
    if config.archive.outage_pause_max < config.archive.outage_pause:
        raise errors.ConfigError("archive.outage_pause_max: must not be less than outage_pause")
    if config.storage.evict_interval <= 0:
        raise errors.ConfigError("storage.evict_interval: must be more than 0s")
    analysis = config.analysis
    if analysis.prompt_file:
        try:
            analysis.prompt_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise errors.ConfigError(f"analysis.prompt_file: {exc}") from None
    if analysis.enabled and analysis.backend == "openai":
        if not analysis.endpoint_url:
            raise errors.ConfigError('analysis.endpoint_url: required with backend = "openai"')
        if not analysis.model:
            raise errors.ConfigError('analysis.model: required with backend = "openai"')
    if config.media.decode_timeout <= 0:
        raise errors.ConfigError("media.decode_timeout: must be more than 0s")
    if config.media.decode_memory <= 0:
        raise errors.ConfigError("media.decode_memory: must be more than 0")
    # Python, Pillow and FFmpeg take about 130 MiB of address space before the first decode.
    if config.media.worker_memory < 256 * 1024**2:
        raise errors.ConfigError("media.worker_memory: must be at least 256MiB")
    processes = config.daemon.process_count
    if processes > 1 and config.media.worker_count < processes:
        # Each worker process needs a decoder of its own (every download is probed in one),
        # and media.workers is the host's count, divided among them.
        raise errors.ConfigError(
            f"media.workers: {config.media.worker_count} decoder workers cannot serve"
            f" daemon.processes = {processes} worker processes (each needs one); raise"
            " media.workers, set it to 0 (one per core), or leave it unset (one per process)"
        )
    for declaration in stages.ALL:
        if declaration.implementation is None and declaration.enabled(config):
            raise errors.ConfigError(
                f"{declaration.name}.enabled: this build of mediad has no {declaration.name}"
                " stage yet; set it to false"
            )


def find_config_path(cli_value: str | None, env: Mapping[str, str] | None = None) -> Path | None:
    """`--config`, else `$MEDIAD_CONFIG`, else `./config.toml` when it exists."""
    env = os.environ if env is None else env
    if cli_value:
        return Path(cli_value)
    if env.get("MEDIAD_CONFIG"):
        return Path(env["MEDIAD_CONFIG"])
    default = Path("config.toml")
    return default if default.exists() else None
