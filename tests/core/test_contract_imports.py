"""Loading plugins is cheap: no plugin or benchmark module imports a heavy library at import time, and
``stillroom --help`` does not even run the registration hooks (issue 17: `--help` in at most 0.5 s; the time
itself is measured by perf/cli_startup.py, not asserted here, because a loaded test machine would make it flaky)."""

import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "lm_eval", "datasets", "openai", "fastapi", "uvicorn", "trl", "accelerate",
         "peft", "numpy", "scipy", "matplotlib", "tokenizers", "sacrebleu", "rouge_score")

REPORT = "import json, sys; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(%r))))" % (HEAVY,)


def _heavy_after(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\n{REPORT}"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_loading_every_first_party_plugin_imports_nothing_heavy():
    code = ("from stillroom.plugin_manager import make_host\n"
            "host = make_host(distributions={'stillroom'}, report=lambda line: sys.exit(line))\n"
            "assert all(p.status == 'ok' for p in host.plugins.values())\n"
            "assert sum(len(t) for t in host.components.values()) > 40")
    assert _heavy_after("import sys\n" + code) == []


def test_help_imports_nothing_heavy_and_collects_no_component():
    code = ("import sys\nfrom stillroom.cli import main\nfrom stillroom import plugin_manager\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "host = plugin_manager.get_host()\n"
            "assert host.plugins and host._components is None, 'components collected for --help'")
    assert _heavy_after(code) == []
