"""Loopback development OpenID provider that mimics Keycloak's ``gennai`` realm."""
