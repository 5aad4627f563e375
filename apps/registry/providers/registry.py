"""Provider plugins, loaded once from the ``gennai.providers`` entry points and then frozen."""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any

from .base import Provider, ProviderTarget

logger = logging.getLogger("gennai.registry")

ENTRY_POINT_GROUP = "gennai.providers"
ProviderFactory = Callable[[ProviderTarget], Provider]

_BUILTIN = {"openai_compatible": "apps.registry.providers.openai_compatible:OpenAICompatibleProvider"}
_providers: MappingProxyType[str, ProviderFactory] | None = None


def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    mod = __import__(module, fromlist=[attr])
    return getattr(mod, attr)


def load_providers() -> MappingProxyType[str, ProviderFactory]:
    """Discover plugins once (at app start-up); later calls return the frozen mapping."""
    global _providers
    if _providers is not None:
        return _providers
    found: dict[str, ProviderFactory] = {name: _load(ref) for name, ref in _BUILTIN.items()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            found[ep.name] = ep.load()
        except Exception:
            logger.exception("provider plugin %s failed to load", ep.name)
    _providers = MappingProxyType(found)
    logger.info("provider plugins: %s", ", ".join(sorted(found)))
    return _providers


def get_provider_factory(kind: str) -> ProviderFactory:
    providers = load_providers()
    if kind not in providers:
        raise KeyError(f"unknown provider kind {kind!r}; installed: {sorted(providers)}")
    return providers[kind]


def reset_providers_for_tests(extra: dict[str, ProviderFactory] | None = None) -> None:
    """Test hook: reload plugins, optionally adding test providers."""
    global _providers
    _providers = None
    loaded = dict(load_providers())
    loaded.update(extra or {})
    _providers = MappingProxyType(loaded)
