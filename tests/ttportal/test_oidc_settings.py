"""TT_OIDC_* (single sign-on, accounts/oidc.py): a wrong one stops start-up naming it; a
right one starts without reaching the provider (its discovery is read when first needed)."""

import pytest

from tests.ttportal.test_settings import start_django

CONFIGURED = {"TT_OIDC_ISSUER": "https://id.invalid/realms/tt", "TT_OIDC_CLIENT_ID": "tt",
              "TT_OIDC_CLIENT_SECRET": "s3cret"}


@pytest.mark.parametrize(("env", "message"), [
    ({"TT_OIDC_ISSUER": "https://id.example.com"}, "TT_OIDC_CLIENT_ID and TT_OIDC_CLIENT_SECRET"),
    ({**CONFIGURED, "TT_OIDC_ISSUER": "http://id.example.com"}, "TT_OIDC_ISSUER must be an https URL"),
    ({**CONFIGURED, "TT_OIDC_TOKEN_ENDPOINT": "ftp://x"}, "TT_OIDC_TOKEN_ENDPOINT must be an https URL"),
    ({"TT_OIDC_ONLY": "1"}, "TT_OIDC_ONLY=1 needs single sign-on configured"),
    ({**CONFIGURED, "TT_OIDC_SCOPES": "email profile"}, "TT_OIDC_SCOPES must include openid"),
    ({**CONFIGURED, "TT_OIDC_SIGN_ALGO": "HS256"}, "TT_OIDC_SIGN_ALGO must be one of"),
    ({**CONFIGURED, "TT_OIDC_GROUPS_PREFIX": " "}, "TT_OIDC_GROUPS_PREFIX must not be empty"),
])
def test_a_wrong_single_sign_on_setting_stops_start_up_by_name(env, message):
    result = start_django(**env)
    assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]


def test_configured_single_sign_on_starts_without_the_provider_and_never_shows_the_secret():
    result = start_django(**CONFIGURED, TT_OIDC_ONLY="1", TT_OIDC_BREAK_GLASS_USERS="root")
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout + result.stderr
