"""Settings from the environment and credentials files; the password never shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from azaion_loader.errors import ConfigError, CredentialsMissingError
from azaion_loader.settings import LoaderSettings


def test_defaults() -> None:
    s = LoaderSettings.from_env({})
    assert s.api_url == "http://127.0.0.1:8080"
    assert s.cache_dir is None and s.credentials is None
    assert s.http.timeout == 30.0 and s.http.retries == 4
    assert s.log.level == "INFO" and s.log.format == "text"
    with pytest.raises(CredentialsMissingError):
        s.require_credentials()


def test_env_values() -> None:
    s = LoaderSettings.from_env(
        {
            "LOADER_API_URL": "https://api.example/",
            "LOADER_EMAIL": "u@example.com",
            "LOADER_PASSWORD": "canary-pw",
            "LOADER_CACHE_DIR": "/c",
            "LOADER_CA_BUNDLE": "/ca.pem",
            "LOADER_TIMEOUT": "2.5",
            "LOADER_RETRIES": "0",
            "LOADER_HW_MACHINE_ID": "m",
            "LOADER_HW_ARCH": "arm64",
            "LOADER_LOG_LEVEL": "debug",
            "LOADER_LOG_FORMAT": "JSON",
        }
    )
    assert s.api_url == "https://api.example"
    assert s.require_credentials().password == "canary-pw"
    assert s.http.timeout == 2.5 and s.http.retries == 0 and s.http.ca_bundle == "/ca.pem"
    assert s.hardware.machine_id == "m" and s.hardware.arch == "arm64"
    assert s.log.level == "DEBUG" and s.log.format == "json"
    assert "canary-pw" not in repr(s) and "canary-pw" not in str(s.credentials)


def test_credentials_dir_wins(tmp_path: Path) -> None:
    (tmp_path / "email").write_text("file@example.com\n")
    (tmp_path / "password").write_text("from-file\n")
    s = LoaderSettings.from_env(
        {"LOADER_CREDENTIALS_DIR": str(tmp_path), "LOADER_EMAIL": "env@x", "LOADER_PASSWORD": "e"}
    )
    creds = s.require_credentials()
    assert creds.email == "file@example.com" and creds.password == "from-file"


def test_credentials_dir_missing_file(tmp_path: Path) -> None:
    (tmp_path / "email").write_text("file@example.com")
    s = LoaderSettings.from_env({"LOADER_CREDENTIALS_DIR": str(tmp_path)})
    with pytest.raises(CredentialsMissingError, match="password"):
        s.require_credentials()


def test_half_credentials() -> None:
    s = LoaderSettings.from_env({"LOADER_EMAIL": "a@b"})
    with pytest.raises(CredentialsMissingError, match="LOADER_PASSWORD"):
        s.require_credentials()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LOADER_TIMEOUT", "abc"),
        ("LOADER_TIMEOUT", "0"),
        ("LOADER_RETRIES", "-1"),
        ("LOADER_RETRIES", "1.5"),
        ("LOADER_LOG_LEVEL", "LOUD"),
        ("LOADER_LOG_FORMAT", "xml"),
        ("LOADER_API_URL", "ftp://x"),
        ("LOADER_DEADLINE", "0"),
        ("LOADER_MAX_RESPONSE", "0"),
        ("LOADER_MAX_RESPONSE", "1e6"),
        ("LOADER_MIN_RATE", "-1"),
        ("LOADER_RATE_WINDOW", "0"),
        ("LOADER_DOWNLOAD_DEADLINE", "-1"),
    ],
)
def test_bad_values_are_config_errors(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        LoaderSettings.from_env({name: value})


def test_transfer_limits() -> None:
    http = LoaderSettings.from_env(
        {
            "LOADER_DEADLINE": "45",
            "LOADER_MAX_RESPONSE": "1048576",
            "LOADER_MIN_RATE": "0",
            "LOADER_RATE_WINDOW": "5",
            "LOADER_DOWNLOAD_DEADLINE": "900",
        }
    ).http
    assert (
        http.deadline,
        http.max_response,
        http.min_rate,
        http.rate_window,
        http.download_deadline,
    ) == (45.0, 1048576, 0.0, 5.0, 900.0)
    default = LoaderSettings.from_env({}).http
    assert (default.deadline, default.max_response, default.min_rate) == (300.0, 8388608, 4096.0)
    assert default.download_deadline == 0.0


def test_user_info_in_the_api_url_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigError) as info:
        LoaderSettings.from_env({"LOADER_API_URL": "https://bob:s3cret@api.example"})
    assert "s3cret" not in info.value.one_line()
    assert "***@api.example" in info.value.one_line()


def test_quiet_and_verbose_flags_beat_the_log_level() -> None:
    log = LoaderSettings.from_env({"LOADER_LOG_LEVEL": "WARNING"}).log
    assert log.with_flags().level == "WARNING"
    assert log.with_flags(quiet=True).level == "ERROR"
    assert log.with_flags(verbose=True).level == "DEBUG"
    assert log.with_flags(verbose=True).format == log.format
