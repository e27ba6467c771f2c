"""The demo shop generated into a bench folder, reused across runs when scale and seed match."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from rich.console import Console

from semantic.demo import create


def generated_demo(folder: Path, scale: int, seed: int, console: Console, marker_name: str) -> tuple[bool, dict]:
    """Make `folder` hold the demo at `scale` orders; returns (reused, info). The generator is deterministic,
    so a folder left by an earlier run with the same scale and seed (--workdir) is kept as it is."""
    info: dict = {}
    marker = folder / marker_name
    database = folder / "data" / "shop.duckdb"
    if marker.exists() and database.exists() and json.loads(marker.read_text()) == {"scale": scale, "seed": seed}:
        console.print(f"reusing {database} ({scale:,} orders, seed {seed})")
        return True, info
    if folder.exists():
        shutil.rmtree(folder)
    console.print(f"generating {scale:,} orders into {database} …")
    start = time.perf_counter()
    info["raw_rows"] = create(folder, scale=scale, seed=seed)
    info["generate_s"] = round(time.perf_counter() - start, 3)
    marker.write_text(json.dumps({"scale": scale, "seed": seed}))
    console.print(f"  generated in {info['generate_s']:.1f} s")
    return False, info
