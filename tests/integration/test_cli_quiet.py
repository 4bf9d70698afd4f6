"""``--quiet`` silences the Hugging Face libraries' progress bars without importing them (cli._quiet_libraries)."""

import subprocess
import sys

CHECK = """
import sys
from vipo.cli import _quiet_libraries
_quiet_libraries()
_quiet_libraries()  # twice (main() called again in one process): one hook per library
libs = ("diffusers", "transformers", "huggingface_hub")
assert not [m for m in sys.modules if m.split(".")[0] in libs], "imported by --quiet"
import diffusers.utils.logging, transformers.utils.logging
from huggingface_hub.utils import are_progress_bars_disabled
assert not diffusers.utils.logging.is_progress_bar_enabled()
assert not transformers.utils.logging.is_progress_bar_enabled()
assert are_progress_bars_disabled()
assert not [f for f in sys.meta_path if type(f).__name__ == "_AfterImport"]  # each hook left once it ran
diffusers.utils.logging.enable_progress_bar()
_quiet_libraries()  # already imported: switched off at once
assert not diffusers.utils.logging.is_progress_bar_enabled()
from vipo.cli import _after_import
seen = []
assert "tabnanny" not in sys.modules and "wave" not in sys.modules
_after_import("tabnanny", lambda m: seen.append(m.__name__))
_after_import("wave", lambda m: 1 / 0)  # a hook that fails
import tabnanny, wave  # noqa: E401  (wave still imports)
assert seen == ["tabnanny"] and wave.open
assert type(tabnanny.__loader__).exec_module is tabnanny.__loader__.exec_module.__func__  # the loader restored
print("ok")
"""


def test_quiet_switches_the_libraries_bars_off_when_they_are_imported_not_before():
    proc = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
