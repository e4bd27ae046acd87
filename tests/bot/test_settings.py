"""Settings: defaults, parsing, and a clear one-line error with exit code 2 for every bad value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.cli import main
from bot.settings import Settings, SettingsError

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"


def test_defaults_need_only_a_token(tmp_path: Path) -> None:
    settings = Settings.from_env({"JARCHY_BOT_TOKEN": TOKEN}, env_file=tmp_path / "none")
    assert settings.bot_token.get_secret_value() == TOKEN
    assert settings.api_url == "https://api.telegram.org"
    assert settings.database_url == "sqlite+aiosqlite:///data/jarchy.db"
    assert settings.timezone == ZoneInfo("Asia/Bishkek")
    assert settings.default_language == "en"
    assert settings.rate_global_per_s == 30
    assert settings.rate_private_per_s == 1
    assert settings.rate_group_per_min == 20
    assert settings.admin_ids == frozenset()
    assert settings.event_loop == "auto"


def test_every_variable_is_read(tmp_path: Path) -> None:
    env = {
        "JARCHY_BOT_TOKEN": TOKEN,
        "JARCHY_DATA_DIR": str(tmp_path),
        "JARCHY_API_URL": "http://127.0.0.1:9999/",
        "JARCHY_ADMIN_IDS": "11, 22",
        "JARCHY_COORDINATOR_CHAT_ID": "-100123",
        "JARCHY_TIMEZONE": "Asia/Tashkent",
        "JARCHY_DEFAULT_LANGUAGE": "ky",
        "JARCHY_KEY_FILE": "/secrets/jarchy.key",
        "JARCHY_RATE_GLOBAL_PER_S": "25",
        "JARCHY_PAID_BROADCAST": "true",
        "JARCHY_EVENT_LOOP": "AsyncIO",
    }
    settings = Settings.from_env(env, env_file=tmp_path / "none")
    assert settings.api_url == "http://127.0.0.1:9999"
    assert settings.admin_ids == frozenset({11, 22})
    assert settings.coordinator_chat_id == -100123
    assert settings.timezone == ZoneInfo("Asia/Tashkent")
    assert settings.default_language == "ky"
    assert settings.resolved_key_file == Path("/secrets/jarchy.key")
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'jarchy.db'}"
    assert settings.rate_global_per_s == 25
    assert settings.paid_broadcast is True
    assert settings.event_loop == "asyncio"


def test_env_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f'# comment\nJARCHY_BOT_TOKEN="{TOKEN}"\nexport JARCHY_DEFAULT_LANGUAGE=ru\n')
    settings = Settings.from_env({"JARCHY_DEFAULT_LANGUAGE": "uz"}, env_file=env_file)
    assert settings.bot_token.get_secret_value() == TOKEN
    assert settings.default_language == "uz"


@pytest.mark.parametrize(
    ("variable", "value", "hint"),
    [
        ("JARCHY_BOT_TOKEN", "", "@BotFather"),
        ("JARCHY_BOT_TOKEN", "not-a-token", "@BotFather"),
        ("JARCHY_ADMIN_IDS", "12,abc", "ids"),
        ("JARCHY_COORDINATOR_CHAT_ID", "group", "whole number"),
        ("JARCHY_TIMEZONE", "Mars/Olympus", "IANA"),
        ("JARCHY_DEFAULT_LANGUAGE", "fr", "en, ru, ky, uz"),
        ("JARCHY_API_URL", "ftp://x", "http"),
        ("JARCHY_DATABASE_URL", "jarchy.db", "sqlite+aiosqlite"),
        ("JARCHY_RATE_GLOBAL_PER_S", "fast", "number"),
        ("JARCHY_PAID_BROADCAST", "maybe", "true or false"),
        ("JARCHY_WEBHOOK_URL", "bot.example.org/hook", "https://"),
        ("JARCHY_WEBHOOK_URL", "https://bot.example.org/hook?token=1", "https://"),
        ("JARCHY_WEBHOOK_LISTEN", "8080", "host:port"),
        ("JARCHY_WEBHOOK_LISTEN", "0.0.0.0:99999", "host:port"),
        ("JARCHY_WEBHOOK_SECRET", "has spaces in it", "token_urlsafe"),
        ("JARCHY_WEBHOOK_SECRET", "x" * 257, "token_urlsafe"),
        ("JARCHY_PROXY_URL", "ftp://proxy.example.org:21", "socks5://"),
        ("JARCHY_PROXY_URL", "socks5://proxy.example.org", "host:port"),
        ("JARCHY_PROXY_URL", "http://proxy.example.org:3128/path", "host:port"),
        ("JARCHY_PROXY_URL", "proxy.example.org:3128", "socks5://"),
        ("JARCHY_API_LOCAL_MODE", "maybe", "true or false"),
        ("JARCHY_API_LOCAL_MODE", "true", "--local"),
        ("JARCHY_PROXY_LINK", "https://example.org/proxy?server=p.example.org&port=443", "t.me/proxy"),
        ("JARCHY_PROXY_LINK", "tg://resolve?domain=jarchy_bot", "t.me/proxy"),
        ("JARCHY_PROXY_LINK", "https://t.me/proxy?server=p.example.org", "t.me/proxy"),
        ("JARCHY_WEBHOOK_SECRET", "x_", "at least 32"),
        ("JARCHY_WEBHOOK_SECRET", "A" * 31, "at least 32"),
        ("JARCHY_EVENT_LOOP", "trio", "auto or asyncio"),
    ],
)
def test_malformed_values_name_the_variable(tmp_path: Path, variable: str, value: str, hint: str) -> None:
    env = {"JARCHY_BOT_TOKEN": TOKEN, variable: value}
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env, env_file=tmp_path / "none")
    assert raised.value.variable == variable
    assert variable in str(raised.value)
    assert hint in str(raised.value)


def test_token_never_shows_in_repr_or_description(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "JARCHY_BOT_TOKEN": TOKEN,
            "JARCHY_DATABASE_URL": "postgresql+asyncpg://jarchy:hunter2@db/jarchy",
            "JARCHY_WEBHOOK_SECRET": "swordfish-42" * 3,
        },
        env_file=tmp_path / "none",
    )
    shown = repr(settings) + str(settings.describe())
    assert TOKEN not in shown
    assert TOKEN.split(":")[1] not in shown
    assert "hunter2" not in shown and "swordfish" not in shown


@pytest.mark.parametrize(
    "url",
    [
        "http://proxy.example.org:3128",
        "https://jarchy:p%40ss-w0rd@proxy.example.org:443",
        "socks5://jarchy:p%40ss-w0rd@127.0.0.1:1080/",
    ],
)
def test_proxy_url_is_read_and_its_password_never_shown(tmp_path: Path, url: str) -> None:
    env = {
        "JARCHY_BOT_TOKEN": TOKEN,
        "JARCHY_PROXY_URL": url,
        "JARCHY_API_URL": "http://127.0.0.1:8081",
        "JARCHY_API_LOCAL_MODE": "true",
    }
    settings = Settings.from_env(env, env_file=tmp_path / "none")
    assert settings.proxy_url is not None and settings.proxy_url.get_secret_value() == url
    assert settings.api_local_mode
    described = dict(settings.describe())
    shown = repr(settings) + str(described)
    assert "p%40ss" not in shown and "p@ss" not in shown
    assert described["JARCHY_PROXY_URL"].split("://")[0] == url.split("://")[0]


@pytest.mark.parametrize(
    "url", ["socks4://jarchy:hunter2@proxy.example.org:1080", "hunter2:x@proxy.example.org:1080"]
)
def test_a_refused_proxy_url_never_quotes_its_password(tmp_path: Path, url: str) -> None:
    env = {"JARCHY_BOT_TOKEN": TOKEN, "JARCHY_PROXY_URL": url}
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env, env_file=tmp_path / "none")
    assert "hunter2" not in str(raised.value)
    default = Settings.from_env({"JARCHY_BOT_TOKEN": TOKEN}, env_file=tmp_path / "none")
    assert (default.proxy_url, default.api_local_mode) == (None, False)


@pytest.mark.parametrize(
    "link",
    [
        "tg://proxy?server=proxy.example.org&port=443&secret=ee0123",
        "https://t.me/proxy?server=proxy.example.org&port=443&secret=dd0123",
        "https://t.me/socks?server=10.0.0.5&port=1080&user=u&pass=p",
    ],
)
def test_a_proxy_link_is_read_and_not_printed(tmp_path: Path, link: str) -> None:
    settings = Settings.from_env(
        {"JARCHY_BOT_TOKEN": TOKEN, "JARCHY_PROXY_LINK": link}, env_file=tmp_path / "x"
    )
    assert settings.proxy_link == link
    assert dict(settings.describe())["JARCHY_PROXY_LINK"] == "set"


def test_webhook_settings_are_read(tmp_path: Path) -> None:
    env = {
        "JARCHY_BOT_TOKEN": TOKEN,
        "JARCHY_WEBHOOK_URL": "https://bot.example.org/telegram",
        "JARCHY_WEBHOOK_LISTEN": "[::1]:8443",
        "JARCHY_WEBHOOK_SECRET": "Az09_-" * 40,
    }
    settings = Settings.from_env(env, env_file=tmp_path / "none")
    assert settings.webhook_url == "https://bot.example.org/telegram"
    assert settings.webhook_listen == ("::1", 8443)
    assert settings.webhook_secret is not None and settings.webhook_secret.get_secret_value() == "Az09_-" * 40
    default = Settings.from_env({"JARCHY_BOT_TOKEN": TOKEN}, env_file=tmp_path / "none")
    assert (default.webhook_url, default.webhook_listen, default.webhook_secret) == (
        "",
        ("127.0.0.1", 8080),
        None,
    )


def test_missing_token_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JARCHY_BOT_TOKEN", raising=False)
    assert main(["run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "JARCHY_BOT_TOKEN" in err[0] and "@BotFather" in err[0]


def test_serve_without_a_webhook_url_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JARCHY_BOT_TOKEN", TOKEN)
    monkeypatch.delenv("JARCHY_WEBHOOK_URL", raising=False)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "JARCHY_WEBHOOK_URL" in err[0] and TOKEN not in err[0]


def test_check_prints_settings_masked_and_exits_0(tmp_path: Path) -> None:
    env = {"JARCHY_BOT_TOKEN": TOKEN, "JARCHY_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "bot", "check"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "JARCHY_BOT_TOKEN=********" in result.stdout
    assert TOKEN not in result.stdout + result.stderr
    assert "database: reachable" in result.stdout


def test_migrate_then_check_reports_up_to_date(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JARCHY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("JARCHY_BOT_TOKEN", raising=False)
    assert main(["migrate"]) == 0
    monkeypatch.setenv("JARCHY_BOT_TOKEN", TOKEN)
    assert main(["check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_health_reflects_the_heartbeat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os as _os
    import time

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JARCHY_DATA_DIR", str(tmp_path))
    assert main(["health"]) == 1
    beat = tmp_path / "heartbeat"
    beat.touch()
    assert main(["health"]) == 0
    old = time.time() - 600
    _os.utime(beat, (old, old))
    assert main(["health"]) == 1


def test_official_bots_are_read_without_at_in_lower_case(tmp_path: Path) -> None:
    env = {"JARCHY_BOT_TOKEN": TOKEN, "JARCHY_OFFICIAL_BOTS": "@Backup_One_bot, second_bot;@backup_one_bot"}
    settings = Settings.from_env(env, env_file=tmp_path / "none")
    assert settings.official_bots == ("backup_one_bot", "second_bot")
    assert ("JARCHY_OFFICIAL_BOTS", "@backup_one_bot, @second_bot") in settings.describe()
    with pytest.raises(SettingsError, match="JARCHY_OFFICIAL_BOTS"):
        Settings.from_env(
            {"JARCHY_BOT_TOKEN": TOKEN, "JARCHY_OFFICIAL_BOTS": "@ok_bot, no!"}, env_file=tmp_path / "x"
        )


def test_backup_bot_tokens_are_read_checked_and_never_shown(tmp_path: Path) -> None:
    backup = "654321:BACKUP-TOKEN-abcdef"
    env = {"JARCHY_BOT_TOKEN": TOKEN, "JARCHY_BACKUP_BOT_TOKENS": f" {backup} , 777:ANOTHER-TOKEN-xyz"}
    settings = Settings.from_env(env, env_file=tmp_path / "none")
    assert [t.get_secret_value() for t in settings.backup_bot_tokens] == [backup, "777:ANOTHER-TOKEN-xyz"]
    described = dict(settings.describe())
    assert described["JARCHY_BACKUP_BOT_TOKENS"] == "2 configured"
    assert "BACKUP-TOKEN" not in repr(settings) and "BACKUP-TOKEN" not in str(settings.describe())
    for value, why in (
        ("654321:short", "entry 1 does not look like a bot token"),
        (TOKEN, "names the main bot"),
        (f"{backup},{backup}", "names one bot twice"),
    ):
        with pytest.raises(SettingsError) as error:
            Settings.from_env({**env, "JARCHY_BACKUP_BOT_TOKENS": value}, env_file=tmp_path / "none")
        assert why in str(error.value) and "short" not in str(error.value)
