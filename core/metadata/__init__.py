"""Metadata for data-free distillation (Lopes et al. 2017): record on the owner's side, read here."""

from core.metadata.layers import MetadataError, RecordedLayer, reading_units, recorded_layers
from core.metadata.record import (
    DEFAULT_TEMPERATURE,
    RECORD_TYPES,
    Metadata,
    SignalGroup,
    check_teacher,
    estimate_bytes,
    load_metadata,
    metadata_bytes,
    record_metadata,
    save_metadata,
    teacher_fingerprint,
    weights_file_fingerprint,
)
from core.metadata.statistics import DEFAULT_RANK, STATS_KINDS, ClassStatistics

__all__ = [
    "DEFAULT_RANK",
    "DEFAULT_TEMPERATURE",
    "RECORD_TYPES",
    "STATS_KINDS",
    "ClassStatistics",
    "Metadata",
    "MetadataError",
    "RecordedLayer",
    "SignalGroup",
    "check_teacher",
    "estimate_bytes",
    "load_metadata",
    "metadata_bytes",
    "reading_units",
    "record_metadata",
    "recorded_layers",
    "save_metadata",
    "teacher_fingerprint",
    "weights_file_fingerprint",
]
