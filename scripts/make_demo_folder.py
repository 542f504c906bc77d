"""Write a small generated ImageFolder (4 colour-tinted noise classes) for the demo job."""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

root = Path(sys.argv[1] if len(sys.argv) > 1 else "data/demo-folder")
rng = np.random.default_rng(0)
colours = rng.integers(0, 256, size=(4, 3))
for split, n in (("train", 64), ("test", 16)):
    for c in range(4):
        d = root / split / f"class_{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = np.clip(colours[c] * 0.75 + rng.integers(0, 64, size=(40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"{i}.png")
print(f"wrote {root}")
