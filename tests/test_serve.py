"""``lightning-split serve``: the real server (uvicorn) answers the official ``openai`` client with the replies
:meth:`SteeredModel.generate` gives at the requested control and multiplier, batched, streamed or not, and
refuses bad requests with OpenAI's error JSON."""

from __future__ import annotations

import functools
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch
import uvicorn

from lightning_split.artifacts import SteeredModel, control_metadata, load_steered, save_control
from lightning_split.backbone import load_backbone
from lightning_split.commands import serve as serve_command
from lightning_split.errors import OptionError
from lightning_split.interventions import VectorOptions, build_control
from lightning_split.layout import discover_layout
from lightning_split.serve import ServedModel, ServeSettings, create_app, load_served, named_controls
from lightning_split.serve.reply import Reply

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["Hi", "Write one sentence about the sea, please, and make it a calm one."]
NEW = 8


def _save_vector(backbone: str, directory: Path, seed: int, layer: int, positions: str, scale: float = 1.0) -> Path:
    """Saves a random vector control at ``layer`` of ``backbone`` into ``directory``."""
    model, _ = load_backbone(backbone)
    control = build_control(VectorOptions(init_std=0.0), discover_layout(model), [layer])
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in control.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    hparams = {"backbone": backbone, "positions": positions}
    return save_control(directory, control, control_metadata(control, hparams, "split", [0.5, 1.0]))


