"""Link tokens of the why page, without a server: signing, binding, expiry, the secret's rules."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from cds.service.why.tokens import LinkSigner, TokenExpired, WhySettings, signer_for


def test_sign_and_verify_round_trip_bound_to_key_and_card() -> None:
    signer = LinkSigner(b"k" * 32, ttl_s=600)
    token = signer.sign("eval-1", "card-1", now=1_000_000)
    claims = signer.verify(token, now=1_000_100)
    assert claims is not None and (claims.evaluation_key, claims.card_uuid, claims.expires_at) == (
        "eval-1", "card-1", 1_000_600)
    assert LinkSigner(b"x" * 32, ttl_s=600).verify(token, now=1_000_100) is None  # another secret
    with pytest.raises(TokenExpired):
        signer.verify(token, now=1_000_600)
    for bad in ("", "abc", token + "x", token.replace(".", ""), "." + token, token.split(".")[0] + ".",
                "a" * 700):
        assert signer.verify(bad, now=1_000_100) is None


def test_identifiers_and_secrets_are_checked() -> None:
    with pytest.raises(ValueError):
        LinkSigner(b"short", ttl_s=600)
    signer = LinkSigner(b"k" * 32, ttl_s=600)
    with pytest.raises(ValueError):
        signer.sign("eval|1", "card")  # the separator cannot be smuggled into a claim
    assert "k" * 8 not in repr(signer)


def test_settings_refuse_a_short_secret_and_odd_lifetimes(monkeypatch) -> None:
    monkeypatch.setenv("CDS_WHY_SECRET", "too-short")
    with pytest.raises(ValidationError):
        WhySettings()
    monkeypatch.setenv("CDS_WHY_SECRET", "s" * 32)
    monkeypatch.setenv("CDS_WHY_TTL_S", "5")
    with pytest.raises(ValidationError):
        WhySettings()


def test_generated_secret_is_never_logged(tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    signer = signer_for(tmp_path)
    secret = (tmp_path / "why-secret").read_text().strip()
    assert signer_for(tmp_path) is signer  # read once
    assert secret not in caplog.text and secret not in repr(signer)
