"""Dependencies of the routes, as ``Annotated`` aliases.

All are ``async def``: FastAPI runs a plain ``def`` dependency in a thread pool,
which cost more than the whole prediction.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.common.errors import ApiError
from app.predict.core.config import Settings
from app.runtime.registry import LoadedModel, ModelNotReadyError, ModelRegistry, UnknownModelError


async def get_registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.registry
    return registry


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def lookup_model(registry: ModelRegistry, name: str) -> LoadedModel:
    try:
        return registry.get(name)
    except UnknownModelError as exc:
        raise ApiError(404, str(exc)) from None
    except ModelNotReadyError as exc:
        raise ApiError(503, str(exc)) from None


async def model_dep(request: Request, name: str) -> LoadedModel:
    return lookup_model(request.app.state.registry, name)


ModelDep = Annotated[LoadedModel, Depends(model_dep)]
