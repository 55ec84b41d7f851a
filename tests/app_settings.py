"""App settings the tests start from: local mode, emulator values, nothing secret."""

from __future__ import annotations

LOCAL_VALUES = {
    "APP_MODE": "local",
    "USAGE_SOURCE": "simulated",
    "RATING_SCHEDULE": "0 */10 * * * *",
    "STATEMENTS_SCHEDULE": "0 35 * * * *",
    "EXPORT_SCHEDULE": "0 30 0 * * *",
    "STATUS_SCHEDULE": "0 */5 * * * *",
    "AUTH_ISSUER": "https://login.local.usage-reporter/00000000-0000-4000-8000-00000000a11c/v2.0",
    "AUTH_AUDIENCE": "api://usage-reporter-local",
    "AUTH_JWKS_URI": ".local/auth/jwks.json",
    "CONTINUATION_TOKEN_KEY": "local-only-continuation-token-key-for-tests-000000",
    "COMMERCE_BASE_URL": "http://127.0.0.1:9",
    "COMMERCE_AUTH": "static",
    "COMMERCE_STATIC_TOKEN": "local-emulator-token",
    "BILLING_DEFAULT_RESOURCE_ID": "registration-local",
    "BILLING_DEFAULT_PLAN_ID": "azure-stack-usage",
}