@pytest.fixture(scope="module")
def controls(tiny_backbone_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two saved controls on the tiny backbone: ``up`` steers every position, ``down`` only the prompt."""
    root = tmp_path_factory.mktemp("controls")
    return {
        "up": _save_vector(str(tiny_backbone_dir), root / "up", 0, 1, "all"),
        "down": _save_vector(str(tiny_backbone_dir), root / "down", 1, 2, "prompt"),
    }


@pytest.fixture(scope="module")
def served(controls: dict[str, Path]) -> ServedModel:
    """The tiny backbone with both controls, loaded once for the module's servers."""
    return load_served(controls, name="tiny")


def _serve(served: ServedModel, settings: ServeSettings) -> Iterator[str]:
    """Runs uvicorn on a free localhost port in a thread; yields the base URL, stops the server afterwards."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(served, settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture
def start(served: ServedModel) -> Iterator[Callable[..., str]]:
    """``start(**settings)`` serves the tiny backbone with those :class:`ServeSettings`; returns the URL."""
    running: list[Iterator[str]] = []

    def begin(**settings: Any) -> str:
        running.append(_serve(served, ServeSettings(**settings)))
        return next(running[-1])

    yield begin
    for server in running:
        next(server, None)


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)


def _chat(client: openai.OpenAI, prompt: str, **extra: Any) -> Any:
    """One non-streamed completion; ``extra`` goes into the body (control, multiplier) or the call."""
    call = {k: extra.pop(k) for k in ("max_tokens", "stop", "temperature", "seed", "model") if k in extra}
    call.setdefault("model", "tiny")
    call.setdefault("max_tokens", NEW)
    return client.chat.completions.create(messages=[{"role": "user", "content": prompt}], extra_body=extra, **call)


@functools.cache
def _steered(directory: Path) -> SteeredModel:
    return load_steered(directory)


def _expected(directory: Path, prompt: str, multipliers: list[float], new: int = NEW) -> list[str]:
    """What :meth:`SteeredModel.generate` replies (greedy), one text per multiplier."""
    return [r["text"] for r in _steered(directory).generate(prompt, multipliers, max_new_tokens=new)]


def test_each_request_gets_the_text_of_steered_model_generate_at_its_multiplier(start, controls) -> None:
    client = _client(start())
    grid = [0.0, 6.0, -6.0]
    for name, directory in controls.items():
        want = _expected(directory, PROMPTS[1], grid)
        got = [_chat(client, PROMPTS[1], control=name, multiplier=m) for m in grid]
        assert [r.choices[0].message.content for r in got] == want, name
        assert [(r.model_extra["control"], r.model_extra["multiplier"]) for r in got] == [(name, m) for m in grid]
        assert len(set(want)) == 3, "the control must change the reply"
    default = _chat(client, PROMPTS[1])  # the first control at the default multiplier 1
    assert default.choices[0].message.content == _expected(controls["up"], PROMPTS[1], [1.0])[0]
    by_model = _chat(client, PROMPTS[1], model="down", multiplier=6.0)  # a control's name as model
    assert by_model.choices[0].message.content == _expected(controls["down"], PROMPTS[1], [6.0])[0]


def _health(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/health").json()


def test_concurrent_requests_of_one_control_share_a_batch_and_other_controls_wait(start, controls) -> None:
    url = start(max_batch_size=2, batch_wait_s=3.0)
    client = _client(url)
    # (prompt, control, m, max_tokens): the first row ends after 3 tokens while its batch goes on to NEW
    asks = [(PROMPTS[0], "up", 6.0, 3), (PROMPTS[1], "up", -6.0, NEW), (PROMPTS[1], "down", 6.0, NEW)]
    with ThreadPoolExecutor(3) as pool:
        futures = []
        for prompt, name, m, new in asks:
            futures.append(pool.submit(_chat, client, prompt, control=name, multiplier=m, max_tokens=new))
            time.sleep(0.2)  # arrival order: both "up" requests first
        texts = [f.result().choices[0].message.content for f in futures]
    assert texts == [_expected(controls[name], prompt, [m], new)[0] for prompt, name, m, new in asks]
    health = _health(url)
    assert (health["batches"], health["completions"]) == (2, 3)  # [up 6, up -6] full at 2, then [down 6]


def _stream(url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The decoded chunks of a streamed completion (checked to be ``data:`` lines ending with ``data: [DONE]``)."""
    with httpx.stream("POST", f"{url}/v1/chat/completions", json={**body, "stream": True}, timeout=120) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
    return [json.loads(line[len("data: ") :]) for line in lines[:-1]]


def test_streamed_pieces_add_up_to_the_plain_reply_also_with_stop_strings(start) -> None:
    url = start()
    client = _client(url)
    messages = [{"role": "user", "content": PROMPTS[1]}]
    steered, varied = (_chat(client, PROMPTS[1], control="up", multiplier=m, max_tokens=24) for m in (6.0, 0.0))
    varied_text = varied.choices[0].message.content  # a repeated word at m = 6; many words at m = 0
    stop = varied_text[len(varied_text) // 2 : len(varied_text) // 2 + 4]  # may span tokens: its start is held back
    cut = varied_text[: varied_text.index(stop)]
    assert len(cut) >= 3, "the stop string must cut the reply after a few pieces"
    cases = [
        (6.0, {}, steered.choices[0].message.content, "length"),
        (0.0, {}, varied_text, "length"),
        (0.0, {"stop": [stop, "never"]}, cut, "stop"),
    ]
    for m, extra, want, reason in cases:
        plain = _chat(client, PROMPTS[1], control="up", multiplier=m, max_tokens=24, **extra).choices[0]
        assert (plain.message.content, plain.finish_reason) == (want, reason)
        body = {"model": "tiny", "messages": messages, "control": "up", "multiplier": m, "max_tokens": 24}
        chunks = _stream(url, {**body, **extra, "stream_options": {"include_usage": True}})
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        pieces = [c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]]
        assert "".join(pieces) == want and len([p for p in pieces if p]) > 1
        assert chunks[-2]["choices"][0]["finish_reason"] == reason and chunks[-1]["choices"] == []
        assert chunks[-1]["usage"]["completion_tokens"] <= 24
    streamed = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=24, stream=True, extra_body={"control": "up", "multiplier": 6.0}
    )  # the official client reads the stream too
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == cases[0][2]


def test_max_tokens_ends_the_reply_with_length_and_counts_tokens(start, served) -> None:
    client = _client(start())
    reply = _chat(client, PROMPTS[1], control="up", multiplier=6.0, max_tokens=3)
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 3
    assert reply.usage.prompt_tokens == len(served.prompt_ids(_messages(PROMPTS[1])))


def _messages(prompt: str) -> list[Any]:
    from lightning_split.serve.schemas import ChatMessage

    return [ChatMessage(role="user", content=prompt)]


