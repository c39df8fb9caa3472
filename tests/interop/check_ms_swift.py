"""Run by `make interop` in its own venv (ms-swift 4.6.0 pins trl<1.0, peft<0.21, datasets<4.8.5, so
it cannot live beside the project's set): ms-swift's own `load_dataset` reads the project's
ms-swift export, and every row it yields must equal the exported one (roles, texts, one <image>
tag per frame, the frame paths). Usage: python check_ms_swift.py EXPORT.jsonl"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version

from swift.dataset import load_dataset


def main(path: str) -> int:
    with open(path, encoding="utf-8") as fh:
        exported = [json.loads(line) for line in fh if line.strip()]
    loaded, _ = load_dataset([path], split_dataset_ratio=0.0, num_proc=1, shuffle=False)
    mismatches = []
    if len(loaded) != len(exported):
        mismatches.append(f"{len(loaded)} rows loaded, {len(exported)} exported")
    for i, (got, want) in enumerate(zip(loaded, exported, strict=False), start=1):
        roles = [m["role"] for m in got["messages"]]
        texts = [m["content"] for m in got["messages"]]
        paths = [im["path"] if isinstance(im, dict) else im for im in got["images"]]
        if roles != [m["role"] for m in want["messages"]]:
            mismatches.append(f"row {i}: roles {roles}")
        if texts != [m["content"] for m in want["messages"]]:
            mismatches.append(f"row {i}: message texts differ")
        if paths != want["images"] or texts[0].count("<image>") != len(paths):
            mismatches.append(f"row {i}: {len(paths)} images for {texts[0].count('<image>')} tags")
    print(
        f"ms-swift {version('ms-swift')} load_dataset: {len(loaded)} rows, {len(mismatches)} mismatches"
    )
    for m in mismatches[:10]:
        print("  " + m)
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
