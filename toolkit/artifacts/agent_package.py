"""The board agent as one zipapp, named by its content hash.

The same bytes are built on every host for the same agent source, so a board
that already holds ``agent-<hash>.pyz`` does not need it again.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import device_agent

_ROOT_MAIN = (
    "import sys\n"
    "from device_agent.__main__ import main\n"
    "sys.exit(main())\n"
)
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # zip timestamps must not make the hash vary


@dataclass(frozen=True)
class AgentPackage:
    name: str
    data: bytes


def build_agent_package() -> AgentPackage:
    """Zip ``device_agent`` (sources only) with a root ``__main__`` that runs it."""
    package_dir = Path(device_agent.__file__).parent
    members = {"__main__.py": _ROOT_MAIN.encode()}
    for path in sorted(package_dir.glob("*.py")):
        members[f"device_agent/{path.name}"] = path.read_bytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for member, content in members.items():
            info = zipfile.ZipInfo(member, date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, content)
    data = buffer.getvalue()
    return AgentPackage(name=f"agent-{hashlib.sha256(data).hexdigest()[:16]}.pyz", data=data)