def test_sampling_with_a_seed_repeats(start) -> None:
    client = _client(start())
    runs = [_chat(client, PROMPTS[0], control="up", multiplier=1.0, temperature=1.5, seed=s) for s in (3, 3, 4)]
    texts = [r.choices[0].message.content for r in runs]
    assert texts[0] == texts[1] != texts[2]


def _post(url: str, body: dict[str, Any] | str) -> httpx.Response:
    content = body if isinstance(body, str) else json.dumps(body)
    return httpx.post(f"{url}/v1/chat/completions", content=content, headers={"Content-Type": "application/json"})


USER = [{"role": "user", "content": "Hi"}]


@pytest.mark.parametrize(
    "body, status, param, words",
    [
        ({"model": "tiny", "messages": USER, "control": "nope"}, 404, "control", "unknown control 'nope'"),
        ({"model": "gpt-4o", "messages": USER}, 404, "model", "unknown model 'gpt-4o'"),
        ({"model": "tiny", "messages": USER, "multiplier": 1e9}, 400, "multiplier", "|multiplier| <= 100"),
        ('{"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "multiplier": NaN}', 400,
         "multiplier", "finite"),
        ('{"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "multiplier": -Infinity}', 400,
         "multiplier", "finite"),
        ({"model": "tiny", "messages": USER, "multipler": 2}, 400, "multipler", "unsupported field 'multipler'"),
        ({"model": "tiny", "messages": []}, 400, "messages", "at least 1"),
        ({"model": "tiny", "messages": [{"role": "tool", "content": "x"}]}, 400, "messages.0.role", "role"),
        ({"model": "tiny", "messages": [*USER, {"role": "assistant", "content": "x"}]}, 400, "messages",
         "last message must be the user's"),
        ({"model": "tiny", "messages": USER, "max_tokens": 100000}, 400, "max_tokens", "context of 512"),
        ({"model": "tiny", "messages": USER, "n": 2}, 400, "n", "n must be 1"),
        ({"model": "up", "messages": USER, "control": "down"}, 400, "control", "is a control"),
        ("{not json", 400, None, "JSON"),
    ],
)  # fmt: skip
def test_bad_requests_get_openai_error_json(start, body: Any, status: int, param: str | None, words: str) -> None:
    response = _post(start(), body)
    error = response.json()["error"]
    assert response.status_code == status, error
    assert error["param"] == param and words in error["message"], error
    assert error["type"] == "invalid_request_error"


def test_the_official_client_raises_on_an_unknown_control(start) -> None:
    client = _client(start())
    with pytest.raises(openai.NotFoundError, match="unknown control 'nope'"):
        _chat(client, "Hi", control="nope")
    with pytest.raises(openai.BadRequestError, match="finite number"):
        _chat(client, "Hi", control="up", multiplier=-500)


def test_a_full_queue_refuses_with_429_and_the_waiting_request_still_completes(start) -> None:
    url = start(max_queue=1, max_batch_size=4, batch_wait_s=3.0)
    client = _client(url)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(_chat, client, "Hi", control="up", multiplier=2.0)
        deadline = time.monotonic() + 10
        while _health(url)["waiting"] < 1:  # the first request waits for its batch to fill (3 s)
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with pytest.raises(openai.RateLimitError, match="request queue is full") as refused:
            _chat(client, "Hi", control="up", multiplier=3.0)
        assert refused.value.status_code == 429 and refused.value.code == "queue_full"
        assert waiting.result().choices[0].finish_reason in ("stop", "length")


def test_health_and_models_list_the_backbone_and_each_control(start, controls) -> None:
    url = start()
    models = _client(url).models.list().data
    assert [m.id for m in models] == ["tiny", "up", "down"]
    cards = {m.id: m.model_extra for m in models}
    assert cards["down"]["parent"] == "tiny"
    assert cards["down"]["control"]["positions"] == "prompt" and cards["down"]["control"]["layers"] == [2]
    health = _health(url)
    assert health["status"] == "ok" and health["controls"] == ["up", "down"]
    assert health["waiting"] == 0 and health["max_queue"] == 64
    assert httpx.get(f"{url}/v1/nothing").json()["error"]["message"].startswith("Not Found")


