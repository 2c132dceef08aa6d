"""Who is calling: OAuth 2.0 client credentials, JWTs, API keys, scopes and tenants."""
