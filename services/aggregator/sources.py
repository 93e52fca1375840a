"""The ``system`` key as a view source for the writer (the ``tenant.*`` keys: ``TenantBook``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError

from shared import SYSTEM_KEY, SystemView

from .state import SystemState, statuses_of_system
from .writer import StatusMap


@dataclass
class SystemSource:
    state: SystemState

    def keys(self) -> Iterable[str]:
        return (SYSTEM_KEY,)

    def view(self, key: str, now: datetime) -> SystemView:
        return self.state.system_view(now)

    def parse(self, key: str, raw: bytes) -> SystemView | None:
        try:
            return SystemView.model_validate_json(raw)
        except ValidationError:
            return None

    def merge(self, key: str, raw: bytes) -> None:
        view = self.parse(key, raw)
        if view is not None:
            self.state.merge_system(view)

    def statuses(self, view: SystemView) -> StatusMap:
        return statuses_of_system(view)
