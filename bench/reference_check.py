"""Reference-photo check: how many masked photos it refuses, and how many open ones.

    python bench/reference_check.py

Every photo of ../shared/data/masked (real coverings), ../shared/data/unmasked and
../shared/data/identity is given to the check that `--reference` runs
(ReferenceBank.from_image with the mask.engine segmenter, default settings): the largest face
is aligned and judged as a face last seen uncovered. Prints the share refused per folder (the
open photos refused are named, to be looked at) and writes bench/results/reference_check.json.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LOSTFACE_SHARED_DATA", ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(ROOT))

from lostface.config import load_settings  # noqa: E402
from lostface.errors import InputError  # noqa: E402
from lostface.registry import build_detector, build_segmenter  # noqa: E402
from lostface.restore.reference import CoveredReference, ReferenceBank, read_image  # noqa: E402

FOLDERS = ("masked", "unmasked", "identity")


def main() -> None:
    settings = load_settings()
    detector, segmenter = build_detector(settings), build_segmenter(settings)
    result: dict[str, dict] = {}
    for folder in FOLDERS:
        files = sorted(
            f for f in (DATA / folder).rglob("*") if f.suffix.lower() in (".jpg", ".png")
        )
        refused: list[str] = []
        no_face = 0
        for f in files:
            try:
                ReferenceBank.from_image(f.name, read_image(f), detector, segmenter)
            except CoveredReference:
                refused.append(str(f.relative_to(DATA)))
            except InputError:
                no_face += 1
        judged = len(files) - no_face
        result[folder] = {
            "photos": len(files),
            "no_face": no_face,
            "refused": len(refused),
            "refused_share": len(refused) / judged if judged else None,
            "refused_photos": refused if folder != "masked" else [],
        }
        print(
            f"{folder:<9} {len(refused):>4} of {judged:>4} refused "
            f"({100 * len(refused) / max(judged, 1):.1f} %), {no_face} without a face"
        )
        if folder != "masked" and refused:
            print("          " + ", ".join(refused))
    out = ROOT / "bench" / "results" / "reference_check.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
