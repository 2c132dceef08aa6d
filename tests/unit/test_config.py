"""Settings and the topology file: bad values stop start-up with the key named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stockgraph.config import ConfigError, load_settings, load_topology, parse_topology


def test_defaults_need_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    settings = load_settings()
    assert settings.database_url.startswith("sqlite+aiosqlite://")
    assert settings.redis_url is None


def test_deployments_on_different_databases_share_no_redis_keys_unless_told_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STOCKGRAPH_REDIS_NAMESPACE", raising=False)
    one = load_settings(database_url="postgresql://db/one")
    assert one.redis_prefix == load_settings(database_url="postgresql://db/one").redis_prefix
    assert one.redis_prefix != load_settings(database_url="postgresql://db/two").redis_prefix
    assert one.redis_prefix.startswith("stockgraph-")
    named = load_settings(database_url="postgresql://db/two", redis_namespace="shop")
    assert named.redis_prefix == "shop"


def test_a_bad_environment_value_names_the_variable_and_what_was_expected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STOCKGRAPH_MAX_DEPTH", "deep")
    monkeypatch.setenv("DATABASE_URL", "mysql://db/x")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "STOCKGRAPH_MAX_DEPTH: expected a valid integer" in message
    assert "DATABASE_URL: expected a sqlite:// or postgresql:// URL" in message


def test_a_short_jwt_secret_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKGRAPH_JWT_SECRET", "short")
    with pytest.raises(
        ConfigError, match="STOCKGRAPH_JWT_SECRET: expected a secret of at least 32"
    ):
        load_settings()


def _warehouse(**extra: object) -> dict[str, object]:
    return {
        "tenant": "acme",
        "code": "WH-1",
        "name": "Berlin",
        "dialect": "rest",
        "region": "eu",
        "lat": 52.5,
        "lng": 13.4,
        **extra,
    }


def test_topology_errors_name_the_toml_key() -> None:
    tenants = [{"id": "acme", "name": "Acme"}]
    with pytest.raises(
        ConfigError, match=r"warehouses\[0\]\.lat: expected less than or equal to 90"
    ):
        parse_topology({"tenants": tenants, "warehouses": [_warehouse(lat=123)]})
    with pytest.raises(ConfigError, match=r"warehouses\[0\]\.dialect: expected one of rest"):
        parse_topology({"tenants": tenants, "warehouses": [_warehouse(dialect="sap")]})
    with pytest.raises(ConfigError, match=r"warehouses\[0\]\.tenant: expected one of the declared"):
        parse_topology({"tenants": tenants, "warehouses": [_warehouse(tenant="other")]})
    with pytest.raises(ConfigError, match=r"warehouses\[1\]\.code: 'WH-1' appears twice"):
        parse_topology({"tenants": tenants, "warehouses": [_warehouse(), _warehouse()]})


def test_a_topology_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "stockgraph.toml"
    path.write_text(
        '[[tenants]]\nid = "acme"\nname = "Acme"\n\n[[warehouses]]\ntenant = "acme"\n'
        'code = "WH-1"\nname = "Berlin"\ndialect = "rest"\nregion = "eu"\n'
        '[warehouses.connection]\nbase_url = "http://127.0.0.1:9100"\n'
    )
    topology = load_topology(path)
    assert topology.warehouses[0].resolved_connector_id == "acme-wh-1"
    assert topology.warehouses[0].connection == {"base_url": "http://127.0.0.1:9100"}
    with pytest.raises(ConfigError, match="not valid TOML"):
        path.write_text("[[tenants]\n")
        load_topology(path)
    with pytest.raises(ConfigError, match="no file at"):
        load_topology(tmp_path / "missing.toml")


def test_declared_webhooks_name_a_tenant_an_http_url_and_known_events() -> None:
    tenants = [{"id": "acme", "name": "Acme"}]
    good = {"tenant": "acme", "url": "https://oms.example/hooks", "events": ["sync.alert"]}
    assert parse_topology({"tenants": tenants, "webhooks": [good]}).webhooks[0].secret is None
    for wrong, says in (
        ({**good, "tenant": "globex"}, "webhooks[0].tenant"),
        ({**good, "url": "ftp://oms.example"}, "webhooks[0].url"),
        ({**good, "events": ["order.shipped"]}, "webhooks[0].events"),
        ({**good, "secret": "whsec_c2hvcnQ="}, "webhooks[0].secret"),
    ):
        with pytest.raises(ConfigError, match=re.escape(says)):
            parse_topology({"tenants": tenants, "webhooks": [wrong]})
