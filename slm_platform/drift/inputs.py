"""What a drift report compares: one capture day against the training data of the model that serves.

The reference of a role is the train split of the champion's dataset (`datasets/<champion version>`):
that is the distribution the serving model learned. With no champion yet (nothing promoted), the
latest dataset version stands in, and the report says so. Both sides are read verified (hashes
against the manifest); a missing side is an error that names what is missing and how to make it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slm_platform.artifacts import ArtifactNotFoundError, ArtifactStore
from slm_platform.domain import Domain
from slm_platform.drift.report import CaptureRef, Reference
from slm_platform.layout import capture_dir, dataset_dir, datasets_root
from slm_platform.registry.releases import current_release

Turns = list[dict[str, Any]]


class DriftInputError(ValueError):
    """A side of the comparison does not exist (no capture for the day, no dataset for the domain)."""


@dataclass(frozen=True)
class CaptureDay:
    ref: CaptureRef
    by_role: dict[str, Turns]


@dataclass(frozen=True)
class ReferenceData:
    ref: Reference
    turns: Turns  # train rows of the role


def _read_jsonl(path: Path) -> Turns:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_capture_day(domain: Domain, day: str, store: ArtifactStore) -> CaptureDay:
    rel = capture_dir(domain.name, day)
    try:
        folder = store.open_verified(rel)
    except ArtifactNotFoundError:
        raise DriftInputError(f"no capture for day {day} of domain {domain.name!r}: {store.uri(rel)} is not "
                              f"published (materialize {domain.name}/captured_traffic[{day}] first)") from None
    turns = _read_jsonl(folder / "turns.jsonl")
    by_role: dict[str, Turns] = defaultdict(list)
    for turn in turns:
        by_role[turn["role"]].append(turn)
    return CaptureDay(CaptureRef(rel=rel, manifest_hash=store.manifest_hash(rel), rows=len(turns)), dict(by_role))


def reference_version(domain: Domain, role: str, store: ArtifactStore) -> tuple[str, str]:
    """(version, source): the champion's version of `role`, else the latest published dataset."""
    release = current_release(store, domain.name, role)
    if release is not None:
        return release.version, "champion"
    versions = store.list(datasets_root(domain.name))
    if not versions:
        raise DriftInputError(f"domain {domain.name!r} has no dataset to compare traffic with: nothing is "
                              f"published under {store.uri(datasets_root(domain.name))} and no champion serves "
                              f"(materialize {domain.name}/dataset first)")
    return versions[-1], "latest_dataset"


class ReferenceLoader:
    """Reads each dataset version once, however many roles point at it."""

    def __init__(self, domain: Domain, store: ArtifactStore):
        self.domain, self.store = domain, store
        self._train: dict[str, Turns] = {}

    def for_role(self, role: str) -> ReferenceData:
        version, source = reference_version(self.domain, role, self.store)
        rel = dataset_dir(self.domain.name, version)
        if version not in self._train:
            try:
                folder = self.store.open_verified(rel)
            except ArtifactNotFoundError:
                raise DriftInputError(f"the {source.replace('_', ' ')} of {self.domain.name!r} is version "
                                      f"{version}, but its dataset {self.store.uri(rel)} is not published") from None
            self._train[version] = _read_jsonl(folder / "train.jsonl")
        turns = [t for t in self._train[version] if t["role"] == role]
        ref = Reference(version=version, source=source, rel=rel, manifest_hash=self.store.manifest_hash(rel),
                        rows=len(turns))
        return ReferenceData(ref, turns)
