"""Plugin loading and the component table.

First-party plugins are entry points of group ``stillroom`` in our own pyproject, loaded exactly like
third-party ones. ``STILLROOM_PLUGINS`` is an allow-list of plugin names, ``STILLROOM_DISABLE_PLUGINS`` a
block-list. A plugin that fails to import is reported in one line and marked broken; the rest keep working.

Registration hooks are called through pluggy, so ``@hookimpl(trylast=True)`` defaults give way to any plugin
registering the same kind, and ``STILLROOM_TRACE_PLUGINS=1`` prints every hook call to stderr. Two tables come
out of them: components by role and kind (``components``) and the leaderboard's output formats (``renderers``).

``get_host()`` is the one way to reach the process-wide host; functions that take a ``host`` argument (tests
hand theirs in) default it from ``get_host()``, and ``use_host`` swaps it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable

import pluggy

from stillroom import hookspecs
from stillroom.roles import Component, ROLES, UserError, suggest

if TYPE_CHECKING:
    from stillroom.leaderboard import OutputRenderer

GROUP = "stillroom"
RENDERER_HOOK = "stillroom_register_output_renderers"
_HOOK_FOR_ROLE = {
    "endpoint": "stillroom_register_endpoints",
    "teacher": "stillroom_register_teachers",
    "student": "stillroom_register_students",
    "judge": "stillroom_register_judges",
    "generator": "stillroom_register_generators",
    "loss": "stillroom_register_losses",
    "evaluator": "stillroom_register_evaluators",
    "method": "stillroom_register_methods",
}


@dataclass
class PluginInfo:
    """What we know about one plugin: where it came from and whether it loaded."""

    name: str
    distribution: str | None = None
    version: str | None = None
    module: str | None = None
    status: str = "ok"  # ok | broken | disabled
    error: str | None = None


@dataclass
class Registered:
    """One registered kind: its class, the plugin that registered it, whether that was a ``trylast`` default."""

    cls: type[Component]
    plugin: str
    default: bool = False

    @property
    def described(self) -> str:
        return f"{self.cls.__module__}.{self.cls.__qualname__}"

    def same(self, other: "Registered") -> bool:
        return self.cls is other.cls


@dataclass
class RegisteredRenderer:
    """One output format of ``stillroom leaderboard``: its renderer, its plugin, whether a ``trylast`` default."""

    renderer: OutputRenderer
    plugin: str
    default: bool = False

    @property
    def described(self) -> str:
        return self.renderer.description

    def same(self, other: "RegisteredRenderer") -> bool:
        return self.renderer == other.renderer


@dataclass
class PluginHost:
    """A plugin manager plus the components its plugins registered, by role and kind."""

    pm: pluggy.PluginManager
    plugins: dict[str, PluginInfo] = field(default_factory=dict)
    _components: dict[str, dict[str, Registered]] | None = None
    _renderers: dict[str, RegisteredRenderer] | None = None

    @property
    def components(self) -> dict[str, dict[str, Registered]]:
        """Role -> kind -> registration. Filled by the registration hooks on first use, so a command that
        needs no component (``stillroom --help``) does not import every component class."""
        if self._components is None:
            self._components = {role: {} for role in ROLES}
            try:
                _collect(self)
            except BaseException:
                self._components = None  # a failed collection is not a half-filled table
                raise
        return self._components

    def component(self, role: str, kind: str) -> type[Component]:
        if role not in ROLES:
            raise UserError(f"unknown role {role!r}{suggest(role, ROLES)}", "build")
        table = self.components[role]
        if kind not in table:
            known = ", ".join(sorted(table)) or "none"
            raise UserError(f"unknown {role} kind {kind!r}{suggest(kind, table)}; known: {known}", f"{role}.kind")
        return table[kind].cls

    def kinds(self, role: str) -> dict[str, type[Component]]:
        return {kind: reg.cls for kind, reg in self.components[role].items()}

    @property
    def renderers(self) -> dict[str, RegisteredRenderer]:
        """Output format name -> registration, filled on first use (without collecting every component)."""
        if self._renderers is None:
            table: dict[str, RegisteredRenderer] = {}
            _call_each(self, RENDERER_HOOK, lambda plugin, default: _renderer_registrar(table, plugin, default))
            self._renderers = _in_load_order(self, table)
        return self._renderers

    def renderer(self, name: str) -> OutputRenderer:
        """The output format ``name``; unknown: a one-line error listing the registered ones."""
        if name not in self.renderers:
            known = ", ".join(self.renderers) or "none (is the formats plugin disabled?)"
            raise UserError(f"unknown format {name!r}{suggest(name, self.renderers)}; use one of {known}", "--format")
        return self.renderers[name].renderer


def _name_list(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def _collect(host: PluginHost) -> None:
    """Fill the component table by calling each role's registration hook through pluggy."""
    for role, hook_name in _HOOK_FOR_ROLE.items():
        _call_each(host, hook_name, lambda plugin, default: _registrar(host, role, plugin, default=default))
    for role, table in host.components.items():
        host.components[role] = _in_load_order(host, table)


