#!/usr/bin/env python3
"""Writes qr-matrices.json: QR symbols made by another encoder (the `qrcode` package for Python,
version 8.2, `pip install qrcode==8.2`), byte mode, at a fixed version, level and mask, for
web/app/qr.mjs to match module for module (tests/js/qr.test.mjs). Run from this folder."""
import json

import qrcode
from qrcode.util import QRData, MODE_8BIT_BYTE

LEVELS = {"L": qrcode.constants.ERROR_CORRECT_L, "M": qrcode.constants.ERROR_CORRECT_M,
          "Q": qrcode.constants.ERROR_CORRECT_Q, "H": qrcode.constants.ERROR_CORRECT_H}
LINK = "http://127.0.0.1:8080/#eyJ2IjoxLCJyb29tIjoiQUFBQUFBQUFBQUFBQUFBQUFBQUFBQSIsInRva2VuIjoi"
CASES = [
    ("hello", 1, "L", 0), ("hello", 1, "M", 1), ("hello", 1, "Q", 2), ("hello", 1, "H", 3),
    ("Hush — ünïcode ✓", 2, "M", 4), ("https://example.com/", 3, "Q", 5), ("https://example.com/", 4, "H", 6),
    (LINK, 5, "L", 7), (LINK, 7, "M", 0), (LINK, 8, "Q", 3), (LINK * 2, 10, "M", 2), (LINK * 2, 13, "H", 5),
    (LINK * 3, 14, "L", 6), (LINK * 4, 21, "Q", 1), (LINK * 6, 27, "M", 4), (LINK * 9, 40, "H", 7),
]


def matrix(text, version, level, mask):
    code = qrcode.QRCode(version=version, error_correction=LEVELS[level], border=0, mask_pattern=mask)
    code.add_data(QRData(text.encode(), mode=MODE_8BIT_BYTE))
    code.make(fit=False)
    return ["".join("1" if m else "0" for m in row) for row in code.get_matrix()]


cases = [{"text": t, "version": v, "level": lv, "mask": m, "rows": matrix(t, v, lv, m)} for t, v, lv, m in CASES]
with open("qr-matrices.json", "w") as out:
    json.dump({"made_with": "qrcode 8.2 (Python)", "cases": cases}, out, indent=0, ensure_ascii=False)
    out.write("\n")
