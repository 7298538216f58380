"""The catalogue of known plugins (registry.toml): first-party ones and installable third-party ones.

``stillroom plugins install NAME`` resolves names here; a test checks every builtin entry against what is
actually registered.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stillroom.roles import ROLES, UserError


class ComponentEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str = Field(description="one of the roles: " + ", ".join(ROLES))
    kind: str = Field(description="the kind a spec uses")

    def model_post_init(self, _):
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}")


class PluginEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    summary: str = Field(description="what the plugin does, in a sentence")
    module: str = Field(description="the module its entry point loads")
    pip: str = Field(description="the pip requirement that installs it")
    homepage: str = Field("", description="where to read more")
    builtin: bool = Field(False, description="ships with stillroom itself")
    components: list[ComponentEntry] = Field(default_factory=list, description="what it registers")


class Registry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    plugins: dict[str, PluginEntry] = Field(default_factory=dict)


def registry_path() -> Path:
    return Path(os.environ.get("STILLROOM_REGISTRY") or Path(__file__).with_name("registry.toml"))


def load_registry(path: Path | None = None) -> Registry:
    path = path or registry_path()
    if not path.exists():
        return Registry()
    try:
        return Registry.model_validate(tomllib.loads(path.read_text()))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"invalid TOML: {exc}", str(path)) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UserError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}", str(path)) from None
