"""What a data set is to a model (DataInfo) and where data sets are kept: the names iat.data and
iat.data_folders share, in a module that imports neither, so that neither imports the other back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_DIR = Path(os.environ.get("IAT_DATA_DIR", Path.home() / ".cache" / "iat" / "data"))
IMAGEFOLDER = "imagefolder:"  # imagefolder:PATH, a user's own images (iat.data_folders)


@dataclass(frozen=True)
class DataInfo:
    """What a model and the training loop need to know about a data set."""

    name: str
    in_channels: int
    image_size: int  # side of the square image
    num_classes: int
    mean: tuple[float, ...]  # per channel, on images in [0,1]; applied inside the model
    std: tuple[float, ...]
    crop_pad: int  # random-crop padding used for augmentation (0: no crop)
    flip: bool  # random horizontal flips
    fingerprint: str | None = None  # sha256 of the loaded training images and labels (TrainData), else None
