"""StripeSettings: from the environment, validated, secrets never shown."""

from __future__ import annotations

import pytest

from controlplane.errors import InvalidArgument
from controlplane.stripe_sync import (
    CollectionMethod,
    StripeSettings,
    SyncRecord,
    SyncState,
    idempotency_key,
)

SECRET_KEY = "sk_test_51Hverysecret"
SECRET_HOOK = "whsec_verysecret"


def test_from_env_without_a_key_means_sync_off():
    assert StripeSettings.from_env({}) is None
    assert StripeSettings.from_env({"METERLINE_STRIPE_API_KEY": ""}) is None


def test_from_env_defaults():
    settings = StripeSettings.from_env({"METERLINE_STRIPE_API_KEY": SECRET_KEY})
    assert settings == StripeSettings(api_key=SECRET_KEY)
    assert settings.api_base == "https://api.stripe.com"
    assert settings.collection_method is CollectionMethod.CHARGE_AUTOMATICALLY
    assert (settings.days_until_due, settings.automatic_tax, settings.webhook_secret) == (
        None,
        False,
        None,
    )


def test_from_env_everything():
    settings = StripeSettings.from_env(
        {
            "METERLINE_STRIPE_API_KEY": SECRET_KEY,
            "METERLINE_STRIPE_WEBHOOK_SECRET": SECRET_HOOK,
            "METERLINE_STRIPE_API_BASE": "http://127.0.0.1:12111",
            "METERLINE_STRIPE_COLLECTION_METHOD": "send_invoice",
            "METERLINE_STRIPE_DAYS_UNTIL_DUE": "14",
            "METERLINE_STRIPE_AUTOMATIC_TAX": "true",
        }
    )
    assert settings == StripeSettings(
        api_key=SECRET_KEY,
        webhook_secret=SECRET_HOOK,
        api_base="http://127.0.0.1:12111",
        collection_method=CollectionMethod.SEND_INVOICE,
        days_until_due=14,
        automatic_tax=True,
    )


def test_send_invoice_defaults_to_30_days():
    settings = StripeSettings.from_env(
        {
            "METERLINE_STRIPE_API_KEY": SECRET_KEY,
            "METERLINE_STRIPE_COLLECTION_METHOD": "send_invoice",
        }
    )
    assert settings is not None and settings.days_until_due == 30


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({"METERLINE_STRIPE_COLLECTION_METHOD": "cash"}, "METHOD", id="method"),
        pytest.param({"METERLINE_STRIPE_DAYS_UNTIL_DUE": "ten"}, "DAYS_UNTIL_DUE", id="days"),
        pytest.param({"METERLINE_STRIPE_DAYS_UNTIL_DUE": "10"}, "only applies", id="no-send"),
        pytest.param({"METERLINE_STRIPE_AUTOMATIC_TAX": "maybe"}, "AUTOMATIC_TAX", id="tax"),
    ],
)
def test_from_env_rejects_bad_values(env, message):
    with pytest.raises(InvalidArgument, match=message):
        StripeSettings.from_env({"METERLINE_STRIPE_API_KEY": SECRET_KEY, **env})


def test_repr_and_str_never_show_secrets():
    settings = StripeSettings(api_key=SECRET_KEY, webhook_secret=SECRET_HOOK)
    for text in (repr(settings), str(settings), f"{settings}", repr([settings])):
        assert SECRET_KEY not in text and SECRET_HOOK not in text
        assert "api_key='***'" in text and "webhook_secret='***'" in text
    assert "webhook_secret=None" in repr(StripeSettings(api_key=SECRET_KEY))


def test_empty_api_key_is_refused():
    with pytest.raises(InvalidArgument):
        StripeSettings(api_key="")


def test_idempotency_keys_derive_from_meterline_ids():
    assert idempotency_key("inv_7", "create") == "meterline-invoice-inv_7-create"
    assert idempotency_key("inv_7", "line-l1") == "meterline-invoice-inv_7-line-l1"


def test_a_new_record_is_pending():
    record = SyncRecord("inv_7")
    assert (record.state, record.synced, record.synced_line_ids) == (SyncState.PENDING, False, ())
    assert SyncState.FINALIZED == "finalized" and SyncState.FAILED == "failed"
