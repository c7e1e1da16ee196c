"""A local mirror of PhysioNet's three open MIMIC demo projects, served on 127.0.0.1 by http.server.

It holds the tables shipped with labecg, a record list (the demo's own, or some of its rows),
WFDB records written here at the record list's paths (12 leads, 500 Hz, 10 s, format 16 like
MIMIC-IV-ECG), and each project's ``SHA256SUMS.txt`` computed over what it serves.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import wfdb

import labecg

SHIPPED = Path(labecg.__file__).parent / "mimic_demo"
LEADS = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]
# project slug/version -> (shipped folder, files served from the shipped copy)
PROJECTS = {
    "mimic-iv-demo/2.2": ("mimiciv", ["hosp/patients.csv.gz", "hosp/admissions.csv.gz", "hosp/labevents.csv.gz",
                                      "hosp/d_labitems.csv.gz", "hosp/omr.csv.gz"]),
    "mimic-iv-ed-demo/2.2": ("mimic-iv-ed", ["ed/edstays.csv.gz", "ed/vitalsign.csv.gz"]),
    "mimic-iv-ecg-demo/0.1": ("mimic-iv-ecg", []),
}
ECG = "files/mimic-iv-ecg-demo/0.1"


def record_signal(seed: int) -> np.ndarray:
    """(5000, 12) mV: slow sines and a 1 Hz spike train, different per seed."""
    rng = np.random.default_rng(seed)
    t = np.arange(5000)[:, None] / 500
    x = rng.uniform(0.2, 1.0, 12) * np.sin(2 * np.pi * (1.0 + 0.5 * np.arange(12)) * t + rng.uniform(0, 6, 12))
    x[::500] += 1.0
    return x


def write_records(ecg_dir: Path, paths: list[str], distinct: int | None = None) -> None:
    """WFDB records at ``ecg_dir/<path>``; with ``distinct``, that many signals reused (fast)."""
    templates = {}
    for i, rel in enumerate(paths):
        rel = Path(rel)
        (ecg_dir / rel.parent).mkdir(parents=True, exist_ok=True)
        k = i if distinct is None else i % distinct
        if k not in templates:
            wfdb.wrsamp(rel.name, fs=500, units=["mV"] * 12, sig_name=LEADS, p_signal=record_signal(k),
                        fmt=["16"] * 12, adc_gain=[200.0] * 12, baseline=[0] * 12, write_dir=str(ecg_dir / rel.parent))
            templates[k] = ecg_dir / rel
            continue
        src = templates[k]
        shutil.copyfile(src.with_suffix(".dat"), ecg_dir / rel.with_suffix(".dat"))
        header = src.with_suffix(".hea").read_text().replace(src.name, rel.name)
        (ecg_dir / rel.with_suffix(".hea")).write_text(header)


def build_mirror(root: Path, n_records: int | None = None, distinct: int | None = None) -> Path:
    """Write the mirror under ``root`` (``root/files/<project>/<version>/...``); return ``root``.

    ``n_records``: serve the first that many rows of the demo's record list (all 659 when None).
    """
    for project, (folder, files) in PROJECTS.items():
        base = root / "files" / project
        base.mkdir(parents=True)
        shutil.copyfile(SHIPPED / "LICENSE.txt", base / "LICENSE.txt")
        for name in files:
            (base / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(SHIPPED / folder / name, base / name)
    lines = (SHIPPED / "mimic-iv-ecg" / "record_list.csv").read_bytes().splitlines(keepends=True)
    rows = lines[1:] if n_records is None else lines[1:1 + n_records]
    (root / ECG / "record_list.csv").write_bytes(b"".join(lines[:1] + rows))
    paths = [row.decode().rstrip("\r\n").split(",")[-1] for row in rows]
    write_records(root / ECG, paths, distinct)
    write_sums(root)
    return root


def write_sums(root: Path) -> None:
    """Each project's SHA256SUMS.txt over the files it serves (computed with hashlib here)."""
    for project in PROJECTS:
        base = root / "files" / project
        lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()} {p.relative_to(base).as_posix()}"
                 for p in sorted(base.rglob("*")) if p.is_file() and p.name != "SHA256SUMS.txt"]
        (base / "SHA256SUMS.txt").write_text("\n".join(lines) + "\n")


class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the mirror; logs every path asked for; cuts off the transfers in ``server.cut``."""

    def do_GET(self):
        self.server.requested.append(self.path)
        if self.path in self.server.cut:
            body = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])  # then the connection closes
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)  # a client that stopped reading is no error here


@contextlib.contextmanager
def serve(root: Path):
    """Serve ``root`` on 127.0.0.1 (a free port); yields the server (``.url``, ``.requested``, ``.cut``)."""
    server = _Server(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    server.requested, server.cut = [], set()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
