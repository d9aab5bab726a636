"""Stage 1b: instances, so that touching objects get a tile each (pure functions over arrays).

The paper tiled per connected component of the foreground, so touching objects shared
one tile and their small defects shrank in the model's input. Here:

- with SAM, each kept whole-object mask (one not lying inside a larger kept mask) is an
  instance; the smaller kept masks inside it are its parts;
- with IS-Net alone, a blob is split along its necks (each pixel to its nearest core of the
  distance transform), but only when every piece is of a plausible instance size.
"""

from __future__ import annotations

import cv2
import numpy as np


def whole_objects(parts: list[np.ndarray], contained: float = 0.9) -> list[int]:
    """Indices of the masks that do not lie (>= `contained` of their area) inside a larger mask."""
    areas = [int(part.sum()) for part in parts]
    order = sorted(range(len(parts)), key=lambda i: -areas[i])
    objects: list[int] = []
    for i in order:
        if areas[i] and not any((parts[i] & parts[j]).sum() >= contained * areas[i] for j in objects):
            objects.append(i)
    return objects


def object_labels(shape: tuple[int, int], parts: list[np.ndarray], contained: float = 0.9) -> np.ndarray:
    """(H, W) int32 label image: one label per whole-object mask; its parts' stray pixels join it."""
    labels = np.zeros(shape, dtype=np.int32)
    objects = whole_objects(parts, contained)
    for label, i in enumerate(objects, start=1):  # largest first: a smaller overlapping object keeps its pixels
        labels[parts[i]] = label
    object_masks = [parts[i] for i in objects]
    for i, part in enumerate(parts):
        if i in objects:
            continue
        owner = int(np.argmax([(part & mask).sum() for mask in object_masks])) + 1
        labels[part & (labels == 0)] = owner
    return labels


def _filled(blob: np.ndarray) -> np.ndarray:
    """The blob with its holes filled (uint8): a washer's hole or a printed mark must not make a neck."""
    contours, _ = cv2.findContours(blob.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros(blob.shape, dtype=np.uint8)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled


def _split_blob(
    blob: np.ndarray, peak_ratios: tuple[float, ...], min_piece_ratio: float, min_area: int
) -> np.ndarray | None:
    """(h, w) bool blob -> (h, w) int32 labels 1..k of its pieces, or None to keep it whole."""
    distance = cv2.distanceTransform(_filled(blob), cv2.DIST_L2, 5)
    for ratio in peak_ratios:  # lowest first: a deep neck splits at 0.5, overlapping parts need a higher cut
        count, markers = cv2.connectedComponents((distance > ratio * float(distance.max())).astype(np.uint8))
        if count - 1 >= 2:
            break
    else:
        return None
    # Each blob pixel joins its nearest core (Euclidean), which cuts two parts at their neck;
    # OpenCV's watershed floods by colour difference, not depth, and cut touching discs unevenly.
    _, nearest = cv2.distanceTransformWithLabels(
        (markers == 0).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_CCOMP
    )
    core_of_label = np.zeros(int(nearest.max()) + 1, dtype=np.int32)
    core_of_label[nearest[markers > 0]] = markers[markers > 0]
    flooded = np.where(blob, core_of_label[nearest], 0).astype(np.int32)
    areas = np.bincount(flooded.ravel(), minlength=count)[1:count]
    if areas.min() < max(min_area, min_piece_ratio * areas.max()):
        return None  # a piece too small to be an instance of its own: a bump, not a neighbour
    return flooded


def split_touching(
    mask: np.ndarray,
    min_area: int = 1,
    peak_ratios: tuple[float, ...] = (0.5, 0.6, 0.7),
    min_piece_ratio: float = 0.3,
) -> np.ndarray:
    """(H, W) bool -> (H, W) int32 labels, touching blobs split along their necks.

    Seeds are the cores where the distance to the background exceeds a ratio of the
    blob's largest distance (the first of `peak_ratios` that gives two or more cores);
    a blob with two or more cores is cut so that every pixel goes to its nearest core
    (a distance-transform split) and kept split only when each piece has at
    least `min_piece_ratio` of the largest piece's area and `min_area` pixels.
    """
    labels = np.zeros(mask.shape, dtype=np.int32)
    pending = [mask.astype(bool)]
    while pending:  # a piece split off may itself be two parts (three in a row can first split 1 + 2)
        count, components, stats, _ = cv2.connectedComponentsWithStats(pending.pop().astype(np.uint8), connectivity=8)
        for component in range(1, count):
            x, y, w, h = (int(v) for v in stats[component, :4])
            window = (slice(max(y - 1, 0), y + h + 1), slice(max(x - 1, 0), x + w + 1))  # a margin of background
            blob = components[window] == component
            big_enough = stats[component, 4] >= 2 * min_area
            pieces = _split_blob(blob, peak_ratios, min_piece_ratio, min_area) if big_enough else None
            if pieces is None:
                labels[window][blob] = labels.max() + 1
                continue
            for piece in range(1, int(pieces.max()) + 1):
                whole = np.zeros(mask.shape, dtype=bool)
                whole[window] = pieces == piece
                pending.append(whole)
    return labels
