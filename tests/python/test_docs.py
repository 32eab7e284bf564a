"""docs/python.md's API reference matches the docstrings it was generated from."""

import importlib.util
import os

from conftest import ROOT


def test_api_reference_is_up_to_date() -> None:
    path = os.path.join(ROOT, "bindings", "python", "gen_api_doc.py")
    spec = importlib.util.spec_from_file_location("gen_api_doc", path)
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    with open(os.path.join(ROOT, "docs", "python.md"), encoding="utf-8") as f:
        doc = f.read()
    section = doc.split(gen.START, 1)[1].split(gen.END, 1)[0].strip()
    assert section == gen.render().strip(), "run: .venv/bin/python bindings/python/gen_api_doc.py --write"


def test_quickstart_names_exist() -> None:
    import servicebus.aio

    with open(os.path.join(ROOT, "docs", "python.md"), encoding="utf-8") as f:
        doc = f.read()
    for name in servicebus.aio.__all__:
        assert name in doc, name