# --- without a server ---------------------------------------------------------------------------------------


def test_control_paths_name_controls_by_their_run(controls: dict[str, Path], tmp_path: Path) -> None:
    runs = tmp_path / "lightning_logs"
    for name, directory in controls.items():
        (runs / name).mkdir(parents=True)
        (runs / name / "control").symlink_to(directory)
    assert named_controls([str(runs)]) == {"down": runs / "down" / "control", "up": runs / "up" / "control"}
    assert named_controls([f"x={runs / 'up'}", str(runs / "down" / "control")]) == {
        "x": runs / "up" / "control",
        "down": runs / "down" / "control",
    }
    with pytest.raises(OptionError, match="holds 2 runs"):
        named_controls([f"x={runs}"])
    with pytest.raises(OptionError, match="two controls are named 'up'"):
        named_controls([str(runs), str(controls["up"])])
    with pytest.raises(OptionError, match="holds no saved control"):
        serve_command.main(["--control", str(tmp_path / "empty")])


def test_controls_of_different_backbones_are_refused_before_loading(controls, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    for file in controls["up"].iterdir():
        (other / file.name).write_bytes(file.read_bytes())
    meta = json.loads((other / "control.json").read_text())
    (other / "control.json").write_text(json.dumps({**meta, "backbone": "somewhere-else"}))
    with pytest.raises(OptionError, match="different backbones"):
        load_served({"up": controls["up"], "other": other})


def _fake_reply(stop: list[str], max_tokens: int, stream: bool = True) -> tuple[Reply, list[int]]:
    """A reply whose tokens are characters (``ord``), token 0 ending the turn, and its count of decode calls."""
    calls = [0]

    def decode(tokens: list[int]) -> str:
        calls[0] += 1
        return "".join(chr(t) for t in tokens)

    return Reply(decode, [0], stop, max_tokens, stream), calls


@pytest.mark.parametrize(
    "text, stop, max_tokens, pieces, final, reason",
    [
        ("hi END x", ["END"], 20, ["h", "i", " ", "", "", ""], "hi ", "stop"),  # held back, then cut
        ("hi EN x", ["END"], 7, ["h", "i", " ", "", "", "EN ", "x"], "hi EN x", "length"),  # held back, then sent
        ("ab\ufffdc", [], 4, ["a", "b", "", "\ufffdc"], "ab\ufffdc", "length"),  # a partial character waits
        ("ab", [], 5, ["a", "b", ""], "ab", "stop"),  # the end of the turn
    ],
)
def test_reply_streams_only_text_that_cannot_change(text: str, stop, max_tokens: int, pieces, final, reason) -> None:
    for stream in (True, False):  # not streamed: the same text, decoded once unless stop strings are watched
        reply, decodes = _fake_reply(stop, max_tokens, stream)
        got = []
        for token in [*map(ord, text), 0]:  # 0 ends the turn
            if not reply.finished:
                got.append(reply.add(token))
        assert "".join(got) == final and (reply.text, reply.finish_reason) == (final, reason)
        assert reply.steps == len(pieces)
        if reply.live:  # streamed, or watched for stop strings
            assert got == pieces
        else:
            assert got[-1] == final and decodes[0] == 1


@pytest.mark.slow  # loads SmolLM2 in a `lightning-split serve` process (20-60 s on a busy CPU)
def test_serve_command_with_smollm2_matches_steered_generate(smollm2_dir: Path, tmp_path: Path) -> None:
    directory = _save_vector(str(smollm2_dir), tmp_path / "run" / "control", 0, 15, "all", scale=2.0)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "lightning_split.cli", "serve", "--control", str(tmp_path / "run"),
               "--port", str(port), "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, "the server did not come up"
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        client = _client(url)
        prompt = "Name a colour."
        texts = [_chat(client, prompt, model="run", multiplier=m, max_tokens=12).choices[0].message.content
                 for m in (0.0, 4.0)]  # fmt: skip
        assert texts == _expected(directory, prompt, [0.0, 4.0], new=12) and texts[0] != texts[1]
    finally:
        process.terminate()
        process.wait(30)
