"""Argo CD's health check for TMO kinds (charts/tmo/argocd/health.lua), run in Lua 5.1 via lupa."""

from __future__ import annotations

from pathlib import Path
from typing import Any

HEALTH_LUA = Path(__file__).resolve().parent.parent / "charts" / "tmo" / "argocd" / "health.lua"


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) as Argo CD would compute them for `obj`."""
    # Argo CD runs health checks in gopher-lua, a Lua 5.1: use lupa's 5.1 runtime, not its
    # default (5.4+), so 5.2+ features in health.lua fail here as they would there.
    import lupa.lua51

    lua = lupa.lua51.LuaRuntime(unpack_returned_tuples=True)
    assert lua.eval("_VERSION") == "Lua 5.1"

    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            return lua.table_from({k: convert(v) for k, v in value.items()})
        if isinstance(value, list):
            return lua.table_from([convert(v) for v in value])
        return value

    check = lua.eval("function(obj) " + HEALTH_LUA.read_text() + " end")
    hs = check(convert(obj))
    return str(hs["status"]), str(hs["message"])
