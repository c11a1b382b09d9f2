"""Card metadata: parsing a README's YAML header, and the checks huggingface.co applies to it.

Parsing is the expensive part of serving cards (PyYAML builds Python objects even with
libyaml), so it is bounded: a YAML header over :data:`MAX_YAML_BYTES` is refused, and the
server parses in worker threads with a cache keyed by the README's content hash.

The checks mirror the Hub's: ``license`` is one of its license ids (or a list of them),
a model's ``pipeline_tag`` is one of its task ids, and ``model-index`` has the shape
the Hub (and ``huggingface_hub.repocard_data``) reads. Messages follow the Hub's wording,
e.g. ``"license" must be one of [apache-2.0, mit, ...]``.
"""

from __future__ import annotations

import collections
import datetime
import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import yaml

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

MAX_YAML_BYTES = 1 << 20  # a YAML header this big takes seconds to parse even with libyaml
IN_THREAD_YAML_BYTES = 64 << 10  # parsing this much holds the GIL for some 30 ms

# huggingface.co's license ids, in the order its validation error lists them.
LICENSES = (
    "apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0 "
    "bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc "
    "cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 "
    "cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 "
    "cdla-sharing-1.0 cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 "
    "eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c "
    "ms-pl apple-ascl apple-amlr mpl-2.0 odc-by odbl openmdw-1.0 openrail++ osl-3.0 postgresql ofl-1.1 ncsa "
    "unlicense zlib pddl lgpl-lr deepfloyd-if-license fair-noncommercial-research-license llama2 llama3 llama3.1 "
    "llama3.2 llama3.3 llama4 grok2-community gemma unknown other"
).split()

# huggingface.co's task ids (the values of a model's ``pipeline_tag``).
PIPELINE_TAGS = (
    "text-classification token-classification table-question-answering question-answering "
    "zero-shot-classification translation summarization feature-extraction text-generation text2text-generation "
    "fill-mask sentence-similarity text-to-speech text-to-audio automatic-speech-recognition audio-to-audio "
    "audio-classification audio-text-to-text voice-activity-detection depth-estimation image-classification "
    "object-detection image-segmentation text-to-image image-to-text image-to-image image-to-video "
    "unconditional-image-generation video-classification reinforcement-learning robotics tabular-classification "
    "tabular-regression tabular-to-text table-to-text multiple-choice text-ranking text-retrieval "
    "time-series-forecasting text-to-video image-text-to-text image-text-to-image image-text-to-video "
    "visual-question-answering document-question-answering zero-shot-image-classification graph-ml "
    "mask-generation zero-shot-object-detection text-to-3d image-to-3d image-feature-extraction "
    "video-text-to-text keypoint-detection visual-document-retrieval any-to-any video-to-video other"
).split()


class MetadataTooLarge(ValueError):
    """The YAML header is over :data:`MAX_YAML_BYTES`."""


def yaml_header(text: str) -> str | None:
    """The YAML between the opening ``---`` line and the next ``---`` line, or None if the card has none.

    Raises:
        ValueError: the header is not closed.
        MetadataTooLarge: the header is over :data:`MAX_YAML_BYTES`.
    """
    if not text.startswith("---"):
        return None
    first = text.find("\n")
    if first < 0 or text[:first].strip() != "---":
        return None
    pos = first + 1
    while True:
        nxt = text.find("\n", pos)
        line = text[pos:] if nxt < 0 else text[pos:nxt]
        if line.strip() == "---":
            break
        if nxt < 0:
            raise ValueError("front matter is not closed by a '---' line")
        pos = nxt + 1
        if pos - first > MAX_YAML_BYTES:
            raise MetadataTooLarge(f"The YAML metadata of the card is larger than {MAX_YAML_BYTES} bytes")
    header = text[first + 1 : pos]
    if len(header.encode("utf-8", "replace")) > MAX_YAML_BYTES:
        raise MetadataTooLarge(f"The YAML metadata of the card is larger than {MAX_YAML_BYTES} bytes")
    return header


def load_mapping(header: str) -> dict:
    """Parse a YAML header into a JSON-ready mapping ({} when empty).

    Raises:
        ValueError: unparseable, or not a mapping.
    """
    try:
        data = yaml.load(header, Loader=_LOADER)  # noqa: S506 - a safe loader (C or Python)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError("front matter is not a mapping")
    return _jsonable(data)


def parser_process_init(parent_pid: int) -> None:
    """Initializer of the YAML worker process: it keeps none of the server's output streams open
    (a supervisor waiting for the server's stdout to close would otherwise wait for it too), and
    it exits as soon as the server is gone, even after a SIGKILL that ran no clean-up."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)

    def watch_parent() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch_parent, daemon=True).start()


def parse_front_matter(text: str, executor: Executor | None = None) -> dict | None:
    """A card's YAML header as a JSON-ready mapping ({} when empty), or None if the card has none.

    Headers over :data:`IN_THREAD_YAML_BYTES` are parsed by ``executor`` when one is given: libyaml
    composes the whole document without releasing the GIL, which would stall every other thread
    of the server for a large header, so those go to a separate process.

    Raises:
        ValueError: unparseable or not a mapping.
        MetadataTooLarge: the header is over :data:`MAX_YAML_BYTES`.
    """
    header = yaml_header(text)
    if header is None:
        return None
    if executor is not None and len(header) > IN_THREAD_YAML_BYTES:
        return executor.submit(load_mapping, header).result()
    return load_mapping(header)


def _jsonable(value: Any) -> Any:
    """YAML dates and timestamps -> ISO strings, keys -> strings: what a JSON answer can carry."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, (set, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _one_of(label: str, value: Any, allowed: list[str], array_ok: bool) -> list[str]:
    if isinstance(value, list) and array_ok:
        errors = []
        for i, item in enumerate(value):
            errors += _one_of(f"{label}[{i}]", item, allowed, array_ok=False)
        return errors
    if isinstance(value, str) and value in allowed:
        return []
    choices = ", ".join(allowed + (["array"] if array_ok else []))
    return [f'"{label}" must be one of [{choices}]']


