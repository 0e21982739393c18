"""Write cv2_inter_cubic_ref.npz: OpenCV ``cv2.resize(..., INTER_CUBIC)`` of seeded random float images, the
resize both official depth pipelines (DA-V2 ``image2tensor``, MiDaS ``transforms.Resize``) apply.

OpenCV is not a dependency of the pack: run this in a throw-away environment with opencv-python-headless
(written with OpenCV 5.0.0, numpy 2.4): ``python tests/data/make_cv2_cubic_ref.py``.
"""

import pathlib

import cv2
import numpy as np

rng = np.random.default_rng(0)
out = {}
for name, (h, w, oh, ow) in {"down": (40, 61, 28, 42), "up": (13, 17, 28, 42), "mixed": (30, 20, 56, 14)}.items():
    img = rng.random((h, w, 3)).astype(np.float32).astype(np.float64)
    out[f"{name}_input"] = img.astype(np.float32)
    out[f"{name}_cv2_cubic"] = cv2.resize(img, (ow, oh), interpolation=cv2.INTER_CUBIC).astype(np.float32)
np.savez_compressed(pathlib.Path(__file__).with_name("cv2_inter_cubic_ref.npz"), **out)
