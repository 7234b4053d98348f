"""The HTTP app: OpenAI-compatible routes over one run's model, plus the chat page at /.

    GET  /health                 liveness (503 when the engine thread has died), queue and batch figures (no key needed)
    GET  /v1/models              the one model served
    POST /v1/chat/completions    chat, streamed as server-sent events when "stream": true
    POST /v1/completions         plain text completion, likewise
    POST /v1/classify            label texts (runs whose model is a sequence classifier)
    GET  /                       the chat page (static files shipped in tailor/serve/static)

Errors use OpenAI's shape, {"error": {"message", "type", "param", "code"}}: 400 for a bad request
or one over the server's limits, 401 for a missing/wrong key, 404 for another model's name, 413 for a
body over max_body_bytes (refused before it is parsed), 429 when the queue is full, 504 when a request
outlives the time limit.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from tailor import device as devices
from tailor.config.decode import DecodeConfig
from tailor.data.tokenize import history_text
from tailor.errors import TailorError
from tailor.generate.replies import stop_ids
from tailor.runs import Loaded
from tailor.serve.engine import Engine, QueueFull, Sampling, Sequence
from tailor.serve.schemas import ChatRequest, ClassifyRequest, CompletionRequest, Decoding
from tailor.serve.seq2seq_engine import Seq2SeqEngine
from tailor.tasks.encdec import encoder_ids

STATIC = Path(__file__).parent / "static"


@dataclass
class Limits:
    """What one server accepts; requests beyond these get a 400 (or 429 for the queue)."""

    max_tokens: int = 512  # most tokens one request may ask to generate
    max_prompt_tokens: int = 2048  # longest prompt in tokens (also bounded by the model's context)
    max_batch: int = 8  # requests decoded together
    max_queue: int = 32  # requests waiting for a batch slot before 429
    timeout: float = 120.0  # seconds from arrival until a request is abandoned (504)
    max_inputs: int = 32  # texts in one /v1/classify request
    max_body_bytes: int = 4 << 20  # request body size; far above any prompt the token limits let through

    def __post_init__(self) -> None:
        for name in ("max_tokens", "max_prompt_tokens", "max_batch", "max_queue", "max_inputs", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise TailorError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}.")
        if self.timeout <= 0:
            raise TailorError(f"timeout must be positive, got {self.timeout}.")


class ApiError(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        headers = {"Retry-After": "1"} if self.status == 429 else None
        return JSONResponse(body, status_code=self.status, headers=headers)


class KeyCheck:
    """Plain ASGI middleware: every /v1 route needs 'Authorization: Bearer <key>'.

    (Not starlette's BaseHTTPMiddleware, which hides client disconnects from the routes.)
    """

    def __init__(self, app, key: str):
        self.app, self.key = app, key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            scheme, _, token = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                response = ApiError(401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                                    type="authentication_error", code="invalid_api_key").response()
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """Plain ASGI middleware: a request body over `limit` bytes gets a 413 before anything parses it.

    A declared Content-Length is checked at once; a chunked body is read up to the limit and then
    handed on whole, so the route never sees more than `limit` bytes."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    def too_large(self):
        return ApiError(413, f"the request body is over this server's limit of {self.limit} bytes.",
                        code="request_too_large").response()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self.too_large()(scope, receive, send)
            return
        if declared is not None:  # the server reads no more than the declared length
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                break
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                await self.too_large()(scope, receive, send)
                return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: disconnects, as the route expects

        await self.app(scope, replay, send)


def run_settings(loaded: Loaded) -> tuple[DecodeConfig, str]:
    """The run's decoding defaults and system prompt, from the config the run reader read (defaults if none)."""
    return loaded.cfg.decode, loaded.cfg.data.system_prompt or ""


def context_of(model) -> int:
    from tailor.models.load import context_length

    return context_length(model)


def create_app(loaded: Loaded, limits: Limits | None = None, api_key: str | None = None) -> FastAPI:
    limits = limits or Limits()
    if loaded.kind not in ("generate", "classify", "seq2seq"):
        raise TailorError(f"tailor serve runs causal language models, encoder-decoders and classifiers; "
                          f"{loaded.folder} holds a {type(loaded.model).__name__}.")
    decode, system_prompt = run_settings(loaded)
    model, tokenizer = loaded.model, loaded.tokenizer
    context = context_of(model)
    max_prompt = min(limits.max_prompt_tokens, context - 1)
    created = int(time.time())
    if loaded.kind == "generate":
        engine = Engine(model, tokenizer, stop_ids(tokenizer), limits.max_batch, limits.max_queue, decode.lookahead,
                        decode.kernels)
    elif loaded.kind == "seq2seq":  # the encoder reads the prompt; one request at a time
        engine = Seq2SeqEngine(model, tokenizer, limits.max_queue)
    else:
        engine = None
    classify_lock = asyncio.Lock()
    classify_waiting = 0
    if loaded.kind == "classify" and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    # Read once here: even tokenizer.pad_token_id asks the fast tokenizer, which the model's thread must not use.
    classify_pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if engine is not None:
            engine.start()
        try:
            yield
        finally:
            if engine is not None:
                await run_in_threadpool(engine.stop)

    app = FastAPI(title=f"tailor: {loaded.name}", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine
    app.state.loaded = loaded
    app.state.limits = limits

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return e.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        return ApiError(400, f"{where}: {msg}" if where else msg, param=where or None).response()

    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)
    if api_key:  # outermost: a request without the key is refused before its body is read
        app.add_middleware(KeyCheck, key=api_key)

    # ---- helpers -------------------------------------------------------------------------------
    def check_model(name: str | None) -> None:
        if name and name != loaded.name:
            raise ApiError(404, f"model '{name}' is not served here; this server serves '{loaded.name}'.",
                           param="model", code="model_not_found")

    def need(kind: str) -> None:
        if loaded.kind != kind and not (kind == "generate" and loaded.kind == "seq2seq"):
            other = "POST /v1/classify" if loaded.kind == "classify" else "/v1/chat/completions or /v1/completions"
            raise ApiError(400, f"this server's model is a {'classifier' if loaded.kind == 'classify' else 'text generator'}; use {other}.")

    def check_chars(count: int, param: str) -> None:
        """Refuse a huge body before tokenizing it: no token is anywhere near 64 characters long."""
        if count > 64 * max_prompt:
            raise ApiError(400, f"the prompt is {count} characters, far above this server's limit of {max_prompt} tokens.",
                           param=param, code="context_length_exceeded")

    def sampling_for(req: Decoding, prompt_len: int) -> Sampling:
        asked = req.max_completion_tokens or req.max_tokens
        if asked is not None and asked > limits.max_tokens:
            raise ApiError(400, f"max_tokens is {asked}, above this server's limit of {limits.max_tokens}.", param="max_tokens")
        max_tokens = asked or min(decode.max_new_tokens, limits.max_tokens)
        if prompt_len > max_prompt:
            raise ApiError(400, f"the prompt is {prompt_len} tokens, above this server's limit of {max_prompt}.",
                           param="messages" if isinstance(req, ChatRequest) else "prompt", code="context_length_exceeded")
        if prompt_len + max_tokens > context:
            if asked is not None:
                raise ApiError(400, f"the prompt ({prompt_len} tokens) plus max_tokens ({asked}) exceeds the model's "
                               f"context of {context} tokens.", param="max_tokens", code="context_length_exceeded")
            max_tokens = context - prompt_len
        sample = decode.do_sample if req.temperature is None else req.temperature > 0
        return Sampling(
            max_tokens=max_tokens,
            temperature=(req.temperature if req.temperature is not None else decode.temperature) if sample else 0.0,
            top_k=(req.top_k if req.top_k is not None else decode.top_k) if sample else 0,
            top_p=(req.top_p if req.top_p is not None else decode.top_p) if sample else 1.0,
            repetition_penalty=req.repetition_penalty if req.repetition_penalty is not None else decode.repetition_penalty,
            no_repeat_ngram_size=decode.no_repeat_ngram_size,  # the run's setting (no OpenAI field for it)
            stop=req.stop or list(getattr(decode, "stop_strings", []) or []),
            seed=req.seed,
        )

    def submit(prompt: list[int], sampling: Sampling) -> tuple[Sequence, asyncio.Queue]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def deliver(event: tuple) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the loop has closed: nobody is listening any more
                pass

        seq = Sequence(prompt, sampling, deliver, time.monotonic() + limits.timeout)
        try:
            engine.submit(seq)
        except QueueFull as e:
            raise ApiError(429, str(e), type="rate_limit_error", code="queue_full") from None
        return seq, events

    async def next_event(seq: Sequence, events: asyncio.Queue, request: Request | None) -> tuple | None:
        """The next event; None (and the request cancelled) if a non-streaming client went away."""
        while True:
            try:
                return await asyncio.wait_for(events.get(), timeout=0.25)
            except TimeoutError:
                if request is not None and await request.is_disconnected():
                    seq.cancel()
                    return None

    def usage(prompt: list[int], completion: int) -> dict:
        return {"prompt_tokens": len(prompt), "completion_tokens": completion, "total_tokens": len(prompt) + completion}

    async def complete(request: Request, prompt: list[int], sampling: Sampling) -> tuple[str, str, int]:
        seq, events = submit(prompt, sampling)
        parts: list[str] = []
        try:
            while True:
                event = await next_event(seq, events, request)
                if event is None:
                    raise ApiError(499, "client closed the request")
                if event[0] == "delta":
                    parts.append(event[1])
                elif event[0] == "done":
                    return "".join(parts), event[1], event[2]
                else:
                    raise ApiError(504 if event[1] == "timeout" else 500, event[2], type=event[1])
        finally:
            seq.cancel()

    def stream(prompt: list[int], sampling: Sampling, chunk, include_usage: bool) -> StreamingResponse:
        seq, events = submit(prompt, sampling)

        async def body():
            try:
                first = chunk(role=True)
                if first is not None:
                    yield sse(first)
                while True:
                    event = await next_event(seq, events, None)
                    if event[0] == "delta":
                        yield sse(chunk(text=event[1]))
                    elif event[0] == "done":
                        yield sse(chunk(finish=event[1]))
                        if include_usage:
                            yield sse({**chunk(), "choices": [], "usage": usage(prompt, event[2])})
                        break
                    else:
                        yield sse({"error": {"message": event[2], "type": event[1], "param": None, "code": None}})
                        break
                yield "data: [DONE]\n\n"
            finally:
                seq.cancel()  # the client went away (or we are done): free the batch slot

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # ---- routes --------------------------------------------------------------------------------
    @app.get("/health")
    async def health():
        figures = engine.snapshot() if engine is not None else {}
        alive = engine is None or (engine.thread is not None and engine.thread.is_alive())
        body = {"status": "ok" if alive else "error", "model": loaded.name, "kind": loaded.kind, "auth": bool(api_key),
                "engine": "none" if engine is None else ("running" if alive else "dead"), **figures}
        # A dead engine thread answers no request: say so, so a load balancer or supervisor can restart us.
        return body if alive else JSONResponse(body, status_code=503)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": loaded.name, "object": "model", "created": created,
                                            "owned_by": "tailor", "kind": loaded.kind, "context_length": context}]}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest, request: Request):
        need("generate")
        check_model(req.model)
        messages = [m.model_dump() for m in req.messages]
        check_chars(sum(len(m["content"]) for m in messages), "messages")
        if system_prompt and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": system_prompt})
        if not getattr(tokenizer, "chat_template", None):
            raise ApiError(400, "this model has no chat template; use /v1/completions with a plain prompt.")
        try:
            text = history_text(tokenizer, messages)  # as training rendered the history
        except Exception as e:  # the template may reject a role order (e.g. two user turns in a row)
            raise ApiError(400, f"the chat template rejected these messages: {e}", param="messages") from None
        # A decoder continues the rendered text; an encoder-decoder reads it in its encoder.
        prompt = encoder_ids(tokenizer, text) if loaded.kind == "seq2seq" else tokenizer(text, add_special_tokens=False)["input_ids"]
        sampling = sampling_for(req, len(prompt))
        rid, now = "chatcmpl-" + secrets.token_hex(12), int(time.time())
        if req.stream:
            def chunk(role: bool = False, text: str | None = None, finish: str | None = None) -> dict:
                delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text is not None else {})
                return {"id": rid, "object": "chat.completion.chunk", "created": now, "model": loaded.name,
                        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            return stream(prompt, sampling, chunk, bool(req.stream_options and req.stream_options.include_usage))
        reply, finish, count = await complete(request, prompt, sampling)
        return {"id": rid, "object": "chat.completion", "created": now, "model": loaded.name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "logprobs": None,
                             "finish_reason": finish}],
                "usage": usage(prompt, count)}

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request):
        need("generate")
        check_model(req.model)
        check_chars(len(req.prompt), "prompt")
        prompt = encoder_ids(tokenizer, req.prompt) if loaded.kind == "seq2seq" else tokenizer(req.prompt)["input_ids"]
        if not prompt:
            raise ApiError(400, "prompt: the prompt is empty.", param="prompt")
        sampling = sampling_for(req, len(prompt))
        rid, now = "cmpl-" + secrets.token_hex(12), int(time.time())
        if req.stream:
            def chunk(role: bool = False, text: str | None = None, finish: str | None = None) -> dict | None:
                if role:
                    return None
                return {"id": rid, "object": "text_completion", "created": now, "model": loaded.name,
                        "choices": [{"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}]}
            return stream(prompt, sampling, chunk, bool(req.stream_options and req.stream_options.include_usage))
        text, finish, count = await complete(request, prompt, sampling)
        return {"id": rid, "object": "text_completion", "created": now, "model": loaded.name,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
                "usage": usage(prompt, count)}

    @app.post("/v1/classify")
    async def classify(req: ClassifyRequest):
        nonlocal classify_waiting
        need("classify")
        check_model(req.model)
        if len(req.input) > limits.max_inputs:
            raise ApiError(400, f"input has {len(req.input)} texts, above this server's limit of {limits.max_inputs}.", param="input")
        # Tokenized here on the event loop only; the model's thread gets ids, never the tokenizer, which is
        # not safe to share between threads (the fast tokenizer raises "Already borrowed").
        encoded = tokenizer(req.input)["input_ids"]
        for i, ids in enumerate(encoded):
            if len(ids) > max_prompt:
                raise ApiError(400, f"input[{i}] is {len(ids)} tokens, above this server's limit of {max_prompt}.",
                               param="input", code="context_length_exceeded")
        if classify_waiting >= limits.max_queue:
            raise ApiError(429, f"the server's queue is full ({limits.max_queue} waiting requests); retry later",
                           type="rate_limit_error", code="queue_full")
        classify_waiting += 1
        try:
            await classify_lock.acquire()
            # The lock is released when the model is done, not when this request gives up: a timed-out
            # request's forward pass keeps running in its thread, and the next one must wait for it.
            work = asyncio.ensure_future(run_in_threadpool(label_probs, encoded))
            work.add_done_callback(lambda _: classify_lock.release())
            probs = await asyncio.wait_for(asyncio.shield(work), timeout=limits.timeout)
        except TimeoutError:
            raise ApiError(504, "the request took longer than the server's time limit", type="timeout") from None
        finally:
            classify_waiting -= 1
        labels = [model.config.id2label.get(i, str(i)) for i in range(probs.shape[1])]
        data = []
        for i, row in enumerate(probs.tolist()):
            best = max(range(len(row)), key=row.__getitem__)
            data.append({"index": i, "label": labels[best], "score": row[best], "scores": dict(zip(labels, row))})
        return {"object": "list", "model": loaded.name, "data": data,
                "usage": {"prompt_tokens": sum(map(len, encoded)), "total_tokens": sum(map(len, encoded))}}

    @torch.inference_mode()
    def label_probs(encoded: list[list[int]]) -> torch.Tensor:
        batch = devices.put(padded(encoded, classify_pad_id, tokenizer.padding_side), devices.of(model))
        return model(**batch).logits.float().softmax(-1).cpu()  # [N, labels]

    @app.get("/")
    async def page():
        return FileResponse(STATIC / "index.html", headers={
            "Content-Security-Policy": "default-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'",
            "Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def padded(encoded: list[list[int]], pad_id: int, side: str = "right") -> dict:
    """input_ids and attention_mask of token id lists padded to one length, as the tokenizer's padding=True
    would make them (built here so the model's thread never touches the tokenizer)."""
    width = max(map(len, encoded))
    ids, mask = [], []
    for row in encoded:
        fill = width - len(row)
        ids.append(([pad_id] * fill + row) if side == "left" else (row + [pad_id] * fill))
        mask.append(([0] * fill + [1] * len(row)) if side == "left" else ([1] * len(row) + [0] * fill))
    return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}


def sse(data: dict) -> str:
    import json

    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