def _check_type(label: str, value: Any, kind: type, what: str) -> list[str]:
    return [] if isinstance(value, kind) and not isinstance(value, bool) else [f'"{label}" must be {what}']


def _model_index_errors(index: Any) -> list[str]:
    """The shape huggingface.co requires: [{name, results: [{task: {type}, dataset: {type, name}, metrics:
    [{type, value}]}]}]."""
    if not isinstance(index, list):
        return ['"model-index" must be an array']
    errors: list[str] = []
    for i, model in enumerate(index):
        at = f"model-index[{i}]"
        if not isinstance(model, dict):
            errors.append(f'"{at}" must be of type object')
            continue
        if "name" not in model:
            errors.append(f'"{at}.name" is required')
        else:
            errors += _check_type(f"{at}.name", model["name"], str, "a string")
        results = model.get("results")
        if results is None:
            errors.append(f'"{at}.results" is required')
            continue
        if not isinstance(results, list):
            errors.append(f'"{at}.results" must be an array')
            continue
        for j, result in enumerate(results):
            rat = f"{at}.results[{j}]"
            if not isinstance(result, dict):
                errors.append(f'"{rat}" must be of type object')
                continue
            for key, required in (("task", ("type",)), ("dataset", ("type", "name"))):
                part = result.get(key)
                if part is None:
                    errors.append(f'"{rat}.{key}" is required')
                elif not isinstance(part, dict):
                    errors.append(f'"{rat}.{key}" must be of type object')
                else:
                    for field in required:
                        if field not in part:
                            errors.append(f'"{rat}.{key}.{field}" is required')
                        else:
                            errors += _check_type(f"{rat}.{key}.{field}", part[field], str, "a string")
            metrics = result.get("metrics")
            if metrics is None:
                errors.append(f'"{rat}.metrics" is required')
            elif not isinstance(metrics, list):
                errors.append(f'"{rat}.metrics" must be an array')
            else:
                for k, metric in enumerate(metrics):
                    mat = f"{rat}.metrics[{k}]"
                    if not isinstance(metric, dict):
                        errors.append(f'"{mat}" must be of type object')
                        continue
                    if "type" not in metric:
                        errors.append(f'"{mat}.type" is required')
                    else:
                        errors += _check_type(f"{mat}.type", metric["type"], str, "a string")
                    if "value" not in metric:
                        errors.append(f'"{mat}.value" is required')
    return errors


def metadata_errors(meta: dict, repo_type: str) -> list[str]:
    """What huggingface.co would reject in a card's metadata, one message per problem."""
    errors: list[str] = []
    if "license" in meta:
        errors += _one_of("license", meta["license"], LICENSES, array_ok=True)
    if "tags" in meta and not isinstance(meta["tags"], list | str):
        errors.append('"tags" must be an array')
    if repo_type == "model":
        if "pipeline_tag" in meta:
            errors += _one_of("pipeline_tag", meta["pipeline_tag"], PIPELINE_TAGS, array_ok=False)
        if "model-index" in meta:
            errors += _model_index_errors(meta["model-index"])
    return errors


@dataclass(frozen=True)
class ParsedCard:
    """The outcome of parsing one card: ``meta`` (None if it has no header or it failed) and, kept
    so a cached card is not re-encoded on every request, ``meta_json``; ``error`` (the reason it
    failed) and ``too_large`` (it failed because the header is over the cap)."""

    meta: dict | None
    meta_json: str | None = None
    error: str | None = None
    too_large: bool = False


class CardCache:
    """Parsed YAML headers keyed by the README's sha256 (the blob name), so a card is parsed once
    however many commits, listings and ``model_info`` calls show it. Bounded by the total size
    of the cached headers; thread-safe. ``executor`` parses large headers (see
    :func:`parse_front_matter`)."""

    def __init__(self, max_bytes: int = 64 << 20, executor: Executor | None = None):
        self.max_bytes = max_bytes
        self.executor = executor
        self._items: collections.OrderedDict[str, tuple[ParsedCard, int]] = collections.OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def parse(self, sha256: str, load: Callable[[], str]) -> ParsedCard:
        """The parsed card whose UTF-8 bytes hash to ``sha256``; ``load()`` gives its text on a miss
        (and may raise ValueError, e.g. UnicodeDecodeError, for an unreadable card)."""
        with self._lock:
            hit = self._items.get(sha256)
            if hit is not None:
                self._items.move_to_end(sha256)
                return hit[0]
        try:
            meta = parse_front_matter(load(), self.executor)
            parsed = ParsedCard(meta, None if meta is None else json.dumps(meta))
        except MetadataTooLarge as exc:
            parsed = ParsedCard(None, error=str(exc), too_large=True)
        except ValueError as exc:
            parsed = ParsedCard(None, error=f"Invalid YAML in the card metadata: {exc}")
        weight = 1024 + 2 * len(parsed.meta_json or "")
        with self._lock:
            if sha256 not in self._items:
                self._items[sha256] = (parsed, weight)
                self._size += weight
                while self._size > self.max_bytes and self._items:
                    _, (_, w) = self._items.popitem(last=False)
                    self._size -= w
        return parsed
