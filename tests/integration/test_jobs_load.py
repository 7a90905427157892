"""Load: 50 concurrent job creations, then 200 concurrent reads, on 127.0.0.1 against SQLite and
PostgreSQL: every request answered, no job lost or duplicated. (No worker: the jobs stay queued
for validation, so the figures are the API's and the store's alone.)"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

openai = pytest.importorskip("openai", reason="the jobs tests need the openai client (pip install -e .[dev])")
pytest.importorskip("sqlalchemy", reason="fine-tuning jobs need the serve extra (pip install -e .[serve])")

from tests.conftest import chat_rows  # noqa: E402
from tests.integration.jobs_service import service, write_rows  # noqa: E402

CREATES, READS = 50, 200


async def create_and_read(base_url: str, training_file: str) -> tuple[list, list, float, float]:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)
    started = time.perf_counter()
    created = await asyncio.gather(*[
        client.fine_tuning.jobs.create(model="tiny", training_file=training_file, metadata={"n": str(i)})
        for i in range(CREATES)], return_exceptions=True)
    create_seconds = time.perf_counter() - started
    ids = [job.id for job in created if not isinstance(job, BaseException)]

    async def read(i: int):
        job_id = ids[i % len(ids)]
        kind = i % 4
        if kind == 0:
            return await client.fine_tuning.jobs.retrieve(job_id)
        if kind == 1:
            return await client.fine_tuning.jobs.list(limit=20)
        if kind == 2:
            return await client.fine_tuning.jobs.list_events(job_id)
        return await client.files.retrieve(training_file)

    started = time.perf_counter()
    reads = await asyncio.gather(*[read(i) for i in range(READS)], return_exceptions=True)
    read_seconds = time.perf_counter() - started
    await client.close()
    return created, reads, create_seconds, read_seconds


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_concurrent_creations_and_reads_are_all_answered(database: str, tmp_path: Path, tiny_model_dir: Path,
                                                         request: pytest.FixtureRequest):
    url = request.getfixturevalue("postgres_url") if database == "postgresql" else None
    with service(tmp_path, tiny_model_dir, store_url=url, workers=0) as running:
        client = openai.OpenAI(base_url=running.base_url, api_key="unused", max_retries=0)
        with open(write_rows(tmp_path / "train.jsonl", chat_rows(8)), "rb") as handle:
            training_file = client.files.create(file=handle, purpose="fine-tune").id
        created, reads, create_seconds, read_seconds = asyncio.run(create_and_read(running.base_url, training_file))
        failures = [r for r in created + reads if isinstance(r, BaseException)]
        assert failures == []  # every request answered, none refused
        ids = [job.id for job in created]
        assert len(set(ids)) == CREATES
        listed = [job.id for job in client.fine_tuning.jobs.list(limit=100)]
        assert sorted(listed) == sorted(ids)  # none lost, none twice
        assert sorted(job.metadata["n"] for job in client.fine_tuning.jobs.list(limit=100)) == sorted(
            str(i) for i in range(CREATES))
        for job_id in ids[:5]:
            assert [e.message for e in client.fine_tuning.jobs.list_events(job_id)] == [
                f"Created fine-tuning job: {job_id}"]
        print(f"\n{database}: {CREATES} concurrent creations in {create_seconds:.2f} s, "
              f"{READS} concurrent reads in {read_seconds:.2f} s")
