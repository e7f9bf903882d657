"""Screenshots of TensorBoard's tabs in headless Chromium, to check what a user sees.

Starts ``tensorboard --logdir <dir>`` on a free port, opens the Scalars, Custom Scalars,
Text and HParams tabs in headless Chromium (``chromium``, ``chromium-browser`` or
``google-chrome`` on the PATH), writes one PNG per tab and stops TensorBoard.

    python -m benchmarks.tensorboard_screenshots multirun/<date>/<time> --out shots/
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

TABS = ("scalars", "custom_scalars", "text", "hparams")
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def screenshots(logdir: Path, out: Path, tabs: tuple[str, ...] = TABS, wait_ms: int = 15000) -> list[Path]:
    browser = find_browser()
    if browser is None:
        raise RuntimeError(f"no headless browser found (looked for {', '.join(BROWSERS)} on the PATH)")
    out.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    board = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://localhost:{port}/"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(url, timeout=1).read(100)
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError(f"TensorBoard did not answer at {url}")
        written = []
        for tab in tabs:
            path = out / f"{tab}.png"
            subprocess.run(
                [
                    browser,
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--hide-scrollbars",
                    "--window-size=1600,1100",
                    f"--virtual-time-budget={wait_ms}",
                    f"--screenshot={path}",
                    f"{url}#{tab}",
                ],
                capture_output=True,
                timeout=120,
                check=False,
            )
            if not path.is_file():
                raise RuntimeError(f"{browser} wrote no screenshot of the {tab} tab")
            written.append(path)
        return written
    finally:
        board.terminate()
        board.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logdir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("tensorboard_screenshots"))
    args = parser.parse_args()
    for path in screenshots(args.logdir, args.out):
        print(path)


if __name__ == "__main__":
    main()
