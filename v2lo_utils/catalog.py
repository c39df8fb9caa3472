"""Furniture categories of AI2-THOR with realistic footprints (m) and heights (m).

``name`` is the category as maps and questions write it: AI2-THOR's objectType in lower case
(``ArmChair`` -> ``armchair``), as in the paper's examples. ``size`` is the nominal footprint
(width along the wall it stands at, depth away from it); instances vary by +-``jitter`` of it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Category:
    thor_type: str
    size: tuple[float, float]  # (width, depth) m
    height: float  # m
    max_count: int  # instances one room may hold
    against_wall: bool
    color: tuple[int, int, int]  # RGB, the renderer's cue
    jitter: float = 0.15

    @property
    def name(self) -> str:
        return self.thor_type.lower()


CATEGORIES: tuple[Category, ...] = (
    Category("Bed", (1.6, 2.0), 0.55, 1, True, (176, 112, 96)),
    Category("Sofa", (2.0, 0.9), 0.85, 1, True, (70, 110, 170)),
    Category("ArmChair", (0.85, 0.85), 0.9, 2, False, (150, 90, 160)),
    Category("Chair", (0.45, 0.5), 0.9, 4, False, (200, 150, 60)),
    Category("DiningTable", (1.5, 0.9), 0.75, 1, False, (140, 95, 55)),
    Category("Desk", (1.2, 0.6), 0.75, 1, True, (110, 80, 50)),
    Category("Fridge", (0.8, 0.7), 1.8, 1, True, (225, 225, 230)),
    Category("Television", (1.1, 0.25), 0.7, 1, True, (30, 30, 35)),
    Category("Dresser", (1.0, 0.5), 0.9, 1, True, (160, 120, 80)),
    Category("DogBed", (0.9, 0.7), 0.25, 1, False, (120, 160, 90)),
    Category("HousePlant", (0.45, 0.45), 1.0, 3, False, (40, 150, 60)),
    Category("FloorLamp", (0.35, 0.35), 1.6, 2, False, (240, 210, 90)),
    Category("Box", (0.5, 0.4), 0.4, 3, False, (190, 160, 110)),
    Category("GarbageCan", (0.35, 0.35), 0.5, 2, False, (90, 90, 90)),
    Category("SideTable", (0.5, 0.5), 0.6, 2, False, (130, 100, 70)),
    Category("Shelf", (1.0, 0.4), 1.8, 1, True, (100, 70, 40)),
)

BY_NAME: dict[str, Category] = {c.name: c for c in CATEGORIES}
BY_THOR_TYPE: dict[str, Category] = {c.thor_type: c for c in CATEGORIES}
