#!/usr/bin/env python3
"""Runs bench/browser/index.html in headless Chromium and prints a table and JSON.

The page is served by `hush serve --web-root <repo>` when a hush binary is found (then the
page also measures handshakes against that server over a WebSocket), otherwise by
`python3 -m http.server` on 127.0.0.1 (ES modules do not load from file://).

    python3 bench/browser/run.py [--seconds 1] [--hush-bin PATH | --no-server] [--json-out FILE]

Needs: /usr/bin/chromium, /usr/bin/chromedriver, `pip install selenium`.
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_hush(binary, data_dir):
    proc = subprocess.Popen(
        [binary, "serve", "--host", "127.0.0.1", "--port", "0", "--data", data_dir, "--web-root", str(REPO)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        match = re.search(r"Hush is listening on (http://\S+)", line)
        if match:
            return proc, match.group(1)
    proc.kill()
    raise RuntimeError("hush serve did not print its address")


def start_http_server():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(REPO)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, base
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("http.server did not start")


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_page(url, timeout_s):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="hush-bench-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                "--window-size=1200,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(url)
        deadline = time.time() + timeout_s
        result = None
        while time.time() < deadline:
            result = driver.execute_script("return window.hushBench ? JSON.parse(JSON.stringify(window.hushBench)) : null")
            if result and result.get("state") in ("done", "error"):
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"benchmark did not finish in {timeout_s} s: {result}")
        browser = driver.capabilities.get("browserVersion", "?")
        shot = REPO / "test-artifacts" / "bench-browser.png"
        shot.parent.mkdir(exist_ok=True)
        driver.save_screenshot(str(shot))
        return result, browser
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def fmt(x):
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def table(results):
    lines = ["| operation | ops/s | mean ms | p50 ms | p95 ms | max ms | n | ≤ 50 ms (p95) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in results:
        verdict = "exempt (store unlock)" if r["meetsBudget"] is None else ("yes" if r["meetsBudget"] else "**NO**")
        lines.append(f"| {r['name']} | {fmt(r['opsPerSecond'])} | {fmt(r['meanMs'])} | {fmt(r['p50Ms'])} | "
                     f"{fmt(r['p95Ms'])} | {fmt(r['maxMs'])} | {r['n']} | {verdict} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.0, help="time per operation (default 1)")
    parser.add_argument("--hush-bin", default=os.environ.get("HUSH_BIN", str(REPO / ".build/debug/hush")))
    parser.add_argument("--no-server", action="store_true", help="serve with http.server, skip the hush serve part")
    parser.add_argument("--json-out", help="also write the JSON here")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()

    use_hush = not args.no_server and os.access(args.hush_bin, os.X_OK)
    data_dir = tempfile.mkdtemp(prefix="hush-bench-data-")
    try:
        if use_hush:
            proc, base = start_hush(args.hush_bin, data_dir)
        else:
            if not args.no_server:
                print(f"note: no hush binary at {args.hush_bin}; serving with http.server, no server handshakes",
                      file=sys.stderr)
            proc, base = start_http_server()
        try:
            url = f"{base}/bench/browser/index.html?seconds={args.seconds}&server={'1' if use_hush else '0'}"
            result, browser = run_page(url, args.timeout)
        finally:
            stop(proc)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

    result["browserVersion"] = browser
    result["servedBy"] = "hush serve" if use_hush else "python3 -m http.server"
    if result.get("state") != "done":
        print(json.dumps(result, indent=1))
        print(f"benchmark failed: {result.get('error')}", file=sys.stderr)
        return 1
    print(f"Chromium {browser} (headless), {result['userAgent']}; served by {result['servedBy']}")
    print(table(result["results"]))
    print()
    print(json.dumps(result, indent=1))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