def _call_each(host: PluginHost, hook_name: str, registrar: Callable[[str, bool], Callable[[Any], None]]) -> None:
    """Call each implementation of a registration hook on its own (a subset hook caller holding just its
    plugin) in pluggy's order (``tryfirst``, later plugins first, ``trylast``), so that ``register`` (made by
    ``registrar(plugin_name, trylast)``) knows who registers; the calls still go through pluggy's tracing."""
    impls = getattr(host.pm.hook, hook_name).get_hookimpls()
    for impl in reversed(impls):  # pluggy's call order is the reverse of this list
        register = registrar(impl.plugin_name, impl.trylast)
        host.pm.subset_hook_caller(hook_name, [i.plugin for i in impls if i is not impl])(register=register)


def _in_load_order(host: PluginHost, table: dict) -> dict:
    """Listings, schemas and error messages keep the order in which plugins were loaded, whatever order pluggy
    called them in."""
    order = {name: index for index, name in enumerate(host.plugins)}
    return dict(sorted(table.items(), key=lambda item: order[item[1].plugin]))


def _registrar(host: PluginHost, role: str, plugin_name: str, *, default: bool) -> Callable[[type], None]:
    """The ``register`` callback one plugin's implementation receives for ``role``."""
    base = ROLES[role]

    def register(cls: type) -> None:
        if not (isinstance(cls, type) and issubclass(cls, base) and cls.name):
            raise TypeError(f"plugin {plugin_name!r} registered {cls!r} as a {role}: it must subclass "
                            f"stillroom.{base.__name__} and set name")
        _admit(host.components[role], cls.name, Registered(cls, plugin_name, default), f"{role} kind")

    return register


def _admit(table: dict[str, Any], name: str, new: Registered | RegisteredRenderer, what: str) -> None:
    """The one rule for a name two plugins register (a component kind, an output format): the same thing again
    is no change; a ``trylast`` default gives way to the plugin that registered the name first; otherwise it is
    an error naming both plugins."""
    existing = table.get(name)
    if existing is not None and not existing.same(new):
        if new.default and not existing.default:
            return
        raise UserError(f"{what} {name!r} is registered twice: by plugin {existing.plugin!r} ({existing.described}) "
                        f"and by plugin {new.plugin!r} ({new.described})", "plugins")
    table[name] = new


def _renderer_registrar(table: dict[str, RegisteredRenderer], plugin_name: str, default: bool) -> Callable[[Any], None]:
    """The ``register`` callback one plugin's ``stillroom_register_output_renderers`` receives."""
    from stillroom.leaderboard import OutputRenderer

    def register(renderer: OutputRenderer) -> None:
        if not isinstance(renderer, OutputRenderer):
            raise TypeError(f"plugin {plugin_name!r} registered {renderer!r} as an output renderer: it must be a "
                            "stillroom.leaderboard.OutputRenderer")
        _admit(table, renderer.name, RegisteredRenderer(renderer, plugin_name, default), "output format")

    return register


