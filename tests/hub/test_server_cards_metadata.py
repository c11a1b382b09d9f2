"""Card metadata on the local Hub: the checks the public Hub applies, bounded parsing, one parse per card.

Driven with the unmodified huggingface_hub client (``ModelCard.push_to_hub``, ``upload_file``
and ``create_commit`` all post README.md to ``/api/validate-yaml`` before committing).
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import httpx2
import pytest
from huggingface_hub import DatasetCard, DatasetCardData, HfApi, ModelCard, ModelCardData

from hubtools.hub.server.app import HUB_KEY
from hubtools.hub.server.metadata import IN_THREAD_YAML_BYTES, MAX_YAML_BYTES


@pytest.fixture
def api(hub):
    return HfApi(token=hub.write_token)


def _yaml_items(n_bytes: int) -> str:
    """A valid YAML header of about ``n_bytes``: a list of small mappings under ``items``."""
    lines, i, size = ["items:"], 0, 0
    while size < n_bytes:
        block = [f"  - name: item{i}", "    values: [1, 2, 3, {a: b, c: [x, y]}]", f"    text: 'quoted text {i}'"]
        lines += block
        size += sum(len(b) + 1 for b in block)
        i += 1
    return "\n".join(lines) + "\n"


def test_bad_license_and_pipeline_tag_are_refused_with_the_hubs_messages(api, repo_id):
    api.create_repo(repo_id)
    head = api.model_info(repo_id).sha
    card = ModelCard.from_template(
        ModelCardData(license="definitely-not-a-license", pipeline_tag="not-a-task"), model_id="x"
    )
    with pytest.raises(ValueError) as err:
        card.push_to_hub(repo_id)
    # RepoCard.validate raises ValueError(response.text): the Hub's {"errors": [{"message"}], ...}
    license_msg, task_msg = (e["message"] for e in json.loads(str(err.value))["errors"])
    assert license_msg.startswith('"license" must be one of [apache-2.0, mit, ') and license_msg.endswith(
        ", unknown, other, array]"
    )
    assert task_msg.startswith('"pipeline_tag" must be one of [text-classification, ')
    with pytest.raises(ValueError, match=r'Invalid metadata in README.md.\n- "license\[1\]" must be one of'):
        api.upload_file(path_or_fileobj=b"---\nlicense: [mit, nope]\n---\n", path_in_repo="README.md",
                        repo_id=repo_id)
    assert api.model_info(repo_id).sha == head  # nothing was committed

    ok = ModelCard.from_template(ModelCardData(license="cc-by-nc-4.0", pipeline_tag="image-segmentation"),
                                 model_id="x")
    ok.push_to_hub(repo_id)
    info = api.model_info(repo_id)
    assert info.pipeline_tag == "image-segmentation" and info.card_data.license == "cc-by-nc-4.0"

    # Datasets: the license is checked, pipeline_tag is a model key and is not.
    ds = api.create_repo(f"{repo_id}-ds", repo_type="dataset").repo_id
    with pytest.raises(ValueError, match=r'\\"license\\" must be one of'):
        DatasetCard.from_template(DatasetCardData(license="MIT", pretty_name="x")).push_to_hub(ds)
    DatasetCard.from_template(DatasetCardData(license=["mit", "other"], pretty_name="x")).push_to_hub(ds)


def test_model_index_must_have_the_hubs_shape(api, repo_id):
    api.create_repo(repo_id)
    bad = (
        "---\nmodel-index:\n- name: m\n  results:\n  - task: {type: image-classification}\n"
        "    dataset: {type: isic2019}\n    metrics:\n    - {type: accuracy}\n---\n"
    )
    with pytest.raises(ValueError) as err:
        api.upload_file(path_or_fileobj=bad.encode(), path_in_repo="README.md", repo_id=repo_id)
    assert '"model-index[0].results[0].dataset.name" is required' in str(err.value)
    assert '"model-index[0].results[0].metrics[0].value" is required' in str(err.value)
    with pytest.raises(ValueError, match='"model-index" must be an array'):
        api.upload_file(path_or_fileobj=b"---\nmodel-index: {name: m}\n---\n", path_in_repo="README.md",
                        repo_id=repo_id)
    good = bad.replace("{type: isic2019}", "{type: isic2019, name: ISIC 2019}").replace(
        "{type: accuracy}", "{type: accuracy, value: 0.81}"
    )
    api.upload_file(path_or_fileobj=good.encode(), path_in_repo="README.md", repo_id=repo_id)
    assert api.model_info(repo_id).card_data.eval_results[0].metric_value == 0.81


def test_validate_yaml_caps_and_always_answers_json(hub):
    url = f"{hub.url}/api/validate-yaml"
    big_header = "---\n" + _yaml_items(MAX_YAML_BYTES + 1000) + "---\n# card\n"
    started = time.perf_counter()
    r = httpx2.post(url, json={"content": big_header, "repoType": "model"})
    assert r.status_code == 413 and "larger than" in r.json()["error"]
    assert time.perf_counter() - started < 5  # refused before any parsing
    r = httpx2.post(url, json={"content": "x" * (11 * 2**20), "repoType": "model"})
    assert r.status_code == 413 and r.json()["error"]
    r = httpx2.post(url, json={"content": "---\nlicense: mit\n---\n", "repoType": "bucket"})
    assert r.status_code == 400 and r.json()["error"]


def test_card_dates_and_odd_keys_come_back_as_json(api, repo_id):
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=b"---\nlicense: mit\nreleased: 2024-01-02\n1: one\n---\n# c\n",
                    path_in_repo="README.md", repo_id=repo_id)
    data = api.model_info(repo_id).card_data.to_dict()
    assert data["released"] == "2024-01-02" and data["1"] == "one"
    assert [m.id for m in api.list_models(author=repo_id.split("/")[0], search=repo_id.split("/")[1])] == [repo_id]


def test_a_card_is_parsed_once_per_content(hub, api, repo_id):
    api.create_repo(repo_id)
    cards = hub.server.app[HUB_KEY].cards
    header = _yaml_items(IN_THREAD_YAML_BYTES + 4096)  # parsed in the worker process
    text = f"---\nlicense: mit\n{header}---\n" + "body text\n" * 300_000  # about 3.3 MB in all
    ModelCard(text).push_to_hub(repo_id)  # validate-yaml parses it, keyed by its sha256
    misses = []
    original = cards.executor.submit

    def counting_submit(*args, **kwargs):
        misses.append(1)
        return original(*args, **kwargs)

    cards.executor.submit = counting_submit
    try:
        for _ in range(3):
            info = api.model_info(repo_id)
            assert info.card_data.license == "mit" and len(info.card_data.to_dict()["items"]) > 500
        api.upload_file(path_or_fileobj=b"x", path_in_repo="other.txt", repo_id=repo_id)  # new commit, same card
        api.model_info(repo_id)
    finally:
        del cards.executor.submit
    assert misses == []


def test_a_large_card_does_not_stall_other_requests(hub_proc, tmp_path):
    """An anonymous validate-yaml of a large header runs off the event loop and off the GIL:
    concurrent reads keep answering promptly."""
    server = hub_proc(tmp_path / "data")
    name = f"stall-{uuid.uuid4().hex[:6]}"
    HfApi(endpoint=server.url, token=server.token).create_repo(name)
    info_url = f"{server.url}/api/models/testuser/{name}"
    content = "---\n" + _yaml_items(600_000) + "---\n"
    done: dict = {}

    def validate():
        started = time.perf_counter()
        done["status"] = httpx2.post(f"{server.url}/api/validate-yaml",
                                     json={"content": content, "repoType": "model"}, timeout=120).status_code
        done["seconds"] = time.perf_counter() - started

    worker = threading.Thread(target=validate)
    worker.start()
    time.sleep(0.2)
    latencies = []
    with httpx2.Client(timeout=60) as client:
        while worker.is_alive():
            started = time.perf_counter()
            assert client.get(info_url).status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.02)
    worker.join()
    assert done["status"] == 200
    assert len(latencies) >= 3, done  # the reads really overlapped the parse
    # Parsed on the event loop, one read would wait about as long as the whole parse.
    assert max(latencies) < min(2.0, done["seconds"] / 2), (max(latencies), done)
