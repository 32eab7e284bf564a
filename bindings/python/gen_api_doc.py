"""Render the API reference of servicebus from its docstrings (Markdown).

    python bindings/python/gen_api_doc.py            # print the reference
    python bindings/python/gen_api_doc.py --write    # update docs/python.md in place

docs/python.md holds the output between the markers
``<!-- api-reference:start -->`` and ``<!-- api-reference:end -->``;
tests/python/test_docs.py fails when they drift apart.
"""

import inspect
import os
import re
import sys
from typing import List

# import the installed package (with its extension), not the source tree beside us
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

START = "<!-- api-reference:start -->"
END = "<!-- api-reference:end -->"


def first_paragraph(doc: str) -> str:
    doc = inspect.cleandoc(doc or "")
    para = doc.split("\n\n", 1)[0]
    return " ".join(line.strip() for line in para.splitlines() if not line.strip().startswith(":"))


def signature(obj: object) -> str:
    try:
        sig = str(inspect.signature(obj))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "(...)"
    sig = re.sub(r"servicebus(\.\w+)*\.(?=[A-Z])", "", sig)
    sig = sig.replace("asyncio.events.", "asyncio.").replace("NoneType", "None")
    sig = sig.replace("(self, /, ", "(")  # a method in C
    return sig.replace("(self, ", "(").replace("(self)", "()").replace("(cls, ", "(")


def members(cls: type) -> List[str]:
    out = []
    for name in sorted(dir(cls)):
        if name.startswith("_"):
            continue
        static = inspect.getattr_static(cls, name)
        owner = next((k for k in cls.__mro__ if name in vars(k)), None)
        if owner is None or owner.__module__ in ("builtins", "asyncio.protocols", "enum"):
            continue
        if isinstance(static, property) or type(static).__name__ == "getset_descriptor":
            kind = "property"
            doc = first_paragraph(static.__doc__ or "")
            out.append("- `%s` (%s) — %s" % (name, kind, doc))
        elif (
            isinstance(static, (classmethod, staticmethod))
            or inspect.isfunction(static)
            or inspect.ismethoddescriptor(static)  # a method in C (BatchMessage.add)
        ):
            fn = getattr(cls, name)
            prefix = "async " if inspect.iscoroutinefunction(fn) else ""
            if isinstance(static, classmethod):
                prefix = "classmethod "
            out.append("- `%s%s%s` — %s" % (prefix, name, signature(fn), first_paragraph(fn.__doc__ or "")))
    return out


def render() -> str:
    import servicebus
    import servicebus.aio
    import servicebus.amqp
    import servicebus.exceptions as exc

    lines: List[str] = []
    for modname, mod in (
        ("servicebus.aio", servicebus.aio),
        ("servicebus", servicebus),
        ("servicebus.amqp", servicebus.amqp),
    ):
        lines.append("### `%s`" % modname)
        lines.append("")
        seen = set()
        for name in mod.__all__:
            obj = getattr(mod, name)
            if name == "exceptions":
                continue
            if inspect.isclass(obj) and obj.__name__ != name:
                lines.append("- `%s` — alias of `%s`." % (name, obj.__name__))
                continue
            if not inspect.isclass(obj):
                lines.append("- `%s` — %r." % (name, obj))
                continue
            if (modname == "servicebus" and hasattr(servicebus.aio, name)) or id(obj) in seen:
                lines.append("- `%s` — see `servicebus.aio.%s`." % (name, name))
                continue
            seen.add(id(obj))
            lines.append("")
            lines.append("#### `%s%s`" % (name, "" if issubclass(obj, Exception) else signature(obj)))
            lines.append("")
            lines.append(first_paragraph(obj.__doc__ or ""))
            lines.append("")
            lines.extend(members(obj))
            lines.append("")
        lines.append("")
    lines.append("### `servicebus.exceptions`")
    lines.append("")
    for name in exc.__all__:
        obj = getattr(exc, name)
        if not inspect.isclass(obj):
            continue
        if obj.__name__ != name:
            lines.append("- `%s` — alias of `%s`." % (name, obj.__name__))
        else:
            bases = ", ".join(b.__name__ for b in obj.__bases__)
            lines.append("- `%s(%s)` — %s" % (name, bases, first_paragraph(obj.__doc__ or "")))
    lines.append("")
    lines.append("Engine code → exception class (`servicebus.exceptions.ERROR_CLASSES`):")
    lines.append("")
    lines.append("| engine code | exception |")
    lines.append("|---|---|")
    for code, cls in exc.ERROR_CLASSES.items():
        lines.append("| `%s` | `%s` |" % (code, cls.__name__))
    return "\n".join(lines).rstrip() + "\n"


def doc_path() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "..", "..", "docs", "python.md")


def main() -> None:
    text = render()
    if "--write" not in sys.argv:
        sys.stdout.write(text)
        return
    path = doc_path()
    with open(path, encoding="utf-8") as f:
        doc = f.read()
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    with open(path, "w", encoding="utf-8") as f:
        f.write(head + START + "\n\n" + text + "\n" + END + tail)


if __name__ == "__main__":
    main()
