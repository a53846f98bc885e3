"""Error paths of the mlflow collector against real servers: down mid-run, bad credentials, 429/5xx storms."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from affidavit.errors import AuthError, FatalError
from affidavit.signing.keys import LocalSigner
from affidavit.store.local import LocalStore
from mlflow_server import AUTH_PASSWORD, AUTH_USER, FaultProxy, MlflowServer, Seeded, check, collect

pytest_plugins = ["conftest_mlflow"]
pytestmark = pytest.mark.slow  # real servers (the project's definition of slow)

SCOPE = {"models": ["seed-fraud"], "collect_experiments": False}


@pytest.fixture
def proxy(mlflow_seeded: Seeded) -> Iterator[FaultProxy]:
    p = FaultProxy(mlflow_seeded.url)
    yield p
    p.close()


def nothing_signed(store: LocalStore, source: str) -> bool:
    return not list(store.runs(source=source)) and not store.latest(source) and not store.attestation_files()


def test_server_down_mid_run_fails_cleanly_and_state_does_not_advance(
        proxy: FaultProxy, store: LocalStore, signer: LocalSigner) -> None:
    seen: list[str] = []

    def after(name: str) -> None:
        seen.append(name)
        if len(seen) == 2:
            proxy.down()

    result = collect(store, signer, "down", proxy.url, on_artefact=after, models=["seed-*"], collect_experiments=False)
    assert result.status == "failed"
    assert result.error is not None
    assert f"source 'down': MLflow at {proxy.url}" in result.error
    assert "ConnectionError" in result.error and "still failing after 2 attempts" in result.error
    assert nothing_signed(store, "down")

    proxy.up()
    again = collect(store, signer, "down", proxy.url, models=["seed-*"], collect_experiments=False)
    assert again.status == "signed", again.error
    assert 2 <= len(seen) < len(again.artefacts)  # the failed run stopped part way
    assert set(seen) < {a.name for a in again.artefacts}  # and recorded nothing: all of it is new again


def test_a_429_storm_is_retried_honouring_retry_after(proxy: FaultProxy, store: LocalStore,
                                                      signer: LocalSigner) -> None:
    proxy.storm, proxy.retry_after = 2, "1"
    started = time.monotonic()
    result = collect(store, signer, "storm", proxy.url, max_retries=3, backoff=0.01, **SCOPE)
    assert result.status == "signed", result.error
    assert proxy.throttled == 2
    assert time.monotonic() - started >= 2.0  # waited what Retry-After asked, not the 10 ms backoff


def test_a_5xx_burst_is_retried(proxy: FaultProxy, store: LocalStore, signer: LocalSigner) -> None:
    proxy.storm, proxy.storm_status, proxy.retry_after = 2, 503, None
    result = collect(store, signer, "burst", proxy.url, max_retries=2, backoff=0.01, **SCOPE)
    assert result.status == "signed", result.error
    assert proxy.throttled == 2


def test_retry_after_is_capped_by_max_retry_wait(proxy: FaultProxy, store: LocalStore, signer: LocalSigner) -> None:
    proxy.storm, proxy.retry_after = 1, "3600"
    started = time.monotonic()
    result = collect(store, signer, "capped", proxy.url, max_retries=1, max_retry_wait=0.2, **SCOPE)
    assert result.status == "signed", result.error
    assert time.monotonic() - started < 30


def test_a_storm_longer_than_the_retries_fails_the_run(proxy: FaultProxy, store: LocalStore,
                                                       signer: LocalSigner) -> None:
    proxy.storm, proxy.retry_after = 100, "0"
    result = collect(store, signer, "flood", proxy.url, max_retries=2, backoff=0.01, **SCOPE)
    assert result.status == "failed"
    assert result.error is not None
    assert "source 'flood'" in result.error and "HTTP 429" in result.error
    assert "still failing after 3 attempts" in result.error
    assert proxy.throttled == 3
    assert nothing_signed(store, "flood")


def test_a_wrong_token_is_a_clear_auth_error(proxy: FaultProxy, store: LocalStore, signer: LocalSigner) -> None:
    proxy.token = "right-token"
    result = collect(store, signer, "tok", proxy.url, token="wrong-token", **SCOPE)
    assert result.status == "failed"
    assert result.error is not None
    assert f"source 'tok': MLflow at {proxy.url} refused the credentials (a bearer token): HTTP 401" in result.error
    assert "wrong-token" not in result.error
    with pytest.raises(AuthError):
        check("tok", proxy.url, token="wrong-token")
    ok = collect(store, signer, "tok", proxy.url, token="right-token", **SCOPE)
    assert ok.status == "signed", ok.error
    assert "with a bearer token" in check("tok", proxy.url, token="right-token")


def test_a_server_that_is_not_mlflow(proxy: FaultProxy) -> None:
    proxy.html = True
    with pytest.raises(FatalError, match="did not answer with JSON"):
        check("html", proxy.url)


def test_an_unknown_experiment_fails_the_run(mlflow_seeded: Seeded, store: LocalStore, signer: LocalSigner) -> None:
    result = collect(store, signer, "exp", mlflow_seeded.url, experiments=["no-such-experiment"], models=["x"])
    assert result.status == "failed"
    assert result.error is not None and "experiment 'no-such-experiment' not found" in result.error


def test_wrong_credentials_against_a_basic_auth_server(mlflow_auth_server: MlflowServer, store: LocalStore,
                                                       signer: LocalSigner) -> None:
    url = mlflow_auth_server.url
    result = collect(store, signer, "guarded", url, username=AUTH_USER, password="not-the-password")
    assert result.status == "failed"
    assert result.error is not None
    assert f"source 'guarded': MLflow at {url} refused the credentials (user admin): HTTP 401" in result.error
    assert "not-the-password" not in result.error
    assert nothing_signed(store, "guarded")
    with pytest.raises(AuthError, match="refused the credentials \\(no credentials\\)"):
        check("guarded", url)
    assert "with user admin" in check("guarded", url, username=AUTH_USER, password=AUTH_PASSWORD)
    ok = collect(store, signer, "guarded", url, username=AUTH_USER, password=AUTH_PASSWORD)
    assert ok.status == "signed", ok.error