def _trace(host: PluginHost, write: Callable[[str], None]) -> None:
    """``STILLROOM_TRACE_PLUGINS=1``: one line per hook call naming the plugins called, in call order."""

    def before(hook_name, impls, kwargs):
        plugins = ", ".join(f"{i.plugin_name}{' (trylast)' if i.trylast else ''}{' (tryfirst)' if i.tryfirst else ''}"
                            for i in reversed(impls))
        write(f"stillroom hook {hook_name}({', '.join(kwargs)}) -> {plugins or 'no plugin'}")

    host.pm.add_hookcall_monitoring(before, lambda outcome, hook_name, impls, kwargs: None)


def make_host(*, modules: dict[str, ModuleType] | None = None, entry_points: bool = True,
              distributions: set[str] | None = None, report=None, collect: bool = True) -> PluginHost:
    """Build a fresh plugin host.

    ``modules`` are registered directly (tests, notebooks); ``entry_points`` loads the ``stillroom`` group,
    optionally only from ``distributions``. ``report`` receives one line per broken plugin (default: stderr).
    ``collect=False`` leaves the registration hooks until the components are first needed.
    """
    report = report or (lambda line: print(line, file=sys.stderr))
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    host = PluginHost(pm)
    allow, block = _name_list("STILLROOM_PLUGINS"), _name_list("STILLROOM_DISABLE_PLUGINS") or set()

    candidates: list[tuple[str, Any, PluginInfo]] = []
    if entry_points:
        for ep in sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist else None
            if distributions is not None and dist not in distributions:
                continue
            info = PluginInfo(ep.name, dist, ep.dist.version if ep.dist else None, ep.value)
            candidates.append((ep.name, ep, info))
    for name, module in (modules or {}).items():
        candidates.append((name, module, PluginInfo(name, None, None, getattr(module, "__name__", name))))

    for name, source, info in candidates:
        host.plugins[name] = info
        if name in block or (allow is not None and name not in allow):
            info.status = "disabled"
            continue
        try:
            module = source.load() if isinstance(source, metadata.EntryPoint) else source
        except Exception as exc:  # a broken plugin must not take the others down
            # one line whatever the exception says: the report must not read as several problems
            info.status, info.error = "broken", " ".join(f"{type(exc).__name__}: {exc}".split())
            report(f'Error loading plugin "{name}" (distribution {info.distribution or "-"}): {info.error}')
            continue
        pm.register(module, name=name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        hooks = [name for name in dir(hookspecs) if name.startswith("stillroom_")]
        bad = next((n for n in dir(exc.plugin) if n.startswith("stillroom_") and n not in hooks), "?")
        raise UserError(f"unknown hook '{bad}'{suggest(bad, hooks)}", f'plugin "{pm.get_name(exc.plugin) or "?"}"') from None
    if os.environ.get("STILLROOM_TRACE_PLUGINS", "") not in ("", "0"):
        _trace(host, lambda line: print(line, file=sys.stderr))
    if collect:
        host.components  # noqa: B018 -- registration errors surface here, while the host is built
    return host


_current: PluginHost | None = None


def get_host() -> PluginHost:
    """The process-wide plugin host, loaded from entry points on first use (its components when first needed)."""
    global _current
    if _current is None:
        _current = make_host(collect=False)
    return _current


def use_host(host: PluginHost | None) -> PluginHost | None:
    """Make ``host`` the process-wide one (tests); returns the previous one."""
    global _current
    previous, _current = _current, host
    return previous


def build(role: str, kind: str, context=None, **config) -> Component:
    """A configured instance of any registered component: ``build("loss", "gjsd", beta=0.5)``."""
    from stillroom.specs import validate_config

    cls = get_host().component(role, kind)
    return cls(validate_config(cls, config, location=f"{role}[{kind}]"), context)
