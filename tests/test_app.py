"""app.py: the lab's local web app, driven through Gradio's own client (the browser test is slow)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_experiments import ROOT
from test_reconstruct import TOY_TARGET, astronaut_png, dataset, run_ckpt  # noqa: F401 (fixtures)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(run_ckpt, tmp_path_factory):  # noqa: F811
    """``python app.py`` (as `make app` starts it) on a free port of 127.0.0.1: ``(url, output folder)``.

    A process of its own: the server's threads would otherwise stay in the test process, whose later forks
    (the datamodule's preprocessing workers) then hang."""
    import httpx

    out = tmp_path_factory.mktemp("app")
    url = f"http://127.0.0.1:{free_port()}/"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), f"ckpt={run_ckpt}", f"port={url.rsplit(':', 1)[1].strip('/')}",
         f"hydra.run.dir={out}", f"trusted_targets=[{TOY_TARGET}]", "summary=false"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail(f"app.py did not start: {server.stderr.read()[-3000:]}")
        time.sleep(1)
    yield url, out
    server.terminate()
    server.wait(timeout=60)


def client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False)


def test_photo_and_scan_give_the_crop_the_face_the_filling_and_the_downloads(served, dataset, astronaut_png):  # noqa: F811
    from gradio_client import handle_file

    url, out = served
    sample = "CTM00001_0"
    scan = dataset / "imperfect" / "synthetic" / f"{sample}.obj"
    aligned, face, filling, report, downloads, notes = client(url).predict(
        handle_file(astronaut_png), handle_file(scan), api_name="/restore")
    assert np.asarray(Image.open(aligned)).shape == (150, 150, 3)
    assert Path(face).suffix == ".glb" and Path(filling).suffix == ".glb"
    assert {"watertight", "volume_mm3", "min_thickness_mm"} <= set(report) and report["volume_mm3"] > 0
    names = [Path(d).name for d in downloads]
    assert names[:2] == ["filling.stl", "filling.json"] and "mesh.obj" in names and "face.json" in names
    assert "largest central of 1 face(s) found by dlib's hog detector" in notes
    folder = next(out.glob("001-astronaut"))
    assert json.loads((folder / "face.json").read_text())["n_faces"] == 1
    assert (folder / "restoration" / "filling.stl").is_file()


def test_bad_uploads_get_the_command_lines_messages(served, tmp_path):
    from gradio_client import handle_file

    url, _ = served
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(blank)
    bad_scan = tmp_path / "scan.ply"
    bad_scan.write_text("ply\nnonsense")
    app = client(url)
    for photo, scan, message in ((text, None, "notes.png: not an image"), (blank, None, "blank.png: no face detected"),
                                 (blank, bad_scan, "scan.ply")):
        with pytest.raises(Exception, match=message):
            app.predict(handle_file(photo), handle_file(scan) if scan else None, api_name="/restore")


@pytest.mark.slow
def test_a_browser_restores_a_face_offline(served, dataset, astronaut_png, tmp_path):  # noqa: F811
    """Debian's chromium, headless: the page loads, a photo and a scan are chosen as a user would, Restore is
    clicked, the results appear; every request the page made went to the app (nothing from a CDN), and
    ``app.png`` is the screenshot to look at."""
    from headless_browser import HeadlessBrowser

    url, _ = served
    browser = HeadlessBrowser()
    try:
        browser.open(url)
        browser.wait_for("document.querySelectorAll('input[type=file]').length >= 2", 60)
        browser.set_files(1, dataset / "imperfect" / "synthetic" / "CTM00001_0.obj")  # a chosen file hides its input
        browser.wait_for("document.body.innerText.includes('CTM00001_0.obj')", 60)
        browser.set_files(0, astronaut_png)
        browser.wait_for("document.body.innerText.includes('astronaut')", 60)
        deadline = time.monotonic() + 120  # both files on the server before the button is pressed
        while sum("/upload" in u for u in browser.requests) < 2 and time.monotonic() < deadline:
            browser.evaluate("0")
            time.sleep(0.5)
        browser.click_button("Restore")
        browser.wait_for("document.body.innerText.includes('watertight')", 180)  # the printability report
        browser.wait_for("document.querySelectorAll('canvas').length >= 2", 60)
        time.sleep(10)  # the 3D views draw (software WebGL)
    finally:
        screenshot = browser.screenshot(tmp_path / "app.png")
        browser.close()
    print(f"screenshot: {screenshot}")
    image = np.asarray(Image.open(screenshot).convert("RGB"))
    assert image.shape[1] > 1200 and image.std() > 10  # the page, less its scroll bar
    elsewhere = [u for u in browser.requests if not u.startswith((url.rstrip("/"), "data:", "blob:", "about:"))]
    assert browser.requests and not elsewhere, elsewhere
