"""Strings a hostile or broken board, model file or target file can hand edge, and a stored
run that carries them in every field a report or a terminal shows.

The HTML payloads would add an element or an event handler if written unescaped; the
terminal payloads would retitle the window (OSC), clear the screen (CSI), colour the rest
of the output or ring the bell if written raw.
"""

from __future__ import annotations

from html.parser import HTMLParser

from toolkit.results.store import StoredRun

from .records import BOARD, make_run, record
from .report_cases import digits_profile

HTML = ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>",
        "\"'><svg onload=alert(1)>", "a | b\nc `d` [e](javascript:alert(1)) &amp; *f*")
TERMINAL = ("\x1b]0;owned\x07", "\x1b[2J\x1b[H", "\x1b[31mred\x1b[0m", "nul\x00", "\x9b31m")


def hostile(tag: str) -> str:
    """``tag`` followed by every payload: one string that tries everything at once."""
    return tag + "".join(HTML + TERMINAL)


def hostile_run() -> StoredRun:
    """Two hostile boards; fp32 and an int8 variant measured (INVALID, profiled, on a
    delegate), one not built; every string the board, the model or the target sent is
    :func:`hostile`."""
    board = {key: hostile(key) for key in
             ("hostname", "system", "release", "machine", "python", "cpu_model",
              "board_model")}
    other = dict(BOARD, cpu_model=hostile("other-cpu"), board_model=hostile("other-board"))
    results: list[dict] = []
    for target, facts in ((hostile("target"), board), ("local", other)):
        fp32 = record("fp32", target=target, board=facts, seed=1, energy_mj=1.0)
        int8 = record(hostile("int8"), target=target, board=facts, seed=2, median_ms=0.7,
                      energy_mj=0.5)
        for result in (fp32, int8):
            result["file"] = hostile("file") + ".tflite"
            result["runtime"] = {"name": hostile("runtime"), "version": hostile("version")}
            result["profile"] = digits_profile(result is int8)
            for row in result["profile"]["ops"] + result["profile"]["by_type"]:
                row["op"] = hostile("op")
            for row in result["profile"]["ops"]:
                row["kernel"], row["node_op"] = hostile("kernel"), hostile("node-op")
            result["profile"]["method"] = hostile("method")
            result["output_check"] = {"ok": result is fp32, "rule": hostile("rule"),
                                      "summary": hostile("summary")}
            result["power"] = dict(result["power"], error=hostile("power"))
            result["thermal"] = {"throttled": [hostile("throttled")],
                                 "after": {"zones_c": {hostile("zone"): 50.0}}}
        int8["recipe"] = int8["variant"]
        int8["verdict"] = {"status": "INVALID", "reasons": [hostile("reason")]}
        int8["accelerator"] = {"requested": hostile("requested"), "used": "gpu",
                               "api": "compiled", "adapter": hostile("adapter"),
                               "fully_accelerated": False, "first_run_ms": 12.0}
        results += [fp32, int8, {"target": target, "variant": hostile("broken"),
                                 "recipe": hostile("broken"), "status": "failed",
                                 "stage": "compress", "error": hostile("error")}]
    return make_run("r-hostile", results, model=hostile("model"), tags=(hostile("tag"),))


class Elements(HTMLParser):
    """Every element and attribute name of an HTML document, as a browser's parser sees them."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str, str | None]] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += [(tag, name, value) for name, value in attrs]

    def injected(self) -> list[str]:
        """What the payloads of :data:`HTML` would have added: script and img elements,
        event handlers, javascript: links."""
        found = [f"<{tag}>" for tag in self.tags if tag in ("script", "img")]
        found += [f"<{tag} {name}>" for tag, name, value in self.attributes
                  if name.startswith("on") or (name in ("href", "src", "xlink:href", "action")
                                               and "javascript:" in (value or ""))]
        return found
