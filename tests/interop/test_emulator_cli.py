"""The sbus-emulator command line: ready line, invalid configs, signals (no SDK involved)."""
import json
import os
import re
import signal
import subprocess

import pytest

from conftest import ROOT, find_emulator

# Microsoft's emulator sample (Azure/azure-service-bus-emulator-installer, MIT), verbatim.
MS_SAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "microsoft-emulator-Config.json")


def run(args, **kw):
    return subprocess.run([find_emulator()] + args, capture_output=True, text=True, timeout=20, **kw)


def test_invalid_config_exits_2_naming_file_path_and_problem(tmp_path):
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps({"UserConfig": {"Namespaces": [{"Name": "ns", "Queues": [
        {"Name": "ok"}, {"Name": "bad", "Properties": {"LockDuration": "one minute"}}]}]}}))
    p = run(["--config", str(cfg), "--amqp-port", "0"])
    assert p.returncode == 2
    assert str(cfg) in p.stderr
    assert "UserConfig.Namespaces[0].Queues[1].Properties.LockDuration" in p.stderr
    assert "ISO-8601" in p.stderr
    assert p.stdout == ""


def test_missing_file_and_bad_usage(tmp_path):
    p = run(["--config", str(tmp_path / "nope.json"), "--amqp-port", "0"])
    assert p.returncode == 2 and "nope.json" in p.stderr
    assert run(["--amqp-port", "0"]).returncode == 2
    assert run(["--config", "x", "--bogus", "1"]).returncode == 2


@pytest.mark.skipif(not os.path.exists(MS_SAMPLE), reason="Microsoft's sample is not available")
def test_microsoft_sample_loads_unchanged_and_sigterm_exits_0(tmp_path):
    proc = subprocess.Popen([find_emulator(), "--config", MS_SAMPLE, "--amqp-port", "0", "--amqps-port", "0",
                             "--control-port", "0", "--state-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert re.fullmatch(r"sbus-emulator ready amqp=127\.0\.0\.1:\d+ amqps=127\.0\.0\.1:\d+ "
                        r"control=127\.0\.0\.1:\d+ ca=" + re.escape(str(tmp_path)) + r"/ca\.pem", line), line
    assert (tmp_path / "ca.pem").exists() and (tmp_path / "server.pem").exists()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


def test_only_requested_listeners_are_reported():
    cfg = os.path.join(ROOT, "examples", "emulator-config.json")
    proc = subprocess.Popen([find_emulator(), "--config", cfg, "--amqp-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert re.fullmatch(r"sbus-emulator ready amqp=127\.0\.0\.1:\d+", line), line
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0
