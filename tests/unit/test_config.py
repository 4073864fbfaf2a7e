"""The configuration: defaults, sizes, durations, environment overrides and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from mediad import config, errors

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_match_the_documented_config_file() -> None:
    """The shipped config.toml states exactly the built-in defaults."""
    assert config.load(REPO / "config.toml", env={}) == config.load(None, env={})


def test_documented_config_names_every_key() -> None:
    """Every key the code knows appears in config.toml, so the file documents them all: set to
    its default, or commented out where the default follows other keys (media.workers)."""
    text = (REPO / "config.toml").read_text()
    for section in config.Config.__dataclass_fields__:
        assert f"[{section}]" in text
        for key in getattr(config.Config(), section).__dataclass_fields__:
            documented = f"\n{key} = " in text or f"\n# {key} = " in text
            assert documented, f"{section}.{key} is not documented"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("100MB", 100_000_000), ("1.5GiB", 1_610_612_736), ("512", 512), ("2 kb", 2000), (7, 7)],
)
def test_sizes_parse(text: object, expected: int) -> None:
    """Sizes accept decimal and binary units."""
    assert config.parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30s", 30.0), ("250ms", 0.25), ("1h30m", 5400.0), (5, 5.0), ("2d", 172800.0)],
)
def test_durations_parse(text: object, expected: float) -> None:
    """Durations accept ms, s, m, h, d and combinations."""
    assert config.parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["ten", "5x", "-3s", "", True])
def test_bad_durations_are_refused(bad: object) -> None:
    """A duration that is not one raises ValueError."""
    with pytest.raises(ValueError):
        config.parse_duration(bad)


def test_file_values_are_typed(tmp_path: Path) -> None:
    """Values from the file arrive parsed into their kinds."""
    path = write(
        tmp_path,
        '[storage]\nmax_file_size = "2GB"\nmax_cache_size = "10GiB"\n'
        '[download]\nread_timeout = "1m"\nallowed_networks = ["127.0.0.1/32"]\n',
    )
    cfg = config.load(path, env={})
    assert cfg.storage.max_file_size == 2_000_000_000
    assert cfg.storage.max_cache_size == 10 * 1024**3
    assert cfg.download.read_timeout == 60.0
    assert cfg.download.allowed_networks == ("127.0.0.1/32",)


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    """MEDIAD_<SECTION>_<KEY> wins over the file, parsed like the file's value."""
    path = write(tmp_path, "[download]\nconcurrency = 3\n")
    cfg = config.load(
        path,
        env={
            "MEDIAD_DOWNLOAD_CONCURRENCY": "7",
            "MEDIAD_DATABASE_URL": "postgresql://db/x",
            "MEDIAD_ARCHIVE_ENABLED": "true",
            "MEDIAD_ARCHIVE_BUCKET": "media",
            "MEDIAD_DOWNLOAD_ALLOWED_NETWORKS": "10.0.0.0/8, 127.0.0.1/32",
        },
    )
    assert cfg.download.concurrency == 7
    assert cfg.database.url == "postgresql://db/x"
    assert cfg.archive.enabled is True
    assert cfg.download.allowed_networks == ("10.0.0.0/8", "127.0.0.1/32")


@pytest.mark.parametrize(
    ("text", "env", "names"),
    [
        ("[download]\nconcurency = 3\n", {}, "download.concurency: unknown key"),
        ("[downlaod]\n", {}, "downlaod: unknown section"),
        ('[download]\nconcurrency = "many"\n', {}, "download.concurrency: expected an integer"),
        ("[download]\nconcurrency = 0\n", {}, "download.concurrency: must be at least 1"),
        ('[daemon]\nlease = "soon"\n', {}, "daemon.lease: 'soon' is not a duration"),
        ('[storage]\nmax_file_size = "big"\n', {}, "storage.max_file_size: 'big' is not a size"),
        ('[log]\nformat = "xml"\n', {}, "log.format: expected one of json, console"),
        ("", {"MEDIAD_ARCHIVE_ENABLED": "maybe"}, "MEDIAD_ARCHIVE_ENABLED: expected true or false"),
        ("[archive]\nenabled = true\n", {}, "archive.bucket: required"),
        ("[download\n", {}, "config.toml"),
        # A stage this build does not have cannot be turned on: rows would wait for it forever.
        (
            '[analysis]\nenabled = true\nbackend = "openai"\n',
            {},
            "analysis.endpoint_url: required",
        ),
        ('[analysis]\nprompt_file = "/nonexistent/prompt.txt"\n', {}, "analysis.prompt_file:"),
    ],
)
def test_mistakes_name_the_key(tmp_path: Path, text: str, env: dict[str, str], names: str) -> None:
    """Each mistake raises ConfigError whose one-line message names the key at fault."""
    with pytest.raises(errors.ConfigError) as caught:
        config.load(write(tmp_path, text), env=env)
    assert names in str(caught.value)
    assert "\n" not in str(caught.value)


def test_config_path_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--config wins over $MEDIAD_CONFIG, which wins over ./config.toml."""
    monkeypatch.chdir(tmp_path)
    assert config.find_config_path(None, env={}) is None
    write(tmp_path, "")
    assert config.find_config_path(None, env={}) == Path("config.toml")
    assert config.find_config_path(None, env={"MEDIAD_CONFIG": "/etc/m.toml"}) == Path(
        "/etc/m.toml"
    )
    assert config.find_config_path("x.toml", env={"MEDIAD_CONFIG": "/etc/m.toml"}) == Path("x.toml")


@pytest.mark.parametrize("value", ["true", "false"])
def test_a_retired_key_loads_with_a_notice(tmp_path: Path, value: str) -> None:
    """archive.verify_after_upload no longer exists (every object is verified): an old config
    file naming it still loads, and the notice says what became of it."""
    notices: list[str] = []
    path = write(tmp_path, f"[archive]\nverify_after_upload = {value}\n")
    assert config.load(path, env={}, notices=notices) == config.load(None, env={})
    [notice] = notices
    assert notice.startswith("archive.verify_after_upload: no longer used")
    from_env: list[str] = []
    config.load(None, env={"MEDIAD_ARCHIVE_VERIFY_AFTER_UPLOAD": value}, notices=from_env)
    assert from_env == notices
